//! DistilBERT encoder and sequence classifier on libtorch, in the style of
//! candle-transformers' `models/distilbert.rs`.
//!
//! Variable names follow Hugging Face transformers (`distilbert.embeddings.word_embeddings`,
//! `distilbert.transformer.layer.N.attention.q_lin`, `pre_classifier`, `classifier`, ...), so
//! checkpoints load unchanged (see [`crate::load`]). DistilBERT has no token types and no
//! pooler; the classifier reads the first (`[CLS]`) token through `pre_classifier` + ReLU.

use serde::Deserialize;
use tch::{nn, Kind, Tensor};

use crate::config::HiddenAct;
use crate::encoder::{EmbeddingLayer, Encoder, EncoderLayer};
use crate::error::{Error, Result};

/// LayerNorm epsilon, fixed in HF's DistilBERT (not in its config).
const LAYER_NORM_EPS: f64 = 1e-12;

fn default_vocab() -> i64 {
    30522
}
fn default_dim() -> i64 {
    768
}
fn default_layers() -> i64 {
    6
}
fn default_heads() -> i64 {
    12
}
fn default_hidden_dim() -> i64 {
    3072
}
fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> i64 {
    512
}
fn default_seq_dropout() -> f64 {
    0.2
}
fn default_init_range() -> f64 {
    0.02
}

/// DistilBERT hyper-parameters, deserialised from a Hugging Face `config.json`
/// (`model_type` `distilbert`); absent fields take HF's `DistilBertConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Vocabulary size.
    #[serde(default = "default_vocab")]
    pub vocab_size: i64,
    /// Width of every hidden state.
    #[serde(default = "default_dim")]
    pub dim: i64,
    /// Number of transformer layers.
    #[serde(default = "default_layers")]
    pub n_layers: i64,
    /// Attention heads per layer; must divide `dim`.
    #[serde(default = "default_heads")]
    pub n_heads: i64,
    /// Width of the feed-forward block.
    #[serde(default = "default_hidden_dim")]
    pub hidden_dim: i64,
    /// Feed-forward activation (`gelu` or `relu`).
    #[serde(default = "default_act")]
    pub activation: HiddenAct,
    /// Dropout on embeddings and feed-forward outputs (training only).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Dropout on attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_dropout: f64,
    /// Number of positions.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// Dropout between `pre_classifier` and `classifier` (training only).
    #[serde(default = "default_seq_dropout")]
    pub seq_classif_dropout: f64,
    /// Standard deviation of the normal initialisation of fresh weights.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Fixed sinusoidal position embeddings (frozen) instead of learned ones.
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: i64,
}

impl Config {
    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<()> {
        if self.n_heads <= 0 || self.dim % self.n_heads != 0 {
            return Err(Error::Unsupported(format!(
                "DistilBERT dim {} not divisible by n_heads {}",
                self.dim, self.n_heads
            )));
        }
        if self.sinusoidal_pos_embds && self.dim % 2 != 0 {
            return Err(Error::Unsupported(format!(
                "sinusoidal position embeddings need an even dim, not {}",
                self.dim
            )));
        }
        let positive = [
            self.vocab_size,
            self.dim,
            self.n_layers,
            self.hidden_dim,
            self.max_position_embeddings,
        ];
        if positive.iter().any(|&v| v <= 0) {
            return Err(Error::Unsupported(format!("DistilBERT sizes must be positive: {self:?}")));
        }
        Ok(())
    }

    fn linear(&self, vs: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
        let c = nn::LinearConfig {
            ws_init: nn::Init::Randn { mean: 0., stdev: self.initializer_range },
            bs_init: Some(nn::Init::Const(0.)),
            bias: true,
        };
        nn::linear(vs, in_dim, out_dim, c)
    }

    fn layer_norm(&self, vs: nn::Path) -> nn::LayerNorm {
        let c = nn::LayerNormConfig { eps: LAYER_NORM_EPS, ..Default::default() };
        nn::layer_norm(vs, vec![self.dim], c)
    }
}

