//! psql through pgmld: scripts on stdin against a fresh database each test, compared with
//! what psql shows directly against Postgres where that is the point.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{psql_direct, psql_script, Pgmld, TestDb};

const STOP: &[&str] = &["-v", "ON_ERROR_STOP=1"];

/// psql_script that must succeed; returns (stdout, stderr).
fn psql_ok(p: &Pgmld, db: &str, script: &str, extra: &[&str]) -> (String, String) {
    let (ok, out, err) = psql_script(p, db, script, extra);
    assert!(ok, "psql failed\n--- script ---\n{script}\n--- stdout ---\n{out}\n--- stderr ---\n{err}\n--- pgmld log ---\n{}", p.log_text());
    (out, err)
}

/// psql with a script on stdin directly against Postgres on 5432 (same flags as psql_script).
fn psql_upstream(db: &str, script: &str, extra: &[&str]) -> (bool, String, String) {
    support::psql_port(5432, db, script, extra)
}

/// Lines of `-At` output.
fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

const IMDB_SETUP: &str = r#"
CREATE SCHEMA IF NOT EXISTS pgml;
CREATE TABLE pgml.imdb (text text, label int);
INSERT INTO pgml.imdb (text, label)
    SELECT 'review ' || i || ': ' || repeat('a rather long movie review ', 10), i % 2
    FROM generate_series(1, 50) AS i;
CREATE VIEW pgml.imdb_shuffled_view AS SELECT * FROM pgml.imdb ORDER BY RANDOM();
CREATE VIEW pgml.imdb_train_view AS SELECT * FROM pgml.imdb_shuffled_view LIMIT (SELECT COUNT(*) * 0.8 FROM pgml.imdb_shuffled_view);
CREATE VIEW pgml.imdb_test_view AS SELECT * FROM pgml.imdb_shuffled_view OFFSET (SELECT COUNT(*) * 0.8 FROM pgml.imdb_shuffled_view);
"#;

