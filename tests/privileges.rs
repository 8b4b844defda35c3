//! The caller's privileges: through pgmld a role gets exactly what Postgres gives it.
//! Every test connects as a fresh LOGIN role with nothing else, checks each refusal
//! (SQLSTATE 42501, Postgres's wording, nothing changed) and that the same role succeeds
//! on what it owns or was granted.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::models::{create_table, imdb_balanced, tiny_bert};
use support::roles::{connect_as, Role};
use support::{expect_err, temp_dir, Pgmld, Start, TestDb};

fn write_csv(path: &Path, rows: usize) {
    let mut s = String::from("text,label\n");
    for i in 0..rows {
        s.push_str(&format!("row {i},{}\n", i % 2));
    }
    std::fs::write(path, s).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_usage_and_execute_are_checked_on_the_callers_session() {
    let db = TestDb::create();
    let p = Pgmld::start();
    let admin = p.connect(&db.name).await; // migrates the database
    let app = Role::create(&db, "app");
    let c = connect_as(&p, &db.name, &app.name).await;

    expect_err(&c, "SELECT pgml.version()", "42501", "permission denied for schema pgml").await;
    admin.batch_execute(&format!("GRANT USAGE ON SCHEMA pgml TO {}", app.name)).await.unwrap();
    let v: String = c.query_one("SELECT pgml.version()", &[]).await.unwrap().get(0);
    assert!(v.starts_with("pgmld "), "{v}");

    // Functions are real catalog entries: \df lists them, GRANT / REVOKE apply.
    let listed: i64 = admin
        .query_one("SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgml'::regnamespace AND proname IN ('version', 'load_dataset', 'tune', 'transform', 'transform_stream')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listed, 5);
    admin.batch_execute("REVOKE EXECUTE ON FUNCTION pgml.version() FROM PUBLIC").await.unwrap();
    expect_err(&c, "SELECT pgml.version()", "42501", "permission denied for function version")
        .await;
    // Inside a transaction the refusal aborts it, as Postgres's own would.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.query_one("SELECT pgml.version()", &[]).await.is_err());
    let e = c.query_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(support::sqlstate(&e), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    // Prepared statements are checked when they run, with the grants of that moment.
    let stmt = c.prepare("SELECT pgml.version() || $1::text").await.unwrap();
    assert_eq!(support::sqlstate(&c.query_one(&stmt, &[&"!"]).await.unwrap_err()), "42501");
    admin
        .batch_execute(&format!("GRANT EXECUTE ON FUNCTION pgml.version() TO {}", app.name))
        .await
        .unwrap();
    let v: String = c.query_one(&stmt, &[&"!"]).await.unwrap().get(0);
    assert!(v.ends_with('!'));
    // SET ROLE on the client's session counts: the role it switched to is the caller.
    let su = p.connect(&db.name).await;
    su.batch_execute(&format!("SET ROLE {}", app.name)).await.unwrap();
    su.query_one("SELECT pgml.version()", &[]).await.expect("granted to the role set");
    admin
        .batch_execute(&format!("REVOKE EXECUTE ON FUNCTION pgml.version() FROM {}", app.name))
        .await
        .unwrap();
    assert_eq!(
        support::sqlstate(&su.query_one("SELECT pgml.version()", &[]).await.unwrap_err()),
        "42501"
    );
    su.batch_execute("RESET ROLE").await.unwrap();
    su.query_one("SELECT pgml.version()", &[]).await.expect("a superuser again");
    // Called on the upstream directly, the entries say who serves them.
    let direct = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            &db.name,
            "-qAtc",
            "SELECT pgml.version()",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&direct.stderr).contains("served by pgmld"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_dataset_reads_server_files_and_writes_tables_as_the_caller() {
    let db = TestDb::create();
    let dir = temp_dir("pgmld-priv");
    let allowed = dir.join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    write_csv(&allowed.join("ok.csv"), 10);
    let secret = dir.join("secret.csv");
    write_csv(&secret, 3);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, allowed.join("link.csv")).unwrap();
    let p = Pgmld::start_with(Start {
        env: vec![("PGMLD_DATASET_DIRS".into(), allowed.display().to_string())],
        ..Start::default()
    });
    let admin = p.connect(&db.name).await;
    let app = Role::create(&db, "loader");
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA pgml TO {r};
             CREATE TABLE public.victim (text text, label bigint, split text); INSERT INTO public.victim VALUES ('keep', 1, 'train');
             GRANT SELECT ON public.victim TO {r};
             CREATE SCHEMA mine AUTHORIZATION {r};",
            r = app.name
        ))
        .await
        .unwrap();
    let c = connect_as(&p, &db.name, &app.name).await;
    let load = |path: &Path, table: &str, extra: &str| {
        format!(
            "SELECT * FROM pgml.load_dataset('{}', kwargs => '{{\"table\": \"{table}\"{extra}}}')",
            path.display()
        )
    };

    // Server files need what COPY FROM '<file>' needs; the error never says if the file exists.
    let denied =
        expect_err(&c, &load(&secret, "mine.loot", ""), "42501", "pg_read_server_files").await;
    let missing = expect_err(
        &c,
        &load(&dir.join("nope.csv"), "mine.loot", ""),
        "42501",
        "pg_read_server_files",
    )
    .await;
    assert_eq!(denied, missing);
    assert!(!denied.contains("secret.csv"));
    let transform = "SELECT pgml.transform(task => '{\"task\": \"text-classification\", \"model\": \"/etc/ssl\"}'::jsonb, inputs => ARRAY['x'])";
    expect_err(&c, transform, "42501", "pg_read_server_files").await;

    admin.batch_execute(&format!("GRANT pg_read_server_files TO {}", app.name)).await.unwrap();
    // dataset_dirs confines even a role that may read server files: symlinks and .. resolved.
    expect_err(&c, &load(&secret, "mine.loot", ""), "42501", "outside dataset_dirs").await;
    expect_err(
        &c,
        &load(&allowed.join("link.csv"), "mine.loot", ""),
        "42501",
        "outside dataset_dirs",
    )
    .await;
    expect_err(
        &c,
        &load(&allowed.join("../secret.csv"), "mine.loot", ""),
        "42501",
        "outside dataset_dirs",
    )
    .await;

    // Tables: replacing needs what DROP TABLE needs, appending needs INSERT, a new schema
    // needs CREATE on the database, pgml's own tables are pgmld's.
    let ok = allowed.join("ok.csv");
    expect_err(
        &c,
        &load(&ok, "public.victim", ", \"if_exists\": \"replace\""),
        "42501",
        "permission denied for schema public",
    )
    .await;
    admin.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {}", app.name)).await.unwrap();
    expect_err(
        &c,
        &load(&ok, "public.victim", ", \"if_exists\": \"replace\""),
        "42501",
        "must be owner of table victim",
    )
    .await;
    expect_err(
        &c,
        &load(&ok, "public.victim", ", \"if_exists\": \"append\""),
        "42501",
        "permission denied for table victim",
    )
    .await;
    expect_err(&c, &load(&ok, "brand_new.t", ""), "42501", "permission denied for database").await;
    expect_err(&c, &load(&ok, "pgml.deployments", ", \"if_exists\": \"replace\""), "42501", "")
        .await;
    let victim: Vec<(String, i64)> = admin
        .query("SELECT text, label FROM public.victim ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(victim, vec![("keep".to_string(), 1)]);
    let schemas: i64 = admin
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'brand_new'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);

    // What the role owns it may load into, and the tables it creates are its own.
    let row = c.query_one(&load(&ok, "mine.reviews", ""), &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(1), 10);
    let owner: String = admin.query_one("SELECT tableowner::text FROM pg_tables WHERE schemaname = 'mine' AND tablename = 'reviews'", &[]).await.unwrap().get(0);
    assert_eq!(owner, app.name);
    c.query_one(&load(&ok, "mine.reviews", ", \"if_exists\": \"replace\""), &[]).await.unwrap();
    admin.batch_execute(&format!("GRANT INSERT ON public.victim TO {}", app.name)).await.unwrap();
    let row =
        c.query_one(&load(&ok, "public.victim", ", \"if_exists\": \"append\""), &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(1), 10);
    let staging: i64 = admin
        .query_one("SELECT count(*) FROM pg_class WHERE relname LIKE 'pgmld_load_%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(staging, 0, "no staging table stays behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_reads_as_the_caller_and_projects_belong_to_their_owner() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 48);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let db = TestDb::create();
    let rows: Vec<Vec<String>> = data.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect();
    create_table(&db.name, "public.secret", &["text", "class"], &rows).await;
    // Debug logging everywhere: still no token in the log.
    let p = Pgmld::start_with(Start {
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..Start::default()
    });
    let admin = p.connect(&db.name).await;
    let (app, other) = (Role::create(&db, "tuner"), Role::create(&db, "other"));
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA pgml TO {a}, {o}; GRANT pg_read_server_files TO {a};
             CREATE SCHEMA mine AUTHORIZATION {a};
             CREATE TABLE mine.reviews AS SELECT * FROM public.secret; ALTER TABLE mine.reviews OWNER TO {a};",
            a = app.name,
            o = other.name
        ))
        .await
        .unwrap();
    let c = connect_as(&p, &db.name, &app.name).await;
    let tune = |project: &str, relation: &str| {
        format!(
            "SELECT status FROM pgml.tune('{project}', task => 'text-classification', relation_name => '{relation}', \
             model_name => '{}', hyperparams => '{{\"training_args\": {{\"num_train_epochs\": 1, \"per_device_train_batch_size\": 16}}, \
             \"dataset_args\": {{\"text_column\": \"text\", \"class_column\": \"class\"}}}}')",
            model.display()
        )
    };
    // Relations are read as the caller: no SELECT, no rows in any notice or error.
    let e = expect_err(
        &c,
        &tune("stolen", "public.secret"),
        "42501",
        "permission denied for table secret",
    )
    .await;
    assert!(!e.contains(&data[0].0[..20]));
    let shadow = tune("shadow", "pg_catalog.pg_shadow").replace(
        "\"text_column\": \"text\", \"class_column\": \"class\"",
        "\"text_column\": \"passwd\", \"class_column\": \"usename\"",
    );
    let e = expect_err(&c, &shadow, "42501", "permission denied for view pg_shadow").await;
    assert!(!e.contains("SCRAM"), "{e}");
    // Malformed hyperparams never echo the text (it may hold a token).
    let e = expect_err(&c, "SELECT * FROM pgml.tune('x', hyperparams => '{\"training_args\": {\"hub_token\": \"hf_TOPSECRET\"} oops')", "22P02", "jsonb").await;
    assert!(!e.contains("TOPSECRET"), "{e}");
    let e = expect_err(
        &c,
        &tune("tok", "mine.reviews").replace(
            "\"num_train_epochs\": 1",
            "\"num_train_epochs\": 1, \"hub_token\": \"hf_TOPSECRET\", \"bogus_arg\": 1",
        ),
        "22023",
        "bogus_arg",
    )
    .await;
    assert!(!e.contains("TOPSECRET"), "{e}");

    // Its own table: the project and model are the caller's.
    let status: String = c.query_one(&tune("mine", "mine.reviews"), &[]).await.unwrap().get(0);
    assert_eq!(status, "successful");
    let owners: Vec<String> = admin
        .query(
            "SELECT owner::text FROM pgml.projects WHERE name = 'mine' UNION ALL SELECT owner::text FROM pgml.models \
             UNION ALL SELECT DISTINCT owner::text FROM pgml.files UNION ALL SELECT owner::text FROM pgml.jobs",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, vec![app.name.clone(); 4]);
    let model_id: i64 = admin.query_one("SELECT id FROM pgml.models", &[]).await.unwrap().get(0);

    // Row-level security applies to what the tune reads: the caller's rows only.
    admin
        .batch_execute(&format!(
            "CREATE TABLE public.shared AS SELECT * FROM public.secret; ALTER TABLE public.shared ENABLE ROW LEVEL SECURITY;
             CREATE POLICY halves ON public.shared FOR SELECT USING (length(text) % 2 = 0 OR class = 'positive');
             GRANT SELECT ON public.shared TO {}",
            app.name
        ))
        .await
        .unwrap();
    let visible: i64 = admin
        .query_one(
            "SELECT count(*) FROM public.shared WHERE length(text) % 2 = 0 OR class = 'positive'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(visible < data.len() as i64, "the policy hides some rows");
    let status: String = c.query_one(&tune("rls", "public.shared"), &[]).await.unwrap().get(0);
    assert_eq!(status, "successful");
    let seen: i64 = admin
        .query_one(
            "SELECT (s.analysis->>'rows')::int8 FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id \
             JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = 'rls'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, visible);

    // Another role may neither tune into, resume nor use it, by name or id...
    let o = connect_as(&p, &db.name, &other.name).await;
    admin.batch_execute(&format!("GRANT SELECT ON public.secret TO {}", other.name)).await.unwrap();
    expect_err(
        &o,
        &tune("mine", "public.secret"),
        "42501",
        "permission denied for project \"mine\"",
    )
    .await;
    let classify = |m: &str| {
        format!("SELECT pgml.transform(task => '{{\"task\": \"text-classification\", \"model\": \"{m}\"}}'::jsonb, inputs => ARRAY['a fine film'])")
    };
    expect_err(&o, &classify("mine"), "42501", &format!("owned by role \"{}\"", app.name)).await;
    expect_err(&o, &classify(&format!("pgml:{model_id}")), "42501", "permission denied for model")
        .await;
    // ...until it is a member of the owner role, as with any object the owner has.
    admin.batch_execute(&format!("GRANT {} TO {}", app.name, other.name)).await.unwrap();
    o.query_one(&classify("mine"), &[]).await.unwrap();
    o.query_one(&classify(&format!("pgml:{model_id}")), &[]).await.unwrap();
    c.query_one(&classify("mine"), &[]).await.unwrap();
    assert!(!p.log_text().contains("TOPSECRET"), "a token reached the log");
}
