//! BERT encoder and sequence classifier on libtorch, in the style of candle-transformers'
//! `models/bert.rs`.
//!
//! Variable names follow Hugging Face transformers (`embeddings.word_embeddings.weight`,
//! `encoder.layer.N.attention.self.query.weight`, `pooler.dense.weight`, `classifier.weight`,
//! ...), so `model.safetensors` checkpoints load unchanged (see [`crate::load`]). Covers the
//! BERT family with absolute position embeddings, MiniLM included.

use tch::{nn, Kind, Tensor};

use crate::encoder::{EmbeddingLayer, Encoder, EncoderLayer};

pub use crate::encoder::attention_bool_mask;

pub use crate::config::{Config, HiddenAct};

/// Word + position + token-type embeddings, then LayerNorm and dropout.
#[derive(Debug)]
pub struct BertEmbeddings {
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    /// Creates the variables under `vs` (HF prefix `embeddings`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        Self {
            word_embeddings: cfg.embedding(&vs / "word_embeddings", cfg.vocab_size),
            position_embeddings: cfg
                .embedding(&vs / "position_embeddings", cfg.max_position_embeddings),
            token_type_embeddings: cfg
                .embedding(&vs / "token_type_embeddings", cfg.type_vocab_size),
            layer_norm: cfg.layer_norm(&vs / "LayerNorm"),
            dropout: cfg.hidden_dropout_prob,
        }
    }

    /// `input_ids` `[batch, seq]` (int64) → `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let seq_len = input_ids.size()[1];
        let positions = Tensor::arange(seq_len, (Kind::Int64, input_ids.device())).unsqueeze(0);
        self.forward_at(input_ids, &positions, token_type_ids, train)
    }

    /// As [`BertEmbeddings::forward`] with explicit position ids (`[batch or 1, seq]`);
    /// RoBERTa derives them from the padding.
    pub fn forward_at(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let mut xs =
            input_ids.apply(&self.word_embeddings) + positions.apply(&self.position_embeddings);
        xs = match token_type_ids {
            Some(t) => xs + t.apply(&self.token_type_embeddings),
            None => xs + input_ids.zeros_like().apply(&self.token_type_embeddings),
        };
        xs.apply(&self.layer_norm).dropout(self.dropout, train)
    }
}

/// Multi-head self-attention (HF `attention.self`), on `scaled_dot_product_attention`.
#[derive(Debug)]
pub struct BertSelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    num_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl BertSelfAttention {
    /// Creates the variables under `vs` (HF prefix `encoder.layer.N.attention.self`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        let h = cfg.hidden_size;
        Self {
            query: cfg.linear(&vs / "query", h, h),
            key: cfg.linear(&vs / "key", h, h),
            value: cfg.linear(&vs / "value", h, h),
            num_heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            dropout: cfg.attention_probs_dropout_prob,
        }
    }

    /// `xs` `[batch, seq, hidden]`; `mask` boolean `[batch, 1, 1, seq]`, true = attend.
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        let (b, s, hidden) = xs.size3().expect("hidden states must be [batch, seq, hidden]");
        let heads = |t: Tensor| t.view([b, s, self.num_heads, self.head_dim]).transpose(1, 2);
        let q = heads(xs.apply(&self.query));
        let k = heads(xs.apply(&self.key));
        let v = heads(xs.apply(&self.value));
        let p = if train { self.dropout } else { 0.0 };
        let ctx =
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, p, false, None::<f64>, false);
        ctx.transpose(1, 2).contiguous().view([b, s, hidden])
    }
}

/// Dense + dropout + residual LayerNorm (HF `attention.output` and `output`).
#[derive(Debug)]
pub struct BertResidualOutput {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertResidualOutput {
    /// Creates the variables under `vs`; `in_dim` is the width of the sub-layer output.
    pub fn load(vs: nn::Path, cfg: &Config, in_dim: i64) -> Self {
        Self {
            dense: cfg.linear(&vs / "dense", in_dim, cfg.hidden_size),
            layer_norm: cfg.layer_norm(&vs / "LayerNorm"),
            dropout: cfg.hidden_dropout_prob,
        }
    }

