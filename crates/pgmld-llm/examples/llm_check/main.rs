//! Checks pgmld-llm on a GPU machine, where there is no cargo and no Postgres, with a
//! binary built here (release, stripped, run with the machine's torch on
//! `LD_LIBRARY_PATH`; CUDA is found by `pgmld_train::best_device`'s dlopen). Every
//! measurement is one JSON line on stdout (`"side": "pgmld"`), so `bench/chat/gpu/report.py`
//! can set it against `bench/chat/gpu/hf_llm_check.py`'s lines with the same keys.
//!
//! ```text
//! llm_check export <model.gguf> <out_dir>
//! llm_check correctness <model> --device cpu|cuda [--new-tokens 32] [--dump <dir>]
//! llm_check train <model> <rows.jsonl> --device cpu|cuda --option <option> --steps N
//! llm_check generate <model> --device cpu|cuda --dtype fp32|bf16|int8 [--max-new-tokens 128] [--reps 3]
//! ```
//!
//! - `export`: the tokenizer (`tokenizer.json`), `tokenizer_config.json` (BOS/EOS/pad and
//!   `chat_template`), `config.json` (HF `LlamaForCausalLM` form) and
//!   `generation_config.json` of a GGUF file, read through pgmld-llm's own GGUF reader, so a
//!   model directory with random weights can be built elsewhere without the 98 MB file.
//! - `correctness`: logits of a fixed chat prompt on `--device` (f32, then bf16 weights)
//!   against the same model in f32 on the CPU, and greedy tokens on both; `--dump` writes
//!   the prompt ids, CPU logits and greedy tokens for the HF side to compare with.
//! - `train`: `causal_train::train_causal_lm` with pgml.tune's conversation settings (LoRA
//!   r 8, alpha 16, dropout 0.05 on q_proj/v_proj, batch 8, max_seq_length 256, lr 2e-4)
//!   for one memory/speed option: `fp32`, `bf16`, `load_in_8bit`, `adamw_bnb_8bit`,
//!   `gradient_checkpointing`, `graphs` (`cuda_graphs`, the plugin from
//!   `PGMLD_CUDA_GRAPH_PLUGIN`), `bf16_graphs`.
//! - `generate`: greedy generation with the KV cache (no stop ids, so every call makes
//!   exactly `--max-new-tokens` tokens), one warm-up call, then `--reps` timed calls.

mod export;
mod train;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pgmld_llm::chat_template::ChatMessage;
use pgmld_llm::generate::{generate, GenerationConfig};
use pgmld_llm::llama::Llama;
use pgmld_llm::source::{open_with, LoadedModel, OpenOptions};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// The system prompt of every row and of the probe prompt (bench/chat/data.py's).
pub const SYSTEM_PROMPT: &str = "You are a friendly chat partner. Reply briefly and casually.";
/// The user message of the fixed probe prompt (correctness and generation).
pub const PROBE_USER: &str = "Hi! What did you do last weekend? I went hiking in the mountains.";

/// Why a check could not run; printed as `{"error": …}` and exit status 1.
#[derive(Debug)]
pub struct CheckError(pub String);

impl<E: std::fmt::Display> From<E> for CheckError {
    fn from(e: E) -> Self {
        CheckError(e.to_string())
    }
}

/// Result of one subcommand.
pub type CheckResult<T> = std::result::Result<T, CheckError>;

/// Command-line options after the positional arguments (`--name value`).
pub struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> CheckResult<(Vec<String>, Flags)> {
        let (mut positional, mut flags) = (Vec::new(), HashMap::new());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let value =
                    it.next().ok_or_else(|| CheckError(format!("--{name} needs a value")))?;
                flags.insert(name.to_string(), value.clone());
            } else {
                positional.push(a.clone());
            }
        }
        Ok((positional, Flags(flags)))
    }

    /// The flag's text, or `default`.
    pub fn text(&self, name: &str, default: &str) -> String {
        self.0.get(name).cloned().unwrap_or_else(|| default.to_string())
    }

    /// The flag as a number, or `default`; a value that is not one is an error naming it.
    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> CheckResult<T> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => {
                v.parse().map_err(|_| CheckError(format!("--{name} {v:?} is not a valid number")))
            }
        }
    }

    /// `--device cpu|cuda`: `cuda` without a usable GPU is an error (no silent CPU run).
    pub fn device(&self) -> CheckResult<Device> {
        match self.text("device", "cpu").as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            "cuda" => Err(CheckError("--device cuda but libtorch sees no CUDA device".into())),
            other => Err(CheckError(format!("--device {other:?}: expected cpu or cuda"))),
        }
    }
}

