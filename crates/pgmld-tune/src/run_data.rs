//! What a tune trains on, by task, after the split and in training order: the rows a
//! job's `checkpoint/dataset.jsonl` stores, and the work they make for a training thread.

use std::path::Path;
use std::sync::Arc;

use pgmld_ml::Example;

use crate::conversation::data::ChatRow;
use crate::conversation::job::ConversationSpec;
use crate::job::{RunDirs, TrainSpec, Work};
use crate::options::TuneRequest;
use crate::resume;

/// What a run trains on, by task, after the split and in training order.
pub(crate) enum RunData {
    /// Labelled texts.
    Classification {
        /// Class names by id.
        labels: Vec<String>,
        /// Training examples.
        train: Arc<Vec<Example>>,
        /// Held-out examples.
        eval: Arc<Vec<Example>>,
    },
    /// Exchanges for a LoRA adapter.
    Conversation {
        /// What the adapter records as its base (see `conversation::base`).
        base_name: String,
        /// Training exchanges.
        train: Arc<Vec<ChatRow>>,
        /// Held-out exchanges.
        eval: Arc<Vec<ChatRow>>,
    },
}

impl RunData {
    /// (training, evaluation) rows.
    pub(crate) fn rows(&self) -> (usize, usize) {
        match self {
            RunData::Classification { train, eval, .. } => (train.len(), eval.len()),
            RunData::Conversation { train, eval, .. } => (train.len(), eval.len()),
        }
    }

    /// The label names (none for conversations).
    pub(crate) fn labels(&self) -> Vec<String> {
        match self {
            RunData::Classification { labels, .. } => labels.clone(),
            RunData::Conversation { .. } => Vec::new(),
        }
    }

    /// `checkpoint/dataset.jsonl`: what a resume trains on.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            RunData::Classification { labels, train, eval } => {
                resume::encode_dataset(labels, train, eval)
            }
            RunData::Conversation { train, eval, .. } => resume::encode_chat_dataset(train, eval),
        }
    }

    /// The worker's job.
    pub(crate) fn work(&self, req: &TuneRequest, base: &Path, dirs: RunDirs) -> Work {
        match self {
            RunData::Classification { labels, train, eval } => Work::Classification(TrainSpec {
                model_dir: base.to_path_buf(),
                labels: labels.clone(),
                train: train.clone(),
                eval: eval.clone(),
                training: req.training.clone(),
                tokenizer: req.tokenizer.clone(),
                dirs,
                group: None,
            }),
            RunData::Conversation { base_name, train, eval } => {
                Work::Conversation(ConversationSpec {
                    base: base.to_path_buf(),
                    base_name: base_name.clone(),
                    train: train.clone(),
                    eval: eval.clone(),
                    training: req.training.clone(),
                    options: req.conversation.clone(),
                    dirs,
                    group: None,
                })
            }
        }
    }
}
