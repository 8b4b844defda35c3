//! Why a dataset or model could not be resolved to files, and the SQLSTATE each reason maps to.

use std::fmt;
use std::path::PathBuf;

/// What a Hub repo holds: the URL layout, the cache folder prefix and the words of every
/// message depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// A dataset repo (`pgml.load_dataset`).
    Dataset,
    /// A model repo (`pgml.tune` base models, `pgml.transform`).
    Model,
}

impl RepoKind {
    /// Its name in messages and cache folders: `dataset`, `model`.
    pub fn name(self) -> &'static str {
        match self {
            RepoKind::Dataset => "dataset",
            RepoKind::Model => "model",
        }
    }

    /// The id forms a repo of this kind accepts, for messages.
    fn id_forms(self) -> &'static str {
        match self {
            RepoKind::Dataset => "`owner/name`",
            RepoKind::Model => "`owner/name` or `name`",
        }
    }
}

impl fmt::Display for RepoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a dataset or model repo could not be resolved to files. Every message names the kind,
/// the repo and what was tried (URL, cache path); none contains the token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The Hub has no such repo (or hides it).
    #[error("{kind} `{repo}` was not found on the Hugging Face Hub (tried {tried})")]
    NotFound {
        /// Dataset or model.
        kind: RepoKind,
        /// The repo id as given.
        repo: String,
        /// The URL asked.
        tried: String,
    },

    /// The repo exists but not the branch, tag or commit asked for.
    #[error("{kind} `{repo}` has no revision `{revision}` (tried {tried})")]
    RevisionNotFound {
        /// Dataset or model.
        kind: RepoKind,
        /// The repo id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The URL asked, or why nothing was.
        tried: String,
    },

    /// Offline (or the Hub unreachable) and the cache cannot stand in.
    #[error(
        "{kind} `{repo}` (revision `{revision}`) is not available offline: {detail} (cache: {}); \
         unset HF_HUB_OFFLINE to download it",
        cache_path.display()
    )]
    Offline {
        /// Dataset or model.
        kind: RepoKind,
        /// The repo id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The cache file or folder that is missing or unusable.
        cache_path: PathBuf,
        /// What is missing.
        detail: String,
    },

    /// The Hub could not be reached or answered an unexpected status.
    #[error(
        "could not fetch {kind} `{repo}`{} from the Hugging Face Hub ({url}): {message}",
        revision_note(*kind, revision)
    )]
    Network {
        /// Dataset or model.
        kind: RepoKind,
        /// The repo id.
        repo: String,
        /// The revision asked for (named in model messages only, as before).
        revision: String,
        /// The URL asked.
        url: String,
        /// What failed (scrubbed of the token).
        message: String,
    },

    /// 401 or 403: private, gated, or the token is wrong.
    #[error("access to {kind} `{repo}` was refused ({url}): {}", unauthorized_hint(*kind, *token_sent))]
    Unauthorized {
        /// Dataset or model.
        kind: RepoKind,
        /// The repo id.
        repo: String,
        /// The URL asked.
        url: String,
        /// Whether a token was sent (the hint differs).
        token_sent: bool,
    },

    /// Not a valid Hub repo id of this kind.
    #[error("`{repo}` is not a Hugging Face {kind} id ({}): {reason}", kind.id_forms())]
    InvalidRepo {
        /// Dataset or model.
        kind: RepoKind,
        /// The id as given.
        repo: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The cache could not be read or written.
    #[error("{kind} `{repo}`: the cache at {} cannot be used: {message}", path.display())]
    Cache {
        /// Dataset or model.
        kind: RepoKind,
        /// The repo id.
        repo: String,
        /// The file or folder at fault.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },

    /// A model repo without `config.json`, without weights, or with a shard index naming
    /// files the repo lacks.
    #[error(
        "{kind} `{repo}` (revision `{revision}`) cannot be used: {reason}; its files: {}",
        short_list(files)
    )]
    Unusable {
        /// Model (datasets without data files are [`HubError::NoDataFiles`]).
        kind: RepoKind,
        /// The repo id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// What is missing.
        reason: String,
        /// The repo's files.
        files: Vec<String>,
    },

    /// A dataset repo with nothing `pgml.load_dataset` can read.
    #[error(
        "dataset `{repo}` has no data files (.parquet, .csv, .tsv, .json, .jsonl, optionally .gz) \
         and no parquet conversion; its files: {}",
        short_list(files)
    )]
    NoDataFiles {
        /// The repo id.
        repo: String,
        /// The repo's files.
        files: Vec<String>,
    },

    /// The `split` asked for is not among the dataset's.
    #[error("dataset `{repo}` has no split `{split}`; its splits: {}", short_list(available))]
    UnknownSplit {
        /// The repo id.
        repo: String,
        /// The split asked for.
        split: String,
        /// The dataset's splits.
        available: Vec<String>,
    },

    /// The `subset` asked for is not among the dataset's.
    #[error("dataset `{repo}` has no subset `{subset}`; its subsets: {}", short_list(available))]
    UnknownSubset {
        /// The repo id.
        repo: String,
        /// The subset asked for.
        subset: String,
        /// The dataset's subsets.
        available: Vec<String>,
    },

    /// Several subsets, none the default, and none asked for.
    #[error(
        "dataset `{repo}` has several subsets and no default one; name one of: {}",
        short_list(available)
    )]
    SubsetRequired {
        /// The repo id.
        repo: String,
        /// The dataset's subsets.
        available: Vec<String>,
    },

    /// The README's `configs:` YAML cannot be used.
    #[error("dataset `{repo}`: the `configs` of its README.md cannot be used: {message}")]
    BadConfig {
        /// The repo id.
        repo: String,
        /// What is wrong in it.
        message: String,
    },
}

