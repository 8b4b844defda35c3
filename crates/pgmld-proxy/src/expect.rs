//! The ordered list of responses a session is waiting for from its upstream connection.
//!
//! The session pushes one entry per forwarded or injected message that the upstream will
//! answer, plus entries of its own (bytes to send the client in order, barriers). The relay
//! takes entries off the front as responses complete, so it always knows whose response a
//! message is: the client's (forward it), pgmld's (swallow or capture it), and where the
//! client's and pgmld's own output interleave.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};
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

#[derive(Default)]
struct Inner {
    entries: VecDeque<Expect>,
    /// The upstream reported an error in extended mode and no Sync was queued after it:
    /// it discards messages until Sync, so those get no entry.
    skipping: bool,
}

/// State shared by a session's two halves.
pub struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the relay when an entry it must act on by itself (Local, Barrier) is queued.
    pub wake: Notify,
    /// ReadyForQuery messages with status `I` seen so far: each one ends whatever
    /// transaction was open, so pgmld's cursors declared before it are gone.
    txn_ends: AtomicU64,
    /// Notified at each of those, so the session drops its cursors (and stops their
    /// generation) at COMMIT / ROLLBACK without waiting for the client's next message.
    pub txn_ended: Notify,
    /// Set when the relay stops (upstream or client gone).
    pub closed: AtomicBool,
    /// Cancelled together with `closed`, for tasks waiting on other things.
    pub done: CancellationToken,
    /// Progress notices for the client, written between messages.
    pub notices: mpsc::UnboundedSender<Bytes>,
}

impl Shared {
    /// New shared state and the receiving end of the notice channel (for the relay).
    pub fn new() -> (Shared, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            txn_ends: AtomicU64::new(0),
            txn_ended: Notify::new(),
            closed: AtomicBool::new(false),
            done: CancellationToken::new(),
            notices: tx,
        };
        (shared, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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
        if g.skipping && kind != Kind::Sync {
            return;
        }
        if kind == Kind::Sync {
            g.skipping = false;
        }
        g.entries.push_back(Expect::Upstream(kind, route));
    }

    /// Queues bytes for the client, after everything queued before.
    pub fn local(&self, bytes: Bytes) {
        self.lock().entries.push_back(Expect::Local(bytes));
        self.wake.notify_one();
    }

    /// Queues a barrier and returns what fires when the upstream is caught up.
    pub fn barrier(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().entries.push_back(Expect::Barrier(tx));
        self.wake.notify_one();
        rx
    }

    /// True while the upstream discards messages until Sync.
    pub fn skipping(&self) -> bool {
        self.lock().skipping
    }

    /// Takes the front entry.
    pub fn pop(&self) -> Option<Expect> {
        self.lock().entries.pop_front()
    }

    /// Takes the front entry if it is one the relay acts on without upstream input.
    pub fn pop_ready_local(&self) -> Option<Expect> {
        let mut g = self.lock();
        match g.entries.front() {
            Some(Expect::Local(_)) | Some(Expect::Barrier(_)) => g.entries.pop_front(),
            _ => None,
        }
    }

    /// The upstream failed a message in extended mode: it skips everything up to the next
    /// Sync, so drop the entries queued before that Sync (barriers fire; local bytes are
    /// dropped as Postgres would drop those messages' answers). Without a queued Sync,
    /// later messages get no entry until one comes.
    pub fn error_skip(&self) {
        let mut g = self.lock();
        while let Some(front) = g.entries.front() {
            if matches!(front, Expect::Upstream(Kind::Sync, _)) {
                return;
            }
            if let Some(Expect::Barrier(tx)) = g.entries.pop_front() {
                let _ = tx.send(());
            }
        }
        g.skipping = true;
    }

    /// Records a ReadyForQuery status.
    pub fn set_txn_status(&self, status: u8) {
        self.lock().skipping = false;
        if status == b'I' {
            self.txn_ends.fetch_add(1, Ordering::Relaxed);
            self.txn_ended.notify_one();
        }
    }

    /// How many transactions have ended (see `txn_ends`); a cursor records it when declared.
    pub fn txn_end_count(&self) -> u64 {
        self.txn_ends.load(Ordering::Relaxed)
    }

    /// Ends the session: drops all entries so waiters see closed channels.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.lock().entries.clear();
        self.wake.notify_one();
        self.done.cancel();
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