    /// `LayerNorm(dropout(dense(xs)) + residual)`.
    pub fn forward(&self, xs: &Tensor, residual: &Tensor, train: bool) -> Tensor {
        (xs.apply(&self.dense).dropout(self.dropout, train) + residual).apply(&self.layer_norm)
    }
}

/// One transformer layer (HF `encoder.layer.N`).
#[derive(Debug)]
pub struct BertLayer {
    attention: BertSelfAttention,
    attention_output: BertResidualOutput,
    intermediate: nn::Linear,
    act: HiddenAct,
    output: BertResidualOutput,
}

impl BertLayer {
    /// Creates the variables under `vs`.
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        let att = &vs / "attention";
        Self {
            attention: BertSelfAttention::load(&att / "self", cfg),
            attention_output: BertResidualOutput::load(&att / "output", cfg, cfg.hidden_size),
            intermediate: cfg.linear(
                &vs / "intermediate" / "dense",
                cfg.hidden_size,
                cfg.intermediate_size,
            ),
            act: cfg.hidden_act,
            output: BertResidualOutput::load(&vs / "output", cfg, cfg.intermediate_size),
        }
    }

    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`.
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        let att = self.attention.forward(xs, mask, train);
        let att = self.attention_output.forward(&att, xs, train);
        let inter = self.act.forward(&att.apply(&self.intermediate));
        self.output.forward(&inter, &att, train)
    }
}

/// Tanh of a dense layer on the first (`[CLS]`) token (HF `pooler`).
#[derive(Debug)]
pub struct BertPooler {
    dense: nn::Linear,
}

impl BertPooler {
    /// Creates the variables under `vs`.
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        Self { dense: cfg.linear(&vs / "dense", cfg.hidden_size, cfg.hidden_size) }
    }

    /// `[batch, seq, hidden]` → `[batch, hidden]`.
    pub fn forward(&self, hidden: &Tensor) -> Tensor {
        hidden.select(1, 0).apply(&self.dense).tanh()
    }
}

/// The BERT encoder: embeddings and transformer layers (no pooler).
pub type BertModel = Encoder<BertEmbeddings, BertLayer>;

impl BertModel {
    /// Creates the variables under `vs` (`embeddings.*`, `encoder.layer.N.*`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        Self::with_bert_layers(&vs, cfg, BertEmbeddings::load(&vs / "embeddings", cfg))
    }
}

impl<E: EmbeddingLayer> Encoder<E, BertLayer> {
    /// `embeddings` followed by `num_hidden_layers` BERT layers under
    /// `vs/encoder/layer/N` (BERT and RoBERTa share them).
    pub fn with_bert_layers(vs: &nn::Path, cfg: &Config, embeddings: E) -> Self {
        let enc = vs / "encoder" / "layer";
        Encoder::new(
            embeddings,
            (0..cfg.num_hidden_layers).map(|i| BertLayer::load(&enc / i, cfg)).collect(),
        )
    }
}

impl EmbeddingLayer for BertEmbeddings {
    fn embed(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        self.forward(input_ids, token_type_ids, train)
    }
}

impl EncoderLayer for BertLayer {
    fn run(&self, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        self.forward(xs, mask, train)
    }
}

/// BERT with a pooler and a linear classifier head, as HF `BertForSequenceClassification`
/// (`bert.*`, `classifier.*`).
#[derive(Debug)]
pub struct BertForSequenceClassification {
    bert: BertModel,
    pooler: BertPooler,
    classifier: nn::Linear,
    dropout: f64,
    num_labels: i64,
}

impl BertForSequenceClassification {
    /// Creates the variables under `vs`: `bert.embeddings.*`, `bert.encoder.*`,
    /// `bert.pooler.dense.*` and `classifier.*` (`[num_labels, hidden]`).
    pub fn load(vs: nn::Path, cfg: &Config, num_labels: i64) -> Self {
        let bert_vs = &vs / "bert";
        Self {
            bert: BertModel::load(bert_vs.clone(), cfg),
            pooler: BertPooler::load(&bert_vs / "pooler", cfg),
            classifier: cfg.linear(&vs / "classifier", cfg.hidden_size, num_labels),
            dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
            num_labels,
        }
    }

    /// Number of output classes.
    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    /// The underlying encoder.
    pub fn bert(&self) -> &BertModel {
        &self.bert
    }

    /// Returns logits `[batch, num_labels]`; arguments as [`BertModel::forward`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let hidden = self.bert.forward(input_ids, attention_mask, token_type_ids, train);
        self.head(&hidden, train)
    }

    /// The head alone: `last_hidden_state` `[batch, seq, hidden]` → logits.
    pub fn head(&self, hidden: &Tensor, train: bool) -> Tensor {
        self.pooler.forward(hidden).dropout(self.dropout, train).apply(&self.classifier)
    }

    /// Mean cross-entropy of `logits` `[batch, num_labels]` against int64 `labels` `[batch]`.
    pub fn loss(logits: &Tensor, labels: &Tensor) -> Tensor {
        logits.cross_entropy_for_logits(labels)
    }
}
