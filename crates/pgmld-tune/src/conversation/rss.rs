//! Peak resident memory of a training run: a sampler thread reads the process's resident
//! set size while the run lasts. The kernel's own peak (`VmHWM`) covers the whole life of
//! the process, so it cannot tell one tune's peak from an earlier, larger one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler reads the resident set size.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`), when the
/// platform has it.
pub fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Samples the resident set size until [`PeakRss::finish`]; the peak seen is the run's.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeakRss {
    /// Starts sampling (no thread when the platform has no `/proc/self/status`).
    pub fn start() -> PeakRss {
        let peak = Arc::new(AtomicU64::new(current_rss_bytes().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = current_rss_bytes().and_then(|_| {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::Builder::new()
                .name("pgmld-rss".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(now) = current_rss_bytes() {
                            peak.fetch_max(now, Ordering::Relaxed);
                        }
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                })
                .ok()
        });
        PeakRss { peak, stop, thread }
    }

    /// Stops sampling; the peak in bytes, `None` when nothing could be read.
    pub fn finish(mut self) -> Option<u64> {
        self.halt();
        if let Some(now) = current_rss_bytes() {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        Some(self.peak.load(Ordering::Relaxed)).filter(|&p| p > 0)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_sees_a_short_lived_allocation() {
        let before = current_rss_bytes().expect("Linux has /proc/self/status");
        let sampler = PeakRss::start();
        let big = vec![1u8; 64 << 20];
        std::thread::sleep(Duration::from_millis(200));
        let touched: u64 = big.iter().step_by(4096).map(|&b| b as u64).sum();
        drop(big);
        let peak = sampler.finish().unwrap();
        assert!(touched > 0);
        assert!(peak >= before + (48 << 20), "peak {peak} vs before {before}");
    }
}
