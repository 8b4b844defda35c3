//! CUDA graphs (`torch.cuda.graph`: `at::cuda::CUDAGraph`) for the training step, from the
//! plugin `libpgmld_cuda_graph.so` (`src/cuda_graph.cpp`).
//!
//! A small model's training step is hundreds of short kernels: on a fast GPU the device
//! waits for the CPU that launches them one by one. Captured once, the step replays as one
//! graph launch over the same memory. The plugin is separate because it needs
//! `libtorch_cuda.so` (see [`crate::plugin`]); `scripts/build-cuda-plugins.sh` builds it
//! (it needs only the CUDA runtime headers the torch install has). Nothing is loaded until
//! a run asks for graphs.

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::plugin::{self, Library};
use crate::{call, KernelError};

/// The plugin's file name.
pub const PLUGIN_FILE: &str = "libpgmld_cuda_graph.so";

/// The interface version this build expects (`pgmld_cuda_graph_abi_version`).
const ABI_VERSION: i32 = 1;

type EnterFn = unsafe extern "C" fn(i32, *mut *mut c_void, *mut c_char, usize) -> i32;
type HandleFn = unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> i32;
type BeginFn = unsafe extern "C" fn(*mut *mut c_void, *mut c_char, usize) -> i32;
type FreeFn = unsafe extern "C" fn(*mut c_void);

/// The loaded plugin's entry points (cuda_graph.cpp).
struct Plugin {
    stream_enter: EnterFn,
    stream_leave: HandleFn,
    begin: BeginFn,
    end: HandleFn,
    replay: HandleFn,
    free: FreeFn,
}

static CONFIGURED: OnceLock<Option<PathBuf>> = OnceLock::new();
static PLUGIN: OnceLock<Result<Plugin, String>> = OnceLock::new();

/// Sets where the plugin is (`cuda_graph_plugin`; `None`: beside the executable, else the
/// library search path). Later calls keep the first path.
pub fn configure(path: Option<&Path>) {
    let _ = CONFIGURED.set(path.map(Path::to_path_buf));
}

/// Loads the plugin (once); why it cannot be loaded otherwise.
pub fn available() -> Result<(), KernelError> {
    plugin_fns().map(|_| ())
}

fn plugin_fns() -> Result<&'static Plugin, KernelError> {
    PLUGIN
        .get_or_init(|| {
            let paths =
                plugin::candidates(CONFIGURED.get().and_then(Option::as_deref), PLUGIN_FILE);
            plugin::load_first(&paths, open).map_err(|why| {
                format!(
                    "the plugin {PLUGIN_FILE} could not be loaded \
                     ({why}); build it with `bash scripts/build-cuda-plugins.sh DIR` against \
                     the CUDA build of torch installed here and put it beside the pgmld binary \
                     or name it in cuda_graph_plugin"
                )
            })
        })
        .as_ref()
        .map_err(|e| KernelError(e.clone()))
}

fn open(path: &str) -> Result<Plugin, String> {
    const WHAT: &str = "pgmld CUDA graph";
    let lib = Library::open(path)?;
    let script = "scripts/build-cuda-plugins.sh";
    lib.check_abi(c"pgmld_cuda_graph_abi_version", WHAT, ABI_VERSION, script)?;
    // SAFETY: the plugin defines these symbols with exactly these C signatures
    // (cuda_graph.cpp).
    unsafe {
        Ok(Plugin {
            stream_enter: std::mem::transmute::<*mut c_void, EnterFn>(
                lib.symbol(c"pgmld_cuda_stream_enter", WHAT)?,
            ),
            stream_leave: std::mem::transmute::<*mut c_void, HandleFn>(
                lib.symbol(c"pgmld_cuda_stream_leave", WHAT)?,
            ),
            begin: std::mem::transmute::<*mut c_void, BeginFn>(
                lib.symbol(c"pgmld_cuda_graph_begin", WHAT)?,
            ),
            end: std::mem::transmute::<*mut c_void, HandleFn>(
                lib.symbol(c"pgmld_cuda_graph_end", WHAT)?,
            ),
            replay: std::mem::transmute::<*mut c_void, HandleFn>(
                lib.symbol(c"pgmld_cuda_graph_replay", WHAT)?,
            ),
            free: std::mem::transmute::<*mut c_void, FreeFn>(
                lib.symbol(c"pgmld_cuda_graph_free", WHAT)?,
            ),
        })
    }
}

/// While it lives, this thread's CUDA work on `device` goes to a stream of its own (graphs
/// are captured on a stream other than the default one, and the steps before a capture must
/// run on that stream too: cuBLAS keeps a workspace per stream). Dropping it waits for that
/// stream and restores the one before.
#[must_use = "the stream is left when the guard is dropped"]
pub struct SideStream {
    token: *mut c_void,
}

