//! [`LlamaConfig`] from GGUF metadata (`{arch}.embedding_length`, `{arch}.block_count`, …).

use serde_json::json;
use tch::Kind;

use super::GgufFile;
use crate::{Error, LlamaConfig, Result};

/// llama.cpp's per-frequency RoPE divisors (Llama 3.x scaling), stored as a tensor.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// Builds the config a GGUF file describes. Architectures: `llama` (Llama 2/3, SmolLM2,
/// Mistral) and `qwen2`. Vocabulary size comes from the embedding's rows, tied
/// embeddings from the absence of `output.weight`, stop ids from the tokenizer metadata
/// (`eos`, plus `eot`/`eom` when present), Llama 3 RoPE scaling from `rope_freqs`.
pub fn llama_config(file: &mut GgufFile) -> Result<LlamaConfig> {
    let arch = file.architecture()?.to_string();
    let model_type = match arch.as_str() {
        "llama" | "qwen2" => arch.clone(),
        other => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF architecture {other:?} (supported: llama, qwen2)",
                file.path().display()
            )))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    if file.get_u64(&key("expert_count")).unwrap_or(0) > 0 {
        return Err(Error::Unsupported(format!(
            "{}: mixture-of-experts models",
            file.path().display()
        )));
    }
    let required = |file: &GgufFile, k: &str| -> Result<i64> {
        let v = file.get_u64(&key(k)).ok_or_else(|| file.missing_metadata(&key(k)))?;
        i64::try_from(v).map_err(|_| file.bad_metadata(&key(k), "a size"))
    };
    let hidden = required(file, "embedding_length")?;
    let layers = required(file, "block_count")?;
    let intermediate = required(file, "feed_forward_length")?;
    let heads = required(file, "attention.head_count")?;
    let kv_heads = file.get_u64(&key("attention.head_count_kv")).map_or(heads, |v| v as i64);
    let eps = file
        .get_f64(&key("attention.layer_norm_rms_epsilon"))
        .ok_or_else(|| file.missing_metadata(&key("attention.layer_norm_rms_epsilon")))?;
    let theta = file.get_f64(&key("rope.freq_base")).unwrap_or(10000.0);
    let context = file.get_u64(&key("context_length")).map_or(2048, |v| v as i64);
    let head_dim = file.get_u64(&key("attention.key_length")).map(|v| v as i64);
    let effective_head_dim = head_dim.unwrap_or(if heads > 0 { hidden / heads } else { 0 });
    if let Some(rot) = file.get_u64(&key("rope.dimension_count")) {
        if rot as i64 != effective_head_dim {
            return Err(Error::Unsupported(format!(
                "{}: partial rotary embeddings ({rot} of {effective_head_dim} dims)",
                file.path().display()
            )));
        }
    }
    let vocab = vocab_size(file, &arch)?;
    let tied = !file.has_tensor("output.weight");
    let token_id =
        |file: &GgufFile, k: &str| file.get_u64(&format!("tokenizer.ggml.{k}")).map(|v| v as i64);
    let mut eos_ids = Vec::new();
    for k in ["eos_token_id", "eot_token_id", "eom_token_id"] {
        if let Some(id) = token_id(file, k) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }
    let rope_scaling = rope_scaling(file, &arch, theta, effective_head_dim)?;
    let mut config = json!({
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": context,
        "tie_word_embeddings": tied,
        "attention_bias": arch == "llama" && file.has_tensor("blk.0.attn_q.bias"),
        "mlp_bias": file.has_tensor("blk.0.ffn_up.bias"),
        "bos_token_id": token_id(file, "bos_token_id"),
        "eos_token_id": if eos_ids.is_empty() { json!(null) } else { json!(eos_ids) },
    });
    if let Some(dim) = head_dim {
        config["head_dim"] = json!(dim);
    }
    let config: LlamaConfig = serde_json::from_value(config).map_err(|source| Error::Json {
        what: format!("config from {}", file.path().display()),
        source,
    })?;
    config.validate()?;
    Ok(config)
}

/// Rows of `token_embd.weight`, else `{arch}.vocab_size`, else the token list's length.
fn vocab_size(file: &GgufFile, arch: &str) -> Result<i64> {
    if let Some(embd) = file.tensors().into_iter().find(|t| t.name == "token_embd.weight") {
        if let Some(&rows) = embd.shape.first() {
            return Ok(rows);
        }
    }
    if let Some(v) = file.get_u64(&format!("{arch}.vocab_size")) {
        return Ok(v as i64);
    }
    let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
    tokens.map(|t| t.len() as i64).ok_or_else(|| file.missing_metadata("tokenizer.ggml.tokens"))
}

/// `rope_scaling` as config.json would state it: linear scaling from metadata, Llama 3
/// scaling recognised from the `rope_freqs` divisors.
fn rope_scaling(
    file: &mut GgufFile,
    arch: &str,
    theta: f64,
    head_dim: i64,
) -> Result<serde_json::Value> {
    let kind = file.get_str(&format!("{arch}.rope.scaling.type")).map(str::to_string);
    let factor = file.get_f64(&format!("{arch}.rope.scaling.factor"));
    match kind.as_deref() {
        Some("linear") => {
            let factor = factor
                .ok_or_else(|| file.missing_metadata(&format!("{arch}.rope.scaling.factor")))?;
            return Ok(json!({"rope_type": "linear", "factor": factor}));
        }
        None | Some("none") => {}
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "{}: RoPE scaling {other:?}",
                file.path().display()
            )))
        }
    }
    if !file.has_tensor(ROPE_FREQS) {
        return Ok(json!(null));
    }
    let divisors: Vec<f32> =
        Vec::try_from(file.read_tensor(ROPE_FREQS, Kind::Float)?.flatten(0, -1))?;
    let original = file
        .get_u64(&format!("{arch}.rope.scaling.original_context_length"))
        .unwrap_or(8192) as f64;
    let factor = divisors.iter().cloned().fold(1.0f32, f32::max) as f64;
    let (low, high) = (1.0, 4.0);
    let expected = llama3_divisors(theta, head_dim, factor, low, high, original);
    let matches = expected.len() == divisors.len()
        && expected.iter().zip(&divisors).all(|(e, &d)| ((*e - d as f64) / e).abs() < 1e-3);
    if !matches {
        return Err(Error::Unsupported(format!(
            "{}: rope_freqs do not match Llama 3 scaling (factor {factor}, low 1, high 4, original {original})",
            file.path().display()
        )));
    }
    Ok(json!({
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original as i64,
    }))
}

/// The per-frequency divisors llama.cpp's converter writes for Llama 3 scaling.
pub fn llama3_divisors(
    theta: f64,
    head_dim: i64,
    factor: f64,
    low: f64,
    high: f64,
    original: f64,
) -> Vec<f64> {
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}
