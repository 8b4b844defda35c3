//! The device kind a job asks for and a worker offers.

use crate::error::{JobError, Result};

/// What a job may run on (`hyperparams.device`, default any) and what a worker's device
/// is (cpu or cuda; never any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Whatever device a worker has.
    Any,
    /// A CPU (Gloo for data-parallel jobs).
    Cpu,
    /// A CUDA GPU (NCCL for data-parallel jobs).
    Cuda,
}

impl DeviceKind {
    /// Parses `any`, `cpu` or `cuda` (case-insensitive, as PyTorch device strings).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "any" | "auto" => Ok(DeviceKind::Any),
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" | "gpu" => Ok(DeviceKind::Cuda),
            _ => Err(JobError::BadDevice(s.to_string())),
        }
    }

    /// The name stored in `pgml.jobs.device`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Any => "any",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// Whether a worker device of this kind may run a job that asks for `wanted`.
    pub fn can_run(self, wanted: DeviceKind) -> bool {
        self.runnable().iter().any(|k| k == wanted.name())
    }

    /// The job requests a worker whose device is of this kind may run: its own kind and
    /// `any`. (A worker's device is never `any`; treated as cpu.)
    pub fn runnable(self) -> Vec<String> {
        let own = match self {
            DeviceKind::Cuda => "cuda",
            DeviceKind::Cpu | DeviceKind::Any => "cpu",
        };
        vec!["any".to_string(), own.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_named() {
        for k in [DeviceKind::Any, DeviceKind::Cpu, DeviceKind::Cuda] {
            assert_eq!(DeviceKind::parse(k.name()).unwrap(), k);
        }
        assert_eq!(DeviceKind::parse(" CUDA ").unwrap(), DeviceKind::Cuda);
        let e = DeviceKind::parse("tpu").unwrap_err().to_string();
        assert!(e.contains("\"tpu\""), "{e}");
        assert_eq!(DeviceKind::Cuda.runnable(), ["any", "cuda"]);
        assert_eq!(DeviceKind::Cpu.runnable(), ["any", "cpu"]);
        assert!(
            DeviceKind::Cuda.can_run(DeviceKind::Any) && DeviceKind::Cuda.can_run(DeviceKind::Cuda)
        );
        assert!(
            !DeviceKind::Cpu.can_run(DeviceKind::Cuda)
                && !DeviceKind::Cuda.can_run(DeviceKind::Cpu)
        );
    }
}
