//! Why a dataset or model could not be resolved to files, and the SQLSTATE each reason maps to.

use std::path::PathBuf;

/// Why a dataset (or, for the `Model*` variants and `InvalidModelRepo`, a model) could not be
/// resolved to files. Every message names the repo and what was tried (URL, cache path); none
/// contains the token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("dataset `{repo}` was not found on the Hugging Face Hub (tried {tried})")]
    NotFound { repo: String, tried: String },

    #[error("dataset `{repo}` has no revision `{revision}` (tried {tried})")]
    RevisionNotFound { repo: String, revision: String, tried: String },

    #[error(
        "dataset `{repo}` (revision `{revision}`) is not available offline: {detail} (cache: {}); \
         unset HF_HUB_OFFLINE to download it",
        cache_path.display()
    )]
    Offline { repo: String, revision: String, cache_path: PathBuf, detail: String },

    #[error("could not fetch dataset `{repo}` from the Hugging Face Hub ({url}): {message}")]
    Network { repo: String, url: String, message: String },

    #[error("access to dataset `{repo}` was refused ({url}): {}", unauthorized_hint(*.token_sent))]
    Unauthorized { repo: String, url: String, token_sent: bool },

    #[error(
        "dataset `{repo}` has no data files (.parquet, .csv, .tsv, .json, .jsonl, optionally .gz) \
         and no parquet conversion; its files: {}",
        list(files)
    )]
    NoDataFiles { repo: String, files: Vec<String> },

    #[error("dataset `{repo}` has no split `{split}`; its splits: {}", list(available))]
    UnknownSplit { repo: String, split: String, available: Vec<String> },

    #[error("dataset `{repo}` has no subset `{subset}`; its subsets: {}", list(available))]
    UnknownSubset { repo: String, subset: String, available: Vec<String> },

    #[error(
        "dataset `{repo}` has several subsets and no default one; name one of: {}",
        list(available)
    )]
    SubsetRequired { repo: String, available: Vec<String> },

    #[error("dataset `{repo}`: the `configs` of its README.md cannot be used: {message}")]
    BadConfig { repo: String, message: String },

    #[error("`{repo}` is not a Hugging Face dataset id (`owner/name`): {reason}")]
    InvalidRepo { repo: String, reason: String },

    #[error("dataset `{repo}`: the cache at {} cannot be used: {message}", path.display())]
    Cache { repo: String, path: PathBuf, message: String },

    #[error("model `{repo}` was not found on the Hugging Face Hub (tried {tried})")]
    ModelNotFound { repo: String, tried: String },

    #[error("model `{repo}` has no revision `{revision}` (tried {tried})")]
    ModelRevisionNotFound { repo: String, revision: String, tried: String },

    #[error(
        "model `{repo}` (revision `{revision}`) is not available offline: {detail} (cache: {}); \
         unset HF_HUB_OFFLINE to download it",
        cache_path.display()
    )]
    ModelOffline { repo: String, revision: String, cache_path: PathBuf, detail: String },

    #[error("could not fetch model `{repo}` (revision `{revision}`) from the Hugging Face Hub ({url}): {message}")]
    ModelNetwork { repo: String, revision: String, url: String, message: String },

    #[error("access to model `{repo}` was refused ({url}): {}", model_unauthorized_hint(*.token_sent))]
    ModelUnauthorized { repo: String, url: String, token_sent: bool },

    /// No `config.json`, no weights, or a shard index naming files the repo lacks.
    #[error(
        "model `{repo}` (revision `{revision}`) cannot be used: {reason}; its files: {}",
        list(files)
    )]
    ModelUnusable { repo: String, revision: String, reason: String, files: Vec<String> },

    #[error("`{repo}` is not a Hugging Face model id (`owner/name` or `name`): {reason}")]
    InvalidModelRepo { repo: String, reason: String },

    #[error("model `{repo}`: the cache at {} cannot be used: {message}", path.display())]
    ModelCache { repo: String, path: PathBuf, message: String },
}

fn unauthorized_hint(token_sent: bool) -> &'static str {
    if token_sent {
        "the token (HF_TOKEN) was rejected or has no access to it; for a gated dataset, accept its terms on the Hub"
    } else {
        "it is private or gated, or does not exist; set HF_TOKEN to a token with access"
    }
}

fn model_unauthorized_hint(token_sent: bool) -> &'static str {
    if token_sent {
        "the token (HF_TOKEN) was rejected or has no access to it; for a gated model, accept its terms on the Hub"
    } else {
        "it is private or gated, or does not exist; set HF_TOKEN to a token with access"
    }
}

pub(super) fn list(items: &[String]) -> String {
    const MAX: usize = 20;
    if items.is_empty() {
        return "(none)".into();
    }
    let mut s = items.iter().take(MAX).map(String::as_str).collect::<Vec<_>>().join(", ");
    if items.len() > MAX {
        s.push_str(&format!(", … ({} more)", items.len() - MAX));
    }
    s
}

impl From<HubError> for pgmld_sql::SqlError {
    fn from(e: HubError) -> Self {
        use pgmld_sql::{codes, SqlError};
        let message = e.to_string();
        match e {
            HubError::NotFound { .. } | HubError::RevisionNotFound { .. } | HubError::NoDataFiles { .. } => {
                SqlError::new("58P01", message)
            }
            HubError::Offline { .. } => SqlError::new("58P01", message)
                .with_hint("pgmld runs with HF_HUB_OFFLINE=1; load the dataset once online to cache it."),
            HubError::Unauthorized { token_sent, .. } => SqlError::new("42501", message).with_hint(if token_sent {
                "Check the token in pgmld's HF_TOKEN and that it can read this dataset."
            } else {
                "Set HF_TOKEN in pgmld's environment to a token that can read this dataset."
            }),
            HubError::ModelNotFound { .. }
            | HubError::ModelRevisionNotFound { .. }
            | HubError::ModelUnusable { .. } => SqlError::new("58P01", message),
            HubError::ModelOffline { .. } => SqlError::new("58P01", message).with_hint(
                "pgmld runs with HF_HUB_OFFLINE=1; fetch the model once online (or with huggingface_hub) to cache it.",
            ),
            HubError::ModelUnauthorized { token_sent, .. } => {
                SqlError::new("42501", message).with_hint(if token_sent {
                    "Check the token in pgmld's HF_TOKEN and that it can read this model."
                } else {
                    "Set HF_TOKEN in pgmld's environment to a token that can read this model."
                })
            }
            HubError::Network { .. } | HubError::ModelNetwork { .. } => SqlError::new("58000", message),
            HubError::Cache { .. } | HubError::ModelCache { .. } => SqlError::new("58030", message),
            HubError::UnknownSplit { .. }
            | HubError::UnknownSubset { .. }
            | HubError::SubsetRequired { .. }
            | HubError::BadConfig { .. }
            | HubError::InvalidRepo { .. }
            | HubError::InvalidModelRepo { .. } => SqlError::new(codes::INVALID_PARAMETER_VALUE, message),
        }
    }
}
