//! `torch.profiler` (Kineto) for this process: what bench/tune/gpu records to say where a
//! training step's time goes on a GPU (kernels, launch gaps, casts). tch does not bind it.

use std::ffi::{c_char, CString};
use std::path::Path;

use crate::{call, KernelError};

extern "C" {
    fn pgmld_profiler_start(cuda: i32, err: *mut c_char, err_len: usize) -> i32;
    /// A null `path` discards the trace.
    fn pgmld_profiler_stop(path: *const c_char, err: *mut c_char, err_len: usize) -> i32;
}

/// A running profile: CPU ops (of the threads that record them), and with CUDA the kernels
/// and runtime calls of every thread. Start one at a time. Dropped unsaved, it stops and
/// writes nothing.
#[must_use = "a profile records until saved or dropped"]
pub struct Profile {
    running: bool,
}

impl Profile {
    /// Starts profiling; `cuda` adds CUDA kernels and runtime calls (CUPTI).
    pub fn start(cuda: bool) -> Result<Profile, KernelError> {
        // SAFETY: plain integer; `err` is a writable buffer of the given length.
        call(|err, len| unsafe { pgmld_profiler_start(cuda as i32, err, len) })?;
        Ok(Profile { running: true })
    }

    /// Stops and writes the Chrome trace (JSON, as `torch.profiler`'s
    /// `export_chrome_trace`) to `path`.
    pub fn save(mut self, path: &Path) -> Result<(), KernelError> {
        self.running = false;
        stop(path)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if self.running {
            // SAFETY: a null path discards the trace; `err` is a writable buffer.
            let _ = call(|err, len| unsafe { pgmld_profiler_stop(std::ptr::null(), err, len) });
        }
    }
}

fn stop(path: &Path) -> Result<(), KernelError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| KernelError(format!("{} contains a NUL byte", path.display())))?;
    // SAFETY: a NUL-terminated path; `err` is a writable buffer of the given length.
    call(|err, len| unsafe { pgmld_profiler_stop(c.as_ptr(), err, len) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_cpu_profile_names_the_ops_that_ran() {
        let path = std::env::temp_dir().join(format!("pgmld-profile-{}.json", std::process::id()));
        let profile = Profile::start(false).unwrap();
        let a = Tensor::ones([64, 64], (Kind::Float, Device::Cpu));
        let _ = a.matmul(&a).relu().sum(Kind::Float);
        profile.save(&path).unwrap();
        let trace: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let names: Vec<&str> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(names.contains(&"aten::matmul"), "{names:?}");
        assert!(names.contains(&"aten::relu"), "{names:?}");
        let _ = std::fs::remove_file(&path);
        // Dropped unsaved: stopped, so a new one can start.
        drop(Profile::start(false).unwrap());
        drop(Profile::start(false).unwrap());
    }
}
