//! RoBERTa encoder and sequence classifier on libtorch, in the style of
//! candle-transformers' `models/bert.rs`.
//!
//! RoBERTa's transformer layers are BERT's ([`BertLayer`]); only the embeddings differ: the
//! position of a token counts the non-padding tokens up to it, offset past `pad_token_id`
//! (HF `create_position_ids_from_input_ids`), so positions start at `pad_token_id + 1`.
//! Variable names follow Hugging Face transformers (`roberta.embeddings.*`,
//! `roberta.encoder.layer.N.*`, `classifier.dense`, `classifier.out_proj`), so checkpoints
//! load unchanged (see [`crate::load`]).

use tch::{nn, Kind, Tensor};

use crate::bert::{BertEmbeddings, BertLayer};
use crate::encoder::{EmbeddingLayer, Encoder};
use crate::error::{Error, Result};

/// RoBERTa hyper-parameters: the BERT fields of a `config.json` with `model_type`
/// `roberta` (typically `type_vocab_size` 1, `pad_token_id` 1, `layer_norm_eps` 1e-5 and
/// `max_position_embeddings` 514).
pub type Config = crate::config::Config;

/// Checks what RoBERTa needs beyond [`Config::validate`]: room in the position table for
/// the padding offset.
pub fn validate(cfg: &Config) -> Result<()> {
    cfg.validate()?;
    if cfg.pad_token_id < 0 || cfg.pad_token_id + 1 >= cfg.max_position_embeddings {
        return Err(Error::Unsupported(format!(
            "RoBERTa pad_token_id {} leaves no positions in max_position_embeddings {}",
            cfg.pad_token_id, cfg.max_position_embeddings
        )));
    }
    if cfg.pad_token_id >= cfg.vocab_size || cfg.type_vocab_size < 1 {
        return Err(Error::Unsupported(format!(
            "RoBERTa pad_token_id {} / type_vocab_size {} out of range",
            cfg.pad_token_id, cfg.type_vocab_size
        )));
    }
    Ok(())
}

/// Longest input (special tokens included) the position table of `cfg` allows:
/// `max_position_embeddings - pad_token_id - 1` (512 for roberta-base's 514).
pub fn max_positions(cfg: &Config) -> i64 {
    cfg.max_position_embeddings - cfg.pad_token_id - 1
}

/// HF `create_position_ids_from_input_ids`: `cumsum(ids != pad) * (ids != pad) + pad`, so
/// real tokens get `pad + 1, pad + 2, ...` and padding gets `pad`.
pub fn position_ids(input_ids: &Tensor, padding_idx: i64) -> Tensor {
    let mask = input_ids.ne(padding_idx).to_kind(Kind::Int64);
    mask.cumsum(1, Kind::Int64) * &mask + padding_idx
}

/// Word + padding-aware position + token-type embeddings, LayerNorm and dropout (HF
/// `embeddings`).
#[derive(Debug)]
pub struct RobertaEmbeddings {
    /// BERT's embeddings (same variables); only the position ids differ.
    bert: BertEmbeddings,
    padding_idx: i64,
}

impl RobertaEmbeddings {
    /// Creates the variables under `vs` (HF prefix `roberta.embeddings`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        Self { bert: BertEmbeddings::load(vs, cfg), padding_idx: cfg.pad_token_id }
    }

    /// `input_ids` `[batch, seq]` (int64, padded with `pad_token_id`) → `[batch, seq, hidden]`.
    /// `token_type_ids` default to 0 (RoBERTa tokenizers return none).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let positions = position_ids(input_ids, self.padding_idx);
        self.bert.forward_at(input_ids, &positions, token_type_ids, train)
    }
}

/// The RoBERTa encoder (HF `RobertaModel` without its pooler): embeddings and BERT layers.
pub type RobertaModel = Encoder<RobertaEmbeddings, BertLayer>;

impl RobertaModel {
    /// Creates the variables under `vs` (`embeddings.*`, `encoder.layer.N.*`).
    pub fn load(vs: nn::Path, cfg: &Config) -> Self {
        Self::with_bert_layers(&vs, cfg, RobertaEmbeddings::load(&vs / "embeddings", cfg))
    }
}

impl EmbeddingLayer for RobertaEmbeddings {
    fn embed(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        self.forward(input_ids, token_type_ids, train)
    }
}

/// HF `RobertaClassificationHead`: `<s>` token → dropout → `dense` → tanh → dropout →
/// `out_proj`.
#[derive(Debug)]
pub struct RobertaClassificationHead {
    dense: nn::Linear,
    out_proj: nn::Linear,
    dropout: f64,
}

impl RobertaClassificationHead {
    /// Creates the variables under `vs` (HF prefix `classifier`).
    pub fn load(vs: nn::Path, cfg: &Config, num_labels: i64) -> Self {
        Self {
            dense: cfg.linear(&vs / "dense", cfg.hidden_size, cfg.hidden_size),
            out_proj: cfg.linear(&vs / "out_proj", cfg.hidden_size, num_labels),
            dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
        }
    }

    /// `[batch, seq, hidden]` → logits `[batch, num_labels]`.
    pub fn forward(&self, hidden: &Tensor, train: bool) -> Tensor {
        hidden
            .select(1, 0)
            .dropout(self.dropout, train)
            .apply(&self.dense)
            .tanh()
            .dropout(self.dropout, train)
            .apply(&self.out_proj)
    }
}

/// RoBERTa with HF's classification head (`RobertaForSequenceClassification`:
/// `roberta.*`, `classifier.dense.*`, `classifier.out_proj.*`).
#[derive(Debug)]
pub struct RobertaForSequenceClassification {
    roberta: RobertaModel,
    classifier: RobertaClassificationHead,
    num_labels: i64,
}

impl RobertaForSequenceClassification {
    /// Creates the variables under `vs`.
    pub fn load(vs: nn::Path, cfg: &Config, num_labels: i64) -> Self {
        Self {
            roberta: RobertaModel::load(&vs / "roberta", cfg),
            classifier: RobertaClassificationHead::load(&vs / "classifier", cfg, num_labels),
            num_labels,
        }
    }

    /// Number of output classes.
    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    /// The underlying encoder.
    pub fn roberta(&self) -> &RobertaModel {
        &self.roberta
    }

    /// The head alone: `last_hidden_state` `[batch, seq, hidden]` → logits.
    pub fn head(&self, hidden: &Tensor, train: bool) -> Tensor {
        self.classifier.forward(hidden, train)
    }

    /// Returns logits `[batch, num_labels]`; arguments as [`RobertaModel::forward`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let hidden = self.roberta.forward(input_ids, attention_mask, token_type_ids, train);
        self.classifier.forward(&hidden, train)
    }
}