impl SideStream {
    /// Moves this thread's work on CUDA device `device` to a new stream, after the work
    /// queued on the current one is done.
    pub fn enter(device: usize) -> Result<SideStream, KernelError> {
        let p = plugin_fns()?;
        let mut token = std::ptr::null_mut();
        // SAFETY: plugin entry point; `token` receives a handle stream_leave consumes.
        call(|err, len| unsafe { (p.stream_enter)(device as i32, &mut token, err, len) })?;
        Ok(SideStream { token })
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        if let Ok(p) = plugin_fns() {
            // SAFETY: the token stream_enter made, consumed exactly once here.
            let _ = call(|err, len| unsafe { (p.stream_leave)(self.token, err, len) });
        }
    }
}

/// A captured sequence of CUDA kernels (`at::cuda::CUDAGraph`) with its private memory
/// pool, replayed over the same memory: the tensors the capture read are its inputs (copy
/// new values into them before a replay), those it made are its outputs (read them after).
pub struct CudaGraph {
    ptr: *mut c_void,
    plugin: &'static Plugin,
}

impl CudaGraph {
    /// Captures the kernels `body` queues on this thread's current CUDA stream (a
    /// [`SideStream`]'s) without running them, and returns the graph with what `body`
    /// returned (the graph's output tensors; their values exist only after a replay). The
    /// default CUDA generator is registered: random ops draw from the seed set before each
    /// replay. `body` must not copy from host memory, read a device value on the host, or
    /// synchronise. A failed capture ends the stream's capture state and is an error; so is
    /// a panic in `body` (tch panics when libtorch refuses an op, as it does one a capture
    /// cannot hold): nothing of the capture ran, and the caller may run `body` eagerly.
    pub fn capture<R>(body: impl FnOnce() -> R) -> Result<(CudaGraph, R), KernelError> {
        let p = plugin_fns()?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: plugin entry point; `ptr` receives a graph freed by Drop.
        call(|err, len| unsafe { (p.begin)(&mut ptr, err, len) })?;
        let graph = CudaGraph { ptr, plugin: p };
        let out = catch_unwind(AssertUnwindSafe(body));
        // SAFETY: the graph whose capture began above.
        let ended = call(|err, len| unsafe { (p.end)(graph.ptr, err, len) });
        match out {
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                let what = what.lines().take(3).collect::<Vec<_>>().join(" ");
                Err(KernelError(format!("the captured code failed: {what}")))
            }
            Ok(out) => ended.map(|()| (graph, out)),
        }
    }

    /// Runs the captured kernels again on the current stream.
    pub fn replay(&self) -> Result<(), KernelError> {
        // SAFETY: a graph whose capture ended (only `capture` returns one).
        call(|err, len| unsafe { (self.plugin.replay)(self.ptr, err, len) })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: the graph `capture` made, freed once.
        unsafe { (self.plugin.free)(self.ptr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_plugin_says_how_to_build_it() {
        let e = plugin::load_first(&["/nonexistent/libpgmld_cuda_graph.so".into()], open)
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/libpgmld_cuda_graph.so"), "{e}");
        let e = plugin::load_first(&["libc.so.6".into()], open).err().unwrap();
        assert!(e.contains("has no pgmld_cuda_graph_abi_version: not a pgmld CUDA graph"), "{e}");
    }

    /// Capture, replay and a changed input on a real GPU: run by bench/tune/gpu/run.sh with
    /// the plugin built there (`PGMLD_CUDA_GRAPH_PLUGIN` naming it).
    #[test]
    #[ignore = "needs a CUDA device and libpgmld_cuda_graph.so (PGMLD_CUDA_GRAPH_PLUGIN)"]
    fn a_captured_step_replays_with_new_inputs() {
        use tch::{Device, Kind, Tensor};
        configure(std::env::var_os("PGMLD_CUDA_GRAPH_PLUGIN").as_deref().map(Path::new));
        let device = Device::Cuda(0);
        let _stream = SideStream::enter(0).unwrap();
        let x = Tensor::ones([4, 4], (Kind::Float, device));
        let w = Tensor::full([4, 4], 2.0, (Kind::Float, device));
        // Warm-up on the side stream, as torch.cuda.graph's documentation does.
        let _ = x.matmul(&w);
        let (graph, y) = CudaGraph::capture(|| x.matmul(&w).relu()).unwrap();
        graph.replay().unwrap();
        assert_eq!(y.sum(Kind::Float).double_value(&[]), 16.0 * 8.0);
        let _ = x.shallow_clone().fill_(-1.0);
        graph.replay().unwrap();
        assert_eq!(y.sum(Kind::Float).double_value(&[]), 0.0, "relu of the new input");
        let _ = x.shallow_clone().fill_(0.5);
        graph.replay().unwrap();
        assert_eq!(y.sum(Kind::Float).double_value(&[]), 16.0 * 4.0);
        println!("CUDA graph: captured and replayed 3 times");
    }
}