#[test]
fn guide_flow_schema_imdb_table_and_views() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();

    // The pgml schema is already there (migrated at connect); CREATE SCHEMA IF NOT EXISTS
    // just notices that.
    let (out, err) = psql_ok(&p, &db.name, "CREATE SCHEMA IF NOT EXISTS pgml;\n", STOP);
    assert!(out.contains("CREATE SCHEMA"), "stdout: {out}");
    assert!(err.contains(r#"schema "pgml" already exists, skipping"#), "stderr: {err}");

    let (out, _) = psql_ok(&p, &db.name, "\\dt pgml.*\n", STOP);
    for t in ["projects", "models", "deployments", "snapshots", "files", "logs", "jobs"] {
        assert!(
            out.lines().any(|l| l.split('|').map(str::trim).collect::<Vec<_>>()[..]
                .starts_with(&["pgml", t, "table"])),
            "\\dt pgml.* lacks {t}:\n{out}"
        );
    }

    let (out, err) = psql_ok(&p, &db.name, IMDB_SETUP, STOP);
    assert!(out.contains("INSERT 0 50"), "stdout: {out}\nstderr: {err}");
    assert_eq!(out.matches("CREATE VIEW").count(), 3, "stdout: {out}");

    let (out, _) = psql_ok(
        &p,
        &db.name,
        "SELECT COUNT(*) FROM pgml.imdb;\n\
         SELECT COUNT(*) FROM pgml.imdb_shuffled_view;\n\
         SELECT COUNT(*) FROM pgml.imdb_train_view;\n\
         SELECT COUNT(*) FROM pgml.imdb_test_view;\n\
         SELECT label, COUNT(*) FROM pgml.imdb_shuffled_view GROUP BY label ORDER BY label;\n\
         SELECT SUM(c) FROM (SELECT label, COUNT(*) AS c FROM pgml.imdb_train_view GROUP BY label) s;\n",
        &["-v", "ON_ERROR_STOP=1", "-At"],
    );
    assert_eq!(lines(&out), ["50", "50", "40", "10", "0|25", "1|25", "40"], "counts:\n{out}");

    let (out, _) = psql_ok(
        &p,
        &db.name,
        "SELECT LEFT(text, 100) AS text, label FROM pgml.imdb_shuffled_view LIMIT 3;\n",
        STOP,
    );
    assert!(
        out.lines().next().is_some_and(|h| h.contains("text") && h.contains("label")),
        "header:\n{out}"
    );
    assert!(out.contains("(3 rows)"), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("review ")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    for r in rows {
        let text = r.split('|').next().unwrap().trim();
        assert!(text.chars().count() <= 100, "LEFT(text, 100) too long: {text:?}");
    }

    // The same through psql -At: LEFT cuts at exactly 100 characters.
    let (out, _) = psql_ok(
        &p,
        &db.name,
        "SELECT LEFT(text, 100), label FROM pgml.imdb_shuffled_view LIMIT 3;\n",
        &["-At"],
    );
    let rows = lines(&out);
    assert_eq!(rows.len(), 3, "{out}");
    for r in rows {
        let (text, label) = r.rsplit_once('|').unwrap();
        assert_eq!(text.chars().count(), 100, "{r:?}");
        assert!(label == "0" || label == "1", "{r:?}");
    }
}

#[test]
fn meta_commands_match_postgres() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    psql_ok(&p, &db.name, IMDB_SETUP, STOP);
    psql_ok(
        &p,
        &db.name,
        "CREATE FUNCTION public.add_one(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1';\n\
         CREATE INDEX imdb_label_idx ON pgml.imdb (label);\n\
         COMMENT ON TABLE pgml.imdb IS 'guide dataset';\n",
        STOP,
    );

    for cmd in [
        "\\d pgml.imdb",
        "\\d+ pgml.imdb",
        "\\dv pgml.*",
        "\\dt pgml.*",
        "\\df",
        "\\dn",
        "\\d pgml.imdb_train_view",
    ] {
        let script = format!("{cmd}\n");
        let (ok_p, out_p, err_p) = psql_script(&p, &db.name, &script, STOP);
        let (ok_u, out_u, err_u) = psql_upstream(&db.name, &script, STOP);
        assert!(
            ok_p && ok_u,
            "{cmd}: pgmld ok {ok_p} ({err_p}), upstream ok {ok_u} ({err_u})\n{}",
            p.log_text()
        );
        assert_eq!(out_p, out_u, "{cmd}: output through pgmld differs from Postgres'");
        assert_eq!(err_p, err_u, "{cmd}: stderr through pgmld differs from Postgres'");
        assert!(!out_p.trim().is_empty(), "{cmd}: empty output");
    }
    // sanity: what was compared holds what was created
    let (out, _) = psql_ok(&p, &db.name, "\\dv pgml.*\n\\df\n\\d pgml.imdb\n", STOP);
    for want in
        ["imdb_shuffled_view", "imdb_train_view", "imdb_test_view", "add_one", "imdb_label_idx"]
    {
        assert!(out.contains(want), "missing {want}:\n{out}");
    }

    // \l lists other tests' databases too: only check it works and shows ours.
    let (out, _) = psql_ok(&p, &db.name, "\\l\n", STOP);
    assert!(out.contains("List of databases") && out.contains(&db.name), "\\l:\n{out}");
}

#[test]
fn do_block_notice_goes_to_stderr() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let (out, err) =
        psql_ok(&p, &db.name, "DO $$ BEGIN RAISE NOTICE 'hello from do'; END $$;\n", STOP);
    assert!(out.contains("DO"), "stdout: {out}");
    assert!(err.contains("NOTICE:  hello from do"), "stderr: {err}");
    assert!(!out.contains("hello from do"), "notice on stdout: {out}");
}

#[test]
fn pgml_version_and_unknown_function() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();

    let (out, _) = psql_ok(&p, &db.name, "SELECT pgml.version();\n", STOP);
    assert!(
        out.contains("pgmld 0.1.0") && out.contains("version") && out.contains("(1 row)"),
        "{out}"
    );

    let (out, _) = psql_ok(&p, &db.name, "SELECT pgml.version() AS v, 1 + 1 AS two;\n", STOP);
    let header: Vec<&str> = out.lines().next().unwrap_or("").split('|').map(str::trim).collect();
    assert_eq!(header, ["v", "two"], "{out}");
    let row = out.lines().find(|l| l.contains("pgmld 0.1.0")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.split('|').map(str::trim).collect::<Vec<_>>(), ["pgmld 0.1.0", "2"], "{out}");

    // Without ON_ERROR_STOP: the error is reported and the same session goes on.
    let (ok, out, err) = psql_script(
        &p,
        &db.name,
        "\\set VERBOSITY verbose\nSELECT pgml.nope();\nSELECT 1 AS after_error;\nSELECT pgml.version() AS again;\n",
        &[],
    );
    assert!(ok, "psql exit status\nstdout: {out}\nstderr: {err}");
    assert!(err.contains("ERROR:  42883"), "stderr: {err}");
    assert!(err.contains("pgml.nope"), "stderr: {err}");
    assert!(err.contains("HINT:") && err.contains("pgml.version()"), "hint missing; stderr: {err}");
    assert!(
        out.contains("after_error") && out.contains("(1 row)"),
        "SELECT 1 after the error:\n{out}\nstderr: {err}"
    );
    assert!(out.contains("again") && out.contains("pgmld 0.1.0"), "stdout: {out}");

    // With ON_ERROR_STOP the script stops at the error (exit 3) and later statements do not run.
    let (ok, out, err) = psql_script(
        &p,
        &db.name,
        "SELECT pgml.nope();\nSELECT 'not reached';\n",
        &["-v", "ON_ERROR_STOP=1"],
    );
    assert!(!ok, "stdout: {out}");
    assert!(!out.contains("not reached"), "stdout: {out}");
    assert!(err.contains("pgml.nope"), "stderr: {err}");
}

