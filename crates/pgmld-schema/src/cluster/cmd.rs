//! Running the cluster's commands, as the `postgres` user when pgmld runs as root (Postgres
//! refuses to run as root).

use crate::SchemaError;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// How many lines of the server log an error carries.
const LOG_TAIL_LINES: usize = 30;

/// Whether this process runs as root, in which case commands go through `runuser`.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Starts commands for the cluster, switching to the `postgres` user when needed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runner {
    /// Run every command through `runuser -u postgres --`.
    pub(crate) as_postgres: bool,
}

impl Runner {
    /// Runs `program args…` and fails unless it exits with status 0; the error carries its
    /// output and the tail of `log` when given.
    pub(crate) fn run(
        &self,
        program: &Path,
        args: &[OsString],
        log: Option<&Path>,
    ) -> Result<Output, SchemaError> {
        let output = self.output(program, args)?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(failure(&self.line(program, args), output.status.to_string(), &output, log))
        }
    }

    /// Runs `program args…` and returns its output whatever the exit status; fails only when
    /// it cannot be started.
    pub(crate) fn output(&self, program: &Path, args: &[OsString]) -> Result<Output, SchemaError> {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // "/" is readable by the postgres user, unlike root's working directory may be.
        command.args(args).current_dir("/");
        command.output().map_err(|e| SchemaError::Command {
            command: self.line(program, args),
            status: format!("cannot start: {e}"),
            output: String::new(),
            log_tail: String::new(),
        })
    }

    /// The command line as a human would type it, for error messages.
    fn line(&self, program: &Path, args: &[OsString]) -> String {
        let mut parts = Vec::with_capacity(args.len() + 4);
        if self.as_postgres {
            parts.push("runuser -u postgres --".to_string());
        }
        parts.push(program.display().to_string());
        parts.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
        parts.join(" ")
    }

    /// Gives `path` (recursively) to the postgres user when running as root; else nothing.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), SchemaError> {
        if !self.as_postgres {
            return Ok(());
        }
        let args = [OsString::from("-R"), OsString::from("postgres"), path.as_os_str().to_owned()];
        let output =
            Command::new("chown").args(&args).output().map_err(|e| SchemaError::Command {
                command: format!("chown -R postgres {}", path.display()),
                status: format!("cannot start: {e}"),
                output: String::new(),
                log_tail: String::new(),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(failure(
                &format!("chown -R postgres {}", path.display()),
                output.status.to_string(),
                &output,
                None,
            ))
        }
    }
}

/// Builds the error for a command that exited unsuccessfully.
fn failure(command: &str, status: String, output: &Output, log: Option<&Path>) -> SchemaError {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    SchemaError::Command {
        command: command.to_string(),
        status,
        output: text.trim().to_string(),
        log_tail: log.map(log_tail).unwrap_or_default(),
    }
}

/// The last lines of a log file; empty when it cannot be read.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_command_reports_line_and_output() {
        let runner = Runner { as_postgres: false };
        let args = [OsString::from("-c"), OsString::from("echo oops >&2; exit 3")];
        let err = runner.run(Path::new("/bin/sh"), &args, None).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("/bin/sh -c echo oops"), "{text}");
        assert!(text.contains("oops"), "{text}");
        assert!(text.contains('3'), "{text}");
    }

    #[test]
    fn missing_program_is_named() {
        let runner = Runner { as_postgres: false };
        let err = runner.run(Path::new("/nonexistent/initdb"), &[], None).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/initdb"), "{err}");
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = std::env::temp_dir().join(format!("pgmld-tail-{:x}", rand::random::<u64>()));
        fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("log");
        let body: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&file, body).expect("write");
        let tail = log_tail(&file);
        assert!(tail.starts_with("line 70\n") && tail.ends_with("line 99"), "{tail}");
        assert_eq!(log_tail(&dir.join("missing")), "");
        let _ = fs::remove_dir_all(&dir);
    }
}
