//! TLS between clients and pgmld (the upstream leg stays plain): psql with every sslmode
//! against pgmld with and without a certificate, and pgmld refusing to start on a bad
//! certificate or key.

mod support;

use pgmld_schema::{ClusterOptions, EmbeddedCluster};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{temp_dir, Pgmld, Start, UPSTREAM};

/// A scratch directory, removed on drop unless the test failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let d = temp_dir("pgmld-tls");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A self-signed certificate for CN=localhost and its key, as PEM files in `dir`.
fn self_signed(dir: &Scratch, stem: &str) -> (PathBuf, PathBuf) {
    let cert = dir.path(&format!("{stem}.crt"));
    let key = dir.path(&format!("{stem}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// psql through pgmld with a full conninfo (`extra` appended), the SQL as `-c` commands,
/// never reading the user's psqlrc, passfile or SSL files.
fn psql(
    p: &Pgmld,
    scratch: &Scratch,
    conninfo_extra: &str,
    cmds: &[&str],
    env: &[(&str, &str)],
) -> Output {
    psql_with_stdin(p, scratch, conninfo_extra, cmds, env, None)
}

/// [`psql`], with a script on stdin (run when `cmds` is empty).
fn psql_with_stdin(
    p: &Pgmld,
    scratch: &Scratch,
    conninfo_extra: &str,
    cmds: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    // Bounded, so a stuck session fails the test instead of hanging it.
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "psql"]);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGPASSFILE", scratch.path("no-pgpass"))
        // Without these, a ~/.postgresql/root.crt would turn sslmode=require into verify-ca.
        .env("PGSSLROOTCERT", scratch.path("no-root.crt"))
        .env("PGSSLCERT", scratch.path("no-client.crt"))
        .env("PGSSLKEY", scratch.path("no-client.key"))
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres {conninfo_extra}",
            p.addr.port()
        ));
    for c in cmds {
        cmd.args(["-c", c]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Some(script) = stdin else {
        return cmd.output().expect("psql");
    };
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    let mut input = child.stdin.take().unwrap();
    let script = script.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(script.as_bytes());
    });
    let out = child.wait_with_output().expect("psql");
    writer.join().unwrap();
    out
}

const SSL_LINE: &str = "SSL connection (protocol: TLSv1.";

