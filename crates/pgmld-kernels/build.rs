//! Compiles `src/shim.cpp` against the headers of the libtorch that torch-sys links (the
//! torch wheel `scripts/setup.sh` installs: `<torch>/include` beside `<torch>/lib`), with
//! the same C++ standard and ABI flags as torch-sys' own wrapper, and links it before
//! libtorch.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch directory (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib.parent().expect("libtorch's lib directory has a parent").to_path_buf();
    let include = root.join("include");
    assert!(
        include.join("ATen/ATen.h").is_file(),
        "{} lacks ATen/ATen.h: the torch install has no headers (bash scripts/setup.sh deps)",
        include.display()
    );
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-w")
        .opt_level(2)
        .compile("pgmld_kernels");
    // After the shim's archive, so the linker resolves its libtorch symbols.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
