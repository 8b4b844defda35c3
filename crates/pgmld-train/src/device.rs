//! Picking the device: CUDA when libtorch has it, else CPU.
//!
//! The linker drops `libtorch_cuda.so` from binaries that never name one of its symbols
//! (tch-rs issues #980, #907), and CUDA then looks unavailable even on a GPU machine.
//! Loading it by hand before the first tch call brings it back; on a CPU-only libtorch the
//! load fails quietly and nothing changes. Checked on an H100 with the machine's torch
//! 2.11.0+cu130 on LD_LIBRARY_PATH: a binary built here against the lean CPU install then
//! reports CUDA available (`examples/device_check.rs`).

use std::sync::Once;
use tch::Device;

static CUDA_LOADED: Once = Once::new();

/// Loads `libtorch_cuda.so` (from the library path or the binary's rpath) if present.
/// Safe to call many times; only the first call does anything.
pub fn load_cuda() {
    CUDA_LOADED.call_once(|| {
        // SAFETY: dlopen with a valid NUL-terminated name. The handle is never closed on
        // purpose (the library must stay loaded); a null handle means no CUDA build here.
        let _handle = unsafe {
            libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL)
        };
    });
}

/// CUDA device 0 when libtorch can use it, else CPU.
pub fn best_device() -> Device {
    load_cuda();
    Device::cuda_if_available()
}

/// Runs `f` under bfloat16 autocast on `device`'s kind (CPU or CUDA) when `enabled`: HF's
/// `bf16=True`, which is `torch.autocast(device, dtype=torch.bfloat16)` on either. Matrix
/// products run in bfloat16, layer norms, softmax and losses in float32, and the weights,
/// their gradients and the optimizer state stay float32. The weights' bfloat16 casts are
/// made once per outermost region and freed when it ends. Wrap forward passes only: on the
/// CPU the backward pass runs on the calling thread, where autocast would recast it too.
pub fn autocast<T>(enabled: bool, device: Device, f: impl FnOnce() -> T) -> T {
    let _guard = enabled.then(|| pgmld_kernels::autocast_bf16(device));
    f()
}
