//! Test harness shared by the integration tests: starts the real `pgmld` binary on port 0
//! in front of the machine's Postgres, and gives each test a fresh database.
#![allow(dead_code)]

pub mod data;
pub mod hub;
pub mod llm;
pub mod models;
pub mod process;
pub mod roles;
pub mod serial;
pub mod tuning;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The machine's Postgres, which every test uses as upstream.
pub const UPSTREAM: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A running pgmld process; killed on drop.
pub struct Pgmld {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The dashboard's address, when `--dashboard-listen` was given.
    pub dashboard: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// Options for [`Pgmld::start_with`].
pub struct Start {
    pub upstream: Option<String>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Default for Start {
    fn default() -> Self {
        Start { upstream: Some(UPSTREAM.into()), extra_args: vec![], env: vec![] }
    }
}

impl Pgmld {
    /// pgmld on 127.0.0.1:0 with metrics on 127.0.0.1:0, upstream the machine's Postgres.
    pub fn start() -> Pgmld {
        Self::start_with(Start::default())
    }

    /// [`Pgmld::start`] with a plain-TCP upstream leg (`sslmode=disable`, as pgbouncer's
    /// default): sessions then relay on the pass-through loop until they call pgml, while
    /// with the machine's TLS-enabled Postgres and the default `prefer` they stay on tokio.
    /// The wire-behaviour suites use this, so both relays are tested.
    pub fn start_plain() -> Pgmld {
        Self::start_with(Start {
            upstream: Some(format!("{UPSTREAM}?sslmode=disable")),
            ..Start::default()
        })
    }

    pub fn start_with(opts: Start) -> Pgmld {
        let data_dir = temp_dir("pgmld-it");
        let log = data_dir.join("pgmld.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmld"));
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(&opts.extra_args)
            .env("RUST_LOG", "info,pgmld_proxy=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(u) = &opts.upstream {
            cmd.args(["--upstream", u]);
        }
        // Tests run side by side on one upstream: a pgmld of one test must not resume
        // another test's killed job (tests/tune_resume.rs turns it back on).
        cmd.env("PGMLD_RESUME_JOBS", "false");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let (mut child, rx) = spawn_reading_stdout(cmd);
        let mut addr = None;
        let mut metrics = None;
        let mut dashboard = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("pgmld listening on ") {
                        addr = a.parse().ok();
                    } else if let Some(a) = line.strip_prefix("pgmld metrics on ") {
                        metrics = a.parse().ok();
                    } else if let Some(a) = line.strip_prefix("pgmld dashboard on ") {
                        dashboard = a.parse().ok();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "pgmld did not start; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        Pgmld { child, addr: addr.unwrap(), metrics, dashboard, data_dir, log }
    }

    /// libpq-style connection string for `db` through pgmld.
    pub fn conn_str(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={db}", self.addr.port())
    }

    /// URL form, for psycopg and node-postgres.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.addr.port())
    }

    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect through pgmld: {e}; log:\n{}", self.log_text()));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Body of GET /metrics.
    pub fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.metrics.expect("metrics endpoint");
        let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Value of a metric line (`name{labels}` exactly as rendered), 0 if absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Peak resident memory of the process in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Pgmld {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A running `pgmld worker` process (training only, no listener); killed on drop.
pub struct Worker {
    pub child: Child,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Worker {
    /// `pgmld worker --devices <devices>` on the machine's Postgres, serving `databases`,
    /// with `env` on top; returns once it printed that it is ready.
    pub fn start(devices: &str, databases: &[&str], env: &[(&str, &str)]) -> Worker {
        let data_dir = temp_dir("pgmld-worker");
        let log = data_dir.join("pgmld.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmld"));
        cmd.args(["--upstream", UPSTREAM, "--data-dir"])
            .arg(&data_dir)
            .args(["worker", "--devices", devices])
            .env("RUST_LOG", "info")
            .env("PGMLD_RESUME_JOBS", "false")
            .env("PGMLD_WORKER_DATABASES", databases.join(","))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (mut child, rx) = spawn_reading_stdout(cmd);
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with("pgmld worker ") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "pgmld worker did not start; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        Worker { child, data_dir, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Spawns `cmd` (stdout piped) and hands each line it prints to the returned channel.
fn spawn_reading_stdout(mut cmd: Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd.spawn().expect("spawn pgmld");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh database on the machine's Postgres, dropped on drop, so tests run in parallel.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        let name = format!("pgmld_it_{}", rand::random::<u32>());
        psql_direct("postgres", &format!("CREATE DATABASE {name}"));
        TestDb { name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", "postgres", "-qAtc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}

/// Runs SQL directly on the machine's Postgres with psql; panics on failure.
pub fn psql_direct(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs psql through pgmld with a script on stdin; returns (success, stdout, stderr).
pub fn psql_script(p: &Pgmld, db: &str, script: &str, extra: &[&str]) -> (bool, String, String) {
    psql_port(p.addr.port(), db, script, extra)
}

/// Runs psql against 127.0.0.1:`port` with a script on stdin; returns (success, stdout, stderr).
pub fn psql_port(port: u16, db: &str, script: &str, extra: &[&str]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", db, "-X"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SQLSTATE of a tokio-postgres error.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no sqlstate: {e}"))
}

/// Asserts a statement fails with `code` and a message, detail or hint containing
/// `needle`, and that the session still answers afterwards. Returns
/// "message | detail | hint" for further checks.
pub async fn expect_err(c: &tokio_postgres::Client, sql: &str, code: &str, needle: &str) -> String {
    let e = c.query(sql, &[]).await.err().unwrap_or_else(|| panic!("{sql} succeeded"));
    let text = e
        .as_db_error()
        .map(|d| {
            format!("{} | {} | {}", d.message(), d.detail().unwrap_or(""), d.hint().unwrap_or(""))
        })
        .unwrap_or_else(|| e.to_string());
    assert_eq!(sqlstate(&e), code, "{sql}: {text}");
    assert!(text.contains(needle), "{sql}: expected {needle:?} in {text}");
    c.query_one("SELECT 1", &[]).await.expect("session usable after the error");
    text
}
