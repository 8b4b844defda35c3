//! A counter value split into per-thread slots, for counters that every relayed statement
//! bumps from every session thread.
//!
//! One `AtomicU64` incremented by two or more threads bounces its cache line between
//! their CPUs on each increment; at tens of thousands of statements a second that is a
//! measurable share of the proxy's CPU per statement. Here each thread adds to a slot of
//! its own (its own cache line), and a scrape sums the slots, so the value read is exact
//! whenever it is read.

use prometheus_client::metrics::counter::{Atomic, Counter};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots per counter. Threads past this many share slots (still exact, only slower).
const SLOTS: usize = 16;

/// A `Counter` whose hot-path increments touch only the calling thread's slot.
pub type ShardedCounter = Counter<u64, Sharded>;

/// One cache line (two on CPUs that fetch lines in pairs) per slot, so that two threads'
/// slots never share one.
#[derive(Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// The value of a [`ShardedCounter`]: a slot per thread, summed when read.
#[derive(Default)]
pub struct Sharded {
    slots: [Slot; SLOTS],
}

impl std::fmt::Debug for Sharded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Sharded").field(&Atomic::get(self)).finish()
    }
}

/// Hands each thread a slot index, round-robin in the order threads first count.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// This thread's slot index; `SLOTS` until the thread first counts.
const UNSET: usize = SLOTS;

thread_local! {
    // `const`: no lazy-initialisation check or destructor registration on each access.
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(UNSET) };
}

impl Sharded {
    #[inline]
    fn slot(&self) -> &AtomicU64 {
        let mut i = SLOT.with(|s| s.get());
        if i == UNSET {
            i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
            SLOT.with(|s| s.set(i));
        }
        &self.slots[i].0
    }
}

impl Atomic<u64> for Sharded {
    /// Adds one; returns this thread's slot's previous value (not the counter's).
    #[inline]
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Adds `v`; returns this thread's slot's previous value (not the counter's).
    #[inline]
    fn inc_by(&self, v: u64) -> u64 {
        self.slot().fetch_add(v, Ordering::Relaxed)
    }

    /// The sum of all slots.
    fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_what_every_thread_added() {
        let c = ShardedCounter::default();
        std::thread::scope(|s| {
            for t in 0..(SLOTS + 3) {
                let c = c.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.inc_by(t as u64);
                });
            }
        });
        let extra: u64 = (0..(SLOTS + 3) as u64).sum();
        assert_eq!(c.get(), (SLOTS as u64 + 3) * 1000 + extra);
    }

    #[test]
    fn slots_do_not_share_cache_lines() {
        assert!(std::mem::align_of::<Slot>() >= 128);
        assert_eq!(std::mem::size_of::<Sharded>(), SLOTS * 128);
    }
}
