//! [`LlamaConfig`]: the Hugging Face `config.json` of a Llama-family causal LM.
//!
//! One struct covers `model_type` llama (Llama 2/3, SmolLM2), mistral and qwen2: they share
//! the decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP) and differ only in the
//! fields below (Qwen2 puts biases on q/k/v; Llama 3 scales RoPE). GGUF files carry the
//! same facts as metadata and are turned into this struct by the GGUF loader.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How RoPE frequencies are rescaled for long contexts (`rope_scaling` in config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `"llama3"`, `"linear"` or `"dynamic"` (older configs call the field `type`).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Context-extension factor.
    #[serde(default = "one")]
    pub factor: f64,
    /// Llama 3: wavelengths above `original_max_position_embeddings / low_freq_factor` are
    /// divided by `factor`.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// Llama 3: wavelengths below `original_max_position_embeddings / high_freq_factor`
    /// are kept.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// Llama 3: the context length the model was pretrained with.
    #[serde(default)]
    pub original_max_position_embeddings: Option<i64>,
}

fn one() -> f64 {
    1.0
}

/// Token id(s) ending generation: config.json allows a number or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(i64),
    /// Several ids (Llama 3 Instruct ends on either of two).
    Many(Vec<i64>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// A Llama-family decoder's shape (HF field names, HF defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `"llama"`, `"mistral"` or `"qwen2"`: decides defaults such as the q/k/v biases and
    /// LoRA's default target modules.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size (rows of `embed_tokens` and `lm_head`).
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Number of decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (grouped-query attention); absent means `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Per-head width; absent means `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// RMSNorm epsilon (HF default 1e-6).
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (HF default 10000).
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RoPE rescaling, if any.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Longest context the model supports; bounds generation and `max_seq_length`.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// Whether `lm_head` reuses `embed_tokens` (SmolLM2, Qwen2 small sizes).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: biases on q/k/v/o. Qwen2 has q/k/v biases whatever this says.
    #[serde(default)]
    pub attention_bias: bool,
    /// Llama: bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Activation of the MLP gate; only `"silu"` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence token id(s): generation stops on any of them.
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> i64 {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// Parses and checks a config.json text. transformers 5 writes RoPE settings as one
    /// `rope_parameters` object (`rope_theta`, `rope_type` and the scaling fields) instead
    /// of top-level `rope_theta` / `rope_scaling`; both forms are read (top-level wins), so
    /// a checkpoint saved by transformers 5 does not silently fall back to theta 10000.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let json_err = |source| Error::Json { what: "config.json".into(), source };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(json_err)?;
        if let Some(o) = value.as_object_mut() {
            if let Some(serde_json::Value::Object(rope)) = o.get("rope_parameters").cloned() {
                let absent = |o: &serde_json::Map<String, serde_json::Value>, k: &str| {
                    o.get(k).is_none_or(|v| v.is_null())
                };
                if absent(o, "rope_theta") {
                    if let Some(theta) = rope.get("rope_theta") {
                        o.insert("rope_theta".into(), theta.clone());
                    }
                }
                let scaled =
                    rope.get("rope_type").and_then(|t| t.as_str()).is_some_and(|t| t != "default");
                if scaled && absent(o, "rope_scaling") {
                    o.insert("rope_scaling".into(), serde_json::Value::Object(rope));
                }
            }
        }
        let cfg: LlamaConfig = serde_json::from_value(value).map_err(json_err)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects shapes the decoder cannot run, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        match self.model_type.as_str() {
            "llama" | "mistral" | "qwen2" => {}
            other => {
                return Err(Error::Unsupported(format!(
                    "model_type {other:?} (supported causal LMs: llama, mistral, qwen2)"
                )))
            }
        }
        if self.hidden_act != "silu" {
            return Err(Error::Unsupported(format!(
                "hidden_act {:?} (only silu)",
                self.hidden_act
            )));
        }
        if self.num_attention_heads <= 0 || self.num_kv_heads() <= 0 {
            return Err(Error::Invalid(
                "num_attention_heads and num_key_value_heads must be positive".into(),
            ));
        }
        if self.num_attention_heads % self.num_kv_heads() != 0 {
            return Err(Error::Invalid(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_kv_heads()
            )));
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::Invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }

    /// Key/value heads.
    pub fn num_kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q/k/v projections carry a bias.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    /// Whether the attention output projection carries a bias.
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// Ids that end generation.
    pub fn eos_ids(&self) -> Vec<i64> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_config_parses_with_defaults() {
        let cfg = LlamaConfig::from_json_str(
            r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
               "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
               "rope_theta":100000,"tie_word_embeddings":true,"eos_token_id":2}"#,
        )
        .unwrap();
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.num_kv_heads(), 3);
        assert_eq!(cfg.eos_ids(), vec![2]);
        assert!(!cfg.qkv_bias());
    }

    #[test]
    fn transformers5_rope_parameters_are_read() {
        let base = r#""model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
               "num_hidden_layers":1,"num_attention_heads":2"#;
        let plain = LlamaConfig::from_json_str(&format!(
            r#"{{{base},"rope_parameters":{{"rope_theta":100000.0,"rope_type":"default"}}}}"#
        ))
        .unwrap();
        assert_eq!(plain.rope_theta, 100000.0);
        assert_eq!(plain.rope_scaling, None);
        let llama3 = LlamaConfig::from_json_str(&format!(
            r#"{{{base},"rope_parameters":{{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,
                "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
        ))
        .unwrap();
        assert_eq!(llama3.rope_theta, 500000.0);
        let s = llama3.rope_scaling.unwrap();
        assert_eq!(
            (s.rope_type.as_str(), s.factor, s.original_max_position_embeddings),
            ("llama3", 8.0, Some(8192))
        );
        // A top-level rope_theta (transformers 4) wins.
        let both = LlamaConfig::from_json_str(&format!(
            r#"{{{base},"rope_theta":20000,"rope_parameters":{{"rope_theta":100000.0,"rope_type":"default"}}}}"#
        ))
        .unwrap();
        assert_eq!(both.rope_theta, 20000.0);
    }

    #[test]
    fn qwen2_has_qkv_bias_only() {
        let cfg = LlamaConfig::from_json_str(
            r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":16,
               "num_hidden_layers":1,"num_attention_heads":2,"eos_token_id":[1,2]}"#,
        )
        .unwrap();
        assert!(cfg.qkv_bias() && !cfg.o_bias());
        assert_eq!(cfg.eos_ids(), vec![1, 2]);
    }

    #[test]
    fn bad_shapes_are_named() {
        let err = LlamaConfig::from_json_str(
            r#"{"model_type":"gpt2","vocab_size":10,"hidden_size":8,"intermediate_size":16,
               "num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("gpt2"), "{err}");
    }
}
