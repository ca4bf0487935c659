//! A Confluent-compatible schema registry client: registers schemas under TopicNameStrategy subjects and
//! remembers their ids (the Kafka sink), and reads schemas by id (the Kafka source). `http://` or `https://` (the certificate verified against the system's CAs or
//! `schema_registry_ca`), with HTTP basic authentication from the URL's user info
//! (`https://KEY:SECRET@host`, the form Confluent Cloud's API keys take). One short connection per new schema:
//! registrations are rare.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_core::Error;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub struct Registry {
    /// The URL without credentials, for messages.
    shown: String,
    host: String,
    port: u16,
    tls: bool,
    ca: Option<PathBuf>,
    /// Path prefix before `/subjects` (usually empty).
    base_path: String,
    /// `Basic …` from the URL's user info.
    authorization: Option<String>,
    ids: HashMap<(String, String), i32>,
    /// Schemas read by id.
    schemas: HashMap<i32, String>,
}

impl Registry {
    pub fn new(url: &str, ca: Option<&Path>) -> Result<Registry, Error> {
        // Parse errors never quote the URL: it may carry credentials.
        let mut parsed = url::Url::parse(url)
            .map_err(|e| Error::fatal(format!("the schema registry URL does not parse: {e}")))?;
        let tls = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(Error::fatal(format!(
                    "the schema registry URL starts {other:?}; expected http:// or https://"
                )))
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| Error::fatal("the schema registry URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authorization = (!parsed.username().is_empty()).then(|| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let credentials = format!(
                "{}:{}",
                decode(parsed.username()),
                decode(parsed.password().unwrap_or(""))
            );
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        });
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        Ok(Registry {
            shown: parsed.to_string(),
            host,
            port,
            tls,
            ca: ca.map(Path::to_path_buf),
            base_path: parsed.path().trim_end_matches('/').to_owned(),
            authorization,
            ids: HashMap::new(),
            schemas: HashMap::new(),
        })
    }

    /// The id of `schema` under `subject`, registering it (a new version) on first use.
    pub async fn id(&mut self, subject: &str, schema: &str) -> Result<i32, Error> {
        let cache_key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self.ids.get(&cache_key) {
            return Ok(*id);
        }
        let body = serde_json::json!({ "schema": schema }).to_string();
        let path = format!("{}/subjects/{subject}/versions", self.base_path);
        let (status, response) = self.request(&path, Some(body)).await?;
        match status {
            200 => {}
            401 | 403 => {
                return Err(Error::fatal(format!(
                    "the schema registry at {} refused the credentials (HTTP {status}): give them as https://KEY:SECRET@host in schema_registry: {response}",
                    self.shown
                )))
            }
            409 => {
                return Err(Error::fatal(format!(
                    "the schema registry at {} finds the new schema for {subject} incompatible with the subject's compatibility setting (HTTP 409): {response}",
                    self.shown
                )))
            }
            500.. => {
                return Err(Error::transient(
                    format!("registering the schema for {subject}"),
                    format!("HTTP {status} from {}: {response}", self.shown),
                ))
            }
            _ => {
                return Err(Error::fatal(format!(
                    "the schema registry at {} refused the schema for {subject} (HTTP {status}): {response}",
                    self.shown
                )))
            }
        }
        let id = serde_json::from_str::<serde_json::Value>(&response)
            .ok()
            .and_then(|v| v["id"].as_i64())
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                Error::fatal(format!(
                    "the schema registry at {} answered without an id: {response}",
                    self.shown
                ))
            })?;
        self.ids.insert(cache_key, id);
        Ok(id)
    }

    /// The schema registered under `id` (the text of its JSON), read once and remembered. Errors name the
    /// registry (without credentials) and the id.
    pub async fn schema(&mut self, id: i32) -> Result<&str, Error> {
        if !self.schemas.contains_key(&id) {
            let path = format!("{}/schemas/ids/{id}", self.base_path);
            let (status, response) = self.request(&path, None).await?;
            let schema = match status {
                200 => serde_json::from_str::<serde_json::Value>(&response)
                    .ok()
                    .and_then(|v| v["schema"].as_str().map(str::to_owned)),
                401 | 403 => {
                    return Err(Error::fatal(format!(
                        "the schema registry at {} refused the credentials (HTTP {status}): give them as https://KEY:SECRET@host in schema_registry: {response}",
                        self.shown
                    )))
                }
                500.. => {
                    return Err(Error::transient(
                        format!("reading schema {id}"),
                        format!("HTTP {status} from {}: {response}", self.shown),
                    ))
                }
                _ => None,
            };
            let schema = schema.ok_or_else(|| {
                Error::fatal(format!(
                    "the schema registry at {} has no schema {id} (HTTP {status}): {response}; a record names a \
                     schema of another registry",
                    self.shown
                ))
            })?;
            self.schemas.insert(id, schema);
        }
        Ok(&self.schemas[&id])
    }

    /// One request: a POST of `body`, or a GET without one.
    async fn request(&self, path: &str, body: Option<String>) -> Result<(u16, String), Error> {
        let what = format!("calling the schema registry at {}", self.shown);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Error::transient(what.clone(), e))?;
        let stream = if self.tls {
            ferry_pgconn::https_connect(
                tcp,
                &self.host,
                self.ca.as_deref(),
                "give the CA certificate that signed the registry's certificate as schema_registry_ca = \"<PEM file>\" beside schema_registry",
            )
            .await?
        } else {
            ferry_pgconn::MaybeTlsStream::Plain(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::transient(what.clone(), e))?;
        // The connection is driven while the one request runs, and ends with it.
        let driver = tokio::spawn(connection);
        let host = if self.port == if self.tls { 443 } else { 80 } {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let method = if body.is_some() {
            hyper::Method::POST
        } else {
            hyper::Method::GET
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .header(CONTENT_TYPE, MEDIA_TYPE)
            .header(ACCEPT, MEDIA_TYPE);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::fatal_from(format!("a request to {}", self.shown), e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Error::transient(what.clone(), e))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::transient(what.clone(), e))?
            .to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_for_a_basic_auth_header() {
        let r = Registry::new("https://key%2F1:s%40cret@registry.example.com/base/", None).unwrap();
        assert_eq!(r.shown, "https://registry.example.com/base/");
        assert_eq!(
            (r.host.as_str(), r.port, r.tls),
            ("registry.example.com", 443, true)
        );
        assert_eq!(r.base_path, "/base");
        // base64("key/1:s@cret")
        assert_eq!(r.authorization.as_deref(), Some("Basic a2V5LzE6c0BjcmV0"));

        let r = Registry::new("http://127.0.0.1:8081", None).unwrap();
        assert_eq!(
            (r.port, r.tls, r.authorization.is_none()),
            (8081, false, true)
        );
        assert_eq!(r.base_path, "");

        let err = Registry::new("ftp://user:secret@host", None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected http:// or https://"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
