//! Tiny random Llama models for unit tests (this crate's tests only).

use tch::{Device, Kind, Tensor};

use crate::{LlamaConfig, Weights};

/// 2 layers, 4 query heads sharing 2 kv heads, hidden 16, vocab 32.
pub(crate) fn tiny_config(model_type: &str) -> LlamaConfig {
    LlamaConfig::from_json_str(&format!(
        r#"{{"model_type":"{model_type}","vocab_size":32,"hidden_size":16,"intermediate_size":24,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "rope_theta":10000,"max_position_embeddings":128,"rms_norm_eps":1e-5,
            "tie_word_embeddings":false,"eos_token_id":1}}"#
    ))
    .expect("tiny config is valid")
}

/// Random f32 weights under HF names for `cfg` (biases per `qkv_bias` / `o_bias`, no
/// `lm_head` when tied), reproducible from `seed`.
pub(crate) fn random_weights(cfg: &LlamaConfig, seed: i64) -> Weights {
    tch::manual_seed(seed);
    let opts = (Kind::Float, Device::Cpu);
    let randn = |shape: &[i64], scale: f64| Tensor::randn(shape, opts) * scale;
    let (h, v, i) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
    let (q_out, kv_out) =
        (cfg.num_attention_heads * cfg.head_dim(), cfg.num_kv_heads() * cfg.head_dim());
    let mut w = Weights::new();
    w.insert("model.embed_tokens.weight".into(), randn(&[v, h], 1.0));
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, out, inp) in [
            ("self_attn.q_proj", q_out, h),
            ("self_attn.k_proj", kv_out, h),
            ("self_attn.v_proj", kv_out, h),
            ("self_attn.o_proj", h, q_out),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            w.insert(format!("{p}.{name}.weight"), randn(&[out, inp], 0.3));
            let is_qkv =
                name.ends_with("q_proj") || name.ends_with("k_proj") || name.ends_with("v_proj");
            let has_bias = if is_qkv {
                cfg.qkv_bias()
            } else if name.ends_with("o_proj") {
                cfg.o_bias()
            } else {
                cfg.mlp_bias
            };
            if has_bias {
                w.insert(format!("{p}.{name}.bias"), randn(&[out], 0.5));
            }
        }
        w.insert(format!("{p}.input_layernorm.weight"), randn(&[h], 0.1) + 1.0);
        w.insert(format!("{p}.post_attention_layernorm.weight"), randn(&[h], 0.1) + 1.0);
    }
    w.insert("model.norm.weight".into(), randn(&[h], 0.1) + 1.0);
    if !cfg.tie_word_embeddings {
        w.insert("lm_head.weight".into(), randn(&[v, h], 0.3));
    }
    w
}

/// A tiny random model (f32, CPU).
pub(crate) fn tiny_model(model_type: &str, seed: i64) -> crate::llama::Llama {
    let cfg = tiny_config(model_type);
    let mut weights = random_weights(&cfg, seed);
    crate::llama::Llama::load(cfg, &mut weights, Device::Cpu, Kind::Float)
        .expect("tiny model loads")
}
