//! pgmld runs by itself (#19): the binary finds libtorch through its RUNPATH with an empty
//! environment, `scripts/setup.sh install` lays out a directory that still runs after it is
//! moved, and a taken port fails startup with a message naming the setting that moves it.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::process::{repo, run, Output};
use support::{temp_dir, UPSTREAM};

/// `cmd` with nothing in its environment but PATH (no LD_LIBRARY_PATH, no LIBTORCH).
fn bare(mut cmd: Command) -> Command {
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

fn show(out: &Output) -> String {
    format!("--- stdout ---\n{}\n--- stderr ---\n{}", out.stdout, out.stderr)
}

#[test]
fn help_runs_with_an_empty_environment() {
    let mut cmd = bare(Command::new(env!("CARGO_BIN_EXE_pgmld")));
    cmd.arg("--help");
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.ok, "pgmld --help failed without LD_LIBRARY_PATH\n{}", show(&out));
    assert!(out.stdout.contains("--metrics-listen"), "{}", show(&out));
}

#[test]
fn a_taken_metrics_port_names_the_setting_that_moves_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = temp_dir("pgmld-metrics-taken");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmld"));
    cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", &addr, "--upstream", UPSTREAM])
        .arg("--data-dir")
        .arg(&data)
        .env("PGMLD_RESUME_JOBS", "false");
    let out = run(cmd, Duration::from_secs(60));
    assert!(!out.ok, "pgmld started although {addr} is taken\n{}", show(&out));
    for part in [
        addr.as_str(),
        "--metrics-listen",
        "metrics_listen",
        "PGMLD_METRICS_LISTEN",
        "--metrics-listen ''",
    ] {
        assert!(out.stderr.contains(part), "{part:?} missing\n{}", show(&out));
    }
    // It failed before reaching the upstream: nothing was listening for clients yet.
    assert!(!out.stdout.contains("pgmld listening on"), "{}", show(&out));
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_taken_client_port_names_listen() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = temp_dir("pgmld-listen-taken");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmld"));
    // Metrics off with an empty address, so only the client port can clash.
    cmd.args(["--listen", &addr, "--metrics-listen", "", "--upstream", UPSTREAM])
        .arg("--data-dir")
        .arg(&data)
        .env("PGMLD_RESUME_JOBS", "false");
    let out = run(cmd, Duration::from_secs(120));
    assert!(!out.ok, "pgmld started although {addr} is taken\n{}", show(&out));
    for part in [addr.as_str(), "--listen HOST:PORT", "PGMLD_LISTEN", "Postgres clients"] {
        assert!(out.stderr.contains(part), "{part:?} missing\n{}", show(&out));
    }
    assert!(!out.stdout.contains("pgmld metrics on"), "metrics should be off\n{}", show(&out));
    let _ = std::fs::remove_dir_all(&data);
}

/// The libraries `ldd` resolves for `binary` in an empty environment: (name, path).
fn resolved_libs(binary: &Path) -> Vec<(String, String)> {
    let mut cmd = Command::new("ldd");
    cmd.arg(binary).env_clear();
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.ok, "ldd {}\n{}", binary.display(), show(&out));
    out.stdout
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            Some((name.to_string(), rest.split(" (").next().unwrap_or(rest).to_string()))
        })
        .collect()
}

#[test]
fn install_prefix_lays_out_a_directory_that_runs_after_a_move() {
    let tmp = temp_dir("pgmld-install");
    let first = tmp.join("first");
    let mut cmd = bare(Command::new("bash"));
    cmd.arg(repo().join("scripts/setup.sh"))
        .args(["install", "--prefix"])
        .arg(&first)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_pgmld"));
    let out = run(cmd, Duration::from_secs(300));
    assert!(out.ok, "setup.sh install failed\n{}", show(&out));
    assert!(first.join("bin/pgmld").is_file());
    assert!(first.join("lib/libtorch_cpu.so").is_file(), "{}", show(&out));
    // Moved: nothing may point back at the first place, nor at the build's libtorch.
    let moved = tmp.join("moved");
    std::fs::rename(&first, &moved).unwrap();
    let libs = resolved_libs(&moved.join("bin/pgmld"));
    let torch: Vec<&(String, String)> =
        libs.iter().filter(|(n, _)| n.starts_with("libtorch") || n.starts_with("libc10")).collect();
    assert!(!torch.is_empty(), "{libs:?}");
    for (name, path) in &libs {
        assert!(path != "not found", "{name} not found: {libs:?}");
    }
    let lib = moved.join("lib").canonicalize().unwrap();
    for (name, path) in torch {
        // ldd prints `$ORIGIN/../lib` expanded: `moved/bin/../lib/…`.
        let real = Path::new(path).canonicalize().unwrap();
        assert!(real.starts_with(&lib), "{name} resolves to {path}, not under {}", moved.display());
    }
    let mut cmd = Command::new(moved.join("bin/pgmld"));
    cmd.arg("--help").env_clear();
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.ok, "installed pgmld --help failed in an empty environment\n{}", show(&out));
    // Without --prefix, install says what it needs.
    let mut cmd = bare(Command::new("bash"));
    cmd.arg(repo().join("scripts/setup.sh")).arg("install");
    let out = run(cmd, Duration::from_secs(60));
    assert!(!out.ok && out.stderr.contains("--prefix DIR"), "{}", show(&out));
    let _ = std::fs::remove_dir_all(&tmp);
}
