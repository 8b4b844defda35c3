//! The ordered list of responses a session is waiting for from its upstream connection.
//!
//! The session pushes one entry per forwarded or injected message that the upstream will
//! answer, plus entries of its own (bytes to send the client in order, barriers). The relay
//! takes entries off the front as responses complete, so it always knows whose response a
//! message is: the client's (forward it), pgmld's (swallow or capture it), and where the
//! client's and pgmld's own output interleave.

use crate::doorbell::Doorbell;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Which frontend message an upstream response belongs to; decides which backend message
/// completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Simple query: completed by ReadyForQuery.
    Query,
    /// Parse: ParseComplete.
    Parse,
    /// Bind: BindComplete.
    Bind,
    /// Describe of a statement: RowDescription or NoData (after ParameterDescription).
    DescribeStatement,
    /// Describe of a portal: RowDescription or NoData.
    DescribePortal,
    /// Execute: CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Close: CloseComplete.
    Close,
    /// Sync: ReadyForQuery.
    Sync,
    /// Fast-path FunctionCall: ReadyForQuery.
    FunctionCall,
}

impl Kind {
    /// True when backend message `ty` is the last one answering this kind.
    pub fn completed_by(self, ty: u8) -> bool {
        match self {
            Kind::Query | Kind::Sync | Kind::FunctionCall => ty == b'Z',
            Kind::Parse => ty == b'1',
            Kind::Bind => ty == b'2',
            Kind::Close => ty == b'3',
            Kind::DescribeStatement | Kind::DescribePortal => ty == b'T' || ty == b'n',
            Kind::Execute => matches!(ty, b'C' | b'I' | b's'),
        }
    }

    /// Kinds whose error does not end with a ReadyForQuery of their own, so the upstream
    /// skips later messages until the next Sync.
    pub fn is_extended(self) -> bool {
        !matches!(self, Kind::Query | Kind::Sync | Kind::FunctionCall)
    }
}

/// Where the responses to one entry go.
#[derive(Debug)]
pub enum Route {
    /// To the client, streamed.
    Client,
    /// Dropped, except ErrorResponse which the client must see.
    Swallow,
    /// Dropped, except ReadyForQuery (used after pgmld reported an error itself).
    OnlyReady,
    /// To the client except NoData: a portal Describe standing in for the RowDescription
    /// a simple query sends by itself.
    RowDescription,
    /// Sent to pgmld's own code as whole messages (type, body).
    Capture(mpsc::UnboundedSender<(u8, Bytes)>),
}

/// One entry of the queue.
#[derive(Debug)]
pub enum Expect {
    /// Responses to a message sent upstream.
    Upstream(Kind, Route),
    /// Bytes pgmld answers the client with itself, in order.
    Local(Bytes),
    /// Fires once every earlier entry is done: the upstream is caught up.
    Barrier(oneshot::Sender<()>),
}

/// The entries themselves, and the upstream's skip mode. Behind `Shared`'s lock while the
/// session's halves are two tasks; owned by the relay, with no lock, while both halves run
/// on the pass-through loop's thread (`Relay::own_queue`).
#[derive(Default)]
pub(crate) struct Queue {
    entries: VecDeque<Expect>,
    /// The upstream reported an error in extended mode and no Sync was queued after it:
    /// it discards messages until Sync, so those get no entry.
    skipping: bool,
}

impl Queue {
    /// See [`Shared::expect`].
    pub fn expect(&mut self, kind: Kind, route: Route) {
        if self.skipping && kind != Kind::Sync {
            return;
        }
        if kind == Kind::Sync {
            self.skipping = false;
        }
        self.entries.push_back(Expect::Upstream(kind, route));
    }

    /// Takes the front entry.
    pub fn pop(&mut self) -> Option<Expect> {
        self.entries.pop_front()
    }

