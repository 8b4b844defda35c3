//! Why a tune failed, mapped to the SQLSTATE the client sees.

use pgmld_models::ModelError;
use pgmld_sql::{codes, SqlError};
use pgmld_upstream::PostgresError;

/// Errors of `pgml.tune`. Messages name the bad value and, where useful, what was tried.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// An argument or hyperparameter outside what pgml.tune accepts (22023).
    #[error("{message}")]
    BadArgument {
        /// What is wrong, naming the value.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// Malformed text where JSON was expected (22P02).
    #[error("{0}")]
    Malformed(String),
    /// A NULL where a value is required (22004).
    #[error("{0}")]
    Null(String),
    /// The relation does not exist (42P01).
    #[error("{0}")]
    NoRelation(String),
    /// A column does not exist (42703).
    #[error("{message}")]
    NoColumn {
        /// Which column of which relation.
        message: String,
        /// The columns the relation has.
        hint: String,
    },
    /// Finding, reading, storing or using a model failed: not found (58P01), not the
    /// caller's (42501), a stored file broken, as the model registry reports it.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A named project or model does not exist, or not where it was looked for (42704).
    #[error("{message}")]
    NotFound {
        /// What was not found, naming it.
        message: String,
        /// How to find what exists.
        hint: String,
    },
    /// Something pgmld does not do (yet) (0A000).
    #[error("{message}")]
    Unsupported {
        /// What was asked.
        message: String,
        /// What to do instead.
        hint: Option<String>,
    },
    /// The training data cannot be used: empty, a single class, ... (22023).
    #[error("{0}")]
    Data(String),
    /// The model or its training failed (XX000 unless more specific).
    #[error("{0}")]
    Training(String),
    /// The client cancelled or disconnected (57014).
    #[error("pgml.tune cancelled")]
    Cancelled,
    /// Postgres refused one of pgmld's own statements.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// A worker, channel or file operation broke.
    #[error("internal error: {0}")]
    Internal(String),
    /// The worker is shutting down (SIGTERM): the job went back to the queue with its
    /// checkpoint, and the next worker goes on with it (57P01 in the worker's log only:
    /// the waiting session keeps waiting).
    #[error("the worker running this job is shutting down; the job went back to the queue")]
    Released,
    /// A rank of a data-parallel job was lost (its worker died or could not be reached):
    /// rank 0 put the job back in the queue and the next generation resumes it from its
    /// last checkpoint with the workers then available (57P01 in the worker's log only).
    #[error("a rank of this data-parallel job was lost ({0}); the job went back to the queue")]
    RankLost(String),
    /// The error the job's worker (maybe another pgmld) got and recorded in pgml.jobs: the
    /// waiting session raises it as the worker would have.
    #[error("{}", .0.message)]
    Relayed(SqlError),
}

impl TuneError {
    /// A 22023 error with a hint.
    pub fn bad(message: impl Into<String>, hint: impl Into<String>) -> Self {
        TuneError::BadArgument { message: message.into(), hint: Some(hint.into()) }
    }

    /// A Postgres error with context.
    pub fn pg(context: impl Into<String>, e: tokio_postgres::Error) -> Self {
        TuneError::Postgres(PostgresError::new(context, e))
    }

    /// The short reason stored in `pgml.models.error`.
    pub fn reason(&self) -> String {
        match self {
            TuneError::Cancelled => "cancelled".into(),
            other => other.to_string(),
        }
    }
}

impl From<pgmld_jobs::JobError> for TuneError {
    fn from(e: pgmld_jobs::JobError) -> Self {
        match e {
            pgmld_jobs::JobError::Postgres(e) => TuneError::Postgres(e),
            bad @ pgmld_jobs::JobError::BadDevice(_) => TuneError::bad(
                bad.to_string(),
                "hyperparams.device asks for the kind of device a job runs on: \"any\" (the default), \"cpu\" or \"cuda\".",
            ),
        }
    }
}

impl From<pgmld_train::Error> for TuneError {
    fn from(e: pgmld_train::Error) -> Self {
        use pgmld_train::Error as E;
        match e {
            E::Cancelled => TuneError::Cancelled,
            E::TrainingArgs(m) => TuneError::bad(
                format!("invalid training_args: {m}"),
                "See https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments for their meaning.",
            ),
            E::Data(m) => TuneError::Data(format!("invalid training data: {m}")),
            E::Unsupported(m) => TuneError::Unsupported { message: format!("unsupported model: {m}"), hint: None },
            E::DataParallel(m) => TuneError::RankLost(m),
            E::CudaGraphs(m) => TuneError::Unsupported {
                message: format!("training_args.cuda_graphs cannot run here: {m}"),
                hint: Some(
                    "Leave cuda_graphs out (steps then run eagerly), or build the plugin with \
                     scripts/build-cuda-plugins.sh on this GPU machine."
                        .into(),
                ),
            },
            other => TuneError::Training(other.to_string()),
        }
    }
}

