//! pgmld's configuration.
//!
//! Values are layered: built-in defaults, then the TOML file (`--config`), then `PGMLD_*`
//! environment variables, then command-line flags (applied by the binary). Every field's
//! doc comment states its default; `config/pgmld.toml` in the repository lists them all.

mod error;

pub use error::ConfigError;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole configuration of one pgmld process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to, as with Postgres. Default `127.0.0.1:6432`.
    pub listen: String,
    /// Upstream Postgres URL (`postgres://user:pass@host:port/db`). Client sessions go to its
    /// host and port with the client's own user, password and database; pgmld's own
    /// connections (migrations, logs, weights) use the URL as written. Its `sslmode` and
    /// `sslrootcert` govern TLS to the upstream for both, as in libpq. Default: unset, which
    /// means `postgres://postgres@127.0.0.1:5432/postgres` when that answers, else a private
    /// cluster started under `data_dir` (see `embedded_port`).
    pub upstream: Option<String>,
    /// Password of the upstream URL's user for pgmld's own connections, so it need not be
    /// on a command line. Used when the URL has none; `PGPASSWORD`, then the password file
    /// (`PGPASSFILE`, else `~/.pgpass`) come after it. Never printed: `--print-config` and
    /// `Debug` show `<redacted>`. Default: unset.
    pub upstream_password: Option<SecretString>,
    /// Directory for pgmld's own state: the private Postgres cluster when one is needed, model
    /// caches later. Default `./pgmld-data`.
    pub data_dir: PathBuf,
    /// TCP port of the private Postgres cluster started when no upstream is reachable.
    /// Default `6543`.
    pub embedded_port: u16,
    /// Directory holding `initdb`, `pg_ctl` and `postgres` for the private cluster. Default:
    /// unset, found with `pg_config --bindir` or the newest `/usr/lib/postgresql/*/bin`.
    pub pg_bin_dir: Option<PathBuf>,
    /// PEM certificate chain for TLS towards clients. With `tls_key`, SSLRequest is answered
    /// with `S`; without, with `N` (plain connections only). Default: unset.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`. Default: unset.
    pub tls_key: Option<PathBuf>,
    /// Address of the Prometheus `/metrics` HTTP endpoint; empty turns it off.
    /// Default `127.0.0.1:9187`.
    pub metrics_listen: String,
    /// tracing filter (`info`, `pgmld=debug,warn`, ...). `RUST_LOG` wins when set.
    /// Default `info`.
    pub log_level: String,
    /// Log format: `text` or `json`. Default `text`.
    pub log_format: String,
    /// Seconds to wait for open sessions to finish after SIGTERM / SIGINT before closing
    /// them. Default `30`.
    pub shutdown_timeout_secs: u64,
    /// Seconds allowed for connecting to the upstream for a client session. Default `10`.
    pub connect_timeout_secs: u64,
    /// Seconds a new client connection may take to finish startup and authentication
    /// (TLS handshake, startup packet, the relayed password exchange); a connection still
    /// starting after that is logged and closed, as Postgres' own `authentication_timeout`
    /// does. `0` turns the limit off. Default `60`.
    pub authentication_timeout: u64,
    /// Largest frontend message accepted, in bytes; larger ones close the connection with
    /// an error, as Postgres does. Default `1073741824` (1 GiB, Postgres' own limit).
    pub max_message_bytes: usize,
    /// Threads that move client/upstream bytes, each running its own single-threaded event
    /// loop with whole sessions pinned to it; `0` means one per four CPUs, at least one
    /// (the other CPUs belong to Postgres and its clients; on a 2-CPU host one thread gave
    /// a shorter tail than two at 50 pgbench clients, 11.2 vs 15.1 ms p99). Training
    /// and inference never run on them. Default `0`.
    pub session_threads: usize,
    /// Scheduler time slice, in microseconds, that session threads ask Linux for
    /// (`sched_setattr`, the EEVDF scheduler of Linux 6.12+; older kernels ignore it). A
    /// short slice gets a woken session thread onto a CPU ahead of tasks with the default
    /// slice (Postgres backends, clients), so a relayed message waits less on a busy host:
    /// at 50 pgbench clients on 2 CPUs the p99 latency went from 11.2 to 9.2 ms. `0`
    /// leaves the kernel's default. Default `0`: the short slice also preempts Postgres
    /// backends for every relayed message, which at 8 pgbench clients on 2 CPUs cost a
    /// quarter more CPU per transaction and 13 % of the transactions/s (extended protocol,
    /// 19.9k vs 23.1k TPS; 1000 µs: 22.6k), so it is for hosts where tail latency matters
    /// more than throughput.
    pub session_slice_us: u64,
    /// Relay sessions that call no pgml on a plain epoll loop (one thread per session
    /// thread) instead of the session threads' tokio tasks, until their first statement
    /// that calls pgml, which moves the session to a session thread for good. Costs less
    /// CPU per relayed message (see docs/benchmarks.md, 2026-12-07 (13)); plain-TCP
    /// sessions only, TLS ones stay on tokio. Linux only. Default `true`.
    pub pass_through_loop: bool,
    /// Training jobs this instance runs at once, each on its own worker thread, claimed
    /// from the `pgml.jobs` queue that every pgmld on the upstream shares; later jobs wait
    /// in the queue (and their callers are told so). `0` makes a front-end that trains
    /// nothing: its tunes run on other pgmld instances (`pgmld worker`). Default `1`.
    pub train_workers: usize,
    /// Device of each training worker, comma-separated and used in turn: `auto` (CUDA when
    /// libtorch sees a GPU, else CPU), `cpu`, `cuda` or `cuda:N`. Default `"auto"`.
    pub train_devices: String,
    /// Threads libtorch may use inside one operation (its intra-op pool, shared by every
    /// training and inference worker), set once at startup before any worker starts.
    /// Unset: the number of CPUs this process may run on (its affinity mask and cgroup CPU
    /// quota, as `std::thread::available_parallelism` counts them), because libtorch's own
    /// default counts the machine's cores its own way, ignoring cgroup quotas, and a pool
    /// larger than the CPUs it gets stalls its threads on each other. Set it lower when
    /// other work shares the machine. `0` keeps libtorch's default. Default: unset.
    pub torch_threads: Option<usize>,
    /// Size of the parts model files are cut into in `pgml.files`, in bytes; one part is
    /// the most a file costs in memory while it is stored or read back. Default `16777216`.
    pub file_part_bytes: usize,
    /// Bytes of model weights `pgml.transform` keeps loaded for all sessions; past it the
    /// least recently used models are dropped (one model always stays, whatever its
    /// size). Default `4294967296` (4 GiB).
    pub transform_cache_bytes: u64,
    /// Most inputs in one inference forward pass; a call's inputs are also sent to the
    /// model's worker in chunks of this size. Default `32`.
    pub transform_max_batch: usize,
    /// How long, in milliseconds, an inference request waits for concurrent requests to
    /// the same model to join its batch. With `0`, requests that queued while the model
    /// was busy still share the next pass, and a lone request never waits. Default `0`.
    pub transform_max_wait_ms: u64,
    /// Device inference runs on: `auto` (CUDA when libtorch sees a GPU, else CPU), `cpu`,
    /// `cuda` or `cuda:N`. Default `"auto"`.
    pub transform_device: String,
    /// Hugging Face token `pgml.tune` uses to push models (`push_to_hub`) when the call's
    /// `training_args.hub_token` is unset; `HF_TOKEN` comes after it. Never printed:
    /// `--print-config` and `Debug` show `<redacted>`. Default: unset.
    pub hub_token: Option<SecretString>,
    /// At startup, look in every database of the upstream for `pgml.tune` jobs a crashed or
    /// killed pgmld left running, or waiting in the queue, and serve those databases'
    /// queues (with `train_workers` > 0): interrupted jobs go on from their checkpoints, or
    /// from the start with their stored training data. Default `true`.
    pub resume_jobs: bool,
    /// Databases whose job queue this instance's training workers serve besides those its
    /// own clients queue tunes in; `*` means every database of the upstream (what `pgmld
    /// worker` serves when this is empty). Default: empty.
    pub worker_databases: Vec<String>,
    /// Seconds a running job's heartbeat (beaten every 2 s) may be silent before its worker
    /// counts as hung: its connection is ended and the job goes to the next worker, which
    /// resumes it from its last checkpoint. A worker that dies outright releases its job at
    /// once. Default `60`.
    pub job_lease_secs: u64,
    /// The longest, in milliseconds, an idle worker waits before it looks at the queue
    /// again; it also wakes at once on `NOTIFY pgml_jobs_queued`. Default `1000`.
    pub job_poll_ms: u64,
    /// How long, in seconds, the worker that claims a data-parallel job
    /// (`training_args.world_size` > 1) waits for other workers to join it as ranks before
    /// it trains with those that did (the global batch stays the same). Default `10`.
    pub rendezvous_timeout_secs: u64,
    /// The address other workers reach this one at for data-parallel training (its c10d
    /// store and Gloo connections): a host name or IP of this machine. Default: unset, the
    /// machine's host name.
    pub dist_host: Option<String>,
    /// Path of `libpgmld_nccl.so`, the plugin holding c10d's NCCL process group that
    /// data-parallel jobs on CUDA devices use (built on the GPU machine by
    /// `scripts/build-cuda-plugins.sh`). Default: unset, the file beside the pgmld binary,
    /// else the library search path.
    pub nccl_plugin: Option<String>,
    /// Path of `libpgmld_cuda_graph.so`, the plugin that captures and replays CUDA graphs
    /// for training runs with `training_args.cuda_graphs` (built on the GPU machine by
    /// `scripts/build-cuda-plugins.sh`). Default: unset, the file beside the pgmld binary,
    /// else the library search path.
    pub cuda_graph_plugin: Option<String>,
    /// Directories `pgml.load_dataset` may read local files from (after resolving symlinks
    /// and `..`), as an environment variable comma-separated. Reading any server file also
    /// needs what `COPY ... FROM '<file>'` needs: a superuser or a member of
    /// `pg_read_server_files`. Default: empty, no restriction beyond that role check.
    pub dataset_dirs: Vec<PathBuf>,
    /// Address of the OpenAI-compatible HTTP endpoint (`POST /v1/chat/completions`,
    /// `GET /v1/models`), e.g. `127.0.0.1:8000`. Unset or empty: no endpoint. Default: unset.
    pub openai_listen: Option<String>,
    /// Bearer tokens the OpenAI endpoint accepts (`Authorization: Bearer <key>`); as an
    /// environment variable, comma-separated. Must be set when `openai_listen` is: an
    /// explicitly empty list (`[]`, or an empty variable) serves without authentication.
    /// Never printed. Default: unset.
    pub openai_api_keys: Option<Vec<SecretString>>,
    /// Database the OpenAI endpoint runs `pgml.transform` in (where the tuned projects and
    /// `pgml.models` live). Default: unset, the upstream URL's database.
    pub openai_database: Option<String>,
    /// User the OpenAI endpoint connects to pgmld as. Default: unset, the upstream URL's user.
    pub openai_user: Option<String>,
    /// Password for `openai_user`, when the upstream asks for one. Never printed.
    /// Default: unset, the upstream URL's password.
    pub openai_password: Option<SecretString>,
    /// Address of the web dashboard (projects, models, live training curves), e.g.
    /// `127.0.0.1:8640`. People log in with a Postgres role and its password, which the
    /// upstream checks. Unset or empty: no dashboard. Default: unset.
    pub dashboard_listen: Option<String>,
    /// How long a dashboard login lasts, in hours. Default `12`.
    pub dashboard_session_hours: u64,
}

