//! Error type of the pgmld-train crate: what the training framework itself can fail with
//! (arguments, data shape, checkpoints, weight files, a diverging or cancelled run).
//! The model crates wrap it (`pgmld_ml::Error::Train`, `pgmld_llm::Error::Train`).

use std::path::PathBuf;

/// Errors raised by the training loop, its checkpoints and the weight-file readers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, a vocabulary, a shard index) could not be parsed.
    #[error("invalid model config {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A weight file is in a format or dtype this crate does not read.
    #[error("unsupported model config: {0}")]
    Unsupported(String),
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A checkpoint tensor does not fit the variable it should fill.
    #[error("checkpoint tensor {name}: shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The variable name.
        name: String,
        /// Shape found in the checkpoint.
        found: Vec<i64>,
        /// Shape of the model variable.
        expected: Vec<i64>,
    },
    /// A variable is absent from the checkpoint.
    #[error("checkpoint {path} lacks weights: {names:?}")]
    MissingWeights {
        /// The checkpoint file.
        path: PathBuf,
        /// The missing variable names (at most a few are listed).
        names: Vec<String>,
    },
    /// `training_args` are malformed, unknown or out of range.
    #[error("invalid training_args: {0}")]
    TrainingArgs(String),
    /// The training or evaluation data cannot be used (empty, label out of range, ...).
    #[error("invalid training data: {0}")]
    Data(String),
    /// The training loss became NaN or infinite.
    #[error(
        "training loss is not finite ({loss}) at optimizer step {step}; try a lower learning_rate"
    )]
    NonFiniteLoss {
        /// The (1-based) optimizer step whose loss was not finite.
        step: i64,
        /// The offending loss value.
        loss: f64,
    },
    /// A training checkpoint (see [`crate::train_state`]) is malformed or incomplete.
    #[error("invalid training checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Training was cancelled by the caller.
    #[error("training cancelled")]
    Cancelled,
    /// A collective of data-parallel training failed: a rank died, hung past the group's
    /// timeout, or the ranks disagree (c10d's message).
    #[error("data-parallel training failed: {0}")]
    DataParallel(String),
    /// The step could not run as CUDA graphs (`cuda_graphs`): the plugin is missing, or a
    /// replay failed (a failed capture only makes that shape's steps eager).
    #[error("CUDA graphs: {0}")]
    CudaGraphs(String),
}

/// A shim kernel's refusal is libtorch's, as tch's own errors are.
impl From<pgmld_kernels::KernelError> for Error {
    fn from(e: pgmld_kernels::KernelError) -> Self {
        Error::Torch(tch::TchError::Torch(e.0))
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
