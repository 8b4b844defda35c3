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
