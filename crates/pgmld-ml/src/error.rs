//! Error type of the pgmld-ml crate.

use std::path::PathBuf;

/// Errors raised while loading or running models and tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` could not be parsed.
    #[error("invalid model config {path}: {source}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The config is well-formed but describes something this crate does not support.
    #[error("unsupported model config: {0}")]
    Unsupported(String),
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A checkpoint tensor does not fit the variable it should fill.
    #[error("checkpoint tensor {name}: shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The variable name (HF naming).
        name: String,
        /// Shape found in the checkpoint.
        found: Vec<i64>,
        /// Shape of the model variable.
        expected: Vec<i64>,
    },
    /// A required (non-head) weight is absent from the checkpoint.
    #[error("checkpoint {path} lacks weights: {names:?}")]
    MissingWeights {
        /// The checkpoint file.
        path: PathBuf,
        /// The missing variable names (at most a few are listed).
        names: Vec<String>,
    },
    /// The tokenizer failed to load or encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The training framework failed: arguments, data, weight files, checkpoints, a
    /// diverging or cancelled run.
    #[error(transparent)]
    Train(#[from] pgmld_train::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
