//! Text models on libtorch (via `tch`) for pgmld's fine-tuning and inference.
//!
//! - [`bert`], [`distilbert`], [`roberta`]: encoders and sequence-classification heads,
//!   one file per architecture, with Hugging Face variable names.
//! - [`classifier`]: one [`Classifier`] over every architecture, picked from config.json.
//! - [`checkpoint`] and [`load`]: weights from model.safetensors (single or sharded) or
//!   pytorch_model.bin into a `VarStore`; [`vocab`] and [`tokenize`]: tokenizers from
//!   tokenizer.json, vocab.txt or vocab.json + merges.txt, batch encoding.
//! - [`train`] and [`training_args`]: the HF-style trainer; [`optim`]: its AdamW, whose
//!   state can be saved; [`train_state`]: checkpoints to resume training from;
//!   [`metrics`]: accuracy, F1.

#![warn(missing_docs)]

pub mod batching;
pub mod bert;
pub mod checkpoint;
pub mod checkpointing;
pub mod classifier;
pub mod config;
pub mod device;
pub mod distilbert;
pub mod encoder;
pub mod error;
pub mod load;
pub mod metrics;
pub mod optim;
pub mod roberta;
pub mod step_losses;
pub mod text_classification;
pub mod tokenize;
pub mod train;
pub mod train_state;
pub mod training_args;
pub mod vocab;

pub use bert::{BertForSequenceClassification, BertModel, Config, HiddenAct};
pub use classifier::{Architecture, Classifier};
pub use device::{best_device, load_cuda};
pub use error::{Error, Result};
pub use load::{load_safetensors, LoadReport, Pretrained};
pub use optim::AdamW;
pub use text_classification::{ClassScores, ClassifyInput, ScoreFn, TextClassifier};
pub use tokenize::{Batch, Encoded, TextTokenizer};
pub use train::{
    evaluate, train_classifier, EvalMetrics, Example, LogEvent, TrainEvent, TrainMetrics,
    TrainOutcome,
};
pub use train_state::{load_checkpoint, save_checkpoint, Checkpoint, SavePoint, TrainState};
pub use training_args::{
    EvalStrategy, HubStrategy, LrSchedulerType, Secret, TokenizerArgs, TrainingArgs,
};

/// Mean of `last_hidden_state` `[batch, seq, hidden]` over the tokens where
/// `attention_mask` `[batch, seq]` is 1 (sentence-transformers mean pooling).
pub fn mean_pool(last_hidden_state: &tch::Tensor, attention_mask: &tch::Tensor) -> tch::Tensor {
    let m = attention_mask.to_kind(last_hidden_state.kind()).unsqueeze(-1);
    let summed = (last_hidden_state * &m).sum_dim_intlist(1, false, None);
    summed / m.sum_dim_intlist(1, false, None).clamp_min(1e-9)
}
