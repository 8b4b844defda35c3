//! `pgmld`: a Postgres wire-protocol daemon that serves `pgml.*` calls itself and forwards
//! everything else to an upstream Postgres.

mod listen;

use anyhow::{bail, Context, Result};
use clap::Parser;
use pgmld_config::Config;
use pgmld_schema::{ClusterOptions, EmbeddedCluster, Migrator};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Command line; each flag overrides the config file and `PGMLD_*` variables.
#[derive(Parser, Debug)]
#[command(
    name = "pgmld",
    version,
    about = "Postgres wire-protocol daemon serving pgml.* fine-tuning and inference in front of any Postgres"
)]
struct Cli {
    /// Address to listen on for Postgres clients (default 127.0.0.1:6432).
    #[arg(long)]
    listen: Option<String>,
    /// Upstream Postgres URL, e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long)]
    upstream: Option<String>,
    /// TOML config file (see config/pgmld.toml).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Directory for pgmld's state (private Postgres cluster, caches).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Prometheus /metrics address; empty turns it off.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Web dashboard address, e.g. 127.0.0.1:8640 (default: off).
    #[arg(long)]
    dashboard_listen: Option<String>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to run instead of the full daemon.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// A training worker only: claims pgml.tune jobs from the pgml.jobs queue of the
    /// upstream's databases (all of them, or `worker_databases`) and runs them; no client
    /// listener. Same config file and variables as the daemon.
    Worker {
        /// Devices to train on, comma-separated, one job at a time on each: cpu, cuda,
        /// cuda:N or auto (default: `train_workers` threads over `train_devices`).
        #[arg(long)]
        devices: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = Config::load(cli.config.as_deref(), env.clone())?;
    if let Some(v) = cli.listen {
        config.listen = v;
    }
    if let Some(v) = cli.upstream {
        config.upstream = Some(v);
    }
    if let Some(v) = cli.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = cli.metrics_listen {
        config.metrics_listen = v;
    }
    if let Some(v) = cli.dashboard_listen {
        config.dashboard_listen = Some(v);
    }
    if cli.print_config {
        // Secrets never reach the output: SecretString fields print as <redacted>, and so
        // does a password inside the upstream URL.
        let mut shown = config.clone();
        shown.upstream = shown.upstream.as_deref().map(pgmld_upstream::redact);
        print!("{}", toml::to_string(&shown)?);
        return Ok(());
    }
    init_tracing(&config)?;
    for name in pgmld_config::unknown_env_vars(env) {
        tracing::warn!("ignoring environment variable {name}: not a pgmld setting");
    }
    // Sets environment variables: before any thread is started (tokio, libtorch's pool).
    pgmld_tune::data_parallel::configure_nccl(config.nccl_plugin.as_deref().map(Path::new));
    pgmld_tune::data_parallel::configure_cuda_graphs(
        config.cuda_graph_plugin.as_deref().map(Path::new),
    );
    set_torch_threads(&config)?;
    // The main runtime accepts connections and serves metrics; sessions run on their own
    // threads (`session_threads`).
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    match cli.command {
        Some(Command::Worker { devices }) => runtime.block_on(run_worker(config, devices)),
        None => runtime.block_on(run(config)),
    }
}

/// The training side shared by the daemon and `pgmld worker`: the worker pool over
/// `devices` (`train_workers` threads over `train_devices` when not given) and the tuner.
fn tuner(
    config: &Config,
    connector: Arc<pgmld_upstream::Connector>,
    hub: Arc<pgmld_hub::HubConfig>,
    devices: Option<&str>,
) -> Result<Arc<pgmld_tune::Tuner>> {
    let (threads, devices) = match devices {
        Some(d) => {
            let d = pgmld_tune::DeviceSpec::parse_list(d).map_err(anyhow::Error::msg)?;
            (d.len(), d)
        }
        None => (
            config.train_workers,
            pgmld_tune::DeviceSpec::parse_list(&config.train_devices)
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let pool =
        pgmld_tune::WorkerPool::start(threads, &devices).context("starting training workers")?;
    Ok(Arc::new(pgmld_tune::Tuner {
        connector,
        hub,
        pool: Arc::new(pool),
        work_dir: config.data_dir.join("work"),
        file_part_bytes: config.file_part_bytes,
        hub_token: config.hub_token().map(str::to_string),
        jobs: Arc::default(),
        dist: pgmld_tune::DistOptions {
            host: config.dist_host.clone().filter(|h| !h.trim().is_empty()),
            rendezvous_timeout: std::time::Duration::from_secs(config.rendezvous_timeout_secs),
        },
    }))
}

/// Starts the claim loop of `tuner`'s training threads (none: nothing to start), serving
/// the databases of `worker_databases` (all when it holds `*`, or when it is empty and
/// `all_by_default`), those with jobs left at startup (`resume_jobs`) and those its own
/// clients queue in.
async fn start_claiming(config: &Config, tuner: &Arc<pgmld_tune::Tuner>, all_by_default: bool) {
    use pgmld_tune::worker::{Scope, WorkerOptions};
    if tuner.pool.size() == 0 {
        tracing::info!(
            "train_workers = 0: this instance trains nothing; its tunes run on pgmld workers"
        );
        return;
    }
    let listed = &config.worker_databases;
    let scope = if listed.iter().any(|d| d == "*") || (listed.is_empty() && all_by_default) {
        Scope::All
    } else {
        Scope::Listed(listed.clone())
    };
    if config.resume_jobs {
        for db in pgmld_tune::resume::databases_with_jobs(tuner).await {
            tracing::info!(database = %db, "pgml.tune jobs wait or were interrupted here: serving this database's queue");
            tuner.jobs.watch(&db);
        }
    }
    let options = WorkerOptions {
        scope,
        lease: std::time::Duration::from_secs(config.job_lease_secs.max(1)),
        poll: std::time::Duration::from_millis(config.job_poll_ms.max(10)),
    };
    tokio::spawn(pgmld_tune::worker::run(tuner.clone(), options));
}

/// `pgmld worker`: the claim loop and the training threads, until SIGTERM or SIGINT.
async fn run_worker(config: Config, devices: Option<String>) -> Result<()> {
    let (upstream, _cluster) = migrated_upstream(&config).await?;
    let connector = Arc::new(pgmld_upstream::Connector::new(upstream.clone()));
    let hub = Arc::new(pgmld_hub::HubConfig::from_env());
    let tuner = tuner(&config, connector, hub, devices.as_deref())?;
    if tuner.pool.size() == 0 {
        bail!("a pgmld worker needs at least one training thread: set --devices or train_workers");
    }
    start_claiming(&config, &tuner, true).await;
    // Tests and scripts read this line to know the worker is up.
    println!(
        "pgmld worker {} ready with {} training thread(s)",
        pgmld_tune::tuner::this_worker_name(),
        tuner.pool.size()
    );
    tracing::info!(upstream = %upstream.addr(), "pgmld worker ready");
    wait_for_signal().await;
    // Drain: nothing more is claimed; each running job goes back to the queue after its
    // next stored checkpoint (or at the deadline), and another worker goes on with it.
    let deadline = std::time::Instant::now() + config.shutdown_timeout();
    tracing::info!(
        jobs = tuner.jobs.running(),
        "shutdown requested: releasing running jobs after their next checkpoint"
    );
    tuner.jobs.drain(deadline);
    let hard_stop = deadline + std::time::Duration::from_secs(30);
    while tuner.jobs.running() > 0 && std::time::Instant::now() < hard_stop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tracing::info!(left = tuner.jobs.running(), "stopped");
    Ok(())
}

/// Sizes libtorch's intra-op thread pool (`torch_threads`) before any training or
/// inference worker starts, so every worker shares a pool that fits the CPUs pgmld may use.
/// libtorch's inter-op pool is left alone: pgmld runs no inter-op parallel work.
fn set_torch_threads(config: &Config) -> Result<()> {
    let Some(n) = config.torch_threads() else {
        tracing::info!(
            threads = tch::get_num_threads(),
            "torch_threads = 0: libtorch keeps its default intra-op threads"
        );
        return Ok(());
    };
    let threads = i32::try_from(n).with_context(|| format!("torch_threads {n} is too large"))?;
    tch::set_num_threads(threads);
    tracing::info!(threads = tch::get_num_threads(), "libtorch intra-op threads");
    Ok(())
}

/// Log targets capped at `info`: at debug they print SQL text and parameters.
const QUIET_TARGETS: [&str; 3] =
    ["sqlparser=info", "tokio_postgres=info", "postgres_protocol=info"];

fn init_tracing(config: &Config) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(&config.log_level)
            .with_context(|| format!("bad log_level {:?}", config.log_level))?,
    };
    // Libraries that log statement text or bind values at debug level would put tokens
    // (hyperparams) and user data in the log: capped, whatever the filter asks for.
    let mut filter = filter;
    for quiet in QUIET_TARGETS {
        filter = filter.add_directive(quiet.parse()?);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format.as_str() {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("log_format must be \"text\" or \"json\", not {other:?}"),
    }
    Ok(())
}

/// The upstream to use: the configured URL, the local default when it answers, or a
/// private cluster started under the data directory.
fn resolve_upstream(config: &Config) -> Result<(String, Option<EmbeddedCluster>)> {
    if let Some(url) = &config.upstream {
        return Ok((url.clone(), None));
    }
    if pgmld_schema::is_reachable("127.0.0.1", 5432) {
        tracing::info!("no upstream configured; using the local Postgres at 127.0.0.1:5432");
        // Plain TCP over loopback, as the private cluster below: TLS there protects nothing,
        // and a plain upstream leg lets sessions that call no pgml use the pass-through
        // loop (with Debian's default `ssl = on`, `prefer` would negotiate TLS).
        return Ok(("postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into(), None));
    }
    let dir = config.data_dir.join("postgres");
    tracing::info!(
        "no upstream configured and none on 127.0.0.1:5432; starting a private cluster in {}",
        dir.display()
    );
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let mut opts = ClusterOptions::new(std::path::absolute(&dir)?, config.embedded_port);
    opts.bin_dir = config.pg_bin_dir.clone();
    let cluster = EmbeddedCluster::start(opts)?;
    Ok((cluster.url(), Some(cluster)))
}

/// The upstream (a private cluster, kept running while the returned handle lives, when
/// none is configured or answers locally), its TLS settings and password sources read once
/// for every connection, with the pgml schema migrated in its database.
async fn migrated_upstream(
    config: &Config,
) -> Result<(pgmld_upstream::Upstream, Option<EmbeddedCluster>)> {
    let (upstream_url, cluster) = tokio::task::block_in_place(|| resolve_upstream(config))?;
    let upstream = pgmld_upstream::Upstream::new(
        &upstream_url,
        config.upstream_password(),
        &pgmld_upstream::Env::from_process(),
    )?;
    drop(upstream_url);
    tracing::info!(upstream = %upstream.addr(), sslmode = %upstream.ssl_mode(), password = upstream.password_source(), "upstream");
    let applied = pgmld_schema::migrate_upstream(&upstream, upstream.database())
        .await
        .context("applying the pgml schema")?;
    tracing::info!(?applied, upstream = %upstream.addr(), "pgml schema ready");
    Ok((upstream, cluster))
}

async fn run(config: Config) -> Result<()> {
    // Settings that need no upstream are checked first, so their errors come first.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(pgmld_proxy::tls::acceptor(c, k)?),
        (None, None) => None,
        _ => bail!("tls_cert and tls_key must be set together"),
    };
    if config.openai_listen().is_some() && config.openai_api_keys.is_none() {
        return Err(pgmld_openai::Error::NoApiKeys.into());
    }
    if config.dashboard_listen().is_some() && config.dashboard_session_hours == 0 {
        bail!("dashboard_session_hours must be at least 1 (a login would expire at once)");
    }
    // Bound before the upstream is reached: a taken port fails at once, naming the setting.
    let metrics = pgmld_metrics::Metrics::new();
    let shutdown = CancellationToken::new();
    if !config.metrics_listen.trim().is_empty() {
        let stop = shutdown.clone();
        let addr = pgmld_metrics::serve(&config.metrics_listen, metrics.clone(), async move {
            stop.cancelled().await
        })
        .await
        .map_err(|e| listen::METRICS.bind_error(&config.metrics_listen, &e))?;
        // Tests and scripts read this line to find the port when listening on port 0.
        println!("pgmld metrics on {addr}");
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let (upstream, _cluster) = migrated_upstream(&config).await?;
    let mut registry = pgmld_sql::Registry::with_builtins();
    // One Hub configuration (endpoint, token, cache, offline) for datasets, tune and transform.
    let hub = Arc::new(pgmld_hub::HubConfig::from_env());
    // One connector for pgmld's own connections, shared by datasets, tune and transform.
    let connector = Arc::new(pgmld_upstream::Connector::new(upstream.clone()));
    let loader = pgmld_datasets::Loader {
        connector: connector.clone(),
        hub: hub.clone(),
        dataset_dirs: config.dataset_dirs.clone(),
    };
    registry.register(Arc::new(pgmld_datasets::LoadDataset::new(Arc::new(loader))));
    let tuner = tuner(&config, connector.clone(), hub.clone(), None)?;
    start_claiming(&config, &tuner, false).await;
    registry.register(Arc::new(pgmld_tune::Deploy::new(tuner.clone())));
    registry.register(Arc::new(pgmld_tune::CancelJob::new(tuner.clone())));
    registry.register(Arc::new(pgmld_tune::WaitJob::new(tuner.clone())));
    registry.register(Arc::new(pgmld_tune::Tune::new(tuner)));
    let device = pgmld_tune::DeviceSpec::parse(&config.transform_device)
        .map_err(anyhow::Error::msg)?
        .resolve();
    let batching = pgmld_transform::Batching {
        max_batch: config.transform_max_batch.max(1),
        max_wait: std::time::Duration::from_millis(config.transform_max_wait_ms),
    };
    let cache = pgmld_transform::ModelCache::new(
        config.transform_cache_bytes,
        batching,
        device,
        metrics.clone(),
    );
    let transformer = pgmld_transform::Transformer::new(
        connector.clone(),
        hub,
        config.data_dir.join("work"),
        cache,
        batching.max_batch,
    );
    let transformer = Arc::new(transformer);
    registry.register(Arc::new(pgmld_transform::Transform::new(transformer.clone())));
    registry.register(Arc::new(pgmld_transform::Embed::new(transformer.clone())));
    registry.register(Arc::new(pgmld_transform::stream::TransformStream::new(transformer)));
    let server = pgmld_proxy::Server::new(pgmld_proxy::ServerOptions {
        upstream: upstream.clone(),
        migrator: Some(Arc::new(Migrator::new(upstream.clone()))),
        registry: Arc::new(registry),
        metrics,
        tls,
        connect_timeout: config.connect_timeout(),
        shutdown_timeout: config.shutdown_timeout(),
        max_message: config.max_message_bytes,
        authentication_timeout: config.authentication_timeout(),
        session_threads: config.session_threads(),
        session_slice_us: config.session_slice_us,
        pass_through_threads: if config.pass_through_loop { config.session_threads() } else { 0 },
    });
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| listen::CLIENTS.bind_error(&config.listen, &e))?;
    if let Some(addr) = config.openai_listen() {
        serve_openai(&config, addr, listener.local_addr()?, &upstream, shutdown.clone()).await?;
    }
    if let Some(addr) = config.dashboard_listen() {
        let options = pgmld_dashboard::Options {
            listen: addr.to_string(),
            database: upstream.database().to_string(),
            session_ttl: std::time::Duration::from_secs(
                config.dashboard_session_hours.saturating_mul(3600),
            ),
        };
        let stop = shutdown.clone();
        let bound =
            pgmld_dashboard::serve(options, connector, async move { stop.cancelled().await })
                .await
                .map_err(|e| match e {
                    pgmld_dashboard::StartError::Bind { addr, source } => {
                        listen::DASHBOARD.bind_error(&addr, &source)
                    }
                })?;
        // Tests and scripts read this line to find the port when listening on port 0.
        println!("pgmld dashboard on {bound}");
        tracing::info!("dashboard on http://{bound}/");
    }
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("pgmld listening on {}", listener.local_addr()?);
    tracing::info!("listening on {}", listener.local_addr()?);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; no new sessions");
        stop.cancel();
    });
    server.serve(listener, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the OpenAI-compatible endpoint on `addr`; it runs its requests through pgmld's
/// own listener at `pgmld`, as the user and database configured (else the upstream's).
async fn serve_openai(
    config: &Config,
    addr: &str,
    pgmld: std::net::SocketAddr,
    upstream: &pgmld_upstream::Upstream,
    shutdown: CancellationToken,
) -> Result<()> {
    let options = pgmld_openai::Options {
        listen: addr.to_string(),
        api_keys: config
            .openai_api_keys
            .as_ref()
            .map(|keys| keys.iter().map(|k| k.expose().to_string()).collect()),
        pgmld: pgmld_openai::pgmld_target(
            pgmld,
            &upstream.config(
                config
                    .openai_database
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .unwrap_or(upstream.database()),
            ),
            config.openai_user.as_deref(),
            config.openai_password.as_ref().map(|p| p.expose()),
            config.openai_database.as_deref(),
        ),
    };
    let bound = pgmld_openai::serve(options, async move { shutdown.cancelled().await })
        .await
        .map_err(|e| match e {
            pgmld_openai::Error::Bind { addr, source } => listen::OPENAI.bind_error(&addr, &source),
            other => other.into(),
        })?;
    // Scripts read this line to find the port when listening on port 0.
    println!("pgmld openai on {bound}");
    tracing::info!("OpenAI-compatible endpoint on http://{bound}/v1");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