/// A secret setting (a token): `Debug` and serialisation (`--print-config`) show
/// `<redacted>`; only [`SecretString::expose`] gives the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6432".into(),
            upstream: None,
            upstream_password: None,
            data_dir: PathBuf::from("./pgmld-data"),
            embedded_port: 6543,
            pg_bin_dir: None,
            tls_cert: None,
            tls_key: None,
            metrics_listen: "127.0.0.1:9187".into(),
            log_level: "info".into(),
            log_format: "text".into(),
            shutdown_timeout_secs: 30,
            connect_timeout_secs: 10,
            authentication_timeout: 60,
            max_message_bytes: 1 << 30,
            session_threads: 0,
            session_slice_us: 0,
            pass_through_loop: true,
            train_workers: 1,
            train_devices: "auto".into(),
            torch_threads: None,
            file_part_bytes: 16 << 20,
            transform_cache_bytes: 4 << 30,
            transform_max_batch: 32,
            transform_max_wait_ms: 0,
            transform_device: "auto".into(),
            hub_token: None,
            resume_jobs: true,
            worker_databases: Vec::new(),
            job_lease_secs: 60,
            job_poll_ms: 1000,
            rendezvous_timeout_secs: 10,
            dist_host: None,
            nccl_plugin: None,
            cuda_graph_plugin: None,
            dataset_dirs: Vec::new(),
            openai_listen: None,
            openai_api_keys: None,
            openai_database: None,
            openai_user: None,
            openai_password: None,
            dashboard_listen: None,
            dashboard_session_hours: 12,
        }
    }
}