#[test]
fn pgml_error_aborts_transaction_like_postgres() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let script = "\\set VERBOSITY verbose\n\
                  CREATE TABLE t (x int);\n\
                  BEGIN;\n\
                  INSERT INTO t VALUES (1);\n\
                  SELECT pgml.nope();\n\
                  SELECT 1 AS in_aborted;\n\
                  ROLLBACK;\n\
                  SELECT count(*) AS n_after_rollback FROM t;\n\
                  BEGIN;\n\
                  INSERT INTO t VALUES (2);\n\
                  SELECT pgml.version() AS v_in_txn;\n\
                  COMMIT;\n\
                  SELECT array_agg(x) AS committed FROM t;\n";
    let (ok, out, err) = psql_script(&p, &db.name, script, &[]);
    assert!(ok, "stdout: {out}\nstderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("ERROR:")).collect();
    assert_eq!(errors.len(), 2, "stderr: {err}");
    assert!(errors[0].contains("42883"), "stderr: {err}");
    assert!(
        errors[1].contains("25P02") && errors[1].contains("current transaction is aborted"),
        "stderr: {err}"
    );
    assert!(!out.contains("in_aborted"), "SELECT 1 ran in an aborted transaction:\n{out}");
    assert!(out.contains("ROLLBACK"), "{out}");
    assert!(out.contains("n_after_rollback") && out.lines().any(|l| l.trim() == "0"), "{out}");
    assert!(out.contains("v_in_txn") && out.contains("pgmld 0.1.0"), "{out}");
    assert!(out.contains("COMMIT"), "{out}");
    assert!(out.contains("{2}"), "committed rows: {out}");

    // Same script directly against Postgres, with the pgml call replaced by an undefined
    // function: the same sequence of errors.
    let db2 = TestDb::create();
    let (_, _, err_u) = psql_upstream(
        &db2.name,
        &script
            .replace("pgml.nope()", "public.nope()")
            .replace("SELECT pgml.version() AS v_in_txn;\n", ""),
        &[],
    );
    let errors_u: Vec<&str> = err_u.lines().filter(|l| l.starts_with("ERROR:")).collect();
    assert_eq!(errors_u.len(), 2, "{err_u}");
    assert!(errors_u[0].contains("42883") && errors_u[1].contains("25P02"), "{err_u}");
}

