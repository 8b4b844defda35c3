//! Authentication relayed through pgmld to a private upstream cluster that demands
//! passwords: SCRAM-SHA-256 for most roles, MD5 for `md5user`. pgmld never decides who gets
//! in; these tests check that right passwords work, wrong and missing ones are refused with
//! Postgres' own error, and that refusals leave the daemon usable and are counted.

mod support;

use pgmld_schema::{ClusterOptions, EmbeddedCluster};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{sqlstate, temp_dir, Pgmld, Start};

const SUPER_PW: &str = "super-Secret_1";
const SCRAM_PW: &str = "scram-Secret_2";
const MD5_PW: &str = "md5-Secret_3";
const AUTH_ERRORS: &str = "pgmld_errors_total{kind=\"auth\"}";

/// A private cluster with password authentication, its roles created. The cluster is
/// declared first so it stops before its directory is removed.
struct AuthCluster {
    cluster: EmbeddedCluster,
    dir: PathBuf,
}

impl Drop for AuthCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl AuthCluster {
    fn start() -> AuthCluster {
        let dir = temp_dir("pgmld-auth");
        // When the tests run as root the cluster runs as `postgres`, which must traverse it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut last_err = String::new();
        for attempt in 0..3 {
            let mut opts = ClusterOptions::new(dir.join(format!("data{attempt}")), free_port());
            opts.superuser_password = Some(SUPER_PW.into());
            opts.auth_default = "scram-sha-256".into();
            opts.hba = vec!["host all md5user 127.0.0.1/32 md5".into()];
            match EmbeddedCluster::start(opts) {
                Ok(cluster) => {
                    let c = AuthCluster { cluster, dir };
                    c.create_roles();
                    return c;
                }
                // A port taken between free_port() and the server's bind: try another.
                Err(e) => last_err = e.to_string(),
            }
        }
        panic!("private cluster did not start: {last_err}");
    }

    fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// psql straight to the cluster as the superuser; panics on failure.
    fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PGPASSWORD", SUPER_PW)
            .env("PGPASSFILE", self.dir.join("no-pgpass"))
            .args(["-X", "-w", "-qAt", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port()))
            .args(["-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql to the cluster failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.cluster.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn create_roles(&self) {
        self.psql(&format!(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE scramuser LOGIN PASSWORD '{SCRAM_PW}'; \
             SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD '{MD5_PW}'; \
             CREATE SCHEMA IF NOT EXISTS pgml; GRANT USAGE ON SCHEMA pgml TO scramuser, md5user;"
        ));
        // The hashes really are of the kinds the test is about.
        let kinds = self.psql(
            "SELECT rolname || '=' || split_part(rolpassword, '$', 1) FROM pg_authid \
             WHERE rolname IN ('md5user', 'scramuser') ORDER BY rolname",
        );
        let kinds: Vec<&str> = kinds.lines().collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(kinds[0].starts_with("md5user=md5"), "{kinds:?}");
        assert_eq!(kinds[1], "scramuser=SCRAM-SHA-256", "{kinds:?}");
    }

    fn pgmld(&self) -> Pgmld {
        Pgmld::start_with(Start { upstream: Some(self.cluster.url()), ..Start::default() })
    }
}

/// The roles under test (name, password): SCRAM-SHA-256 and MD5 upstream.
const ROLES: [(&str, &str); 2] = [("scramuser", SCRAM_PW), ("md5user", MD5_PW)];

/// Waits until the metric reaches `at_least` (pgmld counts a refusal just after sending it).
fn wait_metric(p: &Pgmld, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = p.metric(name);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// tokio-postgres
// ---------------------------------------------------------------------------------------

async fn tp_connect(
    p: &Pgmld,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut conn_str = format!("host=127.0.0.1 port={} user={user} dbname={db}", p.addr.port());
    if let Some(pw) = password {
        conn_str.push_str(&format!(" password='{pw}'"));
    }
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Logs in with the right password and checks who we are and that pgml answers.
async fn tp_good_login(p: &Pgmld, user: &str, password: &str) {
    let client = tp_connect(p, user, Some(password), "postgres").await.unwrap_or_else(|e| {
        panic!("{user} with the right password: {e:?}; log:\n{}", p.log_text())
    });
    let row = client.query_one("SELECT current_user::text, session_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), user);
    assert_eq!(row.get::<_, String>(1), user);
    let msgs = client.simple_query("SELECT pgml.version()").await.expect("pgml.version()");
    let version = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row");
    assert_eq!(version, "pgmld 0.1.0");
    // And an ordinary statement relayed upstream after the pgml call.
    let n: i32 = client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_password_logins_through_pgmld() {
    let cluster = tokio::task::spawn_blocking(AuthCluster::start).await.unwrap();
    let p = cluster.pgmld();
    let auth_before = p.metric(AUTH_ERRORS);
    let mut refusals_by_upstream = 0.0;

    for (user, password) in ROLES {
        tp_good_login(&p, user, password).await;

        // Wrong password: the upstream's own error, passed through.
        let e = tp_connect(&p, user, Some("not-the-password"), "postgres")
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} got in with a wrong password"));
        assert_eq!(sqlstate(&e), "28P01", "{user}: {e:?}");
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.severity(), "FATAL");
        assert_eq!(db.message(), format!("password authentication failed for user \"{user}\""));
        refusals_by_upstream += 1.0;

        // Missing password: tokio-postgres gives up when the upstream asks for one.
        let e = tp_connect(&p, user, None, "postgres")
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} got in without a password"));
        assert!(format!("{e:?}").contains("password missing"), "{user}: {e:?}");

        // Empty password: sent, and refused by the upstream.
        let e = tp_connect(&p, user, Some(""), "postgres")
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} got in with an empty password"));
        assert!(
            e.as_db_error().is_some() || format!("{e:?}").contains("password"),
            "{user}: {e:?}"
        );
        if e.as_db_error().is_some() {
            refusals_by_upstream += 1.0;
        }
    }

    // A role that does not exist gets the same answer as a wrong password.
    let e = tp_connect(&p, "ghost", Some("whatever"), "postgres").await.expect_err("ghost refused");
    assert_eq!(sqlstate(&e), "28P01", "{e:?}");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "password authentication failed for user \"ghost\""
    );
    refusals_by_upstream += 1.0;

