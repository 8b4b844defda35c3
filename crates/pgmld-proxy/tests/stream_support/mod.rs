//! A pgmld front end in the test process, in front of the machine's Postgres, with two
//! test-only streaming functions:
//! - `pgml.gated(name text) RETURNS SETOF jsonb`: yields what the test sends through the
//!   gate of that name, when it sends it; records when the stream is dropped.
//! - `pgml.numbers(n bigint) RETURNS SETOF jsonb`: yields 1..=n at once.
#![allow(dead_code)]

use futures_core::Stream;
use pgmld_proxy::{Server, ServerOptions};
use pgmld_sql::function::{CallFuture, ParamSpec};
use pgmld_sql::{
    codes, Args, CallContext, Output, PgmlFunction, Registry, Returns, Signature, SqlError,
    SqlType, Value,
};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What one gate step yields: a value, or the error the call fails with.
pub type Item = Result<Json, String>;

struct GateState {
    rx: Option<mpsc::UnboundedReceiver<Item>>,
    dropped: Arc<AtomicBool>,
    opened: Arc<AtomicBool>,
}

fn gates() -> &'static Mutex<HashMap<String, GateState>> {
    static GATES: OnceLock<Mutex<HashMap<String, GateState>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

/// The test's end of `pgml.gated(name)`.
pub struct Gate {
    pub tx: Option<mpsc::UnboundedSender<Item>>,
    /// Set when pgmld dropped the call's stream.
    pub dropped: Arc<AtomicBool>,
    /// Set when the call started.
    pub opened: Arc<AtomicBool>,
}

impl Gate {
    pub fn new(name: &str) -> Gate {
        let (tx, rx) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicBool::new(false));
        let state = GateState { rx: Some(rx), dropped: dropped.clone(), opened: opened.clone() };
        gates().lock().unwrap().insert(name.to_string(), state);
        Gate { tx: Some(tx), dropped, opened }
    }

    /// Lets one value through.
    pub fn send(&self, v: Json) {
        self.tx.as_ref().expect("gate still open").send(Ok(v)).expect("stream alive");
    }

    /// Makes the call fail with `message`.
    pub fn fail(&self, message: &str) {
        self.tx.as_ref().expect("gate still open").send(Err(message.into())).expect("stream alive");
    }

    /// Ends the stream.
    pub fn end(&mut self) {
        self.tx = None;
    }

    /// Waits until pgmld dropped the stream.
    pub async fn wait_dropped(&self) -> bool {
        wait_for(|| self.dropped.load(Ordering::SeqCst)).await
    }
}

/// Polls `cond` for up to 5 s.
pub async fn wait_for(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

struct GateStream {
    rx: mpsc::UnboundedReceiver<Item>,
    dropped: Arc<AtomicBool>,
}

impl Stream for GateStream {
    type Item = Result<Vec<Value>, SqlError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|item| {
            item.map(|r| match r {
                Ok(j) => Ok(vec![Value::Json(j)]),
                Err(m) => Err(SqlError::new(codes::INVALID_PARAMETER_VALUE, m)),
            })
        })
    }
}

impl Drop for GateStream {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

struct Gated(Signature);

impl PgmlFunction for Gated {
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn call(&self, _ctx: CallContext, args: Args) -> CallFuture {
        let name = args["name"].to_pg_text().unwrap_or_default();
        Box::pin(async move {
            let mut gates = gates().lock().unwrap();
            let gate = gates.get_mut(&name).ok_or_else(|| {
                SqlError::new(codes::INVALID_PARAMETER_VALUE, format!("no gate {name}"))
            })?;
            let rx = gate.rx.take().ok_or_else(|| {
                SqlError::new(codes::INVALID_PARAMETER_VALUE, "gate already used")
            })?;
            gate.opened.store(true, Ordering::SeqCst);
            Ok(Output::Stream(Box::pin(GateStream { rx, dropped: gate.dropped.clone() })))
        })
    }
}

struct Numbers(Signature);

impl PgmlFunction for Numbers {
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn call(&self, _ctx: CallContext, args: Args) -> CallFuture {
        let n = match args["n"] {
            Value::Int(n) => n,
            _ => 0,
        };
        Box::pin(async move {
            let rows = (1..=n).map(|i| vec![Value::Json(Json::from(i))]).collect();
            Ok(Output::Stream(pgmld_sql::cursor::rows_stream(rows)))
        })
    }
}

/// The registry with the test functions.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register(Arc::new(Gated(Signature {
        name: "gated",
        params: vec![ParamSpec::required("name", SqlType::Text)],
        returns: Returns::SetOf(SqlType::Jsonb),
    })));
    r.register(Arc::new(Numbers(Signature {
        name: "numbers",
        params: vec![ParamSpec::required("n", SqlType::Int8)],
        returns: Returns::SetOf(SqlType::Jsonb),
    })));
    r
}