    /// Takes the front entry if it is one the relay acts on without upstream input.
    pub fn pop_ready_local(&mut self) -> Option<Expect> {
        match self.entries.front() {
            Some(Expect::Local(_)) | Some(Expect::Barrier(_)) => self.entries.pop_front(),
            _ => None,
        }
    }

    /// See [`Shared::error_skip`]; `took` sees each entry dropped.
    pub fn error_skip(&mut self, mut took: impl FnMut(&Expect)) {
        while let Some(front) = self.entries.front() {
            if matches!(front, Expect::Upstream(Kind::Sync, _)) {
                return;
            }
            let Some(e) = self.entries.pop_front() else { break };
            took(&e);
            if let Expect::Barrier(tx) = e {
                let _ = tx.send(());
            }
        }
        self.skipping = true;
    }

    /// A ReadyForQuery came: the upstream skips nothing any more.
    pub fn end_skip(&mut self) {
        self.skipping = false;
    }

    fn locals(&self) -> usize {
        self.entries.iter().filter(|e| !matches!(e, Expect::Upstream(..))).count()
    }
}

/// State shared by a session's two halves.
pub struct Shared {
    inner: Mutex<Queue>,
    /// How many Local and Barrier entries are queued: the relay looks for one after every
    /// message, and without any (nearly always) it need not take the lock to know.
    locals: AtomicUsize,
    /// `Queue::skipping` as last set, read without the lock by `set_txn_status` (only the
    /// relay sets it, so the relay never reads a stale `false`).
    skipping_hint: AtomicBool,
    /// Wakes the relay: an entry it acts on by itself (Local, Barrier) or a notice was
    /// queued, or the session closed.
    pub relay_bell: Doorbell,
    /// Wakes the session: the relay stopped, or a transaction ended while the session
    /// watches for that (`watch_txn_ends`).
    pub session_bell: Doorbell,
    /// ReadyForQuery messages with status `I` seen so far: each one ends whatever
    /// transaction was open, so pgmld's cursors declared before it are gone.
    txn_ends: AtomicU64,
    /// Set while the session holds cursors: then each transaction end rings it, so it drops
    /// them (and stops their generation) at COMMIT / ROLLBACK without waiting for the
    /// client's next message. Unset, an ordinary query's end wakes no one.
    watch_txn: AtomicBool,
    /// Set when the relay stops (upstream or client gone); read through `is_closed`.
    closed: AtomicBool,
    /// Cancelled together with `closed`, for tasks waiting on other things.
    pub done: CancellationToken,
    /// Progress notices for the client, written between messages ([`Shared::notice`]).
    notices: mpsc::UnboundedSender<Bytes>,
}

