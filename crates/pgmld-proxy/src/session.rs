//! Client → upstream half of a session: reads the client's messages, forwards them raw
//! (recording what answers to expect), and hands statements that call pgml functions to
//! the interceptor (`session/intercept.rs`).

mod authorize;
mod extension;
mod intercept;
mod per_row;
mod state;
mod stream;

use crate::error::ProxyError;
use crate::expect::{Kind, Route, Shared};
use crate::startup::ReadHalf;
use crate::wire::{self, frame_len};
use bytes::{Buf, Bytes, BytesMut};
use pgmld_metrics::Metrics;
use pgmld_schema::Migrator;
use pgmld_sql::{CallContext, Caller, Plan, Registry};
pub(crate) use state::PgmlState;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Who the session is, for pgml calls and logs.
pub struct SessionInfo {
    /// Session id (also in tracing spans).
    pub id: u64,
    /// Authenticated user.
    pub user: String,
    /// Connected database.
    pub database: String,
    /// Set by a CancelRequest for this session; pgml calls poll it.
    pub cancel: Arc<AtomicBool>,
    /// Set while a pgml call runs in pgmld and the upstream is idle (see `CancelTarget`).
    pub local_call: Arc<AtomicBool>,
    /// The session's tracing span (session id, user, database). Not entered by the
    /// forwarding loop; pgml calls run in it and the session's log lines enter it.
    pub span: tracing::Span,
}

/// The client → upstream loop of one session. The impl blocks in the child modules serve
/// what it hands them: statements calling pgml (`intercept`), per-row calls (`per_row`),
/// streaming calls and their cursors (`stream`), the privilege probe (`authorize`).
pub struct Session<W> {
    /// The client's socket, read half.
    client: ReadHalf,
    /// Client bytes read but not yet handled (pipelined messages wait here during a call).
    inbuf: BytesMut,
    /// The upstream's socket, write half.
    upstream: W,
    /// Bytes to write upstream, batched so pipelined messages go out together.
    up: BytesMut,
    /// What the upstream → client half must do with each answer, and the notices queue.
    shared: Arc<Shared>,
    info: SessionInfo,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    max_message: usize,
    /// Applies the pgml schema again when a call finds it dropped, and answers
    /// `CREATE EXTENSION pgml` (none in tests that run without a schema).
    migrator: Option<Arc<Migrator>>,
    /// Statements, portals and cursors that involve pgml.
    pgml: PgmlState,
    /// The client went away during a pgml call: stop after it.
    client_gone: bool,
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl<W: AsyncWrite + Unpin> Session<W> {
    /// A session over an authenticated upstream connection.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: ReadHalf,
        leftover: BytesMut,
        upstream: W,
        shared: Arc<Shared>,
        info: SessionInfo,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        max_message: usize,
        migrator: Option<Arc<Migrator>>,
    ) -> Self {
        Session {
            client,
            inbuf: leftover,
            upstream,
            up: BytesMut::with_capacity(8192),
            shared,
            info,
            registry,
            metrics,
            max_message,
            migrator,
            pgml: PgmlState::default(),
            client_gone: false,
        }
    }

    /// Bytes for the upstream that an earlier loop had not written yet (the pass-through
    /// loop's, handing the session over): they go out before anything else.
    pub fn with_upstream_pending(mut self, up: BytesMut) -> Self {
        if !up.is_empty() {
            self.up = up;
        }
        self
    }

    /// Runs until the client terminates or either side closes.
    pub async fn run(mut self) -> Result<(), ProxyError> {
        let result = self.run_loop().await;
        let _ = self.upstream.shutdown().await;
        result
    }

