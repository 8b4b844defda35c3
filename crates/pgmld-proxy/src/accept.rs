//! What the listener does when `accept()` fails.
//!
//! Out of file descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM), the
//! pending connection stays queued and a retry fails the same way at once: retrying in a
//! loop would spin a core and flood the log. pgmld backs off instead, 100 ms doubling up
//! to 1 s, warns once per such episode, and says so when accepting works again. Errors of
//! a single connection (it was reset before it was accepted) are retried at once.

use std::io;
use std::time::Duration;

/// First pause after a resource error.
const FIRST: Duration = Duration::from_millis(100);
/// Longest pause.
const MAX: Duration = Duration::from_secs(1);

/// Whether `e` means the process or the system ran out of something accept needs.
pub(crate) fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// The listener's backoff state: one per accept loop.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Current pause; `None` outside an episode.
    delay: Option<Duration>,
    /// Failed accepts in this episode.
    failures: u64,
}

impl Backoff {
    /// Records a failed accept; returns how long to wait before the next one.
    pub(crate) fn failed(&mut self, e: &io::Error) -> Duration {
        if !out_of_resources(e) {
            tracing::debug!("accept failed: {e}");
            return Duration::ZERO;
        }
        self.failures += 1;
        let delay = match self.delay {
            None => {
                tracing::warn!("accept failed: {e}; new connections wait in the listen queue until resources are free (retrying with backoff up to {MAX:?})");
                FIRST
            }
            Some(d) => (d * 2).min(MAX),
        };
        self.delay = Some(delay);
        delay
    }

    /// Records a successful accept, ending an episode.
    pub(crate) fn accepted(&mut self) {
        if self.delay.take().is_some() {
            tracing::info!(failed_attempts = self.failures, "accepting connections again");
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_second_and_resets() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..6).map(|_| b.failed(&emfile).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.accepted();
        assert_eq!(
            b.failed(&io::Error::from_raw_os_error(libc::ENFILE)),
            FIRST,
            "a new episode starts over"
        );
        let reset = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(b.failed(&reset), Duration::ZERO, "a connection's own error is retried at once");
    }
}