/// Prefix of environment variables that override file values (`PGMLD_LISTEN`, ...).
pub const ENV_PREFIX: &str = "PGMLD_";

impl Config {
    /// Defaults, overlaid with `file` when given, then with `PGMLD_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
                // Validate the file alone first so its errors name the file.
                table.clone().try_into::<Config>().map_err(|e| ConfigError::Invalid {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })?;
                table
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).map_err(|e| {
            ConfigError::Invalid { origin: "defaults".into(), message: e.to_string() }
        })?;
        for (name, raw) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = key.to_ascii_lowercase();
            if !known_field(&key) {
                // Orchestrators inject PGMLD_* variables of their own (Kubernetes service
                // links: PGMLD_PORT, PGMLD_SERVICE_HOST); the binary warns about them.
                continue;
            }
            // A number-typed default means the variable must parse as a number.
            let value = match defaults.get(&key) {
                _ if LIST_FIELDS.contains(&key.as_str()) => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(|v| toml::Value::String(v.to_string()))
                        .collect(),
                ),
                _ if INTEGER_OPTION_FIELDS.contains(&key.as_str()) => integer(&name, &raw)?,
                Some(toml::Value::Integer(_)) => integer(&name, &raw)?,
                Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
                    "true" | "on" | "1" | "yes" => toml::Value::Boolean(true),
                    "false" | "off" | "0" | "no" => toml::Value::Boolean(false),
                    _ => {
                        return Err(ConfigError::Invalid {
                            origin: name.clone(),
                            message: format!("{raw:?} is not a boolean (true or false)"),
                        })
                    }
                },
                _ => toml::Value::String(raw),
            };
            table.insert(key, value);
        }
        table.try_into::<Config>().map_err(|e| ConfigError::Invalid {
            origin: "environment".into(),
            message: e.to_string(),
        })
    }

    /// Seconds as a [`std::time::Duration`], for the shutdown drain.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// Session threads to start: `session_threads`, or one per four CPUs (at least one)
    /// when 0.
    pub fn session_threads(&self) -> usize {
        match self.session_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(4)),
            n => n,
        }
    }

    /// libtorch's intra-op thread count to set at startup: `torch_threads`, or the CPUs
    /// this process may use when unset; `None` when it is `0` (libtorch's default stays).
    pub fn torch_threads(&self) -> Option<usize> {
        match self.torch_threads {
            None => Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
            Some(0) => None,
            Some(n) => Some(n),
        }
    }

    /// The `hub_token` setting, when set and not blank.
    pub fn hub_token(&self) -> Option<&str> {
        self.hub_token.as_ref().map(|t| t.expose().trim()).filter(|t| !t.is_empty())
    }

    /// The `upstream_password` setting, when set and not empty.
    pub fn upstream_password(&self) -> Option<&str> {
        self.upstream_password.as_ref().map(SecretString::expose).filter(|p| !p.is_empty())
    }

    /// The OpenAI endpoint's address when it is turned on (`openai_listen` set, not blank).
    pub fn openai_listen(&self) -> Option<&str> {
        self.openai_listen.as_deref().map(str::trim).filter(|a| !a.is_empty())
    }

    /// The dashboard's address when it is turned on (`dashboard_listen` set, not blank).
    pub fn dashboard_listen(&self) -> Option<&str> {
        self.dashboard_listen.as_deref().map(str::trim).filter(|a| !a.is_empty())
    }

    /// Seconds as a [`std::time::Duration`], for upstream connects.
    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.connect_timeout_secs)
    }

    /// `authentication_timeout` as a [`std::time::Duration`]; `None` when it is `0` (off).
    pub fn authentication_timeout(&self) -> Option<std::time::Duration> {
        (self.authentication_timeout > 0)
            .then(|| std::time::Duration::from_secs(self.authentication_timeout))
    }
}

