//! Wire transparency (issue #20) with a raw-protocol client, so the bytes are checked, not
//! a driver's reading of them: BackendKeyData carries the upstream backend's real pid for
//! protocol 3.0 and 3.2 startups; a CancelRequest needs pgmld's secret as well as the pid;
//! `pg_terminate_backend` ends the session with the upstream's FATAL 57P01, then EOF, as a
//! direct connection to Postgres does. Driver-level checks are in tests/clients.rs.

mod support;

use std::time::{Duration, Instant};
use support::{Pgmld, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL_3_0: u32 = 0x0003_0000;
const PROTOCOL_3_2: u32 = 0x0003_0002;

/// A backend message: type and body.
type Message = (u8, Vec<u8>);

/// A raw session after startup.
struct Raw {
    tcp: TcpStream,
    /// BackendKeyData: pid and secret.
    pid: i32,
    key: Vec<u8>,
    /// Message types seen during startup (a 3.2 startup to a 3.0 server sees 'v').
    startup_types: Vec<u8>,
}

async fn read_message(tcp: &mut TcpStream) -> Option<Message> {
    let ty = tcp.read_u8().await.ok()?;
    let len = tcp.read_u32().await.ok()? as usize;
    let mut body = vec![0; len - 4];
    tcp.read_exact(&mut body).await.ok()?;
    Some((ty, body))
}

impl Raw {
    async fn start(port: u16, db: &str, version: u32) -> Raw {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut body = version.to_be_bytes().to_vec();
        for (k, v) in [("user", "postgres"), ("database", db)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        tcp.write_all(&packet).await.unwrap();
        let (mut pid, mut key, mut startup_types) = (0, vec![], vec![]);
        loop {
            let (ty, body) = read_message(&mut tcp).await.expect("startup answer");
            startup_types.push(ty);
            match ty {
                b'K' => {
                    pid = i32::from_be_bytes(body[..4].try_into().unwrap());
                    key = body[4..].to_vec();
                }
                b'E' => panic!("startup refused: {}", String::from_utf8_lossy(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        Raw { tcp, pid, key, startup_types }
    }

    /// Sends a simple query; answers are read with [`Raw::until_ready`].
    async fn send_query(&mut self, sql: &str) {
        let mut frame = vec![b'Q'];
        frame.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        frame.extend_from_slice(sql.as_bytes());
        frame.push(0);
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// Messages up to and including ReadyForQuery (or until the server closes).
    async fn until_ready(&mut self) -> Vec<Message> {
        let mut seen = vec![];
        while let Some(m) = read_message(&mut self.tcp).await {
            let ready = m.0 == b'Z';
            seen.push(m);
            if ready {
                break;
            }
        }
        seen
    }

    /// The first column of the single row a query returns.
    async fn value(&mut self, sql: &str) -> String {
        self.send_query(sql).await;
        let row = self.until_ready().await.into_iter().find(|m| m.0 == b'D').expect("a row");
        let len = i32::from_be_bytes(row.1[2..6].try_into().unwrap()) as usize;
        String::from_utf8(row.1[6..6 + len].to_vec()).unwrap()
    }
}

/// The SQLSTATE of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> Option<String> {
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&b'C'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
}

async fn send_cancel(port: u16, pid: i32, key: &[u8]) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut packet = ((12 + key.len()) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&80877102u32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(key);
    tcp.write_all(&packet).await.unwrap();
    let _ = tcp.read_u8().await; // the server closes without a word
}

#[tokio::test]
async fn backend_key_data_carries_the_upstream_pid_for_protocol_3_0_and_3_2() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    for version in [PROTOCOL_3_0, PROTOCOL_3_2] {
        let mut through = Raw::start(p.addr.port(), &db.name, version).await;
        let mut direct = Raw::start(5432, &db.name, version).await;
        let pid: i32 = through.value("SELECT pg_backend_pid()").await.parse().unwrap();
        assert_eq!(through.pid, pid, "protocol {version:#x}: BackendKeyData pid");
        // Same startup conversation as Postgres (a 3.0 server answers a 3.2 startup with
        // NegotiateProtocolVersion), and a secret of the length the server chose.
        assert_eq!(through.startup_types, direct.startup_types, "protocol {version:#x}");
        assert_eq!(through.key.len(), direct.key.len(), "protocol {version:#x}");
        let direct_pid: i32 = direct.value("SELECT pg_backend_pid()").await.parse().unwrap();
        assert_eq!(direct.pid, direct_pid);
    }
}

#[tokio::test]
async fn a_cancel_needs_the_secret_not_just_the_pid() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let port = p.addr.port();
    let mut s = Raw::start(port, &db.name, PROTOCOL_3_2).await;
    // The pid is public (pg_stat_activity); a guessed secret must cancel nothing.
    s.send_query("SELECT pg_sleep(1.5)").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut wrong = s.key.clone();
    wrong[0] ^= 0xff;
    send_cancel(port, s.pid, &wrong).await;
    send_cancel(port, s.pid, &[0; 4]).await;
    let answers = s.until_ready().await;
    assert!(answers.iter().all(|m| m.0 != b'E'), "a wrong secret cancelled the query");
    assert!(answers.iter().any(|m| m.0 == b'C'));
    // The right one does, within a second.
    s.send_query("SELECT pg_sleep(30)").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = Instant::now();
    send_cancel(port, s.pid, &s.key.clone()).await;
    let answers = s.until_ready().await;
    let error = answers.iter().find(|m| m.0 == b'E').expect("an error");
    assert_eq!(sqlstate(&error.1).as_deref(), Some("57014"));
    assert!(at.elapsed() < Duration::from_secs(1), "cancel took {:?}", at.elapsed());
    assert_eq!(s.value("SELECT 3").await, "3");
}

/// What a session sees after `pg_terminate_backend` of its pid from another session:
/// the messages up to EOF, with the idle session reading only afterwards.
async fn terminated(port: u16, db: &str, killer: &tokio_postgres::Client) -> Vec<Message> {
    let mut s = Raw::start(port, db, PROTOCOL_3_0).await;
    let row = killer.query_one("SELECT pg_terminate_backend($1)", &[&s.pid]).await.unwrap();
    assert!(row.get::<_, bool>(0), "pg_terminate_backend({}) found no backend", s.pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next statement finds the FATAL already sent, then the end of the connection.
    let _ = s.tcp.write_all(b"Q\0\0\0\x0dSELECT 1\0").await;
    let mut seen = vec![];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), read_message(&mut s.tcp)).await {
            Ok(Some(m)) => seen.push(m),
            Ok(None) => return seen,
            Err(_) => panic!("no EOF after {seen:?}"),
        }
    }
}

#[tokio::test]
async fn a_terminated_backend_ends_the_session_with_57p01_as_postgres_does() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let killer = p.connect(&db.name).await;
    let through = terminated(p.addr.port(), &db.name, &killer).await;
    let direct = terminated(5432, &db.name, &killer).await;
    let shape =
        |ms: &[Message]| ms.iter().map(|(ty, body)| (*ty, sqlstate(body))).collect::<Vec<_>>();
    assert_eq!(shape(&through), vec![(b'E', Some("57P01".to_string()))], "{through:?}");
    assert_eq!(through, direct, "same bytes as from Postgres");
}

/// What a session sees for `frames` (sent at once) up to the `readies`-th ReadyForQuery,
/// or whatever came within 2 s of the last message.
async fn answers(port: u16, db: &str, frames: &[u8], readies: usize) -> Vec<Message> {
    let mut s = Raw::start(port, db, PROTOCOL_3_0).await;
    s.tcp.write_all(frames).await.unwrap();
    let mut seen = vec![];
    while seen.iter().filter(|m: &&Message| m.0 == b'Z').count() < readies {
        match tokio::time::timeout(Duration::from_secs(2), read_message(&mut s.tcp)).await {
            Ok(Some(m)) => seen.push(m),
            _ => break,
        }
    }
    seen
}

fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    f.extend_from_slice(body);
    f
}