impl HubError {
    /// The repo the error is about.
    pub fn repo(&self) -> &str {
        match self {
            HubError::NotFound { repo, .. }
            | HubError::RevisionNotFound { repo, .. }
            | HubError::Offline { repo, .. }
            | HubError::Network { repo, .. }
            | HubError::Unauthorized { repo, .. }
            | HubError::InvalidRepo { repo, .. }
            | HubError::Cache { repo, .. }
            | HubError::Unusable { repo, .. }
            | HubError::NoDataFiles { repo, .. }
            | HubError::UnknownSplit { repo, .. }
            | HubError::UnknownSubset { repo, .. }
            | HubError::SubsetRequired { repo, .. }
            | HubError::BadConfig { repo, .. } => repo,
        }
    }
}

/// Model messages name the revision fetched; dataset messages never did.
fn revision_note(kind: RepoKind, revision: &str) -> String {
    match kind {
        RepoKind::Model => format!(" (revision `{revision}`)"),
        RepoKind::Dataset => String::new(),
    }
}

fn unauthorized_hint(kind: RepoKind, token_sent: bool) -> String {
    if token_sent {
        format!("the token (HF_TOKEN) was rejected or has no access to it; for a gated {kind}, accept its terms on the Hub")
    } else {
        "it is private or gated, or does not exist; set HF_TOKEN to a token with access".into()
    }
}

/// `items` comma-separated for a message, the first 20 and how many more; `(none)` when empty.
pub fn short_list(items: &[String]) -> String {
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

/// An error and its sources, `: `-joined.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

impl From<HubError> for pgmld_sql::SqlError {
    fn from(e: HubError) -> Self {
        use pgmld_sql::{codes, SqlError};
        let message = e.to_string();
        match e {
            HubError::NotFound { .. }
            | HubError::RevisionNotFound { .. }
            | HubError::NoDataFiles { .. }
            | HubError::Unusable { .. } => SqlError::new("58P01", message),
            HubError::Offline { kind: RepoKind::Dataset, .. } => SqlError::new("58P01", message)
                .with_hint("pgmld runs with HF_HUB_OFFLINE=1; load the dataset once online to cache it."),
            HubError::Offline { kind: RepoKind::Model, .. } => SqlError::new("58P01", message).with_hint(
                "pgmld runs with HF_HUB_OFFLINE=1; fetch the model once online (or with huggingface_hub) to cache it.",
            ),
            HubError::Unauthorized { kind, token_sent, .. } => {
                SqlError::new("42501", message).with_hint(if token_sent {
                    format!("Check the token in pgmld's HF_TOKEN and that it can read this {kind}.")
                } else {
                    format!("Set HF_TOKEN in pgmld's environment to a token that can read this {kind}.")
                })
            }
            HubError::Network { .. } => SqlError::new("58000", message),
            HubError::Cache { .. } => SqlError::new("58030", message),
            HubError::UnknownSplit { .. }
            | HubError::UnknownSubset { .. }
            | HubError::SubsetRequired { .. }
            | HubError::BadConfig { .. }
            | HubError::InvalidRepo { .. } => SqlError::new(codes::INVALID_PARAMETER_VALUE, message),
        }
    }
}
