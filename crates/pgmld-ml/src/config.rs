//! BERT hyper-parameters (`config.json`) and the initialisers of fresh weights.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use tch::{nn, Tensor};

use crate::error::{Error, Result};

/// Reads a JSON file (a checkpoint's `config.json`, a sentence-transformers module
/// config) into `T`; errors name the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::io(path.to_path_buf(), source))?;
    serde_json::from_str(&text).map_err(|source| Error::config(path.to_path_buf(), source))
}

/// Activation of the feed-forward block (`hidden_act` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact GELU, `x * Φ(x)` computed with erf (HF `"gelu"`).
    Gelu,
    /// Tanh approximation of GELU (HF `"gelu_new"` / `"gelu_pytorch_tanh"`).
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// Rectified linear unit.
    Relu,
}

impl HiddenAct {
    pub(crate) fn forward(self, xs: &Tensor) -> Tensor {
        match self {
            HiddenAct::Gelu => xs.gelu("none"),
            HiddenAct::GeluNew => xs.gelu("tanh"),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}
fn default_pos_type() -> String {
    "absolute".to_string()
}
fn default_type_vocab() -> i64 {
    2
}

/// BERT hyper-parameters, deserialised from a Hugging Face `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Width of every hidden state.
    pub hidden_size: i64,
    /// Number of transformer layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block.
    pub intermediate_size: i64,
    /// Feed-forward activation.
    pub hidden_act: HiddenAct,
    /// Dropout on embeddings and sub-layer outputs (training only).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned positions.
    pub max_position_embeddings: i64,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal initialisation of fresh weights.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: i64,
    /// Only `"absolute"` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    /// Dropout before the classifier head; `hidden_dropout_prob` when absent.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Label names by id, as saved by HF classification models (`{"0": "neg", ...}`).
    #[serde(default)]
    pub id2label: Option<HashMap<String, String>>,
}

impl Config {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let cfg: Config = read_json(path.as_ref())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<()> {
        if self.position_embedding_type != "absolute" {
            return Err(Error::Unsupported(format!(
                "position_embedding_type {:?} (only \"absolute\")",
                self.position_embedding_type
            )));
        }
        if self.num_attention_heads <= 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::Unsupported(format!(
                "hidden_size {} not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }

    /// Number of labels from `id2label`, if the config has one.
    pub fn num_labels(&self) -> Option<i64> {
        self.id2label.as_ref().map(|m| m.len() as i64).filter(|&n| n > 0)
    }

    pub(crate) fn linear(&self, vs: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
        let c = nn::LinearConfig {
            ws_init: nn::Init::Randn { mean: 0., stdev: self.initializer_range },
            bs_init: Some(nn::Init::Const(0.)),
            bias: true,
        };
        nn::linear(vs, in_dim, out_dim, c)
    }

    pub(crate) fn embedding(&self, vs: nn::Path, n: i64) -> nn::Embedding {
        let c = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0., stdev: self.initializer_range },
            ..Default::default()
        };
        nn::embedding(vs, n, self.hidden_size, c)
    }

    pub(crate) fn layer_norm(&self, vs: nn::Path) -> nn::LayerNorm {
        let c = nn::LayerNormConfig { eps: self.layer_norm_eps, ..Default::default() };
        nn::layer_norm(vs, vec![self.hidden_size], c)
    }
}
