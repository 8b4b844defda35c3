//! c10d's NCCL process group (backend "nccl" of `torch.distributed`) for data-parallel jobs
//! on CUDA devices, loaded at run time from the plugin `libpgmld_nccl.so` (`src/nccl.cpp`).
//!
//! The plugin is separate because it needs the CUDA toolkit's and NCCL's headers and
//! `libtorch_cuda.so`, which CPU builds do not have and must not depend on; the GPU machine's
//! torch has them, and `scripts/build-cuda-plugins.sh` builds the plugin there. Nothing here
//! is loaded until a CUDA job forms a group ([`crate::dist::ProcessGroup::nccl`]).

use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::plugin::{self, Library};
use crate::KernelError;

/// The plugin's file name.
pub const PLUGIN_FILE: &str = "libpgmld_nccl.so";

/// The interface version this build expects of the plugin (`pgmld_nccl_abi_version`).
const ABI_VERSION: i32 = 1;

/// What pgmld sets, before any thread starts, unless the environment already says: NCCL
/// collectives then block in `wait()` and fail with an error after the group's timeout
/// (a dead or hung peer fails the training step, and the job resumes from its checkpoint),
/// instead of c10d's defaults, under which the watchdog ends the whole process.
pub const ENV_DEFAULTS: [(&str, &str); 3] = [
    ("TORCH_NCCL_BLOCKING_WAIT", "1"),
    // CleanUpOnly: abort the communicators, keep the process.
    ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2"),
    // The heartbeat monitor would abort the process when the watchdog stalls.
    ("TORCH_NCCL_ENABLE_MONITORING", "0"),
];

/// `pgmld_nccl_new(store, rank, world, device, timeout_ms, out, err, err_len)`.
pub(crate) type NewGroupFn = unsafe extern "C" fn(
    *const c_void,
    i32,
    i32,
    i32,
    i64,
    *mut *mut c_void,
    *mut c_char,
    usize,
) -> i32;

/// The loaded plugin.
pub(crate) struct Plugin {
    /// Makes a group (a released `c10d::Backend*`).
    pub(crate) new_group: NewGroupFn,
    /// The NCCL version libtorch was built with (`NCCL_VERSION_CODE`, e.g. 22809).
    pub(crate) nccl_version: i32,
}

static CONFIGURED: OnceLock<Option<PathBuf>> = OnceLock::new();
static PLUGIN: OnceLock<Result<Plugin, String>> = OnceLock::new();

/// Prepares NCCL groups: sets where the plugin is (`nccl_plugin`; `None`: beside the
/// executable, else the library search path; later calls keep the first path) and
/// [`ENV_DEFAULTS`] where the environment does not set them. Call at start-up, before any
/// other thread exists: it sets environment variables.
pub fn configure(path: Option<&Path>) {
    let _ = CONFIGURED.set(path.map(Path::to_path_buf));
    for (name, value) in ENV_DEFAULTS {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}

/// The NCCL version of the loaded plugin's libtorch as "2.28.9", or why it cannot load.
pub fn nccl_version() -> Result<String, KernelError> {
    let v = plugin()?.nccl_version;
    Ok(format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100))
}

/// The plugin, loaded on first use.
pub(crate) fn plugin() -> Result<&'static Plugin, KernelError> {
    PLUGIN.get_or_init(|| load(&candidates())).as_ref().map_err(|e| KernelError(e.clone()))
}

/// Where to look: the configured path alone, else beside the executable, then the bare
/// name (the library search path).
fn candidates() -> Vec<String> {
    plugin::candidates(CONFIGURED.get().and_then(Option::as_deref), PLUGIN_FILE)
}

fn load(paths: &[String]) -> Result<Plugin, String> {
    plugin::load_first(paths, open).map_err(|why| {
        format!(
            "data-parallel training on CUDA uses c10d's NCCL process group from the plugin \
             {PLUGIN_FILE}, which could not be loaded ({why}); build it on this machine with \
             `bash scripts/build-cuda-plugins.sh DIR` (against the CUDA build of torch \
             installed here) and put it beside the pgmld binary or name it in nccl_plugin"
        )
    })
}

fn open(path: &str) -> Result<Plugin, String> {
    const WHAT: &str = "pgmld NCCL";
    let lib = Library::open(path)?;
    lib.check_abi(c"pgmld_nccl_abi_version", WHAT, ABI_VERSION, "scripts/build-cuda-plugins.sh")?;
    type IntFn = unsafe extern "C" fn() -> i32;
    // SAFETY: the plugin defines these symbols with exactly these C signatures (nccl.cpp).
    let (version, new_group) = unsafe {
        (
            std::mem::transmute::<*mut c_void, IntFn>(lib.symbol(c"pgmld_nccl_version", WHAT)?),
            std::mem::transmute::<*mut c_void, NewGroupFn>(lib.symbol(c"pgmld_nccl_new", WHAT)?),
        )
    };
    // SAFETY: an argument-less function of the plugin (above).
    let nccl_version = unsafe { version() };
    Ok(Plugin { new_group, nccl_version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_plugin_is_named_with_how_to_build_it() {
        let e = load(&["/nonexistent/libpgmld_nccl.so".into()]).err().unwrap();
        assert!(e.contains("/nonexistent/libpgmld_nccl.so"), "{e}");
        assert!(e.contains("scripts/build-cuda-plugins.sh"), "{e}");
        assert!(e.contains("nccl_plugin"), "{e}");
    }

    #[test]
    fn a_library_that_is_not_the_plugin_is_refused() {
        // libc is loaded in every process and has none of the plugin's symbols.
        let e = load(&["libc.so.6".into()]).err().unwrap();
        assert!(e.contains("has no pgmld_nccl_abi_version: not a pgmld NCCL plugin"), "{e}");
    }
}
