//! Error type of the pgmld-llm crate.

use std::path::PathBuf;

/// Errors raised while loading, training or running causal language models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, tokenizer_config.json, adapter_config.json) is malformed.
    #[error("invalid {what}: {source}")]
    Json {
        /// Which file or value.
        what: String,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The input is well-formed but describes something this crate does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A weight the architecture needs is absent from the checkpoint.
    #[error("missing weight {0}")]
    MissingWeight(String),
    /// A weight has the wrong shape for the config.
    #[error("weight {name}: shape {found:?}, expected {expected:?}")]
    Shape {
        /// HF name of the weight.
        name: String,
        /// Shape found.
        found: Vec<i64>,
        /// Shape the config implies.
        expected: Vec<i64>,
    },
    /// A bad argument from the caller (hyperparameter, generation option, message list).
    #[error("{0}")]
    Invalid(String),
    /// A tokenizer failed to load or encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// An error from the training framework (arguments, optimizer state, checkpoints,
    /// weight files, a diverging or cancelled run).
    #[error(transparent)]
    Train(#[from] pgmld_train::Error),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
