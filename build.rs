//! Bakes library search paths into pgmld's binaries, so they start without LD_LIBRARY_PATH:
//!
//! * `$ORIGIN/../lib`, for `pgmld` only and first: an installed layout (`bin/pgmld` next to
//!   `lib/libtorch_cpu.so`, …; `scripts/setup.sh install`) finds its own copies wherever
//!   the directory is moved;
//! * the libtorch lib directory torch-sys linked against (`DEP_TCH_LIBTORCH_LIB`), for
//!   every binary of this package: `pgmld`, the integration tests, examples and benches.
//!
//! libtorch's own libraries find their siblings (libc10, libgomp, cudart, cupti) through
//! their own RPATH (`$ORIGIN`, `$ORIGIN/../../nvidia/cu13/lib`), so only the directory of
//! the libraries the binary names is needed. `--enable-new-dtags` makes the paths RUNPATH,
//! which LD_LIBRARY_PATH overrides: another torch put there (a GPU machine's) still wins.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB): \
             pgmld will need LD_LIBRARY_PATH to start"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
    // Printed first, so it comes first in the binary's RUNPATH.
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/../lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