    async fn run_loop(&mut self) -> Result<(), ProxyError> {
        let mut watching = false;
        loop {
            loop {
                let len = match frame_len(&self.inbuf, self.max_message) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return self.protocol_violation(e).await,
                };
                if self.has_streams() {
                    self.prune_streams();
                }
                if self.pass_through(len) {
                    self.inbuf.advance(len);
                    continue;
                }
                let frame = self.inbuf.split_to(len).freeze();
                match self.handle(frame).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => {
                        self.flush_upstream().await?;
                        return Ok(());
                    }
                    // A malformed message pgmld had to look into: 08P01, as Postgres.
                    Err(e @ (ProxyError::Protocol(_) | ProxyError::Codec(_))) => {
                        return self.protocol_violation(e).await
                    }
                    Err(e) => return Err(e),
                }
            }
            self.flush_upstream().await?;
            if self.client_gone {
                return Ok(());
            }
            self.inbuf.reserve(8192);
            // While cursors exist, a COMMIT / ROLLBACK ends them (and their generation) at
            // once, not at the client's next message: the relay rings at each transaction
            // end, and ends before the watch began are caught here.
            let streams = self.has_streams();
            if streams != watching {
                self.shared.watch_txn_ends(streams);
                watching = streams;
            }
            if streams {
                self.prune_streams();
            }
            tokio::select! {
                biased;
                n = self.client.read_buf(&mut self.inbuf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                // The relay stopped, or a transaction ended (see above).
                _ = self.shared.session_bell.rung() => {
                    if self.shared.is_closed() {
                        return Ok(());
                    }
                    if self.has_streams() {
                        self.prune_streams();
                    }
                }
            }
        }
    }

    /// Ends the session over a malformed or oversized message: what was sent upstream
    /// before it goes out, then the client gets a FATAL 08P01 in order.
    async fn protocol_violation(&mut self, e: ProxyError) -> Result<(), ProxyError> {
        self.metrics.error("protocol");
        let mut b = BytesMut::new();
        wire::fatal_response("08P01", &e.to_string(), &mut b);
        self.shared.local(b.freeze());
        // Postgres holds extended-protocol answers until Sync or Flush; a Flush (never a
        // Sync, which would commit) gets those queued ahead of the FATAL delivered.
        wire::flush(&mut self.up);
        self.flush_upstream().await?;
        Err(e)
    }

    async fn flush_upstream(&mut self) -> Result<(), ProxyError> {
        if !self.up.is_empty() {
            self.metrics.bytes_to_upstream.inc_by(self.up.len() as u64);
            self.upstream.write_all(&self.up).await?;
            // A TLS upstream holds written bytes until flushed (a no-op on plain TCP).
            self.upstream.flush().await?;
            self.up.clear();
        }
        Ok(())
    }

    /// Forwards a client frame whose answers go to the client.
    fn forward(&mut self, frame: &[u8], kind: Option<Kind>) {
        forward_to(&self.shared, &mut self.up, frame, kind);
    }

    /// Forwards, without an await or a copy of the frame, a frame that needs nothing of
    /// pgmld: nearly every frame of a session that calls no pgml. False: [`Self::handle`]
    /// takes it.
    fn pass_through(&mut self, len: usize) -> bool {
        // frame_len hands out whole frames (at least 5 bytes).
        let frame = &self.inbuf[..len];
        match pass_kind(&mut self.pgml, &self.metrics, frame) {
            Some(kind) => {
                forward_to(&self.shared, &mut self.up, frame, kind);
                true
            }
            None => false,
        }
    }

    /// A frame [`Self::pass_through`] left: one that involves pgml, Terminate, or an
    /// invalid type.
    async fn handle(&mut self, frame: Bytes) -> Result<Flow, ProxyError> {
        match frame.first().copied().unwrap_or(0) {
            b'Q' => self.on_query(frame).await?,
            b'P' => self.on_parse(frame).await?,
            b'B' => self.on_bind(frame)?,
            b'E' => self.on_execute(frame).await?,
            b'C' => self.on_close(frame)?,
            b'X' => {
                self.forward(&frame, None);
                return Ok(Flow::Stop);
            }
            other => {
                return Err(ProxyError::Protocol(format!("invalid frontend message type {other}")))
            }
        }
        Ok(Flow::Continue)
    }

    /// Writes pending bytes, then waits until the upstream answered everything before.
    async fn catch_up(&mut self) -> Result<(), ProxyError> {
        wire::flush(&mut self.up);
        let barrier = self.shared.barrier();
        self.flush_upstream().await?;
        barrier.await.map_err(|_| {
            ProxyError::Upstream("session closed while waiting for the upstream".into())
        })
    }

    /// The context pgml calls run with: notices go to the client between messages.
    fn call_context(&self, caller: Caller) -> CallContext {
        let shared = self.shared.clone();
        CallContext {
            database: self.info.database.clone(),
            user: self.info.user.clone(),
            caller,
            session_id: self.info.id,
            notices: Arc::new(move |n: pgmld_sql::Notice| {
                let mut b = BytesMut::new();
                wire::notice_response(n.severity, &n.message, &mut b);
                shared.notice(b.freeze());
            }),
            cancelled: self.info.cancel.clone(),
        }
    }

    /// Evaluates a plan while watching the client: a dropped connection cancels the call.
    /// The caller's session is asked first whether it may call the plan's functions.
    /// Pipelined messages read meanwhile stay buffered for afterwards.
    async fn evaluate(
        &mut self,
        plan: &Plan,
        params: &[pgmld_sql::Param],
    ) -> Result<Result<String, pgmld_sql::SqlError>, ProxyError> {
        let caller = match self.authorize(&plan.function_names()).await? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        self.info.cancel.store(false, std::sync::atomic::Ordering::Relaxed);
        let ctx = self.call_context(caller);
        self.watch_client(plan.execute(params, &ctx)).await
    }

    /// Awaits `fut` while reading the client: when the client goes away, the session's
    /// cancel flag is set so the pgml call stops.
    async fn watch_client<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, ProxyError> {
        let _local = LocalCall::start(&self.info.local_call);
        let fut = tracing::Instrument::instrument(fut, self.info.span.clone());
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => return Ok(r),
                n = self.client.read_buf(&mut self.inbuf), if !self.client_gone => {
                    if !matches!(n, Ok(n) if n > 0) {
                        self.client_gone = true;
                        self.info.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Whether a whole client frame passes through without pgmld's attention, and if so what
/// answer it expects from the upstream (`Some(None)`: none of its own); `None`: pgmld must
/// look at it (pgml, Terminate, an invalid type). The session's loop and the pass-through
/// loop (`fastpath.rs`, with a session that has no pgml state) both decide with this.
/// Each relayed message costs CPU that, on a host shared with Postgres and its clients,
/// is lost throughput, so this does as little as it can.
pub(crate) fn pass_kind(
    pgml: &mut PgmlState,
    metrics: &Metrics,
    frame: &[u8],
) -> Option<Option<Kind>> {
    Some(match frame[0] {
        b'Q' if pgml.query_passes(frame) => {
            metrics.statements_proxied.inc();
            Some(Kind::Query)
        }
        b'P' if pgml.parse_passes(frame) => Some(Kind::Parse),
        b'B' if pgml.binds_pass_through() => Some(Kind::Bind),
        b'E' if pgml.execute_passes() => {
            metrics.statements_proxied.inc();
            Some(Kind::Execute)
        }
        b'C' if pgml.binds_pass_through() => Some(Kind::Close),
        b'D' if frame.get(5) == Some(&b'S') => Some(Kind::DescribeStatement),
        b'D' => Some(Kind::DescribePortal),
        b'S' => {
            pgml.error_until_sync = false;
            Some(Kind::Sync)
        }
        b'F' => Some(Kind::FunctionCall),
        b'H' | b'd' | b'c' | b'f' => None,
        _ => return None,
    })
}

/// [`Session::forward`] on the fields it needs, so that a frame still in the session's
/// own input buffer can be forwarded from there.
fn forward_to(shared: &Shared, up: &mut BytesMut, frame: &[u8], kind: Option<Kind>) {
    if let Some(kind) = kind {
        shared.expect(kind, Route::Client);
    }
    up.extend_from_slice(frame);
}

/// Marks a pgml call as running in pgmld (the upstream idle) until dropped.
struct LocalCall<'a>(&'a AtomicBool);

impl<'a> LocalCall<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        LocalCall(flag)
    }
}

impl Drop for LocalCall<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
