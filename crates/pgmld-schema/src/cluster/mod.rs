//! A private Postgres cluster under pgmld's data directory, for when no upstream answers.
//!
//! Uses the system's server binaries through blocking commands (it runs once, at startup).
//! When pgmld runs as root, every command runs as the `postgres` user via `runuser` and the
//! cluster's directories are given to that user first.

mod bins;
mod cmd;
mod hba;
mod options;

pub use bins::find_bin_dir;
pub use options::ClusterOptions;

use crate::SchemaError;
use cmd::{is_root, log_tail, Runner};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Name of the server log file, inside the data directory.
const LOG_FILE: &str = "pgmld-postgres.log";
/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "60";

/// A running private cluster. Stops the server when dropped, but only if this value started
/// it (a cluster found already running is left alone).
#[derive(Debug)]
pub struct EmbeddedCluster {
    /// The data directory.
    data_dir: PathBuf,
    /// Port the server listens on (the running server's, when one was reused).
    port: u16,
    /// Directory of the server binaries.
    bin_dir: PathBuf,
    /// Unix socket directory.
    socket_dir: PathBuf,
    /// Server log file.
    log_file: PathBuf,
    /// Superuser password, for [`EmbeddedCluster::url`].
    password: Option<String>,
    /// How commands are run (as postgres when root).
    runner: Runner,
    /// Whether this value started the server and so must stop it.
    owned: bool,
    /// Whether [`EmbeddedCluster::stop`] already ran.
    stopped: bool,
}

impl EmbeddedCluster {
    /// Initialises (when needed) and starts the cluster described by `opts`, or attaches to
    /// the server already running on its data directory. Rewrites `pg_hba.conf` each time.
    pub fn start(opts: ClusterOptions) -> Result<EmbeddedCluster, SchemaError> {
        let bin_dir = find_bin_dir(opts.bin_dir.as_deref())?;
        let runner = Runner { as_postgres: is_root() };
        let data_dir = absolute(&opts.data_dir)?;
        let socket_dir = options::socket_dir(&data_dir, opts.port);
        let hba_text = hba::contents(&opts.hba, &opts.auth_default, &data_dir)?;
        for dir in [&data_dir, &socket_dir] {
            fs::create_dir_all(dir)
                .map_err(|e| SchemaError::io("cannot create directory", dir, e))?;
            runner.chown(dir)?;
        }
        set_mode(&data_dir, 0o700)?;

        let mut cluster = EmbeddedCluster {
            log_file: data_dir.join(LOG_FILE),
            data_dir,
            port: opts.port,
            bin_dir,
            socket_dir,
            password: opts.superuser_password.clone(),
            runner,
            owned: false,
            stopped: false,
        };
        if !cluster.data_dir.join("PG_VERSION").is_file() {
            cluster.initdb(&opts)?;
        }
        let hba_path = cluster.data_dir.join("pg_hba.conf");
        fs::write(&hba_path, hba_text)
            .map_err(|e| SchemaError::io("cannot write", &hba_path, e))?;
        runner.chown(&hba_path)?;

        if cluster.is_running()? {
            cluster.attach(opts.port)?;
        } else {
            cluster.start_server()?;
        }
        Ok(cluster)
    }