/// Connects with `sslmode`, checks pgml and a relayed query work, and returns whether
/// `\conninfo` reported an SSL connection.
fn session_works(p: &Pgmld, scratch: &Scratch, conninfo_extra: &str) -> bool {
    let out =
        psql(p, scratch, conninfo_extra, &["\\conninfo", "SELECT pgml.version()", "SELECT 1"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "psql with {conninfo_extra:?} failed: {}\nstdout: {stdout}\npgmld log:\n{}",
        text(&out.stderr),
        p.log_text()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.ends_with(&["pgmld 0.1.0", "1"]), "{conninfo_extra:?}: {stdout}");
    assert!(lines[0].starts_with("You are connected to database \"postgres\""), "{stdout}");
    stdout.contains(SSL_LINE)
}

fn tls_pgmld(cert: &Path, key: &Path) -> Pgmld {
    Pgmld::start_with(Start {
        env: vec![
            ("PGMLD_TLS_CERT".into(), cert.display().to_string()),
            ("PGMLD_TLS_KEY".into(), key.display().to_string()),
        ],
        ..Start::default()
    })
}

#[test]
fn tls_from_env_serves_ssl_and_plain_clients() {
    let scratch = Scratch::new();
    let (cert, key) = self_signed(&scratch, "server");
    let p = tls_pgmld(&cert, &key);

    assert!(
        session_works(&p, &scratch, "sslmode=require"),
        "sslmode=require must give an SSL connection"
    );
    assert!(
        session_works(&p, &scratch, "sslmode=prefer"),
        "sslmode=prefer must pick SSL when offered"
    );
    assert!(!session_works(&p, &scratch, "sslmode=disable"), "sslmode=disable must stay plain");
    // pgmld presents the configured certificate: full verification against it passes...
    let verify = format!(
        "sslmode=verify-full host=localhost hostaddr=127.0.0.1 sslrootcert={}",
        cert.display()
    );
    assert!(session_works(&p, &scratch, &verify));
    // ...and verification against another CA fails.
    let (other, _) = self_signed(&scratch, "other");
    let out = psql(
        &p,
        &scratch,
        &format!("sslmode=verify-ca sslrootcert={}", other.display()),
        &["SELECT 1"],
        &[],
    );
    assert!(!out.status.success(), "verify-ca against the wrong CA connected");
    assert!(text(&out.stderr).contains("certificate verify failed"), "{}", text(&out.stderr));

    // Bulk data both ways over TLS: a large statement in, many rows out.
    let big = "x".repeat(300_000);
    let script = format!("SELECT length('{big}');\nSELECT g FROM generate_series(1, 50000) g;\n");
    let out = psql_with_stdin(&p, &scratch, "sslmode=require", &[], &[], Some(&script));
    assert!(
        out.status.success(),
        "bulk over TLS: {:?} {}\npgmld log:\n{}",
        out.status,
        text(&out.stderr),
        p.log_text()
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 50_001, "{}", text(&out.stderr));
    assert_eq!(lines[0], "300000");
    assert_eq!(lines[1], "1");
    assert_eq!(lines[50_000], "50000");

    // Still serving after a failed handshake.
    assert!(session_works(&p, &scratch, "sslmode=require"));
}

#[test]
fn tls_from_config_file() {
    let scratch = Scratch::new();
    let (cert, key) = self_signed(&scratch, "server");
    let config = scratch.path("pgmld.toml");
    std::fs::write(
        &config,
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let p = Pgmld::start_with(Start {
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Start::default()
    });
    assert!(session_works(&p, &scratch, "sslmode=require"));
    let verify = format!(
        "sslmode=verify-full host=localhost hostaddr=127.0.0.1 sslrootcert={}",
        cert.display()
    );
    assert!(session_works(&p, &scratch, &verify));
    assert!(!session_works(&p, &scratch, "sslmode=disable"));
}

#[test]
fn without_tls_require_fails_and_prefer_falls_back() {
    let scratch = Scratch::new();
    let p = Pgmld::start();
    let out = psql(&p, &scratch, "sslmode=require", &["SELECT 1"], &[]);
    assert!(!out.status.success(), "sslmode=require connected to pgmld without TLS");
    let err = text(&out.stderr);
    assert!(err.contains("server does not support SSL, but SSL was required"), "{err}");
    assert!(!session_works(&p, &scratch, "sslmode=prefer"), "no SSL without a certificate");
    assert!(!session_works(&p, &scratch, "sslmode=disable"));
    // The refused SSL client did not hurt the daemon.
    assert!(!session_works(&p, &scratch, "sslmode=prefer"));
}

/// Starts the binary with `env` and waits for it to exit; returns (exit code, stderr).
/// Panics if it is still running after a minute (it should refuse to start).
fn start_expecting_failure(
    scratch: &Scratch,
    args: &[String],
    env: &[(&str, String)],
) -> (Option<i32>, String) {
    let data = scratch.path(&format!("data-{}", rand::random::<u32>()));
    let log = scratch.path(&format!("stderr-{}", rand::random::<u32>()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmld"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--upstream",
        UPSTREAM,
        "--data-dir",
    ])
    .arg(&data)
    .args(args)
    .env_remove("PGMLD_TLS_CERT")
    .env_remove("PGMLD_TLS_KEY")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn pgmld");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pgmld kept running with a bad TLS setup ({env:?} {args:?}); stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn bad_tls_setup_stops_pgmld_at_start_naming_the_file() {
    let scratch = Scratch::new();
    let (cert, key) = self_signed(&scratch, "server");
    let (_, other_key) = self_signed(&scratch, "other");
    let missing = scratch.path("missing.crt");
    let not_pem = scratch.path("garbage.crt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let s = |p: &Path| p.display().to_string();

    // (what, environment, file names one of which the error must mention)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "missing cert",
            vec![("PGMLD_TLS_CERT", s(&missing)), ("PGMLD_TLS_KEY", s(&key))],
            vec!["missing.crt"],
        ),
        (
            "missing key",
            vec![("PGMLD_TLS_CERT", s(&cert)), ("PGMLD_TLS_KEY", s(&scratch.path("missing.key")))],
            vec!["missing.key"],
        ),
        (
            "cert file without a certificate",
            vec![("PGMLD_TLS_CERT", s(&not_pem)), ("PGMLD_TLS_KEY", s(&key))],
            vec!["garbage.crt"],
        ),
        // The key file given as certificate: it holds no certificate.
        (
            "key as cert",
            vec![("PGMLD_TLS_CERT", s(&key)), ("PGMLD_TLS_KEY", s(&key))],
            vec!["server.key"],
        ),
        // The certificate given as key: it holds no private key.
        (
            "cert as key",
            vec![("PGMLD_TLS_CERT", s(&cert)), ("PGMLD_TLS_KEY", s(&cert))],
            vec!["server.crt"],
        ),
        // A valid certificate with another certificate's key.
        (
            "mismatched key",
            vec![("PGMLD_TLS_CERT", s(&cert)), ("PGMLD_TLS_KEY", s(&other_key))],
            vec!["server.crt", "other.key"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, env, names) in &cases {
        let (code, stderr) = start_expecting_failure(&scratch, &[], env);
        assert_ne!(code, Some(0), "{what}: pgmld exited 0; stderr:\n{stderr}");
        assert!(code.is_some(), "{what}: pgmld died by a signal; stderr:\n{stderr}");
        // Any one of the files involved named is enough for "mismatched key"; each of the
        // others has exactly one culprit.
        if !names.iter().any(|n| stderr.contains(n)) {
            failures.push(format!("{what}: error names none of {names:?}; stderr:\n{stderr}"));
        }
    }

    // Only one of the pair set.
    let (code, stderr) = start_expecting_failure(&scratch, &[], &[("PGMLD_TLS_CERT", s(&cert))]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("tls_cert and tls_key must be set together"), "{stderr}");

    // A config file naming a missing file fails the same way.
    let config = scratch.path("bad.toml");
    std::fs::write(&config, format!("tls_cert = {:?}\ntls_key = {:?}\n", s(&missing), s(&key)))
        .unwrap();
    let (code, stderr) = start_expecting_failure(&scratch, &["--config".into(), s(&config)], &[]);
    assert_ne!(code, Some(0), "{stderr}");
    if !stderr.contains("missing.crt") {
        failures.push(format!(
            "config file, missing cert: error does not name missing.crt; stderr:\n{stderr}"
        ));
    }

    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// SCRAM through a TLS client leg: libpq, on TLS, sees the upstream offer SCRAM-SHA-256
/// without channel binding (the upstream leg is plain) and must still log in.
#[test]
fn scram_login_over_tls() {
    let scratch = Scratch::new();
    let (cert, key) = self_signed(&scratch, "server");
    let password = "tls-Scram_9";
    let mut cluster = None;
    for attempt in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut opts = ClusterOptions::new(scratch.path(&format!("cluster{attempt}")), port);
        opts.superuser_password = Some(password.into());
        opts.auth_default = "scram-sha-256".into();
        if let Ok(c) = EmbeddedCluster::start(opts) {
            cluster = Some(c);
            break;
        }
    }
    let mut cluster = cluster.expect("private cluster starts");
    let p = Pgmld::start_with(Start {
        upstream: Some(cluster.url()),
        env: vec![
            ("PGMLD_TLS_CERT".into(), cert.display().to_string()),
            ("PGMLD_TLS_KEY".into(), key.display().to_string()),
        ],
        ..Default::default()
    });
    let out = psql(
        &p,
        &scratch,
        "sslmode=require",
        &["\\conninfo", "SELECT current_user", "SELECT pgml.version()"],
        &[("PGPASSWORD", password)],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\npgmld log:\n{}", text(&out.stderr), p.log_text());
    assert!(stdout.contains(SSL_LINE), "{stdout}");
    assert!(stdout.ends_with("postgres\npgmld 0.1.0\n"), "{stdout}");

    let out = psql(&p, &scratch, "sslmode=require", &["SELECT 1"], &[("PGPASSWORD", "wrong")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("password authentication failed for user \"postgres\""),
        "{}",
        text(&out.stderr)
    );

    drop(p);
    cluster.stop().expect("stop cluster");
}

/// psql running `COPY (… rows × 1000 bytes …) TO STDOUT` through pgmld over TLS, its stdout
/// a pipe nobody reads yet: once the pipe is full psql stops reading the socket, so pgmld
/// ends up writing into a full socket.
fn stalled_copy(port: u16, scratch: &Path, rows: u32) -> std::process::Child {
    Command::new("timeout")
        .args(["20", "psql"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGPASSFILE", scratch.join("no-pgpass"))
        .env("PGSSLROOTCERT", scratch.join("no-root.crt"))
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"))
        .arg("-c")
        .arg(format!("COPY (SELECT repeat('y', 999) FROM generate_series(1, {rows})) TO STDOUT"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql")
}

/// A large result sent while the client is not reading must arrive whole once it reads:
/// with TLS, bytes pgmld hands to the TLS layer while the socket is full have to be flushed
/// when the socket drains, not left behind until pgmld next writes (the client would wait
/// forever for the end of the result).
///
/// Whether the last write of a result meets a full socket depends on the result's size
/// against the socket buffers (about 4 MiB with Linux defaults: the send buffer's 4 MiB
/// ceiling plus the receive buffer's 128 KiB start), so results of 3 to 5.2 MB are tried in
/// steps smaller than the TLS layer's 64 KiB buffer.
#[test]
fn tls_large_result_reaches_a_reader_that_paused() {
    use std::io::Read;
    let scratch = Scratch::new();
    let (cert, key) = self_signed(&scratch, "server");
    let p = tls_pgmld(&cert, &key);
    let port = p.addr.port();
    let sizes: Vec<u32> = (3000..5200).step_by(24).collect();
    let mut stuck = Vec::new();
    // In batches, to stay well inside the upstream's connection limit.
    for batch in sizes.chunks(20) {
        let children: Vec<_> =
            batch.iter().map(|&rows| (rows, stalled_copy(port, &scratch.0, rows))).collect();
        // Let pgmld fill every socket and finish writing what it can.
        std::thread::sleep(Duration::from_millis(2500));
        let readers: Vec<_> = children
            .into_iter()
            .map(|(rows, mut child)| {
                std::thread::spawn(move || {
                    let mut out = child.stdout.take().unwrap();
                    let mut total = 0usize;
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = out.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n;
                    }
                    (rows, child.wait().unwrap(), total)
                })
            })
            .collect();
        for r in readers {
            let (rows, status, got) = r.join().unwrap();
            let want = rows as usize * 1000;
            if !status.success() || got != want {
                stuck.push(format!("{rows} rows: psql {status:?}, {got} of {want} bytes received"));
            }
        }
    }
    assert!(
        stuck.is_empty(),
        "results cut short over TLS (exit status 124: psql still waiting after 20 s):\n{}",
        stuck.join("\n")
    );
}
