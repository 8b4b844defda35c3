//! The listener: accepts clients, runs each session on its own task, drains on shutdown.

use crate::cancel::{CancelRegistry, CancelTarget};
use crate::error::ProxyError;
use crate::expect::Shared;
use crate::session::{Session, SessionInfo};
use crate::startup::{self, AuthOutcome, FirstContact};
use pgmld_metrics::Metrics;
use pgmld_schema::Migrator;
use pgmld_sql::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What a running pgmld needs to serve sessions.
pub struct ServerOptions {
    /// The upstream client sessions connect to (address, sslmode, TLS settings).
    pub upstream: pgmld_upstream::Upstream,
    /// Applies the pgml schema to each database a client connects to (once per process).
    pub migrator: Option<Arc<Migrator>>,
    /// The pgml functions served.
    pub registry: Arc<Registry>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// TLS for clients, if configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// How long open sessions may run after shutdown starts.
    pub shutdown_timeout: Duration,
    /// Largest frontend message.
    pub max_message: usize,
    /// Session threads (each a single-threaded runtime); 0 runs sessions on the caller's
    /// runtime instead.
    pub session_threads: usize,
}

/// A pgmld front-end: one per process.
pub struct Server {
    opts: ServerOptions,
    cancels: CancelRegistry,
    next_id: AtomicU64,
}

impl Server {
    /// A server with these options.
    pub fn new(opts: ServerOptions) -> Arc<Server> {
        Arc::new(Server { opts, cancels: CancelRegistry::default(), next_id: AtomicU64::new(1) })
    }

    /// Accepts clients until `shutdown` fires, then waits up to the shutdown timeout for
    /// open sessions before ending them.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let kill = CancellationToken::new();
        let threads = match self.opts.session_threads {
            0 => None,
            n => match crate::threads::SessionThreads::start(n) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!("cannot start session threads ({e}); using the main runtime");
                    None
                }
            },
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let server = self.clone();
                        let kill = kill.clone();
                        match &threads {
                            None => {
                                tracker.spawn(server.guarded(tcp, peer, kill));
                            }
                            Some(t) => match tcp.into_std() {
                                Ok(std_tcp) => {
                                    let token = tracker.token();
                                    t.spawn(Box::new(move || {
                                        Box::pin(async move {
                                            let _token = token;
                                            match TcpStream::from_std(std_tcp) {
                                                Ok(tcp) => server.guarded(tcp, peer, kill).await,
                                                Err(e) => tracing::warn!(%peer, "cannot register connection: {e}"),
                                            }
                                        })
                                    }));
                                }
                                Err(e) => tracing::warn!(%peer, "cannot hand over connection: {e}"),
                            },
                        }
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.cancelled() => break,
            }
        }
        drop(listener);
        tracker.close();
        let open = tracker.len();
        if open > 0 {
            tracing::info!(open, "waiting for sessions to finish");
        }
        if tokio::time::timeout(self.opts.shutdown_timeout, tracker.wait()).await.is_err() {
            tracing::warn!(open = tracker.len(), "shutdown timeout reached; closing sessions");
            kill.cancel();
            tracker.wait().await;
        }
    }

    /// A connection that ends when shutdown's drain time is over.
    async fn guarded(self: Arc<Self>, tcp: TcpStream, peer: std::net::SocketAddr, kill: CancellationToken) {
        tokio::select! {
            _ = self.connection(tcp) => {}
            _ = kill.cancelled() => tracing::info!(%peer, "session ended by shutdown"),
        }
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        let contact = match startup::first_contact(tcp, self.opts.tls.as_ref()).await {
            Ok(c) => c,
            Err(e) => {
                self.opts.metrics.error(error_kind(&e));
                tracing::debug!("connection dropped during startup: {e}");
                return;
            }
        };
        match contact {
            FirstContact::Cancel(pid, key) => self.cancels.cancel(pid, &key).await,
            FirstContact::Session { stream, packet, params } => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let user = params.get("user").cloned().unwrap_or_default();
                let database = params.get("database").cloned().unwrap_or_else(|| user.clone());
                let span = tracing::info_span!("session", session = id, user = %user, database = %database);
                self.opts.metrics.sessions_total.inc();
                self.opts.metrics.sessions_active.inc();
                if let Err(e) = self.session(id, stream, packet, user, database).instrument(span.clone()).await {
                    self.opts.metrics.error(error_kind(&e));
                    span.in_scope(|| tracing::info!("session ended: {e}"));
                }
                self.opts.metrics.sessions_active.dec();
            }
        }
    }

    async fn session(
        &self,
        id: u64,
        mut stream: startup::ClientStream,
        packet: bytes::BytesMut,
        user: String,
        database: String,
    ) -> Result<(), ProxyError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut keys = None;
        let upstream = &self.opts.upstream;
        let outcome = startup::authenticate(&mut stream, upstream, &packet, self.opts.connect_timeout, |pid, key| {
            let k = self.cancels.register(CancelTarget { upstream: upstream.clone(), pid, key, pgml_cancel: cancel.clone() });
            keys = Some(k.clone());
            k
        })
        .await;
        let _unregister = Unregister { registry: &self.cancels, keys: keys.clone() };
        let up = match outcome {
            Ok(AuthOutcome::Ready(up)) => up,
            Ok(AuthOutcome::Refused) => {
                self.opts.metrics.error("auth");
                tracing::info!("upstream refused the client");
                return Ok(());
            }
            Err(e @ ProxyError::Upstream(_)) => {
                startup::refuse(&mut stream, "08006", &format!("pgmld: {e}")).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Some(m) = &self.opts.migrator {
            if let Err(e) = m.ensure(&database).await {
                tracing::warn!("pgml schema not applied to database {database:?}: {e}");
            }
        }
        tracing::debug!("session started");
        let (shared, notices) = Shared::new();
        let shared = Arc::new(shared);
        let (client_r, client_w) = stream.split();
        let (up_r, up_w) = up.stream.into_split();
        let relay = tokio::spawn(crate::relay::run(up_r, client_w, shared.clone(), notices, self.opts.metrics.clone()));
        let info = SessionInfo { id, user, database, cancel };
        let session = Session::new(
            client_r,
            up.client_leftover,
            up_w,
            shared.clone(),
            info,
            self.opts.registry.clone(),
            self.opts.metrics.clone(),
            self.opts.max_message,
        );
        let result = session.run().await;
        // Let the relay deliver what is queued (final errors), then stop it.
        if tokio::time::timeout(Duration::from_secs(5), shared.done.cancelled()).await.is_err() {
            shared.close();
        }
        let _ = relay.await;
        result
    }
}

struct Unregister<'a> {
    registry: &'a CancelRegistry,
    keys: Option<(i32, Vec<u8>)>,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Some((pid, key)) = &self.keys {
            self.registry.unregister(*pid, key);
        }
    }
}

fn error_kind(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::Io(_) => "io",
        ProxyError::Protocol(_) | ProxyError::Codec(_) => "protocol",
        ProxyError::Upstream(_) => "upstream",
        ProxyError::Tls(_) => "tls",
    }
}