/// HF `create_sinusoidal_embeddings`: `sin` on even columns, `cos` on odd ones, of
/// `pos / 10000^(2⌊j/2⌋/dim)`.
fn sinusoidal_table(n_pos: i64, dim: i64) -> Tensor {
    let pos = Tensor::arange(n_pos, (Kind::Double, tch::Device::Cpu)).unsqueeze(1);
    let j = Tensor::arange(dim, (Kind::Double, tch::Device::Cpu));
    let expo = (j.divide_scalar_mode(2, "floor") * 2.0) / dim as f64;
    let angle = pos / Tensor::from(10000.0f64).pow(&expo).unsqueeze(0);
    let even = Tensor::arange(dim, (Kind::Int64, tch::Device::Cpu)).remainder(2).eq(0);
    angle.sin().where_self(&even.unsqueeze(0), &angle.cos()).to_kind(Kind::Float)
}

/// Word + position embeddings, then LayerNorm and dropout (HF `embeddings`).
#[derive(Debug)]
pub struct Embeddings {
    word_embeddings: nn::Embedding,
    position_weight: Tensor,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl Embeddings {
    /// Creates the variables under `vs` (HF prefix `distilbert.embeddings`). With
    /// `sinusoidal_pos_embds` the position table is filled with the fixed sinusoids and
    /// excluded from training, as in HF.
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        let emb_cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0., stdev: cfg.initializer_range },
            ..Default::default()
        };
        let pos_vs = &vs / "position_embeddings";
        let position_weight = if cfg.sinusoidal_pos_embds {
            let mut w = pos_vs.zeros_no_train("weight", &[cfg.max_position_embeddings, cfg.dim]);
            let table = sinusoidal_table(cfg.max_position_embeddings, cfg.dim);
            tch::no_grad(|| w.copy_(&table));
            w
        } else {
            nn::embedding(pos_vs, cfg.max_position_embeddings, cfg.dim, emb_cfg).ws
        };
        Self {
            word_embeddings: nn::embedding(
                &vs / "word_embeddings",
                cfg.vocab_size,
                cfg.dim,
                emb_cfg,
            ),
            position_weight,
            layer_norm: cfg.layer_norm(&vs / "LayerNorm"),
            dropout: cfg.dropout,
        }
    }

    /// `input_ids` `[batch, seq]` (int64) → `[batch, seq, dim]`.
    pub fn forward(&self, input_ids: &Tensor, train: bool) -> Tensor {
        let seq_len = input_ids.size()[1];
        let positions = Tensor::arange(seq_len, (Kind::Int64, input_ids.device())).unsqueeze(0);
        let pos = Tensor::embedding(&self.position_weight, &positions, -1, false, false);
        (input_ids.apply(&self.word_embeddings) + pos)
            .apply(&self.layer_norm)
            .dropout(self.dropout, train)
    }
}

/// Multi-head self-attention with its output projection (HF `attention`:
/// `q_lin`, `k_lin`, `v_lin`, `out_lin`), on `scaled_dot_product_attention`.
#[derive(Debug)]
pub struct MultiHeadSelfAttention {
    q_lin: nn::Linear,
    k_lin: nn::Linear,
    v_lin: nn::Linear,
    out_lin: nn::Linear,
    n_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl MultiHeadSelfAttention {
    /// Creates the variables under `vs` (HF prefix `transformer.layer.N.attention`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        let d = cfg.dim;
        Self {
            q_lin: cfg.linear(&vs / "q_lin", d, d),
            k_lin: cfg.linear(&vs / "k_lin", d, d),
            v_lin: cfg.linear(&vs / "v_lin", d, d),
            out_lin: cfg.linear(&vs / "out_lin", d, d),
            n_heads: cfg.n_heads,
            head_dim: d / cfg.n_heads,
            dropout: cfg.attention_dropout,
        }
    }

    /// `xs` `[batch, seq, dim]`; `mask` boolean `[batch, 1, 1, seq]`, true = attend.
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        let (b, s, dim) = xs.size3().expect("hidden states must be [batch, seq, dim]");
        let heads = |t: Tensor| t.view([b, s, self.n_heads, self.head_dim]).transpose(1, 2);
        let q = heads(xs.apply(&self.q_lin));
        let k = heads(xs.apply(&self.k_lin));
        let v = heads(xs.apply(&self.v_lin));
        let p = if train { self.dropout } else { 0.0 };
        let ctx =
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, p, false, None::<f64>, false);
        ctx.transpose(1, 2).contiguous().view([b, s, dim]).apply(&self.out_lin)
    }
}

/// Position-wise feed-forward block (HF `ffn`: `lin1`, activation, `lin2`, dropout).
#[derive(Debug)]
pub struct Ffn {
    lin1: nn::Linear,
    lin2: nn::Linear,
    act: HiddenAct,
    dropout: f64,
}

