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

/// Makes CUDA autocast compute in bfloat16 instead of its float16 default, so
/// `tch::autocast(true, ..)` gives HF's `bf16=True`. tch exposes no setter, so this calls
/// `at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)` from libtorch by its
/// (stable, Itanium-mangled) symbol. Returns false, changing nothing, when the symbol is
/// absent (the caller then trains in float32).
pub fn cuda_autocast_bf16() -> bool {
    const SYMBOL: &std::ffi::CStr =
        c"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE";
    // c10::DeviceType::CUDA and c10::ScalarType::BFloat16; both enums are int8-sized and
    // passed in a register like any small integer.
    const CUDA: i8 = 1;
    const BFLOAT16: i8 = 15;
    // SAFETY: dlsym with a valid NUL-terminated name; the function has the C-compatible
    // signature void(int8_t, int8_t) under the Itanium C++ ABI used by the torch wheels.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, SYMBOL.as_ptr());
        if f.is_null() {
            return false;
        }
        let set: extern "C" fn(i8, i8) = std::mem::transmute(f);
        set(CUDA, BFLOAT16);
    }
    true
}