/// Field names accepted in the file and as `PGMLD_<NAME>` variables.
pub const FIELDS: &[&str] = &[
    "listen",
    "upstream",
    "upstream_password",
    "data_dir",
    "embedded_port",
    "pg_bin_dir",
    "tls_cert",
    "tls_key",
    "metrics_listen",
    "log_level",
    "log_format",
    "shutdown_timeout_secs",
    "connect_timeout_secs",
    "authentication_timeout",
    "max_message_bytes",
    "session_threads",
    "session_slice_us",
    "pass_through_loop",
    "train_workers",
    "train_devices",
    "torch_threads",
    "file_part_bytes",
    "transform_cache_bytes",
    "transform_max_batch",
    "transform_max_wait_ms",
    "transform_device",
    "hub_token",
    "resume_jobs",
    "worker_databases",
    "job_lease_secs",
    "job_poll_ms",
    "rendezvous_timeout_secs",
    "dist_host",
    "nccl_plugin",
    "cuda_graph_plugin",
    "dataset_dirs",
    "openai_listen",
    "openai_api_keys",
    "openai_database",
    "openai_user",
    "openai_password",
    "dashboard_listen",
    "dashboard_session_hours",
];

/// Fields holding a list: as environment variables they are comma-separated (blank
/// entries dropped, so an empty variable is an empty list).
const LIST_FIELDS: &[&str] = &["openai_api_keys", "dataset_dirs", "worker_databases"];

