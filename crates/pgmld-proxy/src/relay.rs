//! Upstream → client half of a session.
//!
//! Bytes are streamed: the relay reads whatever the upstream sent, walks the message
//! headers, and copies client-bound messages through as they arrive, so a multi-GB result
//! passes with a buffer of one read. It buffers only messages it must look into
//! (ReadyForQuery, ErrorResponse) or that pgmld consumes itself.

use crate::expect::{Expect, Kind, Queue, Route, Shared};
use bytes::{Buf, Bytes, BytesMut};
use pgmld_metrics::Metrics;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Flush to the client once this much is pending even if more input is buffered.
const FLUSH_AT: usize = 64 * 1024;
/// Room made in `inbuf` before each read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What the relay is doing with the current backend message.
enum State {
    /// Between messages.
    Idle,
    /// Copying the rest of a client-bound message: bytes left.
    Streaming(usize),
}

/// Runs until the upstream or the client closes. Always closes the relay's `Shared` on
/// return. `relay` is [`Relay::new`], or the state the pass-through loop handed back
/// (`fastpath.rs`), with output it had not written yet.
pub async fn run<R, W>(
    mut upstream: R,
    mut client: W,
    mut relay: Relay,
    mut notices: mpsc::UnboundedReceiver<Bytes>,
    metrics: Arc<Metrics>,
    span: tracing::Span,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let shared = relay.shared.clone();
    let result: std::io::Result<()> = async {
        let mut eof = false;
        // The bell rang since notices were last looked at: there may be some.
        let mut rang = false;
        loop {
            let more = relay.process();
            if matches!(relay.state, State::Idle) {
                relay.run_local();
                // Notices go between messages; one queued mid-message waits for its end.
                if std::mem::take(&mut rang) {
                    while let Ok(n) = notices.try_recv() {
                        relay.out.extend_from_slice(&n);
                    }
                }
            }
            if !relay.out.is_empty() {
                metrics.bytes_to_client.inc_by(relay.out.len() as u64);
                client.write_all(&relay.out).await?;
                // TLS streams may keep records queued after write_all; plain TCP: no-op.
                client.flush().await?;
                relay.out.clear();
            }
            if more {
                // Stopped to flush with input left: go on before reading more.
                continue;
            }
            if eof || shared.is_closed() {
                return Ok(());
            }
            relay.inbuf.reserve(READ_CHUNK);
            tokio::select! {
                // In this order, without select!'s random start: one less thing per message.
                biased;
                n = upstream.read_buf(&mut relay.inbuf) => eof = n? == 0,
                // Local entries, notices or the end: the next pass looks at all three.
                _ = shared.relay_bell.rung() => rang = true,
            }
        }
    }
    .await;
    if let Err(e) = result {
        span.in_scope(|| tracing::debug!("relay ended: {e}"));
    }
    let _ = client.shutdown().await;
    shared.close();
}

/// The upstream → client half's state: what it read and has not handled, what it will
/// write, and where in the expectation queue it is. Sync, so the pass-through loop
/// (`fastpath.rs`) drives the same code and hands the state over unchanged.
pub(crate) struct Relay {
    shared: Arc<Shared>,
    /// The entry the message being read belongs to.
    current: Option<(Kind, Route)>,
    /// Upstream bytes read and not yet handled.
    pub(crate) inbuf: BytesMut,
    /// Bytes for the client, not yet written.
    pub(crate) out: BytesMut,
    state: State,
    /// Type of the message being streamed (0 for async ones, which complete nothing).
    pending_type: u8,
    /// The expectation queue, taken out of `shared` while this relay and the session's
    /// other half run on one thread (the pass-through loop): no lock per message then.
    own: Option<Queue>,
}

impl Relay {
    /// A relay at the start of a session, between messages.
    pub(crate) fn new(shared: Arc<Shared>) -> Relay {
        Relay {
            shared,
            current: None,
            inbuf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(READ_CHUNK),
            state: State::Idle,
            pending_type: 0,
            own: None,
        }
    }

    /// Takes the expectation queue out of `shared`: from now on only this relay's owner
    /// queues answers, through [`Relay::expect`], until [`Relay::share_queue`].
    pub(crate) fn own_queue(&mut self) {
        if self.own.is_none() {
            self.own = Some(self.shared.take_queue());
        }
    }

    /// Puts the queue back in `shared`, for a session whose halves become two tasks.
    /// Transaction ends seen meanwhile were not counted: only pgml cursors, made later,
    /// compare those counts, and only with each other.
    pub(crate) fn share_queue(&mut self) {
        if let Some(q) = self.own.take() {
            self.shared.restore_queue(q);
        }
    }

    /// Queues the answer to a frame being forwarded (see [`Shared::expect`]).
    pub(crate) fn expect(&mut self, kind: Kind, route: Route) {
        match &mut self.own {
            Some(q) => q.expect(kind, route),
            None => self.shared.expect(kind, route),
        }
    }

    fn pop(&mut self) -> Option<Expect> {
        match &mut self.own {
            Some(q) => q.pop(),
            None => self.shared.pop(),
        }
    }