impl Shared {
    /// New shared state and the receiving end of the notice channel (for the relay).
    pub fn new() -> (Shared, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            inner: Mutex::new(Queue::default()),
            locals: AtomicUsize::new(0),
            skipping_hint: AtomicBool::new(false),
            relay_bell: Doorbell::default(),
            session_bell: Doorbell::default(),
            txn_ends: AtomicU64::new(0),
            watch_txn: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            done: CancellationToken::new(),
            notices: tx,
        };
        (shared, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock would be a bug; the data stays consistent enough
        // to keep serving (entries are plain values), so recover instead of poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the answer to a message about to be written upstream. In skip mode only a
    /// Sync gets an entry: Postgres discards every other message until Sync, a simple
    /// Query or a FunctionCall included (`ignore_till_sync` in postgres.c), and an entry
    /// for one would take the Sync's ReadyForQuery and leave the Sync's entry waiting
    /// for ever.
    pub fn expect(&self, kind: Kind, route: Route) {
        let mut g = self.lock();
        g.expect(kind, route);
        if kind == Kind::Sync {
            self.skipping_hint.store(false, Ordering::Relaxed);
        }
    }

    /// Takes the queue out, for a relay that will own it (`Relay::own_queue`).
    pub(crate) fn take_queue(&self) -> Queue {
        let mut g = self.lock();
        self.locals.store(0, Ordering::Release);
        std::mem::take(&mut *g)
    }

    /// Puts an owned queue back in front of whatever was queued meanwhile.
    pub(crate) fn restore_queue(&self, mut q: Queue) {
        let mut g = self.lock();
        q.entries.extend(g.entries.drain(..));
        q.skipping |= g.skipping;
        self.locals.store(q.locals(), Ordering::Release);
        self.skipping_hint.store(q.skipping, Ordering::Relaxed);
        *g = q;
        drop(g);
        self.relay_bell.ring();
    }

    /// Queues bytes for the client, after everything queued before.
    pub fn local(&self, bytes: Bytes) {
        self.push_local(Expect::Local(bytes));
    }

    /// Queues a barrier and returns what fires when the upstream is caught up.
    pub fn barrier(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.push_local(Expect::Barrier(tx));
        rx
    }

    fn push_local(&self, e: Expect) {
        let mut g = self.lock();
        g.entries.push_back(e);
        self.locals.fetch_add(1, Ordering::Release);
        drop(g);
        self.relay_bell.ring();
    }

    /// Queues a notice for the client (the relay writes it between messages). From any
    /// thread; after the session ended it goes nowhere.
    pub fn notice(&self, bytes: Bytes) {
        if self.notices.send(bytes).is_ok() {
            self.relay_bell.ring();
        }
    }

    /// Whether the relay has queued Local or Barrier entries (an upper bound: it may be
    /// true while the front entry is an Upstream one).
    fn has_locals(&self) -> bool {
        self.locals.load(Ordering::Acquire) > 0
    }

    /// Counts a Local or Barrier entry taken off the queue (under the lock, as `close`
    /// resets the count under it).
    fn took(&self, e: &Expect) {
        if !matches!(e, Expect::Upstream(..)) {
            self.locals.fetch_sub(1, Ordering::Release);
        }
    }

    /// True while the upstream discards messages until Sync.
    pub fn skipping(&self) -> bool {
        self.lock().skipping
    }

    /// Takes the front entry.
    pub fn pop(&self) -> Option<Expect> {
        let mut g = self.lock();
        let e = g.pop()?;
        self.took(&e);
        Some(e)
    }

    /// Takes the front entry if it is one the relay acts on without upstream input.
    pub fn pop_ready_local(&self) -> Option<Expect> {
        if !self.has_locals() {
            return None;
        }
        let mut g = self.lock();
        let e = g.pop_ready_local()?;
        self.took(&e);
        Some(e)
    }

    /// The upstream failed a message in extended mode: it skips everything up to the next
    /// Sync, so drop the entries queued before that Sync (barriers fire; local bytes are
    /// dropped as Postgres would drop those messages' answers). Without a queued Sync,
    /// later messages get no entry until one comes.
    pub fn error_skip(&self) {
        let mut g = self.lock();
        g.error_skip(|e| self.took(e));
        self.skipping_hint.store(g.skipping, Ordering::Relaxed);
    }

    /// Records a ReadyForQuery status.
    pub fn set_txn_status(&self, status: u8) {
        if self.skipping_hint.load(Ordering::Relaxed) {
            self.lock().end_skip();
            self.skipping_hint.store(false, Ordering::Relaxed);
        }
        if status == b'I' {
            // SeqCst with `watch_txn_ends`: either the session sees this end when it starts
            // watching, or this sees that it watches.
            self.txn_ends.fetch_add(1, Ordering::SeqCst);
            if self.watch_txn.load(Ordering::SeqCst) {
                self.session_bell.ring();
            }
        }
    }

    /// Whether each transaction end should ring `session_bell` (while the session holds
    /// cursors). Read `txn_end_count` after setting it to catch ends just before.
    pub fn watch_txn_ends(&self, on: bool) {
        self.watch_txn.store(on, Ordering::SeqCst);
    }

    /// How many transactions have ended (see `txn_ends`); a cursor records it when declared.
    pub fn txn_end_count(&self) -> u64 {
        self.txn_ends.load(Ordering::SeqCst)
    }

    /// Ends the session: drops all entries so waiters see closed channels.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut g = self.lock();
        g.entries.clear();
        self.locals.store(0, Ordering::Release);
        drop(g);
        self.relay_bell.ring();
        self.session_bell.ring();
        self.done.cancel();
    }