impl Ffn {
    /// Creates the variables under `vs` (HF prefix `transformer.layer.N.ffn`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        Self {
            lin1: cfg.linear(&vs / "lin1", cfg.dim, cfg.hidden_dim),
            lin2: cfg.linear(&vs / "lin2", cfg.hidden_dim, cfg.dim),
            act: cfg.activation,
            dropout: cfg.dropout,
        }
    }

    /// `[batch, seq, dim]` → `[batch, seq, dim]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.act.forward(&xs.apply(&self.lin1)).apply(&self.lin2).dropout(self.dropout, train)
    }
}

/// One transformer block (HF `transformer.layer.N`): post-LayerNorm attention and FFN.
#[derive(Debug)]
pub struct TransformerBlock {
    attention: MultiHeadSelfAttention,
    sa_layer_norm: nn::LayerNorm,
    ffn: Ffn,
    output_layer_norm: nn::LayerNorm,
}

impl TransformerBlock {
    /// Creates the variables under `vs`.
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        Self {
            attention: MultiHeadSelfAttention::load(&vs / "attention", cfg),
            sa_layer_norm: cfg.layer_norm(&vs / "sa_layer_norm"),
            ffn: Ffn::load(&vs / "ffn", cfg),
            output_layer_norm: cfg.layer_norm(&vs / "output_layer_norm"),
        }
    }

    /// `[batch, seq, dim]` → `[batch, seq, dim]`.
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        let sa = (self.attention.forward(xs, mask, train) + xs).apply(&self.sa_layer_norm);
        (self.ffn.forward(&sa, train) + &sa).apply(&self.output_layer_norm)
    }
}

/// The DistilBERT encoder (HF `DistilBertModel`): embeddings and transformer blocks.
pub type DistilBertModel = Encoder<Embeddings, TransformerBlock>;

impl DistilBertModel {
    /// Creates the variables under `vs` (`embeddings.*`, `transformer.layer.N.*`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        let layer_vs = &vs / "transformer" / "layer";
        Encoder::new(
            Embeddings::load(&vs / "embeddings", cfg),
            (0..cfg.n_layers).map(|i| TransformerBlock::load(&layer_vs / i, cfg)).collect(),
        )
    }
}

/// DistilBERT has no token types: they are ignored.
impl EmbeddingLayer for Embeddings {
    fn embed(&self, input_ids: &Tensor, _token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        self.forward(input_ids, train)
    }
}

impl EncoderLayer for TransformerBlock {
    fn run(&self, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        self.forward(xs, mask, train)
    }
}

/// DistilBERT with HF's classification head (`DistilBertForSequenceClassification`):
/// first token → `pre_classifier` → ReLU → dropout → `classifier`.
#[derive(Debug)]
pub struct DistilBertForSequenceClassification {
    distilbert: DistilBertModel,
    pre_classifier: nn::Linear,
    classifier: nn::Linear,
    dropout: f64,
    num_labels: i64,
}

impl DistilBertForSequenceClassification {
    /// Creates the variables under `vs`: `distilbert.*`, `pre_classifier.*` (`[dim, dim]`)
    /// and `classifier.*` (`[num_labels, dim]`).
    pub fn load(vs: nn::Path, cfg: &Config, num_labels: i64) -> Self {
        Self {
            distilbert: DistilBertModel::load(&vs / "distilbert", cfg),
            pre_classifier: cfg.linear(&vs / "pre_classifier", cfg.dim, cfg.dim),
            classifier: cfg.linear(&vs / "classifier", cfg.dim, num_labels),
            dropout: cfg.seq_classif_dropout,
            num_labels,
        }
    }

    /// Number of output classes.
    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    /// The underlying encoder.
    pub fn distilbert(&self) -> &DistilBertModel {
        &self.distilbert
    }

    /// Returns logits `[batch, num_labels]`; arguments as [`DistilBertModel::forward`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let hidden = self.distilbert.forward(input_ids, attention_mask, None, train);
        self.head(&hidden, train)
    }

    /// The head alone: `last_hidden_state` `[batch, seq, dim]` → logits.
    pub fn head(&self, hidden: &Tensor, train: bool) -> Tensor {
        hidden
            .select(1, 0)
            .apply(&self.pre_classifier)
            .relu()
            .dropout(self.dropout, train)
            .apply(&self.classifier)
    }
}
