//! The training worker pool: dedicated OS threads, each bound to a device, taking jobs
//! from one queue. libtorch tensors are not `Sync` and training blocks for minutes, so it
//! never runs on the async runtime; the runtime only awaits the job's channels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tch::Device;
use tokio::sync::oneshot;

/// Where a worker trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when libtorch sees one, else CPU (decided on the worker thread).
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<DeviceSpec, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| {
                    format!("invalid train device {s:?}: use auto, cpu, cuda or cuda:N")
                }),
        }
    }

    /// Parses a comma-separated list (`train_devices`).
    pub fn parse_list(s: &str) -> Result<Vec<DeviceSpec>, String> {
        let v: Vec<DeviceSpec> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(DeviceSpec::parse)
            .collect::<Result<_, _>>()?;
        if v.is_empty() {
            return Err("train_devices is empty: use auto, cpu, cuda or cuda:N".into());
        }
        Ok(v)
    }

    /// The libtorch device this names (`auto` picks CUDA when libtorch sees a GPU).
    pub fn resolve(self) -> Device {
        match self {
            DeviceSpec::Auto => pgmld_train::best_device(),
            DeviceSpec::Cpu => Device::Cpu,
            DeviceSpec::Cuda(n) => {
                pgmld_train::load_cuda();
                Device::Cuda(n)
            }
        }
    }
}

type Job = Box<dyn FnOnce(Device) + Send>;

/// A fixed set of training threads sharing one job queue.
pub struct WorkerPool {
    tx: Mutex<mpsc::Sender<Job>>,
    waiting: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    size: usize,
}

impl WorkerPool {
    /// Starts `workers` threads (at least one); worker `i` uses `devices[i % len]`.
    pub fn start(workers: usize, devices: &[DeviceSpec]) -> std::io::Result<WorkerPool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let waiting = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let size = workers.max(1);
        for i in 0..size {
            let spec = devices.get(i % devices.len().max(1)).copied().unwrap_or(DeviceSpec::Auto);
            let (rx, waiting, busy) = (rx.clone(), waiting.clone(), busy.clone());
            std::thread::Builder::new().name(format!("pgmld-train-{i}")).spawn(move || {
                let device = spec.resolve();
                tracing::info!(worker = i, ?device, "training worker ready");
                loop {
                    // Hold the lock only while taking a job, not while running it.
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    busy.fetch_add(1, Ordering::SeqCst);
                    // A panic (a libtorch abort surfaces as one) fails that job only: its
                    // result sender is dropped, and the worker takes the next job.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(device)))
                        .is_err()
                    {
                        tracing::error!(worker = i, "a training job panicked");
                    }
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            })?;
        }
        Ok(WorkerPool { tx: Mutex::new(tx), waiting, busy, size })
    }

    /// Queues `f` and returns its result's receiver. A panic in `f` drops the sender, so
    /// the receiver then reports an error instead of hanging.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(Device) -> R + Send + 'static,
    ) -> oneshot::Receiver<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |device| {
            let _ = tx.send(f(device));
        });
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.lock().map(|t| t.send(job).is_ok()).unwrap_or(false);
        if !sent {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        rx
    }

    /// Jobs that would wait if one were submitted now (queued plus busy beyond capacity).
    pub fn jobs_ahead(&self) -> usize {
        let busy = self.busy.load(Ordering::SeqCst);
        let waiting = self.waiting.load(Ordering::SeqCst);
        (busy + waiting + 1).saturating_sub(self.size)
    }

    /// Number of worker threads.
    pub fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(DeviceSpec::parse_list("auto").unwrap(), vec![DeviceSpec::Auto]);
        assert_eq!(
            DeviceSpec::parse_list("cpu, cuda:1").unwrap(),
            vec![DeviceSpec::Cpu, DeviceSpec::Cuda(1)]
        );
        assert!(DeviceSpec::parse_list("tpu").unwrap_err().contains("tpu"));
        assert!(DeviceSpec::parse_list("").is_err());
    }

    #[tokio::test]
    async fn jobs_run_on_worker_threads_in_turn() {
        let pool = WorkerPool::start(1, &[DeviceSpec::Cpu]).unwrap();
        let a = pool.submit(|d| (std::thread::current().name().map(str::to_string), d));
        let b = pool.submit(|_| 2);
        let (name, device) = a.await.unwrap();
        assert_eq!(name.as_deref(), Some("pgmld-train-0"));
        assert_eq!(device, Device::Cpu);
        assert_eq!(b.await.unwrap(), 2);
        let p = pool.submit(|_| -> i32 { panic!("boom") });
        assert!(p.await.is_err(), "a panicking job reports an error");
        assert_eq!(pool.submit(|_| 3).await.unwrap(), 3, "the worker survives a panic");
    }
}
