//! Migration runner tests against the real test server (see `testdb`).

use super::*;
use crate::testdb::TestDb;

/// The versions of every embedded migration, in order.
fn every_version() -> Vec<u32> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

/// The tables of migration 1 and, per table, a few columns that must be there.
const EXPECTED: &[(&str, &[&str])] = &[
    ("projects", &["id", "name", "task", "created_at", "updated_at"]),
    (
        "models",
        &[
            "id",
            "project_id",
            "parent_id",
            "snapshot_id",
            "algorithm",
            "runtime",
            "hyperparams",
            "status",
            "error",
            "metrics",
            "search_results",
            "created_at",
            "updated_at",
        ],
    ),
    ("deployments", &["id", "project_id", "model_id", "strategy", "created_at"]),
    (
        "snapshots",
        &[
            "id",
            "relation_name",
            "y_column_name",
            "test_size",
            "test_sampling",
            "status",
            "columns",
            "analysis",
            "created_at",
            "updated_at",
            "materialized",
        ],
    ),
    ("files", &["id", "model_id", "path", "part", "data", "created_at", "updated_at"]),
    ("logs", &["id", "model_id", "project_id", "created_at", "logs"]),
    (
        "jobs",
        &[
            "id",
            "model_id",
            "project_id",
            "kind",
            "status",
            "args",
            "progress",
            "error",
            "worker",
            "heartbeat_at",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
            "request",
            "checkpoint_step",
        ],
    ),
    ("schema_migrations", &["version", "name", "applied_at"]),
];

#[tokio::test]
async fn second_run_applies_nothing_and_tables_exist() {
    let db = TestDb::create().await;
    assert_eq!(migrate(&db.url()).await.expect("first migrate"), every_version());
    assert_eq!(migrate(&db.url()).await.expect("second migrate"), Vec::<u32>::new());

    let client = db.connect().await;
    for (table, columns) in EXPECTED {
        let rows = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'pgml' AND table_name = $1",
                &[table],
            )
            .await
            .expect("columns query");
        let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for column in *columns {
            assert!(
                have.iter().any(|c| c == column),
                "pgml.{table}.{column} missing; have {have:?}"
            );
        }
    }
    let kinds: Vec<String> = client
        .query("SELECT data_type::text FROM information_schema.columns WHERE table_schema = 'pgml' AND table_name = 'logs' AND column_name = 'id'", &[])
        .await
        .expect("type query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, vec!["bigint".to_string()]);
    db.drop_now().await;
}

#[tokio::test]
async fn schema_behaves_as_documented() {
    let db = TestDb::create().await;
    migrate(&db.url()).await.expect("migrate");
    let client = db.connect().await;
    client
        .batch_execute(
            "INSERT INTO pgml.projects (name, task) VALUES ('p', 'text-classification');
             INSERT INTO pgml.models (project_id, algorithm) VALUES (1, 'transformers');
             INSERT INTO pgml.files (model_id, path, part, data) VALUES (1, 'w.bin', 0, '\\x00');
             INSERT INTO pgml.logs (model_id, project_id, logs) VALUES (1, 1, '{}'), (1, 1, '{}');
             INSERT INTO pgml.jobs (model_id, project_id, kind) VALUES (1, 1, 'tune');",
        )
        .await
        .expect("inserts");
    let bad_status = client.execute("UPDATE pgml.models SET status = 'weird'", &[]).await;
    assert!(bad_status.is_err(), "status check must refuse unknown values");
    let bad_job = client.execute("UPDATE pgml.jobs SET status = 'done'", &[]).await;
    assert!(bad_job.is_err(), "job status check must refuse unknown values");
    let dup = client
        .execute(
            "INSERT INTO pgml.files (model_id, path, part, data) VALUES (1, 'w.bin', 0, '')",
            &[],
        )
        .await;
    assert!(dup.is_err(), "(model_id, path, part) must be unique");
    let runtime: String =
        client.query_one("SELECT runtime FROM pgml.models", &[]).await.expect("runtime").get(0);
    assert_eq!(runtime, "tch");
    let distinct_times: i64 = client
        .query_one("SELECT count(DISTINCT created_at) FROM pgml.logs", &[])
        .await
        .expect("log times")
        .get(0);
    assert_eq!(distinct_times, 2, "logs.created_at must differ inside one transaction");
    client.execute("DELETE FROM pgml.models", &[]).await.expect("delete model");
    let files: i64 =
        client.query_one("SELECT count(*) FROM pgml.files", &[]).await.expect("count").get(0);
    assert_eq!(files, 0, "files must go with their model");
    drop(client);
    db.drop_now().await;
}

#[tokio::test]
async fn concurrent_runs_apply_once() {
    let db = TestDb::create().await;
    let url = db.url();
    let (a, b) = tokio::join!(migrate(&url), migrate(&url));
    let (a, b) = (a.expect("first runner"), b.expect("second runner"));
    let mut all = [a, b].concat();
    all.sort_unstable();
    assert_eq!(all, every_version(), "each migration applied by exactly one runner");
    let client = db.connect().await;
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM pgml.schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(recorded, MIGRATIONS.len() as i64);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgml' AND tablename = 'models'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(tables, 1);
    drop(client);
    db.drop_now().await;
}

#[tokio::test]
async fn failing_migration_rolls_back_and_is_not_recorded() {
    let db = TestDb::create().await;
    let broken = [
        Migration { version: 1, name: "ok", sql: "CREATE TABLE pgml.t_ok (x int);" },
        Migration {
            version: 2,
            name: "bad",
            sql: "CREATE TABLE pgml.t_half (x int); SELECT no_such_fn();",
        },
    ];
    let err = migrate_with(&db.url(), &broken).await.expect_err("must fail");
    assert!(matches!(err, SchemaError::Migration { version: 2, .. }), "{err}");
    let client = db.connect().await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM pgml.schema_migrations ORDER BY 1", &[])
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1]);
    let half: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgml' AND tablename = 't_half'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(half, 0, "the failed migration's statements must be rolled back");
    // The lock was released: a later run proceeds (and fails the same way) instead of hanging.
    let again =
        tokio::time::timeout(std::time::Duration::from_secs(20), migrate_with(&db.url(), &broken))
            .await;
    assert!(matches!(again, Ok(Err(SchemaError::Migration { version: 2, .. }))));
    drop(client);
    db.drop_now().await;
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error() {
    let err = migrate("postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2")
        .await
        .expect_err("must fail");
    assert!(matches!(err, SchemaError::Connect { .. }), "{err}");
}
