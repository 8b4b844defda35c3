//! Compiles `src/shim.cpp` and `src/dist.cpp` against the headers of the libtorch that
//! torch-sys links (the torch wheel `scripts/setup.sh` installs: `<torch>/include` beside
//! `<torch>/lib`), with the same C++ standard and ABI flags as torch-sys' own wrapper, and
//! links them before libtorch. `dist.cpp` also needs gloo's headers, which the wheel does
//! not ship: Debian's libgloo-dev (`GLOO_INCLUDE` names another directory holding
//! `gloo/`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=src/dist.cpp");
    println!("cargo:rerun-if-changed=src/ffi.h");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
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
    let gloo =
        PathBuf::from(std::env::var("GLOO_INCLUDE").unwrap_or_else(|_| "/usr/include".into()));
    assert!(
        gloo.join("gloo/algorithm.h").is_file(),
        "{} lacks gloo/algorithm.h: c10d's Gloo process group needs gloo's headers \
         (apt-get install libgloo-dev, or bash scripts/setup.sh deps; GLOO_INCLUDE names another directory)",
        gloo.display()
    );
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    // /usr/include is searched already; naming it would reorder the system headers.
    if gloo != std::path::Path::new("/usr/include") {
        build.include(&gloo);
    }
    build
        .cpp(true)
        .file("src/shim.cpp")
        .file("src/dist.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag("-DUSE_C10D_GLOO")
        .flag_if_supported("-w")
        .opt_level(2)
        .compile("pgmld_kernels");
    // After the shim's archive, so the linker resolves its libtorch symbols.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
