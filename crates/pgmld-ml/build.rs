//! Embeds the libtorch library directory as an rpath so binaries and tests find libtorch
//! without LD_LIBRARY_PATH (which still wins when set).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // RUNPATH, which LD_LIBRARY_PATH overrides.
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
