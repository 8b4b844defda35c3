//! PostgresML set-up scripts through pgmld: `CREATE EXTENSION [IF NOT EXISTS] pgml` is
//! answered by pgmld (the upstream has no such extension), in the order and transaction
//! state Postgres would give, and a pgml schema dropped by a user is created again by the
//! next pgml call or CREATE EXTENSION, without a restart.

mod support;

use support::models::connect_with_notices;
use support::{psql_script, sqlstate, Pgmld, TestDb};

/// The SQLSTATE and message of a simple-protocol statement that must fail; the session
/// must answer afterwards.
async fn simple_err(c: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let e = c.simple_query(sql).await.err().unwrap_or_else(|| panic!("{sql} succeeded"));
    let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    c.simple_query("SELECT 1").await.expect("session usable after the error");
    (sqlstate(&e), message)
}

/// The command tags of a simple query's results, in order.
async fn tags(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn create_extension_pgml_is_answered_and_a_dropped_schema_comes_back() {
    let p = Pgmld::start();
    let db = TestDb::create();
    let (c, notices) = connect_with_notices(&p.url(&db.name)).await;

    // Directly on Postgres the extension does not exist: pgmld answers instead.
    tags(&c, "CREATE EXTENSION IF NOT EXISTS pgml").await;
    tags(&c, "CREATE EXTENSION pgml").await;
    let seen = notices.lock().unwrap().clone();
    assert!(
        seen.iter().any(|n| n == "NOTICE: extension \"pgml\" already exists, skipping"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|n| n.contains("served by pgmld")), "{seen:?}");

    // In a script with other statements, in order, in one implicit transaction.
    let msgs = c
        .simple_query("CREATE EXTENSION IF NOT EXISTS pgml; SELECT pgml.version() AS v")
        .await
        .expect("script");
    let version = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get("v").map(str::to_string),
        _ => None,
    });
    assert!(version.is_some_and(|v| v.starts_with("pgmld")), "{msgs:?}");

    // Options pgmld cannot honour, and an aborted transaction, fail as Postgres would.
    let (code, msg) = simple_err(&c, "CREATE EXTENSION pgml SCHEMA public").await;
    assert_eq!(code, "0A000", "{msg}");
    assert!(msg.contains("schema public"), "{msg}");
    c.simple_query("BEGIN").await.expect("begin");
    let e = c.simple_query("SELECT 1/0").await.expect_err("division by zero");
    assert_eq!(sqlstate(&e), "22012");
    let e = c.simple_query("CREATE EXTENSION IF NOT EXISTS pgml").await.expect_err("aborted");
    assert_eq!(sqlstate(&e), "25P02");
    c.simple_query("ROLLBACK").await.expect("rollback");
    // Other extensions are the upstream's.
    let (code, _) = simple_err(&c, "CREATE EXTENSION pgml_no_such_extension").await;
    assert!(code == "0A000" || code == "58P01", "{code}");

    // DROP SCHEMA pgml CASCADE, then the next pgml call creates it again.
    c.simple_query("DROP SCHEMA pgml CASCADE").await.expect("drop schema");
    let v: String = c.query_one("SELECT pgml.version()", &[]).await.expect("version").get(0);
    assert!(v.starts_with("pgmld"), "{v}");
    let n: i64 =
        c.query_one("SELECT count(*) FROM pgml.projects", &[]).await.expect("table").get(0);
    assert_eq!(n, 0);
    assert!(
        notices.lock().unwrap().iter().any(|n| n.contains("pgmld created it again")),
        "{:?}",
        notices.lock().unwrap()
    );

    // And again, this time through CREATE EXTENSION, as a PostgresML set-up script does.
    c.simple_query("DROP SCHEMA pgml CASCADE").await.expect("drop schema");
    tags(&c, "CREATE EXTENSION IF NOT EXISTS pgml").await;
    let n: i64 = c.query_one("SELECT count(*) FROM pgml.models", &[]).await.expect("table").get(0);
    assert_eq!(n, 0);
    assert!(
        notices.lock().unwrap().iter().any(|n| n.contains("pgmld created the pgml schema")),
        "{:?}",
        notices.lock().unwrap()
    );

    // psql running a set-up script with ON_ERROR_STOP, as the guide's users do.
    let (ok, out, err) = psql_script(
        &p,
        &db.name,
        "CREATE EXTENSION IF NOT EXISTS pgml;\nSELECT pgml.version();\n",
        &["-v", "ON_ERROR_STOP=1", "-qAt"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("pgmld"), "{out}");
}
