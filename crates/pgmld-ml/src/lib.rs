//! Encoder text models on libtorch (via `tch`) for pgmld's fine-tuning and inference.
//!
//! - [`bert`], [`distilbert`], [`roberta`]: encoders and sequence-classification heads,
//!   one file per architecture, with Hugging Face variable names.
//! - [`classifier`]: one [`Classifier`] over every architecture, picked from config.json.
//! - [`load`]: weights from model.safetensors (single or sharded) or pytorch_model.bin
//!   (read by `pgmld_train::weights_file`) into a `VarStore`; [`vocab`] and [`tokenize`]:
//!   tokenizers from tokenizer.json, vocab.txt or vocab.json + merges.txt, batch encoding.
//! - [`train`]: the classifier's training task for pgmld-train's loop, and evaluation;
//!   [`checkpointing`]: gradient checkpointing of the encoder; [`metrics`]: accuracy, F1.

#![warn(missing_docs)]

pub mod bert;
pub mod checkpointing;
pub mod classifier;
pub mod config;
pub mod distilbert;
pub mod encoder;
pub mod error;
pub mod load;
pub mod metrics;
pub mod roberta;
pub mod sentence;
pub mod text_classification;
pub mod tokenize;
pub mod train;
pub mod vocab;

pub use bert::{BertForSequenceClassification, BertModel, Config, HiddenAct};
pub use classifier::{Architecture, Classifier};
pub use error::{Error, Result};
pub use load::{load_safetensors, LoadReport, Pretrained};
pub use sentence::SentenceEncoder;
pub use text_classification::{ClassScores, ClassifyInput, ScoreFn, TextClassifier};
pub use tokenize::{Batch, Encoded, TextTokenizer};
pub use train::{
    evaluate, train_classifier, train_classifier_data_parallel, ClassifierTask, EvalMetrics,
    Example, SavePoint, TrainEvent, TrainOutcome,
};

/// Mean of `last_hidden_state` `[batch, seq, hidden]` over the tokens where
/// `attention_mask` `[batch, seq]` is 1 (sentence-transformers mean pooling).
pub fn mean_pool(last_hidden_state: &tch::Tensor, attention_mask: &tch::Tensor) -> tch::Tensor {
    let m = attention_mask.to_kind(last_hidden_state.kind()).unsqueeze(-1);
    let summed = (last_hidden_state * &m).sum_dim_intlist(1, false, None);
    summed / m.sum_dim_intlist(1, false, None).clamp_min(1e-9)
}