    fn pop_ready_local(&mut self) -> Option<Expect> {
        match &mut self.own {
            Some(q) => q.pop_ready_local(),
            None => self.shared.pop_ready_local(),
        }
    }

    /// Answers queued Local entries and fires barriers that reached the front.
    fn run_local(&mut self) {
        if self.current.is_some() {
            return;
        }
        while let Some(e) = self.pop_ready_local() {
            match e {
                Expect::Local(b) => self.out.extend_from_slice(&b),
                Expect::Barrier(tx) => {
                    let _ = tx.send(());
                }
                Expect::Upstream(..) => unreachable!("pop_ready_local returns local entries only"),
            }
        }
    }

    /// Consumes as much of `inbuf` as forms messages or streamable prefixes. Returns true
    /// when it stopped only because enough output is pending to flush first.
    pub(crate) fn process(&mut self) -> bool {
        loop {
            if self.out.len() >= FLUSH_AT {
                return !self.inbuf.is_empty();
            }
            match self.state {
                State::Streaming(left) => {
                    let n = left.min(self.inbuf.len());
                    if n == 0 {
                        return false;
                    }
                    self.out.extend_from_slice(&self.inbuf[..n]);
                    self.inbuf.advance(n);
                    if n == left {
                        self.state = State::Idle;
                        let ty = self.pending_type;
                        self.complete(ty);
                    } else {
                        self.state = State::Streaming(left - n);
                    }
                }
                State::Idle => {
                    if self.inbuf.len() < 5 {
                        return false;
                    }
                    self.run_local();
                    let ty = self.inbuf[0];
                    let total = u32::from_be_bytes([
                        self.inbuf[1],
                        self.inbuf[2],
                        self.inbuf[3],
                        self.inbuf[4],
                    ]) as usize
                        + 1;
                    let is_async = matches!(ty, b'N' | b'S' | b'A');
                    if !is_async && self.current.is_none() {
                        self.current = self.next_upstream_entry();
                    }
                    let to_client_streamed = is_async
                        || (matches!(self.current, None | Some((_, Route::Client)))
                            && !matches!(ty, b'Z' | b'E'));
                    if to_client_streamed {
                        let n = total.min(self.inbuf.len());
                        self.out.extend_from_slice(&self.inbuf[..n]);
                        self.inbuf.advance(n);
                        self.pending_type = ty;
                        if n == total {
                            if !is_async {
                                self.complete(ty);
                            }
                        } else {
                            self.state = State::Streaming(total - n);
                            if is_async {
                                self.pending_type = 0;
                            }
                        }
                        continue;
                    }
                    if self.inbuf.len() < total {
                        return false;
                    }
                    // Looked at in place (split off, the buffer would turn into a shared
                    // one, with a reference count to keep per message).
                    let inbuf = std::mem::take(&mut self.inbuf);
                    self.handle_whole(ty, &inbuf[..total]);
                    self.inbuf = inbuf;
                    self.inbuf.advance(total);
                }
            }
        }
    }

    /// The next entry answered by the upstream, acting on local ones on the way.
    fn next_upstream_entry(&mut self) -> Option<(Kind, Route)> {
        loop {
            match self.pop()? {
                Expect::Upstream(k, r) => return Some((k, r)),
                Expect::Local(b) => self.out.extend_from_slice(&b),
                Expect::Barrier(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// A buffered message: ReadyForQuery, ErrorResponse, or one pgmld consumes.
    fn handle_whole(&mut self, ty: u8, msg: &[u8]) {
        // The backend closes after a FATAL (57P01 from pg_terminate_backend or a server
        // shutdown): the client gets it whatever pgmld was doing, as from Postgres.
        let fatal = ty == b'E' && crate::wire::is_fatal_error(msg);
        let forward = fatal
            || match &self.current {
                None | Some((_, Route::Client)) => true,
                Some((_, Route::Swallow)) => ty == b'E',
                Some((_, Route::OnlyReady)) => ty == b'Z',
                Some((_, Route::RowDescription)) => ty != b'n',
                Some((_, Route::Capture(tx))) => {
                    let _ = tx.send((ty, Bytes::copy_from_slice(&msg[5..])));
                    false
                }
            };
        if forward {
            self.out.extend_from_slice(msg);
        }
        match ty {
            b'Z' => {
                match &mut self.own {
                    Some(q) => q.end_skip(),
                    None => self.shared.set_txn_status(msg.get(5).copied().unwrap_or(b'I')),
                }
                self.current = None;
            }
            b'E' => {
                if let Some((kind, _)) = &self.current {
                    if kind.is_extended() {
                        self.current = None;
                        match &mut self.own {
                            Some(q) => q.error_skip(|_| {}),
                            None => self.shared.error_skip(),
                        }
                    }
                }
            }
            _ => self.complete(ty),
        }
    }

    fn complete(&mut self, ty: u8) {
        if let Some((kind, _)) = &self.current {
            if kind.completed_by(ty) {
                self.current = None;
            }
        }
    }
}
