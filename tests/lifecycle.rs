//! The daemon's life: configuration layering, metrics, graceful shutdown on SIGTERM, and
//! the embedded default (a private cluster when no Postgres answers).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{temp_dir, Pgmld, Start, TestDb};

fn pgmld_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgmld"))
}

#[test]
fn config_layers_file_then_env_then_flags() {
    let dir = temp_dir("pgmld-cfg");
    let file = dir.join("pgmld.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7001\"\nshutdown_timeout_secs = 3\nlog_level = \"debug\"\n",
    )
    .unwrap();
    let out = pgmld_bin()
        .args(["--config", file.to_str().unwrap(), "--print-config", "--listen", "127.0.0.1:7003"])
        .env("PGMLD_LISTEN", "127.0.0.1:7002")
        .env("PGMLD_SHUTDOWN_TIMEOUT_SECS", "4")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = \"127.0.0.1:7003\""), "{text}");
    assert!(text.contains("shutdown_timeout_secs = 4"), "{text}");
    assert!(text.contains("log_level = \"debug\""), "{text}");
    // A bad value names its variable; an unknown file key names the key.
    let out =
        pgmld_bin().arg("--print-config").env("PGMLD_EMBEDDED_PORT", "lots").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PGMLD_EMBEDDED_PORT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, "listne = \"x\"\n").unwrap();
    let out =
        pgmld_bin().args(["--config", file.to_str().unwrap(), "--print-config"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listne"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_count_sessions_statements_and_bytes() {
    let p = Pgmld::start();
    let db = TestDb::create();
    {
        let c = p.connect(&db.name).await;
        c.batch_execute("SELECT 1; SELECT 2").await.unwrap();
        c.query("SELECT $1::int", &[&1i32]).await.unwrap();
        c.query("SELECT pgml.version()", &[]).await.unwrap();
        let _ = c.batch_execute("SELECT pgml.nope()").await;
        assert_eq!(p.metric("pgmld_sessions_active"), 1.0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.metric("pgmld_sessions_total"), 1.0);
    assert_eq!(p.metric("pgmld_sessions_active"), 0.0);
    assert!(p.metric("pgmld_statements_proxied_total") >= 3.0);
    assert_eq!(p.metric("pgmld_statements_intercepted_total{function=\"version\"}"), 1.0);
    assert_eq!(p.metric("pgmld_errors_total{kind=\"pgml\"}"), 1.0);
    assert!(p.metric("pgmld_bytes_to_upstream_total") > 50.0);
    assert!(p.metric("pgmld_bytes_to_client_total") > 50.0);
}

#[tokio::test]
async fn sigterm_drains_open_sessions_then_exits() {
    let dir = temp_dir("pgmld-shutdown");
    let file = dir.join("pgmld.toml");
    std::fs::write(&file, "shutdown_timeout_secs = 2\n").unwrap();
    let mut p = Pgmld::start_with(Start {
        extra_args: vec!["--config".into(), file.to_str().unwrap().into()],
        ..Start::default()
    });
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    p.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new sessions...
    assert!(tokio::net::TcpStream::connect(p.addr).await.is_err(), "listener should be closed");
    // ...but the open one keeps working during the drain.
    assert_eq!(c.query_one("SELECT 11", &[]).await.unwrap().get::<_, i32>(0), 11);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pgmld did not exit after the drain timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        c.query_one("SELECT 1", &[]).await.is_err(),
        "session should be closed after the drain timeout"
    );
    assert!(p.log_text().contains("shutdown timeout reached"), "{}", p.log_text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_without_sessions_exits_at_once() {
    let mut p = Pgmld::start();
    let db = TestDb::create();
    {
        let c = p.connect(&db.name).await;
        c.batch_execute("SELECT 1").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("TERM");
    let started = Instant::now();
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            assert!(s.success());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "pgmld should exit promptly with no sessions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With no upstream configured and nothing on 127.0.0.1:5432, pgmld starts a private
/// cluster from the system's binaries. Run in a fresh network namespace, where nothing
/// listens, so the machine's Postgres stays out of it.
#[test]
fn embedded_cluster_when_no_postgres_answers() {
    let dir = temp_dir("pgmld-embedded");
    let script = format!(
        r#"set -e
ip link set lo up
run() {{
  "{bin}" --listen 127.0.0.1:0 --metrics-listen '' --data-dir "{dir}/data" > "{dir}/out" 2> "{dir}/log" &
  pid=$!
  for i in $(seq 1 600); do grep -q 'pgmld listening on' "{dir}/out" 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/.*pgmld listening on 127.0.0.1:\([0-9]*\).*/\1/p' "{dir}/out")
  [ -n "$port" ] || {{ cat "{dir}/log"; exit 1; }}
  psql -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -At -c "$1"
  kill -TERM $pid; wait $pid
}}
run "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42); SELECT pgml.version();"
run "SELECT x FROM kept; SELECT count(*) FROM pgml.projects;"
"#,
        bin = env!("CARGO_BIN_EXE_pgmld"),
        dir = dir.display()
    );
    let out =
        Command::new("unshare").args(["-n", "bash", "-c", &script]).output().expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}\nlog: {log}");
    let lines: Vec<&str> =
        stdout.lines().filter(|l| !l.starts_with("CREATE") && !l.starts_with("INSERT")).collect();
    assert!(lines[0].starts_with("pgmld "), "{stdout}");
    assert_eq!(&lines[1..], ["42", "0"], "data must survive a restart: {stdout}");
    assert!(log.contains("starting a private cluster"), "{log}");
    assert!(dir.join("data/postgres/PG_VERSION").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
