//! `llm_check export`: a GGUF file's tokenizer, chat template and architecture as a Hugging
//! Face model directory without weights, so both pgmld and transformers can load a model
//! built from it (random weights of the same shape) on a machine the GGUF file cannot
//! travel to. The export is read back through pgmld-llm's HF loader and must tokenize the
//! probe prompt exactly as the GGUF file does.

use std::path::Path;

use pgmld_llm::gguf::GgufFile;
use pgmld_llm::source::{open_with, OpenOptions};
use pgmld_llm::tokenizer::tokenizer_json_from_gguf;
use serde_json::{json, Value};
use tch::Device;

use crate::{emit, probe_ids, CheckError, CheckResult};

/// `config.json` in `LlamaForCausalLM` form: pgmld's config (HF field names) plus what
/// transformers needs to pick the class; unset optional fields are left out.
fn hf_config(file: &mut GgufFile) -> CheckResult<Value> {
    let config = file.config()?;
    if config.model_type != "llama" {
        return Err(CheckError(format!(
            "model_type {:?}: only llama-architecture GGUF files export to LlamaForCausalLM",
            config.model_type
        )));
    }
    let mut value = serde_json::to_value(&config)?;
    let Value::Object(o) = &mut value else {
        return Err(CheckError("the config did not serialise to an object".into()));
    };
    o.retain(|_, v| !v.is_null());
    o.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    o.insert("dtype".into(), json!("float32"));
    o.insert("initializer_range".into(), json!(0.02));
    o.insert("use_cache".into(), json!(true));
    Ok(value)
}

fn write_json(path: &Path, value: &Value) -> CheckResult<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .map_err(|e| CheckError(format!("{}: {e}", path.display())))
}

/// Writes `tokenizer.json`, `tokenizer_config.json`, `config.json` and
/// `generation_config.json` of `gguf` into `out`, then checks the directory loads.
pub fn export(gguf: &Path, out: &Path) -> CheckResult<()> {
    let mut file = GgufFile::open(gguf)?;
    let config = hf_config(&mut file)?;
    let tok = tokenizer_json_from_gguf(&file)?;
    let template = file.get_str("tokenizer.chat_template").map(str::to_string);
    std::fs::create_dir_all(out)?;
    write_json(&out.join("tokenizer.json"), &tok.tokenizer_json)?;
    let mut tok_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tok.bos, "eos_token": tok.eos, "pad_token": tok.pad.clone().or(tok.eos.clone()),
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": false,
    });
    if let Some(t) = &template {
        tok_config["chat_template"] = json!(t);
    }
    write_json(&out.join("tokenizer_config.json"), &tok_config)?;
    write_json(&out.join("config.json"), &config)?;
    let generation =
        json!({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]});
    write_json(&out.join("generation_config.json"), &generation)?;

    // Read back both ways: the same prompt must give the same ids.
    let from_gguf =
        open_with(gguf, &OpenOptions { load_weights: false, ..OpenOptions::new(Device::Cpu) })?;
    let from_dir =
        open_with(out, &OpenOptions { load_weights: false, ..OpenOptions::new(Device::Cpu) })?;
    let (a, b) = (probe_ids(&from_gguf)?, probe_ids(&from_dir)?);
    if a != b {
        return Err(CheckError(format!(
            "the exported tokenizer/template give other ids: {a:?} vs {b:?}"
        )));
    }
    // The EOS ids may be stored as one id or a list: compare them as lists.
    let plain =
        |c: &pgmld_llm::LlamaConfig| pgmld_llm::LlamaConfig { eos_token_id: None, ..c.clone() };
    if plain(&from_gguf.config) != plain(&from_dir.config)
        || from_gguf.stop_ids() != from_dir.stop_ids()
    {
        return Err(CheckError(format!(
            "config differs after export: {:?} vs {:?}",
            from_gguf.config, from_dir.config
        )));
    }
    emit(
        "export",
        "export",
        Device::Cpu,
        json!({
            "out": out.display().to_string(), "probe_tokens": a.len(), "vocab_size": config["vocab_size"],
            "layers": config["num_hidden_layers"], "chat_template": template.is_some(),
            "eos_token": tok.eos, "stop_ids": from_dir.stop_ids(),
        }),
    );
    Ok(())
}
