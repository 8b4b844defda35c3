//! The training worker pool: dedicated OS threads, each bound to a device, taking jobs
//! from one queue. libtorch tensors are not `Sync` and training blocks for minutes, so it
//! never runs on the async runtime; the runtime only awaits the job's channels.

use std::sync::mpsc;
use std::sync::Mutex;

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

impl DeviceSpec {
    /// The kind of device this is, as the job queue matches it (`auto` is CUDA when
    /// libtorch sees a GPU).
    pub fn kind(self) -> pgmld_jobs::DeviceKind {
        match self.resolve() {
            Device::Cuda(_) => pgmld_jobs::DeviceKind::Cuda,
            _ => pgmld_jobs::DeviceKind::Cpu,
        }
    }

    /// How pgml.jobs names the device (`cpu`, `cuda:0`).
    pub fn label(self) -> String {
        crate::training_run::device_name(self.resolve())
    }
}

/// Training threads, one per device slot. The job queue claims at most one job per slot
/// and runs it on that slot's thread ([`WorkerPool::submit_on`]).
pub struct WorkerPool {
    /// One sender per thread.
    slots: Vec<Mutex<mpsc::Sender<Job>>>,
    /// The device of each slot.
    devices: Vec<DeviceSpec>,
}

impl WorkerPool {
    /// Starts `workers` threads (none: a front-end that trains nothing); thread `i` uses
    /// `devices[i % len]`.
    pub fn start(workers: usize, devices: &[DeviceSpec]) -> std::io::Result<WorkerPool> {
        let mut slots = Vec::with_capacity(workers);
        let mut specs = Vec::with_capacity(workers);
        for i in 0..workers {
            let spec = devices.get(i % devices.len().max(1)).copied().unwrap_or(DeviceSpec::Auto);
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new().name(format!("pgmld-train-{i}")).spawn(move || {
                let device = spec.resolve();
                tracing::info!(worker = i, ?device, "training worker ready");
                while let Ok(job) = rx.recv() {
                    // A panic (a libtorch abort surfaces as one) fails that job only: its
                    // result sender is dropped, and the thread takes the next job.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(device)))
                        .is_err()
                    {
                        tracing::error!(worker = i, "a training job panicked");
                    }
                }
            })?;
            slots.push(Mutex::new(tx));
            specs.push(spec);
        }
        Ok(WorkerPool { slots, devices: specs })
    }

    /// Runs `f` on slot `slot`'s thread and returns its result's receiver. A panic in `f`
    /// (or a slot that does not exist) drops the sender, so the receiver then reports an
    /// error instead of hanging.
    pub fn submit_on<R: Send + 'static>(
        &self,
        slot: usize,
        f: impl FnOnce(Device) -> R + Send + 'static,
    ) -> oneshot::Receiver<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |device| {
            let _ = tx.send(f(device));
        });
        if let Some(s) = self.slots.get(slot) {
            if let Ok(s) = s.lock() {
                let _ = s.send(job);
            }
        }
        rx
    }

    /// The device of each slot.
    pub fn devices(&self) -> &[DeviceSpec] {
        &self.devices
    }

    /// Number of worker threads.
    pub fn size(&self) -> usize {
        self.slots.len()
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
        let pool = WorkerPool::start(2, &[DeviceSpec::Cpu]).unwrap();
        assert_eq!(pool.devices(), [DeviceSpec::Cpu, DeviceSpec::Cpu]);
        let a = pool.submit_on(1, |d| (std::thread::current().name().map(str::to_string), d));
        let b = pool.submit_on(0, |_| 2);
        let (name, device) = a.await.unwrap();
        assert_eq!(name.as_deref(), Some("pgmld-train-1"));
        assert_eq!(device, Device::Cpu);
        assert_eq!(b.await.unwrap(), 2);
        let p = pool.submit_on(0, |_| -> i32 { panic!("boom") });
        assert!(p.await.is_err(), "a panicking job reports an error");
        assert_eq!(pool.submit_on(0, |_| 3).await.unwrap(), 3, "the worker survives a panic");
        assert!(pool.submit_on(5, |_| 4).await.is_err(), "no such slot");
        assert_eq!(WorkerPool::start(0, &[DeviceSpec::Cpu]).unwrap().size(), 0);
    }
}
