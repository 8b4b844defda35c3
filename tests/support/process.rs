//! Child processes for the client tests (Python, Node): run a command to completion with a
//! deadline, capturing both streams, so a hung client fails its test instead of hanging the
//! suite; and the Python environment the client tests share (`.deps/python` plus the
//! in-repo client on `PYTHONPATH`), or PostgresML's own SDK alone ([`python_sdk`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished (or killed) child left: whether it exited 0, and its output.
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Whether the child exited 0 and printed `line` (trimmed) on a line of its own: the
    /// client scripts print a final "... ok" line only after every check passed.
    pub fn printed_ok(&self, line: &str) -> bool {
        self.ok && self.stdout.lines().any(|l| l.trim() == line)
    }
}

/// The repository root (the root package's manifest directory).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Panics with the setup hint when a test dependency is missing.
pub fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} missing at {}; run `bash scripts/setup.sh deps`",
        path.display()
    );
}

/// Runs `cmd` (stdin closed, both streams captured) until it exits or `timeout` passes; a
/// child still running then is killed, and stderr says so.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out_t = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err_t = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, mut stderr) = (out_t.join().unwrap_or_default(), err_t.join().unwrap_or_default());
    if status.is_none() {
        stderr.push_str(&format!("\n[killed after {timeout:?}]"));
    }
    Output { ok: status.is_some_and(|s| s.success()), stdout, stderr }
}

/// `python3 args…` in the repository root with the Python client (`clients/python/src`)
/// and the test packages (`.deps/python`) importable, unbuffered, and without the
/// environment variables the client reads (so only the arguments configure it). The
/// client comes first: its `import pgml` alias must win over PostgresML's SDK, which
/// `.deps/python` also holds under that name (see [`python_sdk`]). Callers [`require`]
/// the packages they import.
pub fn python(args: &[&str]) -> Command {
    let root = repo();
    let deps = root.join(".deps/python");
    let path = format!("{}:{}", root.join("clients/python/src").display(), deps.display());
    python_with(args, path)
}

/// [`python`] with only the test packages (`.deps/python`) on `PYTHONPATH`, not the
/// in-repo client, so `import pgml` is PostgresML's SDK from PyPI
/// (tests/clients/requirements.txt).
pub fn python_sdk(args: &[&str]) -> Command {
    python_with(args, repo().join(".deps/python").display().to_string())
}

fn python_with(args: &[&str], path: String) -> Command {
    let root = repo();
    let mut cmd = Command::new("python3");
    cmd.args(args)
        .current_dir(&root)
        .env("PYTHONPATH", path)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("PGML_DATABASE_URL")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("CRUD_SKIP_PGML")
        .env_remove("PGPASSWORD");
    cmd
}

/// Asserts that `out` exited 0 and printed `ok_line`, showing both streams and `log` (the
/// pgmld log) when it did not.
pub fn assert_printed_ok(what: &str, out: &Output, ok_line: &str, log: &str) {
    assert!(
        out.printed_ok(ok_line),
        "{what} failed (exit ok: {}, {ok_line:?} printed: {})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- pgmld log ---\n{log}",
        out.ok,
        out.stdout.lines().any(|l| l.trim() == ok_line),
        out.stdout,
        out.stderr,
    );
}
