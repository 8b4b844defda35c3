//! The pass-through loop: sessions that call no pgml move their bytes on a plain epoll
//! loop (pgbouncer's shape) instead of two tokio tasks.
//!
//! Measured on a 2-CPU host (docs/benchmarks.md, 2026-12-07 (12)), the kernel's share of
//! a relayed pgbench transaction is the same for any proxy, and tokio's task machinery
//! (wakers, the reactor, two tasks per session) cost ~1.5 µs of user time per transaction
//! where an epoll loop doing the same message work costs ~0.7: the difference between
//! trailing pgbouncer and leading it. So after startup a plain-TCP session is handed to
//! one of these threads, which forwards each client frame that `pass_kind` lets pass and
//! runs the relay's own `process` on the upstream's answers: the same decisions, the same
//! expectation queue (held by the relay, without its lock, while both halves are here),
//! the same bytes as the tokio halves.
//!
//! At the first thing it does not do (a frame that calls pgml or ends the session, end of
//! stream, a socket error) the thread hands the whole state (sockets, unread and unwritten
//! bytes, the relay between or inside messages) back to the session's tokio task, which
//! goes on exactly where the loop stopped and keeps the session to its end. TLS sessions
//! stay on tokio from the start. Cancel requests need nothing from the loop: they go to
//! the upstream by key (`cancel.rs`). Shutdown's kill drops the waiting task, which tells
//! the thread to close the session.

mod epoll;
mod pump;

use crate::relay::Relay;
use bytes::BytesMut;
use epoll::{Epoll, EventFd, Events, IN};
use pgmld_metrics::Metrics;
use pump::Pump;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Token of the thread's own wake-up fd (session tokens are `slot << 1 | side`, below it).
const WAKE: u64 = u64::MAX;

/// A session between two loops: everything the next one needs to go on. On the
/// pass-through loop the streams are plain non-blocking sockets; the server also parks
/// its tokio streams (plain or TLS) in it.
pub(crate) struct Parked<C = TcpStream, U = TcpStream> {
    /// The client's stream.
    pub client: C,
    /// The upstream's stream.
    pub upstream: U,
    /// Client bytes read and not yet handled; when handed back, they start with the frame
    /// that did not pass.
    pub client_in: BytesMut,
    /// Frames already forwarded (their answers queued in `Shared`) not yet written.
    pub up: BytesMut,
    /// The upstream → client half, with what it read and what it has still to write.
    pub relay: Relay,
}

/// Work for a loop thread.
enum Command {
    /// Relay this session.
    Adopt(Box<Pump>),
    /// Close the session with this id (shutdown ended it).
    Kill(u64),
}

/// A loop thread as seen from outside: where to send work, and how to wake it.
#[derive(Clone)]
struct Handle {
    tx: mpsc::Sender<Command>,
    bell: Arc<EventFd>,
}

impl Handle {
    fn send(&self, cmd: Command) -> bool {
        let sent = self.tx.send(cmd).is_ok();
        self.bell.wake();
        sent
    }
}

/// The pass-through threads of one server; sessions are dealt round-robin.
pub(crate) struct FastThreads {
    threads: Vec<Handle>,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
    max_message: usize,
}

impl FastThreads {
    /// Starts `n` loop threads (at least one).
    pub fn start(n: usize, metrics: Arc<Metrics>, max_message: usize) -> std::io::Result<Self> {
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let epoll = Epoll::new()?;
            let bell = Arc::new(EventFd::new()?);
            epoll.add(bell.raw(), IN, WAKE)?;
            let (tx, rx) = mpsc::channel();
            let b = bell.clone();
            std::thread::Builder::new().name(format!("pgmld-relay-{i}")).spawn(move || {
                if let Err(e) = run(&epoll, &b, &rx) {
                    tracing::error!("pass-through loop {i} stopped: {e}");
                }
            })?;
            threads.push(Handle { tx, bell });
        }
        Ok(FastThreads { threads, next: AtomicUsize::new(0), metrics, max_message })
    }

    /// Moves session `id` onto a loop; [`Adopted::back`] resolves when the loop hands it
    /// back.
    pub fn adopt(&self, id: u64, parked: Parked) -> Adopted {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        let handle = self.threads[i].clone();
        let (tx, rx) = oneshot::channel();
        let pump = Pump::new(id, parked, self.metrics.clone(), self.max_message, tx);
        handle.send(Command::Adopt(Box::new(pump)));
        Adopted { id, rx, handle, back: false }
    }
}

