//! Interoperability check with Hugging Face peft, both directions, on one model directory:
//!
//! 1. loads the peft adapter `<dir>/peft_adapter` (saved by peft) onto the base model in
//!    `<dir>/base` with [`pgmld_llm::lora::load_adapter`] and writes the logits of the fixed
//!    prompt `<dir>/input_ids.json` to `<dir>/pgmld_logits_peft_adapter.safetensors`;
//! 2. applies a fresh LoRA (`<dir>/lora.json`, a peft-style `lora_config`) with
//!    [`pgmld_llm::lora::apply`], sets every adapter tensor (and trainable bias) to random
//!    values, saves it with [`pgmld_llm::lora::save_adapter`] to `<dir>/pgmld_adapter` and
//!    writes the model's logits to `<dir>/pgmld_logits_own_adapter.safetensors`.
//!
//! `examples/peft_roundtrip.py` builds the directory, runs this and compares against peft's
//! own logits (`python3 crates/pgmld-llm/examples/peft_roundtrip.py`, see its docstring).
//!
//! Usage: `peft_roundtrip <dir>`.

use std::path::{Path, PathBuf};

use pgmld_llm::llama::Llama;
use pgmld_llm::lora::{self, LoraConfig};
use pgmld_llm::weights::read_hf_weights;
use pgmld_llm::{LlamaConfig, Result};
use tch::{nn, Device, Kind, Tensor};

fn main() {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: peft_roundtrip <dir>");
        std::process::exit(2);
    };
    if let Err(e) = run(&dir) {
        eprintln!("peft_roundtrip: {e}");
        std::process::exit(1);
    }
}

fn load_base(base: &Path) -> Result<Llama> {
    let config_path = base.join("config.json");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| pgmld_llm::Error::io(&config_path, e))?;
    let config = LlamaConfig::from_json_str(&text)?;
    let (_, mut weights) = read_hf_weights(base, Some(Kind::Float), Device::Cpu)?;
    Llama::load(config, &mut weights, Device::Cpu, Kind::Float)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| pgmld_llm::Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|source| pgmld_llm::Error::Json { what: path.display().to_string(), source })
}

fn write_logits(model: &Llama, ids: &Tensor, path: &Path) -> Result<()> {
    let logits = tch::no_grad(|| model.forward(ids, None, false));
    Tensor::write_safetensors(&[("logits", logits.contiguous())], path)?;
    Ok(())
}

fn run(dir: &Path) -> Result<()> {
    let base = dir.join("base");
    let ids: Vec<i64> = serde_json::from_value(read_json(&dir.join("input_ids.json"))?)
        .map_err(|source| pgmld_llm::Error::Json { what: "input_ids.json".into(), source })?;
    let ids = Tensor::from_slice(&ids).view([1, -1]);

    // 1. peft → pgmld: the adapter attached unmerged, then the same adapter merged.
    let mut model = load_base(&base)?;
    lora::load_adapter(&mut model, &dir.join("peft_adapter"), false)?;
    write_logits(&model, &ids, &dir.join("pgmld_logits_peft_adapter.safetensors"))?;
    let mut merged = load_base(&base)?;
    lora::load_adapter(&mut merged, &dir.join("peft_adapter"), true)?;
    write_logits(&merged, &ids, &dir.join("pgmld_logits_peft_adapter_merged.safetensors"))?;

    // 2. pgmld → peft: a fresh adapter with random values in every trainable tensor.
    let cfg = LoraConfig::from_json(&read_json(&dir.join("lora.json"))?)?;
    let mut model = load_base(&base)?;
    let vs = nn::VarStore::new(Device::Cpu);
    tch::manual_seed(7);
    let summary = lora::apply(&mut model, &cfg, &vs)?;
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.05;
            let _ = t.g_add_(&noise);
        }
    });
    let bytes =
        lora::save_adapter(&dir.join("pgmld_adapter"), &cfg, &vs, &base.display().to_string())?;
    write_logits(&model, &ids, &dir.join("pgmld_logits_own_adapter.safetensors"))?;
    println!(
        "{}",
        serde_json::json!({
            "adapted": summary.adapted.len(),
            "target_modules": summary.target_modules,
            "trainable_params": summary.params.trainable,
            "adapter_bytes": bytes,
        })
    );
    Ok(())
}
