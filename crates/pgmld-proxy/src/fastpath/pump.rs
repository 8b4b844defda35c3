//! One session on the pass-through loop: both sockets non-blocking, the session's frames
//! checked with the session's own `pass_kind` and their answers queued in the relay's own
//! queue, the upstream's answers handled by the relay's own `process`. Anything else (a frame that does not pass,
//! end of stream, a socket error) hands the whole state back to the tokio session, which
//! meets the same bytes or the same error and does what it always did.

use super::epoll::{read_into, Epoll, FAILED, IN, OUT};
use super::Parked;
use crate::expect::Route;
use crate::relay::{Relay, READ_CHUNK};
use crate::session::{pass_kind, PgmlState};
use crate::wire::frame_len;
use bytes::{Buf, BytesMut};
use pgmld_metrics::Metrics;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Room made in the client buffer before each read (as the tokio session reads).
const CLIENT_CHUNK: usize = 8192;

/// Which socket an event is for: the low bit of its token.
pub(super) const CLIENT: u64 = 0;
pub(super) const UPSTREAM: u64 = 1;

/// The session must go back to tokio.
pub(super) struct Leave(pub &'static str);

/// A session relayed by the loop.
pub(super) struct Pump {
    /// The server's session id (shutdown's kill names it).
    pub id: u64,
    client: TcpStream,
    upstream: TcpStream,
    /// Client bytes read and not yet forwarded: at most a partial frame between events.
    client_in: BytesMut,
    /// Forwarded frames not yet written upstream.
    up: BytesMut,
    relay: Relay,
    /// Always empty: a frame that would change it does not pass (see `pass_kind`).
    pgml: PgmlState,
    metrics: Arc<Metrics>,
    max_message: usize,
    /// Where the state goes when the session leaves the loop.
    back: oneshot::Sender<Parked>,
    /// What each socket is watched for now (client, upstream).
    interest: [u32; 2],
}

impl Pump {
    /// A session handed over by its tokio task.
    pub fn new(
        id: u64,
        parked: Parked,
        metrics: Arc<Metrics>,
        max_message: usize,
        back: oneshot::Sender<Parked>,
    ) -> Pump {
        let mut relay = parked.relay;
        // Both halves run on the loop's thread: the relay keeps the queue, unlocked.
        relay.own_queue();
        Pump {
            id,
            client: parked.client,
            upstream: parked.upstream,
            client_in: parked.client_in,
            up: parked.up,
            relay,
            pgml: PgmlState::default(),
            metrics,
            max_message,
            back,
            interest: [0, 0],
        }
    }

    /// Watches both sockets under `slot`, then forwards what the session brought with it.
    pub fn start(&mut self, epoll: &Epoll, slot: u64) -> Result<(), Leave> {
        let token = slot << 1;
        epoll
            .add(self.client.as_raw_fd(), 0, token | CLIENT)
            .map_err(|_| Leave("epoll_ctl failed"))?;
        if epoll.add(self.upstream.as_raw_fd(), 0, token | UPSTREAM).is_err() {
            let _ = epoll.remove(self.client.as_raw_fd());
            return Err(Leave("epoll_ctl failed"));
        }
        self.forward_frames()?;
        self.write_up()?;
        self.relay_out()?;
        self.watch(epoll, slot)
    }

    /// Acts on the events of one socket.
    pub fn on_event(
        &mut self,
        epoll: &Epoll,
        slot: u64,
        side: u64,
        events: u32,
    ) -> Result<(), Leave> {
        if events & FAILED != 0 {
            return Err(Leave("socket error or hang-up"));
        }
        if side == CLIENT {
            if events & OUT != 0 {
                self.relay_out()?;
            }
            if events & IN != 0
                && self.up.is_empty()
                && read(&self.client, &mut self.client_in, CLIENT_CHUNK)?
            {
                self.forward_frames()?;
                self.write_up()?;
            }
        } else {
            if events & OUT != 0 {
                self.write_up()?;
            }
            if events & IN != 0
                && self.relay.out.is_empty()
                && read(&self.upstream, &mut self.relay.inbuf, READ_CHUNK)?
            {
                self.relay_out()?;
            }
        }
        self.watch(epoll, slot)
    }

    /// Queues the whole frames in `client_in` for the upstream while they pass.
    fn forward_frames(&mut self) -> Result<(), Leave> {
        loop {
            let len = match frame_len(&self.client_in, self.max_message) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(()),
                // Malformed or oversized: the session answers it (08P01).
                Err(_) => return Err(Leave("malformed frame")),
            };
            let frame = &self.client_in[..len];
            let Some(kind) = pass_kind(&mut self.pgml, &self.metrics, frame) else {
                return Err(Leave("a frame for pgmld"));
            };
            if let Some(kind) = kind {
                self.relay.expect(kind, Route::Client);
            }
            self.up.extend_from_slice(frame);
            self.client_in.advance(len);
        }
    }

    /// Writes what is queued for the upstream, as far as the socket takes it.
    fn write_up(&mut self) -> Result<(), Leave> {
        let n = write_some(&self.upstream, &mut self.up)?;
        self.metrics.bytes_to_upstream.inc_by(n as u64);
        Ok(())
    }

    /// Turns the upstream's bytes into client output and writes it, as far as the client
    /// takes it.
    fn relay_out(&mut self) -> Result<(), Leave> {
        loop {
            let more = self.relay.process();
            let n = write_some(&self.client, &mut self.relay.out)?;
            self.metrics.bytes_to_client.inc_by(n as u64);
            if !(more && self.relay.out.is_empty()) {
                return Ok(());
            }
        }
    }

    /// Watches each socket for what can move now: input while nothing waits to go the
    /// other way (backpressure, as the tokio halves have it), output while some waits.
    fn watch(&mut self, epoll: &Epoll, slot: u64) -> Result<(), Leave> {
        let client = if self.up.is_empty() { IN } else { 0 }
            | if self.relay.out.is_empty() { 0 } else { OUT };
        let upstream = if self.relay.out.is_empty() { IN } else { 0 }
            | if self.up.is_empty() { 0 } else { OUT };
        for (i, (want, fd, side)) in [
            (client, self.client.as_raw_fd(), CLIENT),
            (upstream, self.upstream.as_raw_fd(), UPSTREAM),
        ]
        .into_iter()
        .enumerate()
        {
            if self.interest[i] != want {
                epoll
                    .modify(fd, want, (slot << 1) | side)
                    .map_err(|_| Leave("epoll_ctl failed"))?;
                self.interest[i] = want;
            }
        }
        Ok(())
    }

    /// Unwatches both sockets and sends the session back to its tokio task (gone when the
    /// session was killed meanwhile: then the sockets just close).
    pub fn leave(self, epoll: &Epoll, why: &str) {
        tracing::debug!(session = self.id, "session leaves the pass-through loop: {why}");
        let _ = epoll.remove(self.client.as_raw_fd());
        let _ = epoll.remove(self.upstream.as_raw_fd());
        let mut relay = self.relay;
        relay.share_queue();
        let parked = Parked {
            client: self.client,
            upstream: self.upstream,
            client_in: self.client_in,
            up: self.up,
            relay,
        };
        let _ = self.back.send(parked);
    }

    /// Unwatches both sockets before they close.
    pub fn close(self, epoll: &Epoll) {
        let _ = epoll.remove(self.client.as_raw_fd());
        let _ = epoll.remove(self.upstream.as_raw_fd());
    }
}

/// Writes as much of `buf` as the socket takes, dropping what went; the byte count.
fn write_some(mut to: &TcpStream, buf: &mut BytesMut) -> Result<usize, Leave> {
    let mut sent = 0;
    while !buf.is_empty() {
        match to.write(buf) {
            Ok(0) => return Err(Leave("write failed")),
            Ok(n) => {
                buf.advance(n);
                sent += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Leave("write failed")),
        }
    }
    Ok(sent)
}

/// Reads what the socket has into `buf`: true when something came, false when nothing
/// was there; the end of the stream or an error leaves the loop (the tokio session reads
/// the same end or error again).
fn read(from: &TcpStream, buf: &mut BytesMut, room: usize) -> Result<bool, Leave> {
    match read_into(from.as_raw_fd(), buf, room) {
        Ok(0) => Err(Leave("end of stream")),
        Ok(_) => Ok(true),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(false),
        Err(_) => Err(Leave("read failed")),
    }
}
