//! Real client libraries through pgmld: psycopg 3 (Python) and node-postgres run their CRUD
//! scripts (`tests/clients/`) against a fresh database behind pgmld.
//!
//! Needs `bash scripts/setup.sh deps` (psycopg in `.deps/python`, `pg` in
//! `tests/clients/node/node_modules`).

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Pgmld, TestDb};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` to completion (killed after [`CLIENT_TIMEOUT`]); returns (exit ok, stdout, stderr).
fn run(mut cmd: Command) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, mut stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    if status.is_none() {
        stderr.push_str(&format!("\n[killed after {CLIENT_TIMEOUT:?}]"));
    }
    (status.is_some_and(|s| s.success()), stdout, stderr)
}

/// Runs a client script and checks that it exits 0 and prints `ok_line`.
fn check_client(p: &Pgmld, what: &str, cmd: Command, ok_line: &str) {
    let (ok, stdout, stderr) = run(cmd);
    let has_ok = stdout.lines().any(|l| l.trim() == ok_line);
    assert!(
        ok && has_ok,
        "{what} failed (exit ok: {ok}, {ok_line:?} printed: {has_ok})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- pgmld log ---\n{}",
        p.log_text()
    );
}

fn require(path: &Path, what: &str) {
    assert!(path.exists(), "{what} missing at {}; run `bash scripts/setup.sh deps`", path.display());
}

#[test]
fn psycopg_crud_through_pgmld() {
    let root = repo();
    let py_deps = root.join(".deps/python");
    require(&py_deps.join("psycopg"), "psycopg");
    let p = Pgmld::start();
    let db = TestDb::create();
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("tests/clients/psycopg_crud.py"))
        .arg(p.url(&db.name))
        .current_dir(&root)
        .env("PYTHONPATH", &py_deps)
        .env_remove("CRUD_SKIP_PGML")
        .env_remove("PGPASSWORD")
        .env("PYTHONUNBUFFERED", "1");
    check_client(&p, "psycopg_crud.py", cmd, "psycopg crud ok");
}

#[test]
fn node_postgres_crud_through_pgmld() {
    let root = repo();
    let node_dir = root.join("tests/clients/node");
    require(&node_dir.join("node_modules/pg"), "node-postgres (pg)");
    let p = Pgmld::start();
    let db = TestDb::create();
    let mut cmd = Command::new("node");
    cmd.arg(node_dir.join("crud.js"))
        .arg(p.url(&db.name))
        .current_dir(&root)
        .env_remove("CRUD_SKIP_PGML")
        .env_remove("PGPASSWORD");
    check_client(&p, "node crud.js", cmd, "node-postgres crud ok");
}