    /// Runs initdb with the superuser `postgres`, the default auth method and the password.
    fn initdb(&self, opts: &ClusterOptions) -> Result<(), SchemaError> {
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-U".into(),
            "postgres".into(),
            format!("--auth={}", opts.auth_default).into(),
            "-E".into(),
            "UTF8".into(),
            "--no-locale".into(),
        ];
        let pwfile = match &opts.superuser_password {
            Some(pw) => {
                let path = self.socket_dir.join(format!("pgmld-pwfile-{}", std::process::id()));
                write_private(&path, pw)?;
                self.runner.chown(&path)?;
                let mut arg = OsString::from("--pwfile=");
                arg.push(&path);
                args.push(arg);
                Some(path)
            }
            None => None,
        };
        let result = self.runner.run(&self.bin_dir.join("initdb"), &args, None);
        if let Some(path) = pwfile {
            let _ = fs::remove_file(path);
        }
        result.map(
            |_| tracing::info!(data_dir = %self.data_dir.display(), "private cluster initialised"),
        )
    }

    /// Whether a server is running on the data directory (`pg_ctl status` exits 0).
    fn is_running(&self) -> Result<bool, SchemaError> {
        let args: Vec<OsString> = vec!["status".into(), "-D".into(), self.data_dir.clone().into()];
        Ok(self.runner.output(&self.bin_dir.join("pg_ctl"), &args)?.status.success())
    }

    /// Adopts a server found running: reads its port and reloads the rewritten hba file.
    fn attach(&mut self, wanted_port: u16) -> Result<(), SchemaError> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let text = fs::read_to_string(&pid_file)
            .map_err(|e| SchemaError::io("cannot read", &pid_file, e))?;
        // Line 4 of postmaster.pid is the port.
        let port =
            text.lines().nth(3).and_then(|l| l.trim().parse::<u16>().ok()).ok_or_else(|| {
                SchemaError::Cluster {
                    data_dir: self.data_dir.clone(),
                    message: "postmaster.pid has no port".into(),
                }
            })?;
        if port != wanted_port {
            tracing::warn!(
                port,
                wanted_port,
                "private cluster already running on another port; using it"
            );
        }
        self.port = port;
        let args: Vec<OsString> = vec!["reload".into(), "-D".into(), self.data_dir.clone().into()];
        self.runner.run(&self.bin_dir.join("pg_ctl"), &args, Some(&self.log_file))?;
        tracing::info!(data_dir = %self.data_dir.display(), port, "reusing running private cluster");
        Ok(())
    }

    /// Starts the server with `pg_ctl start -w`, on 127.0.0.1 and the socket directory.
    fn start_server(&mut self) -> Result<(), SchemaError> {
        let server_opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            options::shell_quote(&self.socket_dir.to_string_lossy())
        );
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-l".into(),
            self.log_file.clone().into(),
            "-w".into(),
            "-t".into(),
            PG_CTL_WAIT_SECS.into(),
            "-o".into(),
            server_opts.into(),
            "start".into(),
        ];
        self.runner.run(&self.bin_dir.join("pg_ctl"), &args, Some(&self.log_file))?;
        self.owned = true;
        tracing::info!(data_dir = %self.data_dir.display(), port = self.port, "private cluster started");
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast`) if this value started it; otherwise does
    /// nothing. Safe to call twice.
    pub fn stop(&mut self) -> Result<(), SchemaError> {
        if !self.owned || self.stopped {
            return Ok(());
        }
        let args: Vec<OsString> = vec![
            "stop".into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
            "-t".into(),
            PG_CTL_WAIT_SECS.into(),
        ];
        self.runner.run(&self.bin_dir.join("pg_ctl"), &args, Some(&self.log_file))?;
        self.stopped = true;
        tracing::info!(data_dir = %self.data_dir.display(), "private cluster stopped");
        Ok(())
    }

    /// Connection URL for the superuser: `postgres://postgres[:pw]@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        options::url(self.port, self.password.as_deref())
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's Unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log file, for operators chasing a failure.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The directory the server binaries were taken from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Whether this value started the server (and so stops it on drop).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// The last lines of the server log, for error reports.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_file)
    }
}

impl Drop for EmbeddedCluster {
    /// Stops a server this value started; failures are logged, as Drop cannot return them.
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "cannot stop the private cluster");
        }
    }
}

/// `path` made absolute against the working directory, as the commands run from `/`.
fn absolute(path: &Path) -> Result<PathBuf, SchemaError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| SchemaError::io("cannot resolve relative path", path, e))?;
    Ok(cwd.join(path))
}

/// Sets a directory's permission bits (Postgres insists on 0700 or 0750 for its data).
fn set_mode(path: &Path, mode: u32) -> Result<(), SchemaError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| SchemaError::io("cannot set permissions of", path, e))
}

/// Writes a file readable by its owner only (the initdb password file).
fn write_private(path: &Path, text: &str) -> Result<(), SchemaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SchemaError::io("cannot create", path, e))?;
    writeln!(file, "{text}").map_err(|e| SchemaError::io("cannot write", path, e))
}

#[cfg(test)]
mod tests;
