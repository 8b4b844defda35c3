//! The listener: accepts clients, runs each session on its own task, drains on shutdown.

use crate::cancel::{CancelRegistry, CancelTarget};
use crate::error::ProxyError;
use crate::expect::Shared;
use crate::fastpath::FastThreads;
use crate::relay::Relay;
use crate::session::{Session, SessionInfo};
use crate::startup::ClientStream;
use crate::startup::{self, AuthOutcome, FirstContact};
use bytes::BytesMut;
use pgmld_metrics::{Gauge, Metrics};
use pgmld_schema::Migrator;
use pgmld_sql::Registry;
use pgmld_upstream::UpstreamStream;
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
    /// How long a new connection may take to finish startup and authentication before
    /// it is closed (Postgres' `authentication_timeout`); `None`: no limit.
    pub authentication_timeout: Option<Duration>,
    /// Session threads (each a single-threaded runtime); 0 runs sessions on the caller's
    /// runtime instead.
    pub session_threads: usize,
    /// Scheduler slice the session threads ask for, in microseconds (0: the kernel's).
    pub session_slice_us: u64,
    /// Threads of the pass-through loop that relays plain-TCP sessions while they call no
    /// pgml (`fastpath.rs`); 0 keeps every session on tokio.
    pub pass_through_threads: usize,
}

/// A pgmld front-end: one per process.
pub struct Server {
    opts: ServerOptions,
    cancels: CancelRegistry,
    next_id: AtomicU64,
    /// The pass-through loop, when configured (Linux only) and started.
    fast: Option<FastThreads>,
}

impl Server {
    /// A server with these options; starts the pass-through threads.
    pub fn new(opts: ServerOptions) -> Arc<Server> {
        let fast = match opts.pass_through_threads {
            0 => None,
            n => match FastThreads::start(n, opts.metrics.clone(), opts.max_message) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(
                        "cannot start the pass-through loop ({e}); sessions relay on tokio"
                    );
                    None
                }
            },
        };
        Arc::new(Server {
            opts,
            cancels: CancelRegistry::default(),
            next_id: AtomicU64::new(1),
            fast,
        })
    }

    /// Accepts clients until `shutdown` fires, then waits up to the shutdown timeout for
    /// open sessions before ending them.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let kill = CancellationToken::new();
        let threads = match self.opts.session_threads {
            0 => None,
            n => match crate::threads::SessionThreads::start(n, self.opts.session_slice_us) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!("cannot start session threads ({e}); using the main runtime");
                    None
                }
            },
        };
        let mut backoff = crate::accept::Backoff::default();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        backoff.accepted();
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
                        let pause = backoff.failed(&e);
                        if !pause.is_zero() {
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = shutdown.cancelled() => break,
                            }
                        }
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

    /// A connection that ends when shutdown's drain time is over. It runs as a task of its
    /// own, which this one aborts on `kill`: racing `kill` inside the connection's task
    /// would poll the token (a lock) at every wake-up, i.e. for every message relayed.
    async fn guarded(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: std::net::SocketAddr,
        kill: CancellationToken,
    ) {
        let mut conn = tokio::spawn(self.connection(tcp));
        tokio::select! {
            biased;
            _ = &mut conn => {}
            _ = kill.cancelled() => {
                conn.abort();
                let _ = conn.await;
                tracing::info!(%peer, "session ended by shutdown");
            }
        }
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        let deadline = self.opts.authentication_timeout.map(|t| tokio::time::Instant::now() + t);
        let contact =
            match within(deadline, startup::first_contact(tcp, self.opts.tls.as_ref())).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    self.opts.metrics.error(error_kind(&e));
                    tracing::debug!("connection dropped during startup: {e}");
                    return;
                }
                Err(TimedOut) => return self.auth_timed_out(),
            };
        match contact {
            FirstContact::Cancel(pid, key) => self.cancels.cancel(pid, &key).await,
            FirstContact::Session { stream, packet, params } => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let user = params.get("user").cloned().unwrap_or_default();
                let database = params.get("database").cloned().unwrap_or_else(|| user.clone());
                let span = tracing::info_span!("session", session = id, user = %user, database = %database);
                self.opts.metrics.sessions_total.inc();
                // Decremented on drop: a session that panics or is cut short still leaves.
                let _active = Counted::enter(&self.opts.metrics.sessions_active);
                match self.session(id, &span, stream, packet, user, database, deadline).await {
                    Ok(()) => {}
                    Err(ProxyError::AuthTimeout) => span.in_scope(|| self.auth_timed_out()),
                    Err(e) => {
                        self.opts.metrics.error(error_kind(&e));
                        span.in_scope(|| tracing::info!("session ended: {e}"));
                    }
                }
            }
        }
    }

    /// Startup runs in `span`; the forwarding loop does not enter it (entering a span on
    /// every poll cost as much CPU per relayed message as the relaying), so the session's
    /// own log lines and its pgml calls enter it themselves (`SessionInfo::span`).
    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        id: u64,
        span: &tracing::Span,
        mut stream: startup::ClientStream,
        packet: bytes::BytesMut,
        user: String,
        database: String,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ProxyError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let local_call = Arc::new(AtomicBool::new(false));
        let mut keys = None;
        let upstream = &self.opts.upstream;
        let auth = startup::authenticate(
            &mut stream,
            upstream,
            &packet,
            self.opts.connect_timeout,
            |pid, key| {
                let k = self.cancels.register(CancelTarget {
                    upstream: upstream.clone(),
                    pid,
                    key,
                    pgml_cancel: cancel.clone(),
                    local_call: local_call.clone(),
                });
                keys = Some(k.clone());
                k
            },
        );
        // On timeout the exchange is dropped, closing the upstream connection it opened.
        let outcome = within(deadline, auth).instrument(span.clone()).await;
        let _unregister = Unregister { registry: &self.cancels, keys: keys.clone() };
        let outcome = outcome.map_err(|TimedOut| ProxyError::AuthTimeout)?;
        let up = match outcome {
            Ok(AuthOutcome::Ready(up)) => up,
            Ok(AuthOutcome::Refused) => {
                self.opts.metrics.error("auth");
                span.in_scope(|| tracing::info!("upstream refused the client"));
                return Ok(());
            }
            Err(e @ ProxyError::Upstream(_)) => {
                startup::refuse(&mut stream, "08006", &format!("pgmld: {e}")).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Some(m) = &self.opts.migrator {
            if let Err(e) = m.ensure(&database).instrument(span.clone()).await {
                span.in_scope(|| {
                    tracing::warn!("pgml schema not applied to database {database:?}: {e}")
                });
            }
        }
        // ReadyForQuery only now: a query (or its cancel) sent on it finds the session
        // forwarding, not still applying the schema.
        stream.write_all(&up.ready).await?;
        span.in_scope(|| tracing::debug!("session started"));
        let (shared, notices) = Shared::new();
        let shared = Arc::new(shared);
        let parked = Parked {
            client: stream,
            upstream: up.stream,
            client_in: up.client_leftover,
            up: BytesMut::new(),
            relay: Relay::new(shared.clone()),
        };
        let Some(Parked { client: stream, upstream, client_in, up: pending, relay }) =
            self.pass_through(id, parked).await?
        else {
            return Ok(());
        };
        let (client_r, client_w) = stream.split();
        let (up_r, up_w) = upstream.into_split();
        let relay = tokio::spawn(crate::relay::run(
            up_r,
            client_w,
            relay,
            notices,
            self.opts.metrics.clone(),
            span.clone(),
        ));
        let info = SessionInfo { id, user, database, cancel, local_call, span: span.clone() };
        let session = Session::new(
            client_r,
            client_in,
            up_w,
            shared.clone(),
            info,
            self.opts.registry.clone(),
            self.opts.metrics.clone(),
            self.opts.max_message,
            self.opts.migrator.clone(),
        )
        .with_upstream_pending(pending);
        let result = session.run().await;
        // Let the relay deliver what is queued (final errors), then stop it.
        if tokio::time::timeout(Duration::from_secs(5), shared.done.cancelled()).await.is_err() {
            shared.close();
        }
        let _ = relay.await;
        result
    }
}

