//! Private upstream clusters for the upstream TLS and password tests (SCRAM roles as in
//! `tests/auth.rs`, optionally TLS-only), test certificates made with the `openssl` CLI,
//! and pgmld runs that are expected to stop at startup. Included by those tests with
//! `#[path]`, next to `mod support`.
#![allow(dead_code)]

use crate::support::temp_dir;
use pgmld_schema::{ClusterOptions, EmbeddedCluster};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The upstream superuser's password.
pub const PW: &str = "Up-Secret_7";

/// A scratch directory (traversable by the `postgres` user), removed on drop unless the
/// test failed.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let d = temp_dir(prefix);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(d)
    }

    pub fn path(&self, name: &str) -> PathBuf {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// PEM files: a CA, a server certificate it signed for `DNS:localhost` only (so
/// `127.0.0.1` does not match it), the server's key, and an unrelated CA.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes [`Certs`] in `dir` (ECDSA P-256, valid for two days).
pub fn certs(dir: &Path) -> Certs {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"];
    for (stem, cn) in [("ca", "pgmld-test-ca"), ("other-ca", "pgmld-other-ca")] {
        let (key, crt, subj) = (format!("{stem}.key"), format!("{stem}.crt"), format!("/CN={cn}"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-subj",
            &subj,
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ],
    );
    Certs {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        other_ca: dir.join("other-ca.crt"),
    }
}

/// A private cluster whose `postgres` superuser logs in with SCRAM and [`PW`]. With
/// `tls`, the server has `ssl = on` with that certificate and key, and refuses every
/// connection without TLS (`hostnossl … reject`).
pub fn cluster(scratch: &Scratch, tls: Option<&Certs>) -> EmbeddedCluster {
    let mut last_err = String::new();
    for attempt in 0..3 {
        let data = scratch.path(&format!("cluster{attempt}"));
        let mut opts = ClusterOptions::new(&data, free_port());
        opts.superuser_password = Some(PW.into());
        opts.auth_default = "scram-sha-256".into();
        let started = match tls {
            None => EmbeddedCluster::start(opts),
            Some(certs) => EmbeddedCluster::start(opts.clone()).and_then(|mut first| {
                // initdb done: add the server certificate, then restart TLS-only (the
                // start gives the new files to the postgres user).
                first.stop()?;
                std::fs::copy(&certs.server_cert, data.join("server.crt")).unwrap();
                std::fs::copy(&certs.server_key, data.join("server.key")).unwrap();
                std::fs::set_permissions(
                    data.join("server.key"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
                let conf = data.join("postgresql.conf");
                let mut text = std::fs::read_to_string(&conf).unwrap();
                text.push_str(
                    "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
                std::fs::write(&conf, text).unwrap();
                opts.hba = vec![
                    "hostnossl all all 127.0.0.1/32 reject".into(),
                    "hostnossl all all ::1/128 reject".into(),
                ];
                EmbeddedCluster::start(opts)
            }),
        };
        match started {
            Ok(c) => return c,
            // A port taken between free_port() and the server's bind: try another.
            Err(e) => last_err = e.to_string(),
        }
    }
    panic!("private cluster did not start: {last_err}");
}

/// `postgres://postgres[:password]@host:port/postgres?query`.
pub fn url(host: &str, port: u16, password: Option<&str>, query: &str) -> String {
    let creds = password.map_or("postgres".to_string(), |p| format!("postgres:{p}"));
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    format!("postgres://{creds}@{host}:{port}/postgres{query}")
}

/// Runs pgmld with `args` and `env` (on top of a bare environment: PATH, LD_LIBRARY_PATH and
/// HOME=`home`), waits for it to exit and returns (exit code, stderr). Panics if it is
/// still running after a minute.
pub fn start_failing(home: &Path, args: &[String], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let log = home.join(format!("stderr-{}", rand::random::<u32>()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmld"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LD_LIBRARY_PATH", std::env::var("LD_LIBRARY_PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PGMLD_RESUME_JOBS", "false")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir"])
        .arg(home.join(format!("data-{}", rand::random::<u32>())))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
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
                "pgmld kept running ({args:?}); stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), std::fs::read_to_string(&log).unwrap_or_default())
}

/// psql to 127.0.0.1:`port` as `postgres` with [`PW`], plain, never reading the user's
/// psqlrc, passfile or SSL files; `cmds` as `-c` commands, unaligned tuples only.
pub fn psql(port: u16, home: &Path, cmds: &[&str]) -> Output {
    psql_with(port, home, "sslmode=disable", cmds)
}

/// [`psql`] with `conninfo` (sslmode and such) appended to the connection string.
pub fn psql_with(port: u16, home: &Path, conninfo: &str, cmds: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "psql"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PGPASSWORD", PW)
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!("host=127.0.0.1 port={port} user=postgres dbname=postgres {conninfo}"));
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd.output().expect("psql")
}