impl Drop for FastThreads {
    /// Each thread sees its channel closed at its next wake-up and ends, closing the
    /// sessions it still holds.
    fn drop(&mut self) {
        let threads = std::mem::take(&mut self.threads);
        for h in threads {
            let bell = h.bell.clone();
            drop(h);
            bell.wake();
        }
    }
}

/// A session on a loop, as seen by its tokio task.
pub(crate) struct Adopted {
    id: u64,
    rx: oneshot::Receiver<Parked>,
    handle: Handle,
    /// The loop handed the session back (or is gone): nothing to kill on drop.
    back: bool,
}

impl Adopted {
    /// Waits until the loop hands the session back; `None` when the loop thread ended
    /// with it (the sockets are closed then).
    pub async fn back(mut self) -> Option<Parked> {
        let r = (&mut self.rx).await.ok();
        self.back = true;
        r
    }
}

impl Drop for Adopted {
    /// Dropped while on the loop (shutdown aborted the task): the loop closes the session.
    fn drop(&mut self) {
        if !self.back {
            self.handle.send(Command::Kill(self.id));
        }
    }
}

/// One thread's loop: runs until its server drops the channel.
fn run(epoll: &Epoll, bell: &EventFd, rx: &mpsc::Receiver<Command>) -> std::io::Result<()> {
    let mut slots: Vec<Option<Pump>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::new(256);
    loop {
        epoll.wait(&mut events)?;
        // Slots emptied in this batch are reused only after it: a later event of the same
        // batch may still carry the old session's token.
        let mut emptied = Vec::new();
        for (token, ready) in events.iter() {
            if token == WAKE {
                bell.drain();
                loop {
                    match rx.try_recv() {
                        Ok(Command::Adopt(mut pump)) => {
                            let slot = free.pop().unwrap_or_else(|| {
                                slots.push(None);
                                slots.len() - 1
                            });
                            match pump.start(epoll, slot as u64) {
                                Ok(()) => slots[slot] = Some(*pump),
                                Err(pump::Leave(why)) => {
                                    pump.leave(epoll, why);
                                    emptied.push(slot);
                                }
                            }
                        }
                        Ok(Command::Kill(id)) => {
                            let found =
                                slots.iter().position(|s| s.as_ref().is_some_and(|p| p.id == id));
                            if let Some(slot) = found {
                                if let Some(p) = slots[slot].take() {
                                    p.close(epoll);
                                }
                                emptied.push(slot);
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            for p in slots.into_iter().flatten() {
                                p.close(epoll);
                            }
                            return Ok(());
                        }
                    }
                }
                continue;
            }
            let slot = (token >> 1) as usize;
            let Some(pump) = slots.get_mut(slot).and_then(Option::as_mut) else { continue };
            // A bug met by one session ends that session only, as a panicking tokio task
            // would, not the loop and every session on it.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pump.on_event(epoll, slot as u64, token & 1, ready)
            }));
            match step {
                Ok(Ok(())) => continue,
                Ok(Err(pump::Leave(why))) => {
                    if let Some(p) = slots[slot].take() {
                        p.leave(epoll, why);
                    }
                }
                Err(_) => {
                    tracing::error!("a session on the pass-through loop panicked; it is closed");
                    if let Some(p) = slots[slot].take() {
                        p.close(epoll);
                    }
                }
            }
            emptied.push(slot);
        }
        free.extend(emptied);
    }
}