/// Integer fields that are unset by default: their defaults cannot tell the environment
/// parser that they take numbers.
const INTEGER_OPTION_FIELDS: &[&str] = &["torch_threads"];

/// The integer in the environment variable `name`, or an error naming it and its value.
fn integer(name: &str, raw: &str) -> Result<toml::Value, ConfigError> {
    raw.trim().parse::<i64>().map(toml::Value::Integer).map_err(|_| ConfigError::Invalid {
        origin: name.to_string(),
        message: format!("{raw:?} is not an integer"),
    })
}

/// `PGMLD_*` variables in `env` that name no setting: the binary logs them as warnings.
pub fn unknown_env_vars(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    env.into_iter()
        .filter_map(|(name, _)| {
            let key = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            (!known_field(&key)).then_some(name)
        })
        .collect()
}

fn known_field(key: &str) -> bool {
    FIELDS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn boolean_settings_from_env() {
        let c = Config::load(None, env(&[("PGMLD_RESUME_JOBS", "false")])).unwrap();
        assert!(!c.resume_jobs);
        assert!(Config::load(None, env(&[("PGMLD_RESUME_JOBS", "ON")])).unwrap().resume_jobs);
        let e = Config::load(None, env(&[("PGMLD_RESUME_JOBS", "maybe")])).unwrap_err().to_string();
        assert!(e.contains("PGMLD_RESUME_JOBS") && e.contains("maybe"), "{e}");
    }

    #[test]
    fn torch_threads_default_to_the_usable_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Config::default().torch_threads(), Some(cpus));
        let c = Config::load(None, env(&[("PGMLD_TORCH_THREADS", " 3 ")])).unwrap();
        assert_eq!((c.torch_threads, c.torch_threads()), (Some(3), Some(3)));
        let c = Config::load(None, env(&[("PGMLD_TORCH_THREADS", "0")])).unwrap();
        assert_eq!(c.torch_threads(), None, "0 keeps libtorch's default");
        let e =
            Config::load(None, env(&[("PGMLD_TORCH_THREADS", "many")])).unwrap_err().to_string();
        assert!(
            e.contains("PGMLD_TORCH_THREADS") && e.contains("\"many\" is not an integer"),
            "{e}"
        );
        let e = Config::load(None, env(&[("PGMLD_TORCH_THREADS", "-2")])).unwrap_err().to_string();
        assert!(e.contains("torch_threads"), "{e}");
    }

    #[test]
    fn authentication_timeout_from_env() {
        assert_eq!(
            Config::default().authentication_timeout(),
            Some(std::time::Duration::from_secs(60))
        );
        let c = Config::load(None, env(&[("PGMLD_AUTHENTICATION_TIMEOUT", "5")])).unwrap();
        assert_eq!(c.authentication_timeout(), Some(std::time::Duration::from_secs(5)));
        let c = Config::load(None, env(&[("PGMLD_AUTHENTICATION_TIMEOUT", "0")])).unwrap();
        assert_eq!(c.authentication_timeout(), None, "0 turns it off");
        let e = Config::load(None, env(&[("PGMLD_AUTHENTICATION_TIMEOUT", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGMLD_AUTHENTICATION_TIMEOUT"), "{e}");
    }

    #[test]
    fn defaults_without_file_or_env() {
        assert_eq!(Config::load(None, env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("pgmld-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:7000\"\nshutdown_timeout_secs = 5\n").unwrap();
        let c =
            Config::load(Some(&path), env(&[("PGMLD_SHUTDOWN_TIMEOUT_SECS", "9"), ("HOME", "/x")]))
                .unwrap();
        assert_eq!(c.listen, "0.0.0.0:7000");
        assert_eq!(c.shutdown_timeout_secs, 9);
    }

    #[test]
    fn unknown_env_and_bad_numbers_are_named() {
        assert_eq!(Config::load(None, env(&[("PGMLD_LISTNE", "x")])).unwrap(), Config::default());
        assert_eq!(
            unknown_env_vars(env(&[("PGMLD_LISTNE", "x"), ("PGMLD_LISTEN", "y")])),
            vec!["PGMLD_LISTNE"]
        );
        let e = Config::load(None, env(&[("PGMLD_EMBEDDED_PORT", "abc")])).unwrap_err().to_string();
        assert!(e.contains("\"abc\" is not an integer"), "{e}");
    }

    #[test]
    fn unknown_file_field_is_rejected() {
        let dir = std::env::temp_dir().join(format!("pgmld-config-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn hub_token_is_read_but_never_shown() {
        let c = Config::load(None, env(&[("PGMLD_HUB_TOKEN", "hf_config_secret")])).unwrap();
        assert_eq!(c.hub_token(), Some("hf_config_secret"));
        let printed = toml::to_string(&c).unwrap();
        assert!(printed.contains("hub_token = \"<redacted>\""), "{printed}");
        assert!(
            !printed.contains("hf_config_secret") && !format!("{c:?}").contains("hf_config_secret")
        );
        assert_eq!(Config::load(None, env(&[("PGMLD_HUB_TOKEN", " ")])).unwrap().hub_token(), None);
        assert_eq!(Config::default().hub_token(), None);
    }

    #[test]
    fn upstream_password_is_read_but_never_shown() {
        let c = Config::load(None, env(&[("PGMLD_UPSTREAM_PASSWORD", "up-secret")])).unwrap();
        assert_eq!(c.upstream_password(), Some("up-secret"));
        assert!(
            !toml::to_string(&c).unwrap().contains("up-secret")
                && !format!("{c:?}").contains("up-secret")
        );
        assert_eq!(
            Config::load(None, env(&[("PGMLD_UPSTREAM_PASSWORD", "")]))
                .unwrap()
                .upstream_password(),
            None
        );
    }

    #[test]
    fn openai_endpoint_settings() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            (c.openai_listen(), c.openai_api_keys.is_none()),
            (None, true),
            "off by default"
        );
        let c = Config::load(
            None,
            env(&[
                ("PGMLD_OPENAI_LISTEN", "127.0.0.1:8000"),
                ("PGMLD_OPENAI_API_KEYS", " sk-one, ,sk-two "),
                ("PGMLD_OPENAI_PASSWORD", "pw-secret"),
            ]),
        )
        .unwrap();
        assert_eq!(c.openai_listen(), Some("127.0.0.1:8000"));
        let keys: Vec<&str> =
            c.openai_api_keys.iter().flatten().map(SecretString::expose).collect();
        assert_eq!(keys, ["sk-one", "sk-two"]);
        let printed = toml::to_string(&c).unwrap();
        assert!(!printed.contains("sk-one") && !printed.contains("pw-secret"), "{printed}");
        assert!(!format!("{c:?}").contains("sk-two"));
        // An empty variable is an explicitly empty list (no authentication), not unset.
        let c = Config::load(None, env(&[("PGMLD_OPENAI_API_KEYS", "")])).unwrap();
        assert_eq!(c.openai_api_keys.map(|k| k.len()), Some(0));
        assert_eq!(
            Config::load(None, env(&[("PGMLD_OPENAI_LISTEN", " ")])).unwrap().openai_listen(),
            None
        );

        let dir = std::env::temp_dir().join(format!("pgmld-config-o-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.toml");
        std::fs::write(&path, "openai_listen = \"0.0.0.0:8000\"\nopenai_api_keys = [\"k1\"]\nopenai_database = \"app\"\n").unwrap();
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.openai_api_keys.unwrap()[0].expose(), "k1");
        assert_eq!(c.openai_database.as_deref(), Some("app"));
    }

    #[test]
    fn shipped_example_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/pgmld.toml");
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c, Config::default(), "config/pgmld.toml must list the defaults");
    }

    #[test]
    fn fields_list_is_complete() {
        let t = toml::Table::try_from(Config {
            upstream: Some("x".into()),
            upstream_password: Some(SecretString::new("x")),
            pg_bin_dir: Some("x".into()),
            tls_cert: Some("x".into()),
            tls_key: Some("x".into()),
            hub_token: Some(SecretString::new("x")),
            openai_listen: Some("x".into()),
            openai_api_keys: Some(vec![SecretString::new("x")]),
            openai_database: Some("x".into()),
            openai_user: Some("x".into()),
            openai_password: Some(SecretString::new("x")),
            dashboard_listen: Some("x".into()),
            torch_threads: Some(1),
            dist_host: Some("x".into()),
            nccl_plugin: Some("x".into()),
            cuda_graph_plugin: Some("x".into()),
            ..Config::default()
        })
        .unwrap();
        let mut keys: Vec<_> = t.keys().cloned().collect();
        keys.sort();
        let mut fields: Vec<_> = FIELDS.iter().map(|s| s.to_string()).collect();
        fields.sort();
        assert_eq!(keys, fields);
    }
}
