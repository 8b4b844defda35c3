//! Real client libraries through pgmld: psycopg 3 (Python) and node-postgres run their CRUD
//! scripts (`tests/clients/`) against a fresh database behind pgmld, and psycopg,
//! psycopg_pool, asyncpg and node-postgres check wire transparency (issue #20).
//!
//! Needs `bash scripts/setup.sh deps` (psycopg, psycopg_pool and asyncpg in `.deps/python`,
//! `pg` in `tests/clients/node/node_modules`).

mod support;

use std::process::Command;
use std::time::Duration;
use support::process::{assert_printed_ok, python, repo, require, run};
use support::{Pgmld, TestDb};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `tests/clients/<script>` (Python) against a fresh database behind a fresh pgmld,
/// once the `modules` it imports are in `.deps/python`; it must print `ok_line`.
fn python_client(script: &str, modules: &[&str], ok_line: &str) {
    let root = repo();
    for module in modules {
        require(&root.join(".deps/python").join(module), module);
    }
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let path = root.join("tests/clients").join(script).display().to_string();
    let out = run(python(&[&path, &p.url(&db.name)]), CLIENT_TIMEOUT);
    assert_printed_ok(script, &out, ok_line, &p.log_text());
}

/// Runs `tests/clients/node/<script>` the same way.
fn node_client(script: &str, ok_line: &str) {
    let root = repo();
    let node_dir = root.join("tests/clients/node");
    require(&node_dir.join("node_modules/pg"), "node-postgres (pg)");
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let mut cmd = Command::new("node");
    cmd.arg(node_dir.join(script))
        .arg(p.url(&db.name))
        .current_dir(&root)
        .env_remove("CRUD_SKIP_PGML")
        .env_remove("PGPASSWORD");
    let out = run(cmd, CLIENT_TIMEOUT);
    assert_printed_ok(&format!("node {script}"), &out, ok_line, &p.log_text());
}

#[test]
fn psycopg_crud_through_pgmld() {
    python_client("psycopg_crud.py", &["psycopg"], "psycopg crud ok");
}

#[test]
fn node_postgres_crud_through_pgmld() {
    node_client("crud.js", "node-postgres crud ok");
}

/// Issue #20 as psycopg, psycopg_pool and asyncpg see it: backend pid, NOTIFY pid,
/// pg_terminate_backend -> 57P01 and a pool replacing the connection, cancel.
#[test]
fn python_drivers_see_the_real_backend_through_pgmld() {
    let modules = ["psycopg", "psycopg_pool", "asyncpg"];
    python_client("wire_transparency.py", &modules, "wire transparency ok");
}

/// Issue #20 as node-postgres sees it: processID, NOTIFY pid, 57P01 error events on the
/// client and the pool, and the pool's next query on a new backend.
#[test]
fn node_postgres_sees_the_real_backend_through_pgmld() {
    node_client("wire.js", "node-postgres wire ok");
}