impl From<pgmld_ml::Error> for TuneError {
    fn from(e: pgmld_ml::Error) -> Self {
        use pgmld_ml::Error as E;
        match e {
            E::Train(e) => e.into(),
            E::Unsupported(m) => {
                TuneError::Unsupported { message: format!("unsupported model: {m}"), hint: None }
            }
            other => TuneError::Training(other.to_string()),
        }
    }
}

impl From<pgmld_llm::Error> for TuneError {
    fn from(e: pgmld_llm::Error) -> Self {
        use pgmld_llm::Error as E;
        match e {
            E::Train(e) => e.into(),
            E::Invalid(m) => TuneError::bad(
                m,
                "Check hyperparams.lora_config, prompt_template and max_seq_length, and the conversations' columns.",
            ),
            E::Template(m) => TuneError::bad(
                format!("the prompt cannot be built: {m}"),
                "Pass hyperparams.prompt_template with {system}, {user} and {assistant} placeholders, or use a model \
                 whose tokenizer has a chat template.",
            ),
            E::Unsupported(m) => TuneError::Unsupported { message: format!("unsupported model: {m}"), hint: None },
            other => TuneError::Training(other.to_string()),
        }
    }
}

impl From<TuneError> for SqlError {
    fn from(e: TuneError) -> SqlError {
        let message = e.to_string();
        match e {
            TuneError::BadArgument { hint, .. } => {
                let err = SqlError::new(codes::INVALID_PARAMETER_VALUE, message);
                match hint {
                    Some(h) => err.with_hint(h),
                    None => err,
                }
            }
            TuneError::Model(e) => e.into(),
            TuneError::Malformed(_) => SqlError::new(codes::INVALID_TEXT_REPRESENTATION, message),
            TuneError::Null(_) => SqlError::new(codes::NULL_VALUE_NOT_ALLOWED, message),
            TuneError::NoRelation(_) => SqlError::new("42P01", message),
            TuneError::NoColumn { hint, .. } => SqlError::new("42703", message).with_hint(hint),
            TuneError::NotFound { hint, .. } => SqlError::new("42704", message).with_hint(hint),
            TuneError::Unsupported { hint, .. } => {
                let err = SqlError::new(codes::FEATURE_NOT_SUPPORTED, message);
                match hint {
                    Some(h) => err.with_hint(h),
                    None => err,
                }
            }
            TuneError::Data(_) => SqlError::new(codes::INVALID_PARAMETER_VALUE, message),
            TuneError::Training(_) => SqlError::new("XX000", message),
            TuneError::Cancelled => SqlError::new(codes::QUERY_CANCELED, "canceling statement due to user request: pgml.tune stopped; the model is marked failed (cancelled)"),
            TuneError::Postgres(p) => SqlError::new(p.client_code(), message),
            TuneError::Internal(_) => SqlError::new(codes::INTERNAL_ERROR, message),
            TuneError::Relayed(e) => e,
            TuneError::Released | TuneError::RankLost(_) => SqlError::new("57P01", message),
        }
    }
}

/// The SQLSTATE `code` as a `&'static str` ([`SqlError::code`]): a recorded code read
/// back from pgml.jobs. Each distinct code is allocated once; anything that is not five
/// ASCII letters or digits becomes XX000.
pub fn static_code(code: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static CODES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return codes::INTERNAL_ERROR;
    }
    let Ok(mut set) = CODES.get_or_init(Default::default).lock() else {
        return codes::INTERNAL_ERROR;
    };
    if let Some(c) = set.get(code) {
        return c;
    }
    let leaked: &'static str = Box::leak(code.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// Result alias for this crate.
pub type Result<T, E = TuneError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_codes_come_back_static_and_bad_ones_are_internal() {
        assert_eq!(static_code("22023"), "22023");
        assert!(std::ptr::eq(static_code("42P01"), static_code("42P01")));
        assert_eq!(static_code("nope"), codes::INTERNAL_ERROR);
        assert_eq!(static_code("12 45"), codes::INTERNAL_ERROR);
    }
}
