//! Error type of the pgmld-ml crate.

use std::path::PathBuf;

/// Errors raised while loading or running models and tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is well-formed but describes something this crate does not support.
    #[error("unsupported model config: {0}")]
    Unsupported(String),
    /// The tokenizer failed to load or encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// What this crate shares with the training framework: a file that cannot be read or
    /// parsed, a libtorch call, a checkpoint that does not fit the model; and the framework's
    /// own failures (arguments, data, a diverging or cancelled run).
    #[error(transparent)]
    Train(#[from] pgmld_train::Error),
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Train(e.into())
    }
}

impl Error {
    /// A file that could not be read.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Train(pgmld_train::Error::Io { path: path.into(), source })
    }

    /// A JSON file (config.json, vocab) that could not be parsed.
    pub fn config(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Train(pgmld_train::Error::Config { path: path.into(), source })
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
