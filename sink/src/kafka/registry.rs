//! A Confluent-compatible schema registry client: registers schemas under TopicNameStrategy subjects and
//! remembers their ids. Plain `http://` (a small HTTP/1.1 exchange per new schema; registrations are rare).

use std::collections::HashMap;

use ferry_core::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Registry {
    /// `host:port`.
    authority: String,
    /// Path prefix before `/subjects` (usually empty).
    base_path: String,
    ids: HashMap<(String, String), i32>,
}

impl Registry {
    pub fn new(url: &str) -> Result<Registry, Error> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            Error::fatal(format!(
                "schema registry {url:?}: only http:// registries are supported (put TLS in front with a local proxy)"
            ))
        })?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        Ok(Registry {
            authority: authority.to_owned(),
            base_path: if path.is_empty() {
                String::new()
            } else {
                format!("/{}", path.trim_end_matches('/'))
            },
            ids: HashMap::new(),
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
        let (status, response) = self.post(&path, &body).await?;
        if status != 200 {
            return Err(Error::fatal(format!(
                "the schema registry refused the schema for {subject} (HTTP {status}): {response}"
            )));
        }
        let id = serde_json::from_str::<serde_json::Value>(&response)
            .ok()
            .and_then(|v| v["id"].as_i64())
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                Error::fatal(format!(
                    "the schema registry answered without an id: {response}"
                ))
            })?;
        self.ids.insert(cache_key, id);
        Ok(id)
    }

    async fn post(&self, path: &str, body: &str) -> Result<(u16, String), Error> {
        let fail = |e: std::io::Error| {
            Error::transient(
                format!("calling the schema registry at {}", self.authority),
                e,
            )
        };
        let mut stream = TcpStream::connect(&self.authority).await.map_err(fail)?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nAccept: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.authority,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(fail)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(fail)?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // A chunked body: the JSON sits between the chunk-size lines.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body.lines()
                .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit()))
                .collect::<Vec<_>>()
                .join("")
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }
}