/// pgml's schema and catalog entries in the upstream's `postgres` database, plus entries
/// for the test functions: pgmld checks USAGE and EXECUTE on them before every call.
async fn catalog() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        pgmld_schema::migrate(url).await.expect("migrating the postgres database");
        let client = connect_url(url).await;
        client
            .batch_execute(
                "CREATE OR REPLACE FUNCTION pgml.gated(name text) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT NULL::jsonb WHERE false';
                 CREATE OR REPLACE FUNCTION pgml.numbers(n bigint) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT NULL::jsonb WHERE false';",
            )
            .await
            .expect("catalog entries of the test functions");
    })
    .await;
}

async fn connect_url(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Starts pgmld on an ephemeral port in front of 127.0.0.1:5432.
pub async fn start() -> SocketAddr {
    start_server("prefer", 1, tokio_util::sync::CancellationToken::new()).await.0
}

/// [`start`] with an upstream `sslmode` (the pass-through loop takes plain-TCP sessions
/// only), `pass_through` loop threads (0: off), stopped by `shutdown` (1 s drain), and its
/// metrics.
pub async fn start_server(
    sslmode: &str,
    pass_through: usize,
    shutdown: tokio_util::sync::CancellationToken,
) -> (SocketAddr, Arc<pgmld_metrics::Metrics>) {
    catalog().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = pgmld_metrics::Metrics::new();
    let server = Server::new(ServerOptions {
        upstream: pgmld_upstream::Upstream::from_url(&format!(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode={sslmode}"
        ))
        .expect("upstream URL"),
        migrator: None,
        registry: Arc::new(registry()),
        metrics: metrics.clone(),
        tls: None,
        connect_timeout: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
        max_message: 1 << 26,
        authentication_timeout: Some(Duration::from_secs(60)),
        session_threads: 0,
        session_slice_us: 0,
        pass_through_threads: pass_through,
    });
    tokio::spawn(server.serve(listener, shutdown));
    (addr, metrics)
}

/// A tokio-postgres client to `addr` (pgmld or, with port 5432, the upstream itself).
pub async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    connect_with_handle(addr).await.0
}

/// [`connect`], with the task driving the connection: aborting it closes the socket.
pub async fn connect_with_handle(
    addr: SocketAddr,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let url = format!("host={} port={} user=postgres dbname=postgres", addr.ip(), addr.port());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let handle = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, handle)
}

/// Runs `script` through `psql` reading it from stdin (one statement per query, as
/// typed), returning what it printed: results, tags and errors.
pub fn psql(port: u16, script: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql on PATH");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("script to psql");
    let out = child.wait_with_output().expect("psql output");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The upstream, for comparing answers with Postgres' own.
pub fn upstream() -> SocketAddr {
    "127.0.0.1:5432".parse().unwrap()
}

/// What a simple query answered: each statement's rows (first column, text) and row count
/// from its tag, or the error's SQLSTATE and message.
pub async fn simple(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<(Vec<Option<String>>, u64)>, String> {
    use tokio_postgres::SimpleQueryMessage as M;
    let messages = client.simple_query(sql).await.map_err(|e| code(&e))?;
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for m in messages {
        match m {
            M::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect::<Vec<_>>())
            }
            M::CommandComplete(n) => {
                let flat: Vec<Option<String>> = rows
                    .drain(..)
                    .map(|r: Vec<Option<String>>| r.into_iter().next().flatten())
                    .collect();
                out.push((flat, n));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// SQLSTATE and message of an error.
pub fn code(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => format!("client: {e}"),
    }
}