/// A JSON line with the fields every measurement carries.
pub fn emit(check: &str, tag: &str, device: Device, mut fields: Value) {
    if let Value::Object(o) = &mut fields {
        o.insert("side".into(), json!("pgmld"));
        o.insert("check".into(), json!(check));
        o.insert("tag".into(), json!(tag));
        o.insert("device".into(), json!(device_name(device)));
    }
    println!("{fields}");
}

/// `cpu` or `cuda`, as the HF side writes it.
pub fn device_name(device: Device) -> &'static str {
    if device == Device::Cpu {
        "cpu"
    } else {
        "cuda"
    }
}

/// Waits for queued device work, so host clocks time what ran.
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The model at `path` with its weights on the CPU (f32 for GGUF, stored dtype otherwise).
pub fn open_cpu(path: &Path) -> CheckResult<LoadedModel> {
    Ok(open_with(path, &OpenOptions::new(Device::Cpu))?)
}

/// A [`Llama`] on `device` in `kind` from a copy of `loaded`'s weights (so one read of the
/// files serves several models).
pub fn build(loaded: &LoadedModel, device: Device, kind: Kind) -> CheckResult<Llama> {
    let mut w = loaded.weights.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    Ok(Llama::load(loaded.config.clone(), &mut w, device, kind)?)
}

/// Token ids of the fixed probe prompt (system + user, generation prompt appended).
pub fn probe_ids(loaded: &LoadedModel) -> CheckResult<Vec<i64>> {
    let messages =
        [ChatMessage::new("system", SYSTEM_PROMPT), ChatMessage::new("user", PROBE_USER)];
    let prompt = loaded.template().render(&messages, true)?;
    Ok(loaded.tokenizer.encode(&prompt, false)?)
}

/// Greedy generation of exactly `n` tokens (no stop ids); returns the tokens and seconds.
pub fn greedy(model: &Llama, ids: &[i64], n: usize) -> CheckResult<(Vec<i64>, f64)> {
    let cfg = GenerationConfig { max_new_tokens: n, ..Default::default() };
    let started = Instant::now();
    let out = generate(model, ids, &cfg, |_| ControlFlow::Continue(()))?;
    sync(model.device());
    Ok((out.tokens, started.elapsed().as_secs_f64()))
}

fn kind_of(dtype: &str) -> CheckResult<Kind> {
    match dtype {
        "fp32" => Ok(Kind::Float),
        "bf16" => Ok(Kind::BFloat16),
        // f32 weights quantised after loading (load_in_8bit's int8 kernels on the CPU).
        "int8" => Ok(Kind::Float),
        other => Err(CheckError(format!("--dtype {other:?}: expected fp32, bf16 or int8"))),
    }
}

