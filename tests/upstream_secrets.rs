//! Where pgmld's own upstream password comes from, without putting it on a command line:
//! the URL, then `upstream_password` (config file or `PGMLD_UPSTREAM_PASSWORD`), then
//! `PGPASSWORD`, then the password file (`PGPASSFILE`, else `~/.pgpass`). The upstream is
//! a private cluster whose superuser needs a SCRAM password, so pgmld starting (it migrates
//! over its own connection) proves it found the password. And `--print-config` never
//! shows one.

mod support;
#[path = "support/upstream.rs"]
mod upstream;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use support::{Pgmld, Start};
use upstream::{cluster, psql, start_failing, url, Scratch, PW};

/// pgmld in front of the cluster with `env` (HOME is the scratch directory unless `env`
/// says otherwise; PGPASSWORD and PGPASSFILE are blank unless set). Checks a session and a
/// pgml call that opens pgmld's own connection, and that the log holds no password.
fn starts_and_serves(
    scratch: &Scratch,
    upstream_url: String,
    extra_args: Vec<String>,
    env: &[(&str, &str)],
) {
    let mut all: Vec<(String, String)> = vec![
        ("HOME".into(), scratch.0.display().to_string()),
        ("PGPASSWORD".into(), String::new()),
        ("PGPASSFILE".into(), String::new()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let p = Pgmld::start_with(Start { upstream: Some(upstream_url), extra_args, env: all });
    let csv = scratch.path("pw.csv");
    std::fs::write(&csv, "a,b\n1,x\n2,y\n").unwrap();
    let load = format!("SELECT rows FROM pgml.load_dataset('{}', kwargs => '{{\"table\": \"pw\", \"if_exists\": \"replace\"}}')", csv.display());
    let out = psql(p.addr.port(), &scratch.0, &["SELECT current_user", &load]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\npgmld log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.log_text()
    );
    assert_eq!(stdout, "postgres\n2\n");
    assert!(!p.log_text().contains(PW), "the password leaked into the log:\n{}", p.log_text());
}

/// Writes a password file with `mode`.
fn passfile(path: &Path, port: u16, password: &str, mode: u32) {
    std::fs::write(path, format!("# test\n127.0.0.1:{port}:*:postgres:{password}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn upstream_password_sources() {
    let scratch = Scratch::new("pgmld-upsecret");
    let mut cluster = cluster(&scratch, None);
    let port = cluster.port();
    let bare = url("127.0.0.1", port, None, "");

    // No password anywhere: the upstream's refusal, and no password in it.
    let (code, e) = start_failing(&scratch.0, &["--upstream".into(), bare.clone()], &[]);
    assert_ne!(code, Some(0));
    assert!(e.contains("password"), "{e}");

    // PGPASSWORD.
    starts_and_serves(&scratch, bare.clone(), vec![], &[("PGPASSWORD", PW)]);

    // PGPASSFILE, 0600.
    let file = scratch.path("pgpass");
    passfile(&file, port, PW, 0o600);
    starts_and_serves(&scratch, bare.clone(), vec![], &[("PGPASSFILE", file.to_str().unwrap())]);

    // ~/.pgpass.
    let home = scratch.path("home");
    std::fs::create_dir_all(&home).unwrap();
    passfile(&home.join(".pgpass"), port, PW, 0o600);
    starts_and_serves(&scratch, bare.clone(), vec![], &[("HOME", home.to_str().unwrap())]);

    // A password file others may read is ignored, as libpq does, with a warning.
    let loose = scratch.path("pgpass-loose");
    passfile(&loose, port, PW, 0o644);
    let (code, e) = start_failing(
        &scratch.0,
        &["--upstream".into(), bare.clone()],
        &[("PGPASSFILE", loose.to_str().unwrap())],
    );
    assert_ne!(code, Some(0));
    assert!(e.contains("group or world access"), "{e}");
    assert!(!e.contains(PW), "{e}");

    // upstream_password in the config file wins over a wrong PGPASSWORD and password file.
    let config = scratch.path("pgmld.toml");
    std::fs::write(&config, format!("upstream_password = \"{PW}\"\n")).unwrap();
    passfile(&file, port, "wrong-file", 0o600);
    let args = vec!["--config".to_string(), config.display().to_string()];
    starts_and_serves(
        &scratch,
        bare.clone(),
        args,
        &[("PGPASSWORD", "wrong-env"), ("PGPASSFILE", file.to_str().unwrap())],
    );
    // ... and as PGMLD_UPSTREAM_PASSWORD.
    starts_and_serves(
        &scratch,
        bare.clone(),
        vec![],
        &[("PGMLD_UPSTREAM_PASSWORD", PW), ("PGPASSWORD", "wrong-env")],
    );

    // The URL's password wins over everything.
    let with_pw = url("127.0.0.1", port, Some(PW), "");
    starts_and_serves(
        &scratch,
        with_pw,
        vec![],
        &[("PGMLD_UPSTREAM_PASSWORD", "wrong-cfg"), ("PGPASSWORD", "wrong-env")],
    );

    // Wrong everywhere: the upstream's own error.
    let (code, e) =
        start_failing(&scratch.0, &["--upstream".into(), bare], &[("PGPASSWORD", "wrong-env")]);
    assert_ne!(code, Some(0));
    assert!(e.contains("password authentication failed for user \"postgres\""), "{e}");
    assert!(!e.contains("wrong-env"), "{e}");

    cluster.stop().expect("stop cluster");
}

#[test]
fn print_config_shows_no_password() {
    let print = |upstream: &str, env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pgmld"))
            .args(["--print-config", "--upstream", upstream])
            .envs(env.iter().copied())
            .output()
            .expect("pgmld --print-config");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = print(
        "postgres://alice:url-Secret_1@db.example:5433/app?sslmode=require",
        &[("PGMLD_UPSTREAM_PASSWORD", "cfg-Secret_2")],
    );
    assert!(
        out.contains(
            "upstream = \"postgres://alice:<redacted>@db.example:5433/app?sslmode=require\""
        ),
        "{out}"
    );
    assert!(out.contains("upstream_password = \"<redacted>\""), "{out}");
    assert!(!out.contains("url-Secret_1") && !out.contains("cfg-Secret_2"), "{out}");
    let out = print("host=db.example user=alice password='kv Secret_3' dbname=app", &[]);
    assert!(out.contains("password=<redacted>") && !out.contains("Secret_3"), "{out}");
}
