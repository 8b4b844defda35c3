//! TLS between pgmld and its upstream. The upstream is a private cluster with `ssl = on`
//! that refuses every connection without TLS and asks for SCRAM passwords, so pgmld
//! starting at all proves its own connections (migrations) use TLS; client sessions are
//! checked with `pg_stat_ssl`, pgml calls that open pgmld's own connections with
//! `pgml.load_dataset`, and CancelRequests by cancelling a `pg_sleep`. SCRAM from TLS
//! clients, whose channel binding cannot cross pgmld, is refused with advice.

mod support;
#[path = "support/upstream.rs"]
mod upstream;

use std::time::{Duration, Instant};
use support::{Pgmld, Start};
use upstream::{certs, cluster, psql, psql_with, start_failing, url, Scratch, PW};

const SSL_QUERY: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// pgmld in front of `upstream_url`, with HOME in the scratch directory (no ~/.pgpass, no
/// ~/.postgresql/root.crt).
fn pgmld(scratch: &Scratch, upstream_url: String) -> Pgmld {
    Pgmld::start_with(Start {
        upstream: Some(upstream_url),
        env: vec![("HOME".into(), scratch.0.display().to_string())],
        ..Start::default()
    })
}

/// Runs `cmds` through `p` with psql and returns stdout, failing with both logs.
fn through(p: &Pgmld, scratch: &Scratch, cmds: &[&str]) -> String {
    let out = psql(p.addr.port(), &scratch.0, cmds);
    assert!(
        out.status.success(),
        "psql {cmds:?}: {}\npgmld log:\n{}",
        text(&out.stderr),
        p.log_text()
    );
    text(&out.stdout)
}

/// The session's upstream connection is TLS, and pgml answers.
fn session_is_tls(p: &Pgmld, scratch: &Scratch) {
    assert_eq!(through(p, scratch, &[SSL_QUERY, "SELECT pgml.version()"]), "t\npgmld 0.1.0\n");
}

/// pgmld must refuse to start; returns its stderr, which must not hold the password.
fn refused(scratch: &Scratch, upstream_url: &str) -> String {
    let (code, stderr) =
        start_failing(&scratch.0, &["--upstream".into(), upstream_url.into()], &[]);
    assert_ne!(code, Some(0), "pgmld started with {upstream_url}:\n{stderr}");
    assert!(!stderr.contains(PW), "the password leaked:\n{stderr}");
    stderr
}

/// A CancelRequest through pgmld reaches the TLS-only upstream (over TLS: it refuses plain).
fn cancel_reaches_the_upstream(p: &Pgmld) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres password={PW} dbname=postgres",
            p.addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("connect through pgmld");
        tokio::spawn(connection);
        let token = client.cancel_token();
        let started = Instant::now();
        let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.expect("send cancel");
        let result = tokio::time::timeout(Duration::from_secs(20), sleeper)
            .await
            .expect("cancel took effect")
            .unwrap();
        let e = result.expect_err("pg_sleep(60) was cancelled");
        assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}\npgmld log:\n{}", p.log_text());
        assert!(started.elapsed() < Duration::from_secs(30));
    });
}

