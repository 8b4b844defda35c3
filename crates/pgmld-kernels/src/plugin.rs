//! Loading pgmld's CUDA plugins (`libpgmld_nccl.so`, `libpgmld_cuda_graph.so`) at run
//! time: C++ that needs `libtorch_cuda.so`, which must not become a load-time dependency of
//! a binary that also runs where there is no CUDA. `scripts/build-cuda-plugins.sh` builds
//! them on the machine that has the GPUs.

use std::ffi::{c_void, CStr, CString};
use std::path::Path;

/// A plugin opened with `dlopen`; never closed: its code (and libtorch_cuda's, which it
/// loads) runs for as long as the process lives.
pub(crate) struct Library {
    path: String,
    handle: *mut c_void,
}

impl Library {
    /// Opens `path` (a path, or a bare name the dynamic loader searches for).
    pub(crate) fn open(path: &str) -> Result<Library, String> {
        let c = CString::new(path).map_err(|_| format!("{path:?} contains a NUL byte"))?;
        // SAFETY: a valid C string.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // dlerror names a missing dependency, not the file that needed it.
            let e = dl_error();
            return Err(if e.starts_with(path) { e } else { format!("{path}: {e}") });
        }
        Ok(Library { path: path.to_string(), handle })
    }

    /// The address of `name`, or an error saying the library is not a `what` plugin.
    pub(crate) fn symbol(&self, name: &CStr, what: &str) -> Result<*mut c_void, String> {
        // SAFETY: a live handle and a C string.
        let s = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        if s.is_null() {
            Err(format!("{} has no {}: not a {what} plugin", self.path, name.to_string_lossy()))
        } else {
            Ok(s)
        }
    }

    /// Checks the plugin's interface version (the `int f(void)` at `abi_symbol`) against
    /// `want`; `script` rebuilds it.
    pub(crate) fn check_abi(
        &self,
        abi_symbol: &CStr,
        what: &str,
        want: i32,
        script: &str,
    ) -> Result<(), String> {
        type IntFn = unsafe extern "C" fn() -> i32;
        // SAFETY: the plugin defines this symbol as `int f(void)` (its C++ source).
        let abi =
            unsafe { std::mem::transmute::<*mut c_void, IntFn>(self.symbol(abi_symbol, what)?) };
        // SAFETY: an argument-less function of the plugin (above).
        let got = unsafe { abi() };
        if got != want {
            return Err(format!(
                "{} has interface version {got}, this pgmld needs {want}: rebuild it with {script}",
                self.path
            ));
        }
        Ok(())
    }
}

/// Where to look for the plugin `file`, in order: the configured path alone; else beside
/// the executable, then the bare name (LD_LIBRARY_PATH, the binary's RUNPATH, the system's
/// directories).
pub(crate) fn candidates(configured: Option<&Path>, file: &str) -> Vec<String> {
    if let Some(p) = configured {
        return vec![p.display().to_string()];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join(file);
        if beside.is_file() {
            out.push(beside.display().to_string());
        }
    }
    out.push(file.to_string());
    out
}

/// The first of `paths` that `open` accepts, else every path's reason, joined.
pub(crate) fn load_first<T>(
    paths: &[String],
    open: impl Fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    let mut why = Vec::new();
    for path in paths {
        match open(path) {
            Ok(p) => return Ok(p),
            Err(e) => why.push(e),
        }
    }
    Err(why.join("; "))
}

/// The dynamic loader's last error.
fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dlopen error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_path_is_the_only_place_looked() {
        let c = candidates(Some(Path::new("/opt/x/libp.so")), "libp.so");
        assert_eq!(c, vec!["/opt/x/libp.so".to_string()]);
    }

    #[test]
    fn the_bare_name_is_the_last_place_looked() {
        let c = candidates(None, "libp.so");
        assert_eq!(c.last().map(String::as_str), Some("libp.so"), "{c:?}");
    }

    #[test]
    fn every_failed_path_says_why() {
        let e = load_first(&["/nonexistent/a.so".into(), "/nonexistent/b.so".into()], |p| {
            Library::open(p).map(|_| ())
        })
        .unwrap_err();
        assert!(e.contains("/nonexistent/a.so") && e.contains("/nonexistent/b.so"), "{e}");
    }

    #[test]
    fn a_library_without_the_symbol_is_named() {
        let libc = Library::open("libc.so.6").unwrap();
        let e = libc.symbol(c"pgmld_nothing", "pgmld test").unwrap_err();
        assert_eq!(e, "libc.so.6 has no pgmld_nothing: not a pgmld test plugin");
    }
}