#[tokio::test]
async fn after_an_extended_protocol_error_everything_up_to_sync_is_discarded_as_postgres_does() {
    // Postgres skips every message up to Sync after an error in extended mode: a simple
    // Query too, whether or not it calls pgml, and a FunctionCall. pgmld once expected
    // an answer to the Query, gave it the Sync's ReadyForQuery and then waited for ever:
    // the session outlived its client (found by the random-frames test, seed
    // 9055590582968326367).
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let function_call = [&1u32.to_be_bytes()[..], &[0, 0, 0, 0, 0, 0]].concat();
    let frames = [
        frame(b'P', b"\0SELEC broken\0\0\0"),
        frame(b'Q', b"SELECT 1\0"),
        frame(b'Q', b"SELECT pgml.version()\0"),
        frame(b'F', &function_call),
        frame(b'S', b""),
        frame(b'Q', b"SELECT 2\0"),
    ]
    .concat();
    let direct = answers(5432, &db.name, &frames, 2).await;
    let through = answers(p.addr.port(), &db.name, &frames, 2).await;
    let types = |ms: &[Message]| ms.iter().map(|m| m.0 as char).collect::<String>();
    assert_eq!(types(&direct), "EZTDCZ", "{direct:?}");
    assert_eq!(through, direct, "same answers as from Postgres");
    // And the session ends with its client.
    drop(through);
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.metric("pgmld_sessions_active") != 0.0 {
        assert!(Instant::now() < deadline, "a session outlived its client");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
