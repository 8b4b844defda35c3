//! Real client libraries through pgmld: psycopg 3 (Python) and node-postgres run their CRUD
//! scripts (`tests/clients/`) against a fresh database behind pgmld.
//!
//! Needs `bash scripts/setup.sh deps` (psycopg in `.deps/python`, `pg` in
//! `tests/clients/node/node_modules`).

mod support;

use std::process::Command;
use std::time::Duration;
use support::process::{assert_printed_ok, python, repo, require, run};
use support::{Pgmld, TestDb};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn psycopg_crud_through_pgmld() {
    let root = repo();
    require(&root.join(".deps/python/psycopg"), "psycopg");
    let p = Pgmld::start();
    let db = TestDb::create();
    let script = root.join("tests/clients/psycopg_crud.py").display().to_string();
    let out = run(python(&[&script, &p.url(&db.name)]), CLIENT_TIMEOUT);
    assert_printed_ok("psycopg_crud.py", &out, "psycopg crud ok", &p.log_text());
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
    let out = run(cmd, CLIENT_TIMEOUT);
    assert_printed_ok("node crud.js", &out, "node-postgres crud ok", &p.log_text());
}

/// Issue #20 as psycopg, psycopg_pool and asyncpg see it: backend pid, NOTIFY pid,
/// pg_terminate_backend -> 57P01 and a pool replacing the connection, cancel.
#[test]
fn python_drivers_see_the_real_backend_through_pgmld() {
    let root = repo();
    for (dir, what) in
        [("psycopg", "psycopg"), ("psycopg_pool", "psycopg_pool"), ("asyncpg", "asyncpg")]
    {
        require(&root.join(".deps/python").join(dir), what);
    }
    let p = Pgmld::start();
    let db = TestDb::create();
    let script = root.join("tests/clients/wire_transparency.py").display().to_string();
    let out = run(python(&[&script, &p.url(&db.name)]), CLIENT_TIMEOUT);
    assert_printed_ok("wire_transparency.py", &out, "wire transparency ok", &p.log_text());
}

/// Issue #20 as node-postgres sees it: processID, NOTIFY pid, 57P01 error events on the
/// client and the pool, and the pool's next query on a new backend.
#[test]
fn node_postgres_sees_the_real_backend_through_pgmld() {
    let root = repo();
    let node_dir = root.join("tests/clients/node");
    require(&node_dir.join("node_modules/pg"), "node-postgres (pg)");
    let p = Pgmld::start();
    let db = TestDb::create();
    let mut cmd = Command::new("node");
    cmd.arg(node_dir.join("wire.js"))
        .arg(p.url(&db.name))
        .current_dir(&root)
        .env_remove("PGPASSWORD");
    let out = run(cmd, CLIENT_TIMEOUT);
    assert_printed_ok("node wire.js", &out, "node-postgres wire ok", &p.log_text());
}
