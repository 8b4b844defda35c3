//! What a hostile or broken client can do to pgmld over the wire: declare huge messages
//! and send little (under `ulimit -v`), send truncated or malformed extended-protocol
//! messages, hold a socket open without finishing startup, exhaust file descriptors
//! (under `ulimit -n`), and send hundreds of random or mutated frames. Each test checks
//! that only that connection is affected and that the session gauge returns to 0.

mod support;

use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{temp_dir, Pgmld, TestDb, UPSTREAM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// pgmld started through `bash -c '<limits>; exec pgmld ...'`, so `ulimit` applies to it.
fn start_limited(limits: &str, upstream: &str, env: &[(&str, &str)]) -> Pgmld {
    let data_dir = temp_dir("pgmld-wire");
    let log = data_dir.join("pgmld.log");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{limits}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_pgmld"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("RUST_LOG", "info,pgmld_proxy=debug")
        .env("PGMLD_RESUME_JOBS", "false")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn pgmld");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut addr, mut metrics) = (None, None);
    while addr.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                addr = addr.or_else(|| {
                    line.strip_prefix("pgmld listening on ").and_then(|a| a.parse().ok())
                });
                metrics = metrics.or_else(|| {
                    line.strip_prefix("pgmld metrics on ").and_then(|a| a.parse().ok())
                });
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
    Pgmld { child, addr: addr.expect("address"), metrics, dashboard: None, data_dir, log }
}

/// A frontend message: type byte, length, body.
fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.bytes().chain([0])).collect()
}

/// Parse of `sql` as statement `name`, no declared types.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstrs(&[name, sql]);
    body.extend_from_slice(&[0, 0]);
    frame(b'P', &body)
}