/// How many leading tokens two sequences share.
pub fn common_prefix(a: &[i64], b: &[i64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn correctness(model_path: &Path, flags: &Flags) -> CheckResult<()> {
    let device = flags.device()?;
    let tag = flags.text("tag", "correctness");
    let n: usize = flags.number("new-tokens", 32)?;
    let loaded = open_cpu(model_path)?;
    let ids = probe_ids(&loaded)?;
    let input = Tensor::from_slice(&ids).unsqueeze(0);
    let reference = build(&loaded, Device::Cpu, Kind::Float)?;
    let want = tch::no_grad(|| reference.forward(&input, None, false)).squeeze_dim(0);
    let (cpu_tokens, _) = greedy(&reference, &ids, n)?;
    let scale = want.abs().max().double_value(&[]);
    let mut dumped = json!({"prompt_ids": ids, "greedy": {"cpu_fp32": cpu_tokens}});
    for dtype in ["fp32", "bf16"] {
        let model = build(&loaded, device, kind_of(dtype)?)?;
        let got = tch::no_grad(|| model.forward(&input.to_device(device), None, false))
            .squeeze_dim(0)
            .to_device(Device::Cpu);
        let diff = (&got - &want).abs();
        let last = ids.len() as i64 - 1;
        let top = |t: &Tensor| t.get(last).argmax(None, false).int64_value(&[]);
        let (tokens, _) = greedy(&model, &ids, n)?;
        emit(
            "logits",
            &tag,
            device,
            json!({
                "dtype": dtype, "reference": "pgmld cpu fp32", "positions": ids.len(),
                "max_abs_diff": diff.max().double_value(&[]), "mean_abs_diff": diff.mean(None).double_value(&[]),
                "max_abs_logit": scale, "last_top1_agrees": top(&got) == top(&want),
            }),
        );
        emit(
            "greedy",
            &tag,
            device,
            json!({
                "dtype": dtype, "reference": "pgmld cpu fp32", "new_tokens": n,
                "same_prefix": common_prefix(&tokens, &cpu_tokens),
                "same_positions": tokens.iter().zip(&cpu_tokens).filter(|(a, b)| a == b).count(),
            }),
        );
        dumped["greedy"][format!("{}_{dtype}", device_name(device))] = json!(tokens);
    }
    if let Some(dir) = flags.0.get("dump").map(PathBuf::from) {
        std::fs::create_dir_all(&dir)?;
        Tensor::write_safetensors(&[("logits", &want)], dir.join("pgmld_cpu_logits.safetensors"))?;
        std::fs::write(dir.join("pgmld_probe.json"), dumped.to_string())?;
    }
    Ok(())
}

fn generation(model_path: &Path, flags: &Flags) -> CheckResult<()> {
    let device = flags.device()?;
    let dtype = flags.text("dtype", "fp32");
    let tag = flags.text("tag", "generate");
    let (n, reps): (usize, usize) =
        (flags.number("max-new-tokens", 128)?, flags.number("reps", 3)?);
    let started = Instant::now();
    let loaded = open_with(
        model_path,
        &OpenOptions { kind: Some(kind_of(&dtype)?), ..OpenOptions::new(device) },
    )?;
    let ids = probe_ids(&loaded)?;
    let model = {
        let mut w = loaded.weights;
        let mut model = Llama::load(loaded.config.clone(), &mut w, device, kind_of(&dtype)?)?;
        if dtype == "int8" {
            pgmld_llm::quant::quantize_int8(&mut model);
            pgmld_llm::quant::use_cpu_int8_kernels(&mut model);
        }
        model
    };
    sync(device);
    let load_s = started.elapsed().as_secs_f64();
    let (_, warmup_s) = greedy(&model, &ids, 8)?;
    let mut secs = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..reps.max(1) {
        let (t, s) = greedy(&model, &ids, n)?;
        secs.push(s);
        tokens = t;
    }
    let mut sorted = secs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    emit(
        "generate",
        &tag,
        device,
        json!({
            "dtype": dtype, "prompt_tokens": ids.len(), "new_tokens": tokens.len(), "calls_s": secs,
            "median_s": median, "tokens_per_second": tokens.len() as f64 / median,
            "warmup_s": warmup_s, "load_s": load_s, "tokens": tokens,
        }),
    );
    Ok(())
}

fn usage() -> CheckError {
    CheckError(
        "usage: llm_check export <model.gguf> <out_dir> | correctness <model> --device D [--dump DIR] | \
         train <model> <rows.jsonl> --device D --option O --steps N | generate <model> --device D --dtype T"
            .into(),
    )
}

fn run(args: &[String]) -> CheckResult<()> {
    let (pos, flags) = Flags::parse(args)?;
    // Before any other tch call: loads libtorch_cuda.so when the machine's torch has it.
    pgmld_train::load_cuda();
    match pos.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["export", gguf, out] => export::export(Path::new(gguf), Path::new(out)),
        ["correctness", model] => correctness(Path::new(model), &flags),
        ["train", model, rows] => train::run(Path::new(model), Path::new(rows), &flags),
        ["generate", model] => generation(Path::new(model), &flags),
        _ => Err(usage()),
    }
}

fn main() {
    // The CUDA graph plugin of the `graphs` options: PGMLD_CUDA_GRAPH_PLUGIN, else beside
    // this binary or on the library path.
    let plugin = std::env::var_os("PGMLD_CUDA_GRAPH_PLUGIN").filter(|p| !p.is_empty());
    pgmld_train::cuda_graph::configure(plugin.as_deref().map(std::path::Path::new));
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(CheckError(message)) = run(&args) {
        println!("{}", json!({"side": "pgmld", "error": message, "args": args}));
        eprintln!("llm_check: {message}");
        std::process::exit(1);
    }
}