#[test]
fn upstream_tls_modes() {
    let scratch = Scratch::new("pgmld-uptls");
    let c = certs(&scratch.0);
    let mut cluster = cluster(&scratch, Some(&c));
    let port = cluster.port();
    let (ca, other) = (c.ca.display().to_string(), c.other_ca.display().to_string());

    // require, with SCRAM channel binding demanded on pgmld's own connections.
    let p = pgmld(
        &scratch,
        url("127.0.0.1", port, Some(PW), "sslmode=require&channel_binding=require"),
    );
    session_is_tls(&p, &scratch);
    let csv = scratch.path("small.csv");
    std::fs::write(&csv, "text,label\nhello,1\nbye,0\nagain,1\n").unwrap();
    let load = format!(
        "SELECT * FROM pgml.load_dataset('{}', kwargs => '{{\"table\": \"t\"}}')",
        csv.display()
    );
    assert_eq!(through(&p, &scratch, &[&load, "SELECT count(*) FROM pgml.t"]), "pgml.t|3\n3\n");
    cancel_reaches_the_upstream(&p);
    assert!(!p.log_text().contains(PW), "the password leaked into the log");
    drop(p);

    // SCRAM from a TLS client: channel binding cannot cross pgmld, so libpq's default is
    // refused with advice, and channel_binding=disable logs in (plain clients never see
    // SCRAM-SHA-256-PLUS offered: checked by every plain psql here).
    let p = Pgmld::start_with(Start {
        upstream: Some(url("127.0.0.1", port, Some(PW), "sslmode=require")),
        env: vec![
            ("HOME".into(), scratch.0.display().to_string()),
            ("PGMLD_TLS_CERT".into(), c.server_cert.display().to_string()),
            ("PGMLD_TLS_KEY".into(), c.server_key.display().to_string()),
        ],
        ..Start::default()
    });
    let out = psql_with(p.addr.port(), &scratch.0, "sslmode=require", &["SELECT 1"]);
    assert!(!out.status.success(), "a TLS client with channel binding logged in through pgmld");
    assert!(text(&out.stderr).contains("channel_binding=disable"), "{}", text(&out.stderr));
    let out = psql_with(
        p.addr.port(),
        &scratch.0,
        "sslmode=require channel_binding=disable",
        &[SSL_QUERY],
    );
    assert_eq!(text(&out.stdout), "t\n", "{}\npgmld log:\n{}", text(&out.stderr), p.log_text());
    drop(p);

    // prefer (the default) picks TLS when offered.
    session_is_tls(&pgmld(&scratch, url("127.0.0.1", port, Some(PW), "")), &scratch);
    // verify-ca checks the chain only: 127.0.0.1 is not in the certificate, and that is fine.
    session_is_tls(
        &pgmld(
            &scratch,
            url("127.0.0.1", port, Some(PW), &format!("sslmode=verify-ca&sslrootcert={ca}")),
        ),
        &scratch,
    );
    // verify-full with the certificate's name.
    session_is_tls(
        &pgmld(
            &scratch,
            url("localhost", port, Some(PW), &format!("sslmode=verify-full&sslrootcert={ca}")),
        ),
        &scratch,
    );
    // key=value form, and hostaddr: the name checked is host's.
    let kv = format!("host=localhost hostaddr=127.0.0.1 port={port} user=postgres password={PW} dbname=postgres sslmode=verify-full sslrootcert='{ca}'");
    session_is_tls(&pgmld(&scratch, kv), &scratch);

    // verify-full against a name the certificate does not carry.
    let e = refused(
        &scratch,
        &url("127.0.0.1", port, Some(PW), &format!("sslmode=verify-full&sslrootcert={ca}")),
    );
    assert!(
        e.contains("not valid for host name \"127.0.0.1\"") && e.contains("verify-full"),
        "{e}"
    );
    let kv = format!("host=db.invalid hostaddr=127.0.0.1 port={port} user=postgres password={PW} sslmode=verify-full sslrootcert={ca}");
    let e = refused(&scratch, &kv);
    assert!(e.contains("not valid for host name \"db.invalid\""), "{e}");
    // A CA that did not sign the server's certificate.
    let e = refused(
        &scratch,
        &url("localhost", port, Some(PW), &format!("sslmode=verify-ca&sslrootcert={other}")),
    );
    assert!(e.contains(&format!("not signed by a CA in {other}")), "{e}");
    // verify-full without any root file (HOME has no .postgresql/root.crt).
    let e = refused(&scratch, &url("localhost", port, Some(PW), "sslmode=verify-full"));
    assert!(e.contains("root.crt\" does not exist"), "{e}");
    // disable: the upstream's own pg_hba error.
    let e = refused(&scratch, &url("127.0.0.1", port, Some(PW), "sslmode=disable"));
    assert!(e.contains("pg_hba.conf rejects connection") && e.contains("no encryption"), "{e}");
    // Nonsense is named.
    let e = refused(&scratch, &url("127.0.0.1", port, Some(PW), "sslmode=sometimes"));
    assert!(e.contains("unknown sslmode \"sometimes\""), "{e}");

    cluster.stop().expect("stop cluster");
}
