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
use crate::wire::{self, split_message};
use bytes::{Bytes, BytesMut};
use pgmld_metrics::Metrics;
use pgmld_schema::Migrator;
use pgmld_sql::{CallContext, Caller, Plan, Registry};
use state::PgmlState;
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

    /// Runs until the client terminates or either side closes.
    pub async fn run(mut self) -> Result<(), ProxyError> {
        let result = self.run_loop().await;
        let _ = self.upstream.shutdown().await;
        result
    }

    async fn run_loop(&mut self) -> Result<(), ProxyError> {
        // Registered once for the whole session, not once per message (see relay.rs).
        let done = self.shared.done.clone().cancelled_owned();
        let mut done = std::pin::pin!(done);
        loop {
            loop {
                let frame = match split_message(&mut self.inbuf, self.max_message) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return self.protocol_violation(e).await,
                };
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
            tokio::select! {
                biased;
                n = self.client.read_buf(&mut self.inbuf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                _ = done.as_mut() => return Ok(()),
                // COMMIT / ROLLBACK ended the transaction: its cursors stop generating now.
                _ = self.shared.txn_ended.notified(), if self.has_streams() => self.prune_streams(),
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
        if let Some(kind) = kind {
            self.shared.expect(kind, Route::Client);
        }
        self.up.extend_from_slice(frame);
    }

    async fn handle(&mut self, frame: Bytes) -> Result<Flow, ProxyError> {
        if self.has_streams() {
            self.prune_streams();
        }
        // split_message hands out whole frames (at least 5 bytes); 0 is no message type.
        match frame.first().copied().unwrap_or(0) {
            b'Q' => self.on_query(frame).await?,
            b'P' => self.on_parse(frame).await?,
            b'B' => self.on_bind(frame)?,
            b'E' => self.on_execute(frame).await?,
            b'C' => self.on_close(frame)?,
            b'D' => {
                let kind = if frame.get(5) == Some(&b'S') {
                    Kind::DescribeStatement
                } else {
                    Kind::DescribePortal
                };
                self.forward(&frame, Some(kind));
            }
            b'S' => {
                self.pgml.error_until_sync = false;
                self.forward(&frame, Some(Kind::Sync));
            }
            b'F' => self.forward(&frame, Some(Kind::FunctionCall)),
            b'H' | b'd' | b'c' | b'f' => self.forward(&frame, None),
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
        let notices = self.shared.notices.clone();
        CallContext {
            database: self.info.database.clone(),
            user: self.info.user.clone(),
            caller,
            session_id: self.info.id,
            notices: Arc::new(move |n: pgmld_sql::Notice| {
                let mut b = BytesMut::new();
                wire::notice_response(n.severity, &n.message, &mut b);
                let _ = notices.send(b.freeze());
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