/// Bind of `statement` to the unnamed portal with text parameters.
fn bind(statement: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = cstrs(&["", statement]);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        match p {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    body.extend_from_slice(&[0, 0]);
    frame(b'B', &body)
}

fn execute() -> Vec<u8> {
    frame(b'E', &[0, 0, 0, 0, 0])
}

fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

/// A raw client connection speaking the protocol by hand.
struct Raw(TcpStream);

impl Raw {
    /// A session started (trust auth) and ready for queries.
    async fn start(addr: SocketAddr, db: &str) -> Raw {
        let mut s = TcpStream::connect(addr).await.expect("connect to pgmld");
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend(cstrs(&["user", "postgres", "database", db, ""]));
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend(body);
        s.write_all(&packet).await.expect("startup packet");
        let mut raw = Raw(s);
        loop {
            match raw.read(Duration::from_secs(10)).await {
                Some((b'Z', _)) => return raw,
                Some((b'E', body)) => panic!("startup refused: {:?}", fields(&body)),
                Some(_) => {}
                None => panic!("connection closed during startup"),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.0.write_all(bytes).await;
    }

    /// The next backend message; `None` on close, reset or `wait` without one.
    async fn read(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(wait, async {
            let mut head = [0u8; 5];
            self.0.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; len.checked_sub(4)?];
            self.0.read_exact(&mut body).await.ok()?;
            Some((head[0], body))
        })
        .await
        .ok()
        .flatten()
    }

    /// Fields of the first ErrorResponse before the connection closes or falls silent.
    async fn first_error(&mut self) -> Option<HashMap<u8, String>> {
        loop {
            match self.read(Duration::from_secs(10)).await? {
                (b'E', body) => return Some(fields(&body)),
                _ => continue,
            }
        }
    }

    /// Whether the server closed the connection within `wait`, having sent nothing.
    async fn closed_silently(&mut self, wait: Duration) -> bool {
        let mut buf = [0u8; 16];
        matches!(tokio::time::timeout(wait, self.0.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// ErrorResponse fields by their code byte (`C`, `S`, `M`).
fn fields(body: &[u8]) -> HashMap<u8, String> {
    body.split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

fn alive(p: &mut Pgmld) -> bool {
    p.child.try_wait().expect("wait for pgmld").is_none()
}

/// Waits for `pgmld_sessions_active` to drop to 0.
async fn sessions_drain(p: &Pgmld) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.metric("pgmld_sessions_active") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "sessions_active stuck at {}; log:\n{}",
            p.metric("pgmld_sessions_active"),
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn select_1(p: &Pgmld, db: &str) {
    let c = p.connect(db).await;
    assert_eq!(c.query_one("SELECT 1", &[]).await.expect("SELECT 1").get::<_, i32>(0), 1);
}

#[tokio::test]
async fn declared_huge_messages_reserve_nothing() {
    let db = TestDb::create();
    // 20 declared GiB would not fit in 8 GiB of address space if a declaration reserved it.
    let env =
        [("MALLOC_ARENA_MAX", "2"), ("PGMLD_SESSION_THREADS", "2"), ("PGMLD_TORCH_THREADS", "1")];
    let mut p = start_limited("ulimit -v 8388608", UPSTREAM, &env);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut r = Raw::start(p.addr, &db.name).await;
        let mut f = vec![b'Q'];
        f.extend_from_slice(&(1u32 << 30).to_be_bytes());
        f.extend_from_slice(b"SELECT ");
        r.send(&f).await;
        held.push(r);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(&mut p), "pgmld died; log:\n{}", p.log_text());
    select_1(&p, &db.name).await;
    assert!(p.peak_rss_kib() < 1 << 20, "peak RSS {} KiB", p.peak_rss_kib());
    // One byte over max_message_bytes: FATAL 08P01 naming the length and the limit.
    let mut r = Raw::start(p.addr, &db.name).await;
    let mut f = vec![b'Q'];
    f.extend_from_slice(&((1u32 << 30) + 1).to_be_bytes());
    f.extend_from_slice(b"SELECT 1");
    r.send(&f).await;
    let e = r.first_error().await.expect("an ErrorResponse");
    assert_eq!((e[&b'S'].as_str(), e[&b'C'].as_str()), ("FATAL", "08P01"), "{e:?}");
    assert!(e[&b'M'].contains("1073741825") && e[&b'M'].contains("1073741824"), "{e:?}");
    assert!(r.closed_silently(Duration::from_secs(5)).await, "connection left open");
    drop(held);
    sessions_drain(&p).await;
    assert!(alive(&mut p));
}

#[tokio::test]
async fn malformed_messages_get_08p01_and_sessions_never_leak() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let local = parse("s1", "SELECT pgml.version() || $1::text");
    let with_local = |rest: &[u8]| [&local[..], rest].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Parse with pgml, half a type count", frame(b'P', b"s\0SELECT pgml.version()\0\0")),
        ("Parse with pgml, unterminated text", frame(b'P', b"s\0SELECT pgml.version()")),
        ("Parse without pgml, truncated", [frame(b'P', b"s\0SELECT 1\0\0"), sync()].concat()),
        (
            "Bind, value longer than the frame",
            with_local(&frame(b'B', b"\0s1\0\0\0\0\x01\0\0\x03\xe8ab\0\0")),
        ),
        ("Bind, 65535 format codes", with_local(&frame(b'B', b"\0s1\0\xff\xff"))),
        (
            "Execute, half a row count",
            with_local(&[bind("s1", &[Some(b"x")]), frame(b'E', b"\0\0\0")].concat()),
        ),
        ("Close, bad target", with_local(&frame(b'C', b"Xs1\0"))),
        ("Close, no name", with_local(&frame(b'C', b"S"))),
        ("Describe, empty", [frame(b'D', b""), sync()].concat()),
        ("Query with pgml, no NUL", frame(b'Q', b"SELECT pgml.version()")),
        ("Query with pgml, bytes after NUL", frame(b'Q', b"SELECT pgml.version()\0junk")),
        ("Query without pgml, no NUL", frame(b'Q', b"SELECT 1")),
        ("unknown message type", frame(b'z', b"pgml")),
        ("length below 4", b"Q\0\0\0\x02".to_vec()),
    ];
    let mut tasks = Vec::new();
    for round in 0..2 {
        for (what, bytes) in cases.clone() {
            let (addr, db) = (p.addr, db.name.clone());
            tasks.push(tokio::spawn(async move {
                let mut r = Raw::start(addr, &db).await;
                r.send(&bytes).await;
                let e = r
                    .first_error()
                    .await
                    .unwrap_or_else(|| panic!("{what} (round {round}): no ErrorResponse"));
                assert_eq!(e.get(&b'C').map(String::as_str), Some("08P01"), "{what}: {e:?}");
            }));
        }
    }
    for t in tasks {
        t.await.expect("case");
    }
    select_1(&p, &db.name).await;
    sessions_drain(&p).await;
    assert!(!p.log_text().contains("panicked"), "{}", p.log_text());
}

/// A TCP relay to the machine's Postgres that, once `stall` is set, accepts connections
/// and never answers: an upstream stuck in authentication.
fn stalling_upstream(stall: Arc<AtomicBool>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let port = listener.local_addr().expect("relay address").port();
    std::thread::spawn(move || {
        let mut stuck = Vec::new();
        for client in listener.incoming().map_while(Result::ok) {
            if stall.load(Ordering::SeqCst) {
                stuck.push(client);
                continue;
            }
            let Ok(server) = std::net::TcpStream::connect("127.0.0.1:5432") else { continue };
            let (mut c2, mut s2) =
                (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            let (mut c, mut s) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut s);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
            });
        }
    });
    port
}

#[tokio::test]
async fn authentication_timeout_closes_connections_that_do_not_start() {
    let db = TestDb::create();
    let stall = Arc::new(AtomicBool::new(false));
    let port = stalling_upstream(stall.clone());
    let upstream = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let p = start_limited("true", &upstream, &[("PGMLD_AUTHENTICATION_TIMEOUT", "1")]);
    // An authenticated session is not bound by the timeout.
    let c = p.connect(&db.name).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        c.query_one("SELECT 2", &[]).await.expect("session past the timeout").get::<_, i32>(0),
        2
    );
    let timed = |mut s: Raw| async move {
        let started = Instant::now();
        assert!(s.closed_silently(Duration::from_secs(5)).await, "not closed in time");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(700), "closed after {took:?}, before the timeout");
    };
    // Nothing sent at all.
    timed(Raw(TcpStream::connect(p.addr).await.unwrap())).await;
    // Half a startup packet.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
    timed(Raw(s)).await;
    // SSLRequest answered, then nothing.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    timed(Raw(s)).await;
    // A whole startup packet, but the upstream never finishes the authentication.
    stall.store(true, Ordering::SeqCst);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut body = 196608u32.to_be_bytes().to_vec();
    body.extend(cstrs(&["user", "postgres", "database", &db.name, ""]));
    s.write_all(&[&((body.len() + 4) as u32).to_be_bytes()[..], &body].concat()).await.unwrap();
    timed(Raw(s)).await;
    // pgmld counts and logs a timeout just after the socket is gone (dropping the
    // connection closes it): on a loaded machine the client can see the close first.
    let counted = Instant::now();
    let logged =
        |p: &Pgmld| p.log_text().matches("canceling authentication due to timeout").count();
    while (p.metric("pgmld_errors_total{kind=\"auth_timeout\"}") < 4.0 || logged(&p) < 4)
        && counted.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.metric("pgmld_errors_total{kind=\"auth_timeout\"}"), 4.0, "{}", p.metrics_text());
    let log = p.log_text();
    assert_eq!(log.matches("canceling authentication due to timeout").count(), 4, "{log}");
    assert_eq!(c.query_one("SELECT 3", &[]).await.expect("still served").get::<_, i32>(0), 3);
    drop(c);
    sessions_drain(&p).await;
}

