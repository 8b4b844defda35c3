//! A wake-up for one waiting task that costs a few atomic operations per poll.
//!
//! A session's two halves wait on their socket and on "something changed on the other
//! side" at the same time, and poll both after every message. `tokio::sync::Notify` and
//! `CancellationToken` each take a lock when polled, which per message was a measurable
//! share of a small query's CPU (perf, pgbench select-only at 50 clients); a flag and an
//! `AtomicWaker` take none.

use atomic_waker::AtomicWaker;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// Rung from any thread, answered by one task: the last task to wait on it is the one woken.
#[derive(Default)]
pub struct Doorbell {
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl Doorbell {
    /// Wakes the waiting task, or makes its next wait return at once.
    pub fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the bell was rung since the last time this returned ready.
    pub fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A ring between the check above and the registration woke no one: look again.
        if self.rung.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Waits until the bell is rung (returns at once if it was rung since the last wait).
    pub async fn rung(&self) {
        poll_fn(|cx| self.poll_rung(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_ring_before_the_wait_is_kept_and_consumed_once() {
        let bell = Doorbell::default();
        bell.ring();
        bell.ring();
        bell.rung().await;
        let again = tokio::time::timeout(Duration::from_millis(50), bell.rung()).await;
        assert!(again.is_err(), "two rings before a wait make one wake-up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ring_from_another_thread_wakes_the_waiter() {
        let bell = Arc::new(Doorbell::default());
        for _ in 0..200 {
            let b = bell.clone();
            let ringer = std::thread::spawn(move || b.ring());
            tokio::time::timeout(Duration::from_secs(5), bell.rung()).await.expect("woken");
            ringer.join().expect("ringer");
        }
    }
}