    /// Whether the session is over (`close` ran).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_skip_stops_at_sync_and_fires_barriers() {
        let (s, _rx) = Shared::new();
        s.expect(Kind::Bind, Route::Client);
        let mut b = s.barrier();
        s.expect(Kind::Execute, Route::Client);
        s.expect(Kind::Sync, Route::Client);
        assert!(matches!(s.pop(), Some(Expect::Upstream(Kind::Bind, _))));
        s.error_skip();
        assert!(b.try_recv().is_ok());
        assert!(matches!(s.pop(), Some(Expect::Upstream(Kind::Sync, _))));
        assert!(!s.skipping());
    }

    #[test]
    fn without_a_sync_later_messages_get_no_entry_until_one_comes() {
        let (s, _rx) = Shared::new();
        s.error_skip();
        assert!(s.skipping());
        s.expect(Kind::Execute, Route::Client);
        assert!(s.pop().is_none());
        s.expect(Kind::Sync, Route::Client);
        assert!(matches!(s.pop(), Some(Expect::Upstream(Kind::Sync, _))));
        assert!(!s.skipping());
    }

    #[test]
    fn a_simple_query_or_function_call_while_skipping_gets_no_entry() {
        // Postgres discards them until Sync: an entry would wait for an answer that never
        // comes, and then steal the Sync's ReadyForQuery.
        let (s, _rx) = Shared::new();
        s.error_skip();
        s.expect(Kind::Query, Route::Client);
        s.expect(Kind::FunctionCall, Route::Client);
        assert!(s.pop().is_none());
        let mut b = s.barrier();
        assert!(matches!(s.pop(), Some(Expect::Barrier(_))), "a barrier waits for nothing");
        drop(b.try_recv());
        s.expect(Kind::Sync, Route::Client);
        s.expect(Kind::Query, Route::Client);
        assert!(matches!(s.pop(), Some(Expect::Upstream(Kind::Sync, _))));
        assert!(matches!(s.pop(), Some(Expect::Upstream(Kind::Query, _))));
    }

    #[test]
    fn an_owned_queue_goes_back_in_front_of_what_was_queued_meanwhile() {
        let (s, _rx) = Shared::new();
        let mut q = s.take_queue();
        q.expect(Kind::Parse, Route::Client);
        q.error_skip(|_| {});
        q.expect(Kind::Bind, Route::Client); // discarded upstream: no entry
        q.expect(Kind::Sync, Route::Client);
        s.expect(Kind::Query, Route::Client);
        s.local(Bytes::from_static(b"x"));
        s.restore_queue(q);
        assert!(!s.skipping());
        assert!(s.pop_ready_local().is_none(), "the Sync's answer comes first");
        assert!(matches!(s.pop(), Some(Expect::Upstream(Kind::Sync, _))));
        assert!(matches!(s.pop(), Some(Expect::Upstream(Kind::Query, _))));
        assert!(matches!(s.pop_ready_local(), Some(Expect::Local(_))), "counted again");
        assert!(s.pop().is_none());
    }

    #[test]
    fn idle_ready_for_query_ends_a_transaction() {
        let (s, _rx) = Shared::new();
        s.set_txn_status(b'T');
        assert_eq!(s.txn_end_count(), 0);
        s.set_txn_status(b'I');
        s.set_txn_status(b'E');
        assert_eq!(s.txn_end_count(), 1);
    }

    #[test]
    fn completion_rules() {
        assert!(Kind::DescribeStatement.completed_by(b'n'));
        assert!(!Kind::DescribeStatement.completed_by(b't'));
        assert!(!Kind::Query.completed_by(b'C'));
        assert!(Kind::Execute.completed_by(b's'));
    }
}