#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let db = TestDb::create();
    let mut p = start_limited(
        "ulimit -n 128",
        UPSTREAM,
        &[("PGMLD_SESSION_THREADS", "1"), ("PGMLD_TORCH_THREADS", "1")],
    );
    let failed = |p: &Pgmld| p.log_text().lines().filter(|l| l.contains("accept failed")).count();
    let mut held = Vec::new();
    while failed(&p) == 0 {
        assert!(
            held.len() < 400,
            "accept never failed with 128 descriptors; log:\n{}",
            p.log_text()
        );
        for _ in 0..10 {
            held.push(TcpStream::connect(p.addr).await.expect("the kernel queues connections"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More clients wait in the listen queue while pgmld backs off (100 ms doubling to 1 s).
    for _ in 0..20 {
        held.push(TcpStream::connect(p.addr).await.expect("queued"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(alive(&mut p), "pgmld died; log:\n{}", p.log_text());
    let log = p.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("accept failed") || l.contains("Too many open files"))
        .count();
    assert!(lines <= 2, "{lines} log lines about accept failures:\n{log}");
    drop(held);
    let connected = tokio::time::timeout(Duration::from_secs(20), select_1(&p, &db.name)).await;
    assert!(connected.is_ok(), "no recovery; log:\n{}", p.log_text());
    assert!(p.log_text().contains("accepting connections again"), "{}", p.log_text());
    sessions_drain(&p).await;
}

/// Statements the random frames start from: harmless, some intercepted.
const SEEDS: &[&str] = &[
    "SELECT pgml.version()",
    "SELECT pgml.version() || $1::text",
    "SELECT 1",
    "SELECT pgml.nope(1)",
    "BEGIN",
    "COMMIT",
    "DECLARE c CURSOR FOR SELECT pgml.version()",
    "FETCH 1 FROM c",
    "SELECT $1::int + 1",
];

/// A random frame: a mutated statement as Query or Parse/Bind/Execute/Sync, random
/// bytes, or a valid frame with one byte changed, cut short, or a new length word.
fn random_frame(rng: &mut impl Rng) -> Vec<u8> {
    let mut sql: Vec<u8> = SEEDS[rng.random_range(0..SEEDS.len())].as_bytes().to_vec();
    for _ in 0..rng.random_range(0..3) {
        let i = rng.random_range(0..=sql.len());
        sql.insert(i, b"'\"$();:,pgml \0"[rng.random_range(0..14)]);
    }
    let sql = String::from_utf8_lossy(&sql).into_owned();
    let valid = match rng.random_range(0..3) {
        0 => frame(b'Q', &cstrs(&[&sql])),
        1 => [parse("", &sql), bind("", &[Some(b"1")]), execute(), sync()].concat(),
        _ => [parse("r", &sql), frame(b'D', b"Sr\0"), frame(b'C', b"Sr\0"), sync()].concat(),
    };
    match rng.random_range(0..5) {
        0 | 1 => valid,
        2 => (0..rng.random_range(0..48)).map(|_| rng.random()).collect(),
        3 => {
            let mut f = valid;
            let i = rng.random_range(0..f.len());
            f[i] ^= rng.random_range(1..=255u8);
            f
        }
        _ => {
            let mut f = valid;
            if rng.random_bool(0.5) {
                f.truncate(rng.random_range(0..f.len()));
            } else if f.len() >= 5 {
                f[1..5].copy_from_slice(&rng.random_range(0..4096u32).to_be_bytes());
            }
            f
        }
    }
}

#[tokio::test]
async fn hundreds_of_random_frames_leave_the_daemon_serving() {
    let mut p = Pgmld::start_plain();
    let db = TestDb::create();
    // PGMLD_FUZZ_SEED replays a failing run's seed (printed below and in the failure).
    let seed: u64 = match std::env::var("PGMLD_FUZZ_SEED") {
        Ok(s) => s.parse().expect("PGMLD_FUZZ_SEED is a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("random frames seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sent = 0;
    for _ in 0..4 {
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let frames: Vec<Vec<u8>> = (0..10).map(|_| random_frame(&mut rng)).collect();
            sent += frames.len();
            let (addr, db) = (p.addr, db.name.clone());
            tasks.push(tokio::spawn(async move {
                let mut r = Raw::start(addr, &db).await;
                for f in frames {
                    r.send(&f).await;
                }
                r.send(&frame(b'Q', b"SELECT 1\0")).await;
                // Read whatever comes until the session closes or falls silent.
                while r.read(Duration::from_millis(1500)).await.is_some() {}
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
    }
    assert!(sent >= 400);
    assert!(alive(&mut p), "pgmld died (seed {seed}); log:\n{}", p.log_text());
    select_1(&p, &db.name).await;
    eprintln!("random frames seed {seed}: waiting for sessions to end");
    sessions_drain(&p).await;
    assert!(!p.log_text().contains("panicked"), "seed {seed}:\n{}", p.log_text());
}
