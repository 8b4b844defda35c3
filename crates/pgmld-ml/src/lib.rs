//! Text models on libtorch (via `tch`) for pgmld's fine-tuning and inference.
//!
//! - [`bert`]: BERT encoder ([`BertModel`]) and [`BertForSequenceClassification`], with
//!   Hugging Face variable names.
//! - [`load`]: fills a model from `config.json` + `model.safetensors`.
//! - [`tokenize`]: `tokenizer.json` batch encoding into `[batch, seq]` tensors.

#![warn(missing_docs)]

pub mod bert;
pub mod config;
pub mod device;
pub mod error;
pub mod load;
pub mod metrics;
pub mod tokenize;
pub mod train;

pub use device::{best_device, load_cuda};
pub use bert::{BertForSequenceClassification, BertModel, Config, HiddenAct};
pub use error::{Error, Result};
pub use load::{load_safetensors, LoadReport, Pretrained};
pub use tokenize::{Batch, Encoded, TextTokenizer};
pub use train::{train_classifier, LogEvent, LrSchedulerType, TrainOutcome, TrainingArgs};

/// Mean of `last_hidden_state` `[batch, seq, hidden]` over the tokens where
/// `attention_mask` `[batch, seq]` is 1 (sentence-transformers mean pooling).
pub fn mean_pool(last_hidden_state: &tch::Tensor, attention_mask: &tch::Tensor) -> tch::Tensor {
    let m = attention_mask
        .to_kind(last_hidden_state.kind())
        .unsqueeze(-1);
    let summed = (last_hidden_state * &m).sum_dim_intlist(1, false, None);
    summed / m.sum_dim_intlist(1, false, None).clamp_min(1e-9)
}
