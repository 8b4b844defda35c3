//! Helpers shared by the architecture and checkpoint tests: temp dirs, the Python
//! reference scripts (numpy, safetensors and tokenizers from `.deps/mlref`, installed by
//! `bash scripts/setup.sh deps`) and tensor comparisons.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tch::{Kind, Tensor};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `.deps/mlref`, where the Python reference's packages live.
pub fn mlref() -> PathBuf {
    let dir = repo().join(".deps/mlref");
    let ready = ["numpy", "safetensors", "tokenizers"].iter().all(|m| dir.join(m).is_dir());
    assert!(
        ready,
        "{} lacks numpy/safetensors/tokenizers; run `bash scripts/setup.sh deps`",
        dir.display()
    );
    dir
}

/// A fresh, empty directory unique to a tag and this test process; removed on drop unless
/// the test failed (to leave the files for inspection).
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Creates a [`TempDir`] for `tag`.
pub fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("pgmld-ml-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Runs `tests/<script>` with `args` and the environment `env`, feeding `stdin` as JSON;
/// returns its stdout parsed as JSON (or `Null` when it prints nothing).
fn run_python(
    script: &str,
    args: &[&Path],
    env: &[(&str, String)],
    stdin: &serde_json::Value,
) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let mut cmd = Command::new("python3");
    cmd.arg(&path).args(args).envs(env.iter().map(|(k, v)| (*k, v)));
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3");
    child.stdin.take().unwrap().write_all(stdin.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} {args:?} failed");
    if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Runs `tests/<script>` (the numpy references, with [`mlref`]'s packages) with `args`,
/// feeding `stdin` as JSON; returns its stdout parsed as JSON (or `Null`).
pub fn python(script: &str, args: &[&Path], stdin: &serde_json::Value) -> serde_json::Value {
    run_python(script, args, &[("PYTHONPATH", mlref().display().to_string())], stdin)
}

/// `.deps/bench`: transformers and its pinned dependencies (installed with `--no-deps`;
/// torch is the lean `.deps/libtorch` wheel) and the CUDA stand-ins that let Python import
/// that torch on a machine without the CUDA libraries.
pub fn hf_env() -> (PathBuf, PathBuf) {
    let deps = repo().join(".deps");
    let bench = deps.join("bench");
    let ready = bench.join("transformers").is_dir() && bench.join("cuda-stubs").is_dir();
    assert!(
        ready,
        "{} lacks transformers or cuda-stubs; run `bash scripts/setup.sh deps`",
        bench.display()
    );
    (bench, deps.join("libtorch"))
}

/// Runs `tests/<script>` (Hugging Face transformers or sentence-transformers on the lean
/// torch, from [`hf_env`]) with `request` as JSON on stdin; returns its JSON reply.
pub fn hf_python(script: &str, request: &serde_json::Value) -> serde_json::Value {
    let (bench, libtorch) = hf_env();
    let lib_path = format!(
        "{}:{}:{}",
        bench.join("cuda-stubs").display(),
        libtorch.join("torch/lib").display(),
        std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
    );
    let python_path = format!("{}:{}", bench.display(), libtorch.display());
    let env = [("PYTHONPATH", python_path), ("LD_LIBRARY_PATH", lib_path)];
    run_python(script, &[], &env, request)
}

/// `[rows][cols]` int64 tensor.
pub fn ids(rows: &[&[i64]]) -> Tensor {
    let s = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, s])
}

/// Rows of a 2-D int64 tensor.
pub fn rows(t: &Tensor) -> Vec<Vec<i64>> {
    Vec::<Vec<i64>>::try_from(t).unwrap()
}

/// A JSON matrix as a float64 tensor.
pub fn matrix(v: &serde_json::Value) -> Tensor {
    let m: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let (r, c) = (m.len() as i64, m[0].len() as i64);
    Tensor::from_slice(&m.concat()).view([r, c])
}

/// Largest absolute difference (computed in float64); shapes must agree.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}