    // A database that does not exist: authentication passes, then 3D000 from the upstream.
    for (user, password) in ROLES {
        let e = tp_connect(&p, user, Some(password), "no_such_db_pgmld")
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} connected to a missing database"));
        assert_eq!(sqlstate(&e), "3D000", "{user}: {e:?}");
        assert_eq!(
            e.as_db_error().unwrap().message(),
            "database \"no_such_db_pgmld\" does not exist"
        );
        refusals_by_upstream += 1.0;
    }

    // Many refusals and logins at once.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (user, password) = ROLES[i % 2];
        let port = p.addr.port();
        tasks.push(tokio::spawn(async move {
            let pw = if i % 4 < 2 { password.to_string() } else { format!("wrong-{i}") };
            let conn_str =
                format!("host=127.0.0.1 port={port} user={user} dbname=postgres password='{pw}'");
            match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    let u: String =
                        client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
                    (true, u == user)
                }
                Err(e) => (false, sqlstate(&e) == "28P01"),
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (in_, ok) = t.await.unwrap();
        assert_eq!(in_, i % 4 < 2, "concurrent login {i}: admitted={in_}");
        assert!(ok, "concurrent login {i}: wrong user or wrong SQLSTATE");
        if !in_ {
            refusals_by_upstream += 1.0;
        }
    }

    // The daemon is still fine after all that.
    for (user, password) in ROLES {
        tp_good_login(&p, user, password).await;
    }

    let want = auth_before + refusals_by_upstream;
    let auth_after = tokio::task::block_in_place(|| wait_metric(&p, AUTH_ERRORS, want));
    assert!(
        auth_after >= want,
        "{AUTH_ERRORS}: {auth_before} before, {auth_after} after {refusals_by_upstream} upstream refusals\n{}",
        p.metrics_text()
    );
    assert!(p.log_text().contains("upstream refused the client"), "{}", p.log_text());
    drop(p);
    drop(cluster);
}

// ---------------------------------------------------------------------------------------
// psql (libpq)
// ---------------------------------------------------------------------------------------

/// psql through pgmld as `user`, password from PGPASSWORD when given, never prompting.
fn psql_as(
    p: &Pgmld,
    scratch: &Path,
    user: &str,
    password: Option<&str>,
    db: &str,
    sql: &[&str],
) -> Output {
    let mut cmd = Command::new("psql");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGPASSFILE", scratch.join("no-pgpass"))
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!("host=127.0.0.1 port={} user={user} dbname={db}", p.addr.port()));
    for s in sql {
        cmd.args(["-c", s]);
    }
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd.output().expect("psql")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn psql_password_logins_through_pgmld() {
    let cluster = AuthCluster::start();
    let p = cluster.pgmld();
    let scratch = cluster.dir.clone();
    let auth_before = p.metric(AUTH_ERRORS);
    let mut refusals_by_upstream = 0.0;

    let good = |user: &str, password: &str| {
        let out = psql_as(
            &p,
            &scratch,
            user,
            Some(password),
            "postgres",
            &["SELECT current_user", "SELECT pgml.version()", "SELECT 40 + 2"],
        );
        assert!(
            out.status.success(),
            "{user} with the right password: {}\nlog:\n{}",
            text(&out.stderr),
            p.log_text()
        );
        assert_eq!(
            text(&out.stdout),
            format!("{user}\npgmld 0.1.0\n42\n"),
            "{user}: stderr {}",
            text(&out.stderr)
        );
    };

    for (user, password) in ROLES {
        good(user, password);

        let out = psql_as(&p, &scratch, user, Some("not-the-password"), "postgres", &["SELECT 1"]);
        assert!(!out.status.success(), "{user} got in with a wrong password");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("FATAL:  password authentication failed for user \"{user}\"")),
            "{user}: {err}"
        );
        assert!(out.stdout.is_empty(), "{user}: {}", text(&out.stdout));
        refusals_by_upstream += 1.0;

        let out = psql_as(&p, &scratch, user, None, "postgres", &["SELECT 1"]);
        assert!(!out.status.success(), "{user} got in without a password");
        let err = text(&out.stderr);
        assert!(err.contains("no password supplied"), "{user}: {err}");
    }

    for (user, password) in ROLES {
        let out = psql_as(&p, &scratch, user, Some(password), "no_such_db_pgmld", &["SELECT 1"]);
        assert!(!out.status.success(), "{user} connected to a missing database");
        let err = text(&out.stderr);
        assert!(
            err.contains("FATAL:  database \"no_such_db_pgmld\" does not exist"),
            "{user}: {err}"
        );
        refusals_by_upstream += 1.0;
    }

    // Still usable, for both roles.
    for (user, password) in ROLES {
        good(user, password);
    }

    let want = auth_before + refusals_by_upstream;
    let auth_after = wait_metric(&p, AUTH_ERRORS, want);
    assert!(
        auth_after >= want,
        "{AUTH_ERRORS}: {auth_before} before, {auth_after} after {refusals_by_upstream} upstream refusals\n{}",
        p.metrics_text()
    );
    drop(p);
    drop(cluster);
}
