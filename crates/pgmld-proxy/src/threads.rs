//! Session threads: each runs a single-threaded tokio runtime, and a session lives on one
//! of them from start to end. A session's two halves then wake each other without
//! crossing threads, which on a busy machine costs far less than a work-stealing pool's
//! thread hand-offs (measured: ~20% less CPU per pgbench transaction). Sessions are dealt
//! round-robin.
//!
//! Each thread can ask the kernel for a short scheduler slice (`session_slice_us`, off by
//! default): under Linux's EEVDF scheduler a task with a shorter slice gets an earlier
//! deadline, so a session thread woken by a client or upstream message runs ahead of the
//! Postgres backends and clients that share the CPUs instead of queueing behind them. Each
//! such wake-up preempts a backend, though, which costs more CPU per transaction than the
//! shorter queueing saves (see `docs/benchmarks.md`, 2026-12-07 (10)).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// Work for a session thread: builds the session future on that thread's runtime.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A fixed set of session threads.
pub struct SessionThreads {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl SessionThreads {
    /// Starts `n` threads (at least one), each asking for a `slice_us` scheduler slice
    /// (0: the kernel's default).
    pub fn start(n: usize, slice_us: u64) -> std::io::Result<SessionThreads> {
        let mut senders = Vec::new();
        for i in 0..n.max(1) {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::Builder::new().name(format!("pgmld-session-{i}")).spawn(move || {
                if slice_us > 0 {
                    if let Err(e) = request_slice(slice_us) {
                        tracing::debug!("session thread {i}: scheduler slice not set: {e}");
                    }
                }
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job());
                    }
                });
            })?;
            senders.push(tx);
        }
        Ok(SessionThreads { senders, next: AtomicUsize::new(0) })
    }

    /// Runs a job on the next thread.
    pub fn spawn(&self, job: Job) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        if self.senders[i].send(job).is_err() {
            tracing::error!("session thread {i} is gone; connection dropped");
        }
    }
}

/// `struct sched_attr` of `sched_setattr(2)` (its first version, 48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For SCHED_OTHER under EEVDF: the requested slice, in nanoseconds.
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks for a `slice_us` scheduler slice for the calling thread, keeping its policy
/// (SCHED_OTHER) and nice value. Needs no privilege; the kernel clamps the slice to
/// 0.1–100 ms. Kernels before 6.12 accept and ignore it.
#[cfg(target_os = "linux")]
pub fn request_slice(slice_us: u64) -> std::io::Result<()> {
    // SAFETY: getpriority reads the calling thread's nice value; no memory is passed.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: slice_us.saturating_mul(1000),
        deadline: 0,
        period: 0,
    };
    // SAFETY: `attr` is a valid sched_attr of the size it declares, alive for the call;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no such request to make.
#[cfg(not(target_os = "linux"))]
pub fn request_slice(_slice_us: u64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The slice the calling thread runs with, read back with `sched_getattr`.
    fn current_slice_ns() -> u64 {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as u32;
        // SAFETY: `attr` is writable and `size` bytes long; pid 0 is this thread.
        let rc = unsafe {
            libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size, 0)
        };
        assert_eq!(rc, 0, "sched_getattr: {}", std::io::Error::last_os_error());
        attr.runtime
    }

    /// Whether this kernel keeps a requested slice (EEVDF custom slices: Linux 6.12+);
    /// older ones accept the call and report their own value.
    fn custom_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 12)
    }

    fn nice() -> i32 {
        // SAFETY: reads the calling thread's nice value; no memory is passed.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let before = nice();
            request_slice(300).unwrap();
            if custom_slices() {
                assert_eq!(current_slice_ns(), 300_000);
            }
            assert_eq!(nice(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn session_threads_run_jobs_with_their_slice() {
        let threads = SessionThreads::start(2, 250).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let tx = tx.clone();
            threads.spawn(Box::new(move || {
                Box::pin(async move {
                    let name = std::thread::current().name().unwrap_or_default().to_string();
                    let _ = tx.send((name, current_slice_ns()));
                })
            }));
        }
        let mut seen: Vec<(String, u64)> = (0..2).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(seen[0].0, "pgmld-session-0");
        assert_eq!(seen[1].0, "pgmld-session-1");
        if custom_slices() {
            assert!(seen.iter().all(|(_, slice)| *slice == 250_000), "{seen:?}");
        }
    }
}
