//! Starts a real private cluster with the system's Postgres binaries.

use super::*;
use crate::is_reachable;
use std::net::TcpListener;
use tokio_postgres::NoTls;

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("pgmld-cl-{:x}", rand::random::<u32>()));
        fs::create_dir_all(&dir).expect("mkdir");
        // The postgres user must be able to traverse it when the tests run as root.
        set_mode(&dir, 0o755).expect("chmod");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Tries to log in with `password`, returning whether the server let us in.
async fn login(port: u16, password: &str) -> Result<(), tokio_postgres::Error> {
    let config =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres password='{password}'");
    let (client, conn) = tokio_postgres::connect(&config, NoTls).await?;
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn password_cluster_starts_checks_passwords_and_stops() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut opts = ClusterOptions::new(tmp.0.join("data"), port);
    opts.superuser_password = Some("right-pw".into());
    opts.hba = vec!["host all all 127.0.0.1/32 scram-sha-256".into()];

    let start_opts = opts.clone();
    let mut cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(start_opts))
        .await
        .expect("join")
        .expect("cluster starts");
    assert!(cluster.is_owned());
    assert_eq!(cluster.port(), port);
    assert!(is_reachable("127.0.0.1", port));
    assert_eq!(cluster.url(), format!("postgres://postgres:right-pw@127.0.0.1:{port}/postgres"));

    login(port, "right-pw").await.expect("right password is accepted");
    let wrong = login(port, "wrong-pw").await.expect_err("wrong password is refused");
    assert_eq!(wrong.code(), Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD), "{wrong:?}");
    let (client, conn) =
        tokio_postgres::connect(&cluster.url(), NoTls).await.expect("url() connects");
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.expect("query through url()");
    drop(client);

    // A second start on the same directory attaches instead of starting, and leaves the
    // server running when dropped.
    let reuse = tokio::task::spawn_blocking(move || EmbeddedCluster::start(opts))
        .await
        .expect("join")
        .expect("attach");
    assert!(!reuse.is_owned());
    assert_eq!(reuse.port(), port);
    drop(reuse);
    assert!(is_reachable("127.0.0.1", port), "dropping an attached cluster must not stop it");

    tokio::task::spawn_blocking(move || {
        cluster.stop().expect("stop");
        cluster.stop().expect("second stop is a no-op");
    })
    .await
    .expect("join");
    assert!(!is_reachable("127.0.0.1", port));
}

#[test]
fn drop_stops_an_owned_cluster_and_restart_reuses_the_data() {
    let tmp = TempDir::new();
    let port = free_port();
    let opts = ClusterOptions::new(tmp.0.join("data"), port);
    let cluster = EmbeddedCluster::start(opts.clone()).expect("first start");
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    drop(cluster);
    assert!(!is_reachable("127.0.0.1", port), "drop stops what it started");

    let mut again = EmbeddedCluster::start(opts).expect("restart on existing data");
    assert!(again.is_owned());
    assert!(is_reachable("127.0.0.1", port));
    again.stop().expect("stop");
}

#[test]
fn failed_start_names_the_command_and_shows_the_log() {
    let tmp = TempDir::new();
    let mut opts = ClusterOptions::new(tmp.0.join("data"), free_port());
    // An hba method Postgres does not know makes the server refuse to start.
    opts.hba = vec!["host all all 127.0.0.1/32 no-such-method".into()];
    let err = EmbeddedCluster::start(opts).expect_err("must fail");
    let text = err.to_string();
    assert!(text.contains("pg_ctl"), "{text}");
    assert!(text.contains("server log tail"), "{text}");
    assert!(text.contains("no-such-method"), "{text}");
}
