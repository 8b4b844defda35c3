//! `scripts/build-cuda-plugins.sh` compiles the CUDA graph plugin (`src/cuda_graph.cpp`)
//! against the headers of the torch install `scripts/setup.sh` made (the lean CPU install
//! has the CUDA runtime's headers, and setup.sh adds the crt ones torch's wheels lack): a
//! compile check of code only a GPU machine can run (bench/tune/gpu/run.sh runs it there).
//! Here the plugin cannot load (no cuBLAS, cuDNN, ... beside the lean libtorch_cuda), and
//! pgmld says which file and why.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn the_cuda_graph_plugin_builds_against_the_installed_torch() {
    let torch = PathBuf::from(
        std::env::var("LIBTORCH")
            .expect("LIBTORCH: run under `eval \"$(bash scripts/setup.sh env)\"`"),
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("pgmld-cuda-plugins-{}", std::process::id()));
    let run = Command::new("bash")
        .arg(repo.join("scripts/build-cuda-plugins.sh"))
        .arg(&out)
        .env("TORCH_DIR", &torch)
        .output()
        .expect("bash");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "build-cuda-plugins.sh failed:\n{stdout}\n{stderr}");
    let plugin = out.join(pgmld_kernels::cuda_graph::PLUGIN_FILE);
    assert!(plugin.is_file(), "{stdout}\n{stderr}");
    // The lean install has no nccl.h: that plugin is skipped, saying so.
    if !out.join(pgmld_kernels::nccl::PLUGIN_FILE).exists() {
        assert!(stderr.contains("libpgmld_nccl.so skipped: no nccl.h"), "{stderr}");
    }
    pgmld_kernels::cuda_graph::configure(Some(&plugin));
    match pgmld_kernels::cuda_graph::available() {
        // A machine with CUDA's libraries beside this torch.
        Ok(()) => println!("the plugin loads here"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains(&plugin.display().to_string()), "{e}");
            assert!(e.contains("scripts/build-cuda-plugins.sh"), "{e}");
            println!("as expected without CUDA's libraries: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