#[test]
fn copy_out_and_back_in() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let dir = support::temp_dir("pgmld-psql-copy");
    let file = dir.join("items.tsv");
    let csv = dir.join("items.csv");
    let script = format!(
        "CREATE TABLE items (id int, name text, note text);\n\
         INSERT INTO items SELECT i, 'name ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE E'tab\\there ''q'' ' || i END FROM generate_series(1, 37) i;\n\
         \\copy items TO '{f}'\n\
         \\copy (SELECT * FROM items WHERE id <= 10) TO '{c}' WITH (FORMAT csv, HEADER)\n\
         CREATE TABLE items_back (LIKE items);\n\
         \\copy items_back FROM '{f}'\n\
         CREATE TABLE items_csv (LIKE items);\n\
         \\copy items_csv FROM '{c}' WITH (FORMAT csv, HEADER)\n",
        f = file.display(),
        c = csv.display()
    );
    let (out, err) = psql_ok(&p, &db.name, &script, STOP);
    assert_eq!(out.matches("COPY 37").count(), 2, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.matches("COPY 10").count(), 2, "stdout: {out}\nstderr: {err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 37);

    let (out, _) = psql_ok(
        &p,
        &db.name,
        "SELECT count(*) FROM items;\n\
         SELECT count(*) FROM items_back;\n\
         SELECT count(*) FROM items_csv;\n\
         SELECT count(*) FROM (SELECT * FROM items EXCEPT ALL SELECT * FROM items_back) d;\n\
         SELECT count(*) FROM (SELECT * FROM items_back EXCEPT ALL SELECT * FROM items) d;\n\
         SELECT count(*) FROM items_back WHERE note IS NULL;\n",
        &["-v", "ON_ERROR_STOP=1", "-At"],
    );
    assert_eq!(lines(&out), ["37", "37", "10", "0", "0", "12"], "{out}");
    // the direct view agrees
    assert_eq!(psql_direct(&db.name, "SELECT count(*) FROM items_back").trim(), "37");

    // \copy from stdin inline in the script
    let (out, _) = psql_ok(&p, &db.name, "CREATE TABLE inline (a int, b text);\n\\copy inline FROM stdin\n1\tone\n2\ttwo\n\\.\nSELECT string_agg(b, ',' ORDER BY a) FROM inline;\n", &["-v", "ON_ERROR_STOP=1", "-qAt"]);
    assert_eq!(lines(&out), ["one,two"], "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_notify_between_psql_sessions() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();

    let mut listener = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &p.addr.port().to_string(),
            "-U",
            "postgres",
            "-d",
            &db.name,
            "-X",
        ])
        .args(["-v", "ON_ERROR_STOP=1"])
        .env("PGAPPNAME", "pgmld_listen_test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    let mut stdin = listener.stdin.take().unwrap();
    stdin.write_all(b"LISTEN ch;\n").unwrap();
    stdin.flush().unwrap();

    // Wait until the listener's backend has run LISTEN (seen directly on Postgres).
    let deadline = Instant::now() + Duration::from_secs(30);
    let check = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'pgmld_listen_test' AND query = 'LISTEN ch;' AND state = 'idle'",
        db.name
    );
    while psql_direct("postgres", &check).trim() != "1" {
        assert!(Instant::now() < deadline, "LISTEN never ran; pgmld log:\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }

    // NOTIFY from another psql through pgmld.
    psql_ok(&p, &db.name, "NOTIFY ch, 'hi there';\nSELECT pg_notify('ch', 'second');\n", STOP);
    // Let the notifications reach pgmld and be relayed to the idle listener.
    std::thread::sleep(Duration::from_millis(300));

    stdin.write_all(b"SELECT 1 AS after_notify;\n").unwrap();
    drop(stdin);
    let stderr = listener.stderr.take().unwrap();
    let err_t = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
    });
    let mut out = String::new();
    for l in BufReader::new(listener.stdout.take().unwrap()).lines().map_while(Result::ok) {
        out.push_str(&l);
        out.push('\n');
    }
    let status = listener.wait().unwrap();
    let err = err_t.join().unwrap();
    assert!(
        status.success(),
        "listener psql failed\nstdout: {out}\nstderr: {err}\n{}",
        p.log_text()
    );
    assert!(out.contains("LISTEN"), "{out}");
    assert!(out.contains("after_notify"), "{out}");
    assert!(
        out.contains(r#"Asynchronous notification "ch" with payload "hi there" received from server process with PID"#),
        "no notification printed\nstdout: {out}\nstderr: {err}\npgmld log:\n{}",
        p.log_text()
    );
    assert!(
        out.contains(r#"Asynchronous notification "ch" with payload "second""#),
        "stdout: {out}"
    );
}

#[test]
fn multi_statement_query_string_with_pgml_call() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();

    let (out, err) = psql_ok(&p, &db.name, "", &["-c", "SELECT 1; SELECT pgml.version();"]);
    assert!(
        out.contains("?column?") && out.contains("version") && out.contains("pgmld 0.1.0"),
        "stdout: {out}\nstderr: {err}"
    );
    assert_eq!(out.matches("(1 row)").count(), 2, "{out}");

    let (out, _) = psql_ok(&p, &db.name, "", &["-At", "-c", "SELECT 1; SELECT pgml.version();"]);
    assert_eq!(lines(&out), ["1", "pgmld 0.1.0"], "{out}");

    // pgml call first, then a plain statement, then a write that must stick.
    let (out, _) = psql_ok(
        &p,
        &db.name,
        "",
        &["-qAt", "-c", "CREATE TABLE m (v text); INSERT INTO m SELECT pgml.version(); SELECT v FROM m; SELECT 2"],
    );
    assert_eq!(lines(&out), ["pgmld 0.1.0", "2"], "{out}");
    assert_eq!(psql_direct(&db.name, "SELECT v FROM m").trim(), "pgmld 0.1.0");
}

/// Postgres runs a multi-statement query string statement by statement: what precedes a
/// failing statement has run (and an explicit COMMIT in the string has committed). pgmld
/// rejects the whole string when one of its pgml calls fails, so nothing before it runs.
#[test]
fn multi_statement_error_runs_preceding_statements() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let (_, out, err) = psql_script(
        &p,
        &db.name,
        "",
        &["-c", "CREATE TABLE c1 (x int); COMMIT; SELECT pgml.nope()"],
    );
    assert!(err.contains("pgml.nope"), "stderr: {err}");
    assert!(out.contains("CREATE TABLE") && out.contains("COMMIT"), "stdout: {out}\nstderr: {err}");
    assert_eq!(
        psql_direct(&db.name, "SELECT to_regclass('c1') IS NOT NULL").trim(),
        "t",
        "c1 was not committed"
    );

    let (_, out, err) =
        psql_script(&p, &db.name, "", &["-At", "-c", "SELECT 1; SELECT pgml.nope()"]);
    assert_eq!(lines(&out), ["1"], "stdout: {out}\nstderr: {err}");
}