/// A session between startup and its tokio halves, its streams still whole.
type Parked = crate::fastpath::Parked<ClientStream, UpstreamStream>;

impl Server {
    /// Runs a plain-TCP session on the pass-through loop until it does something the loop
    /// leaves to tokio, and returns it as the loop left it; a TLS session, or any session
    /// when the loop is off, comes back at once. `None`: the loop ended with the session.
    async fn pass_through(&self, id: u64, parked: Parked) -> Result<Option<Parked>, ProxyError> {
        let Some(fast) = &self.fast else { return Ok(Some(parked)) };
        let (client, upstream) = match (parked.client, parked.upstream) {
            (ClientStream::Plain(c), UpstreamStream::Plain(u)) => (c.into_std()?, u.into_std()?),
            (client, upstream) => return Ok(Some(Parked { client, upstream, ..parked })),
        };
        let on_loop = crate::fastpath::Parked {
            client,
            upstream,
            client_in: parked.client_in,
            up: parked.up,
            relay: parked.relay,
        };
        let adopted = fast.adopt(id, on_loop);
        let back = {
            let _counted = Counted::enter(&self.opts.metrics.sessions_pass_through);
            adopted.back().await
        };
        let Some(p) = back else { return Ok(None) };
        Ok(Some(Parked {
            client: ClientStream::Plain(TcpStream::from_std(p.client)?),
            upstream: UpstreamStream::Plain(TcpStream::from_std(p.upstream)?),
            client_in: p.client_in,
            up: p.up,
            relay: p.relay,
        }))
    }
}

/// The startup deadline passed.
struct TimedOut;

/// Runs `fut` until `deadline`, if any.
async fn within<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    fut: F,
) -> Result<F::Output, TimedOut> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.map_err(|_| TimedOut),
        None => Ok(fut.await),
    }
}

impl Server {
    /// Postgres logs this and closes the socket without a word to the client.
    fn auth_timed_out(&self) {
        self.opts.metrics.error("auth_timeout");
        tracing::info!("{}; connection closed", ProxyError::AuthTimeout);
    }
}

/// Counts a session in a gauge (`pgmld_sessions_active`, `…_pass_through`) for as long
/// as it lives.
struct Counted<'a>(&'a Gauge);

impl<'a> Counted<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
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
        ProxyError::AuthTimeout => "auth_timeout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_session_still_leaves_the_active_gauge() {
        let metrics = pgmld_metrics::Metrics::new();
        let m = metrics.clone();
        let task = tokio::spawn(async move {
            let _active = Counted::enter(&m.sessions_active);
            tokio::task::yield_now().await;
            panic!("a bug in a session");
        });
        assert!(task.await.is_err());
        let early = {
            let _active = Counted::enter(&metrics.sessions_active);
            metrics.sessions_active.get()
        };
        assert_eq!((early, metrics.sessions_active.get()), (1, 0));
    }
}
