//! Hub repo ids (`owner/name`, or a legacy `name`) and the URLs of a repo's API and files.

use crate::error::{HubError, RepoKind};

/// A validated repo id of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    /// Dataset or model: the URL layout and the cache folder depend on it.
    pub kind: RepoKind,
    /// `owner/name` or `name`, as the Hub and messages spell it.
    pub full: String,
    /// The namespace; empty for legacy ids without owner (`gpt2`).
    pub owner: String,
    /// The repo name.
    pub name: String,
}

impl RepoId {
    /// A dataset id: `owner/name` or `name`, an `hf://datasets/` prefix accepted.
    pub fn dataset(repo: &str) -> Result<RepoId, HubError> {
        let bare = repo.trim().trim_start_matches("hf://datasets/");
        Self::parse(RepoKind::Dataset, repo, bare)
    }

    /// A model id: `owner/name` or `name`, an `hf://` prefix accepted; `hf://datasets/…` is
    /// refused as naming a dataset.
    pub fn model(repo: &str) -> Result<RepoId, HubError> {
        let trimmed = repo.trim();
        let bare = trimmed.strip_prefix("hf://").unwrap_or(trimmed);
        if bare.starts_with("datasets/") {
            return Err(HubError::InvalidRepo {
                kind: RepoKind::Model,
                repo: repo.to_string(),
                reason: "it names a dataset".into(),
            });
        }
        Self::parse(RepoKind::Model, repo, bare)
    }

    /// Checks `bare` (the id without prefix) by the Hub's naming rules; errors name `given`.
    pub(crate) fn parse(kind: RepoKind, given: &str, bare: &str) -> Result<RepoId, HubError> {
        let full = bare.trim().trim_end_matches('/').to_string();
        let bad = |reason: &str| HubError::InvalidRepo {
            kind,
            repo: given.to_string(),
            reason: reason.to_string(),
        };
        if full.is_empty() {
            return Err(bad("it is empty"));
        }
        let parts: Vec<&str> = full.split('/').collect();
        if parts.len() > 2 {
            return Err(bad("it has more than one `/`"));
        }
        if !parts.iter().all(|p| is_valid_name(p)) {
            return Err(bad("use letters, digits, `-`, `_` and `.`, as `owner/name`"));
        }
        let (owner, name) = match parts.as_slice() {
            [o, n] => (o.to_string(), n.to_string()),
            [n] => (String::new(), n.to_string()),
            _ => return Err(bad("it has more than one `/`")),
        };
        Ok(RepoId { kind, full, owner, name })
    }

    /// The repo info endpoint at `revision`: `/api/datasets/…` or `/api/models/…`.
    pub fn info_url(&self, endpoint: &str, revision: &str) -> String {
        let api = match self.kind {
            RepoKind::Dataset => "datasets",
            RepoKind::Model => "models",
        };
        format!("{endpoint}/api/{api}/{}/revision/{}", self.full, encode_segment(revision))
    }

    /// The `resolve` URL of one file: `/datasets/{id}/resolve/…`, or `/{id}/resolve/…` for a
    /// model (no `/models/` prefix).
    pub fn file_url(&self, endpoint: &str, revision: &str, path: &str) -> String {
        let prefix = match self.kind {
            RepoKind::Dataset => "datasets/",
            RepoKind::Model => "",
        };
        let path: Vec<String> = path.split('/').map(encode_segment).collect();
        format!(
            "{endpoint}/{prefix}{}/resolve/{}/{}",
            self.full,
            encode_segment(revision),
            path.join("/")
        )
    }
}

/// One part of a repo id: letters, digits, `-`, `_`, `.`; at most 96 characters; no leading
/// or trailing `-` or `.`, no `--` or `..` (the cache folder uses `--` as separator).
fn is_valid_name(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 96
        && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !p.starts_with(['-', '.'])
        && !p.ends_with(['-', '.'])
        && !p.contains("..")
        && !p.contains("--")
}

/// Percent-encodes one URL path segment (everything but RFC 3986 unreserved characters),
/// as hf-hub does for revisions.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_ids() {
        assert_eq!(RepoId::dataset("stanfordnlp/imdb").unwrap().owner, "stanfordnlp");
        assert_eq!(RepoId::dataset(" imdb ").unwrap().name, "imdb");
        assert_eq!(RepoId::dataset("hf://datasets/a/b").unwrap().full, "a/b");
        for bad in ["", "a/b/c", "a//b", "../x", "a/b c", "a/-b"] {
            let e = RepoId::dataset(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(
                matches!(e, HubError::InvalidRepo { kind: RepoKind::Dataset, .. }),
                "{bad:?}: {e}"
            );
            assert!(e.to_string().contains("dataset id (`owner/name`)"), "{e}");
        }
    }

    #[test]
    fn model_ids() {
        let id = RepoId::model("distilbert-base-uncased").unwrap();
        assert_eq!((id.owner.as_str(), id.name.as_str()), ("", "distilbert-base-uncased"));
        let id = RepoId::model(" hf://google-bert/bert-base-uncased ").unwrap();
        assert_eq!(id.full, "google-bert/bert-base-uncased");
        for bad in ["", "a/b/c", "hf://datasets/a/b", "a b", "../x"] {
            let e = RepoId::model(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(matches!(e, HubError::InvalidRepo { kind: RepoKind::Model, .. }), "{bad:?}");
            assert!(e.to_string().contains("model id"), "{e}");
        }
    }

    #[test]
    fn urls_encode_revision_and_path() {
        let id = RepoId::dataset("o/n").unwrap();
        assert_eq!(
            id.info_url("http://hub", "refs/convert/parquet"),
            "http://hub/api/datasets/o/n/revision/refs%2Fconvert%2Fparquet"
        );
        assert_eq!(
            id.file_url("http://hub", "main", "data/a b.csv"),
            "http://hub/datasets/o/n/resolve/main/data/a%20b.csv"
        );
        let id = RepoId::model("o/n").unwrap();
        assert_eq!(
            id.info_url("http://hub", "refs/pr/1"),
            "http://hub/api/models/o/n/revision/refs%2Fpr%2F1"
        );
        assert_eq!(
            id.file_url("http://hub", "main", "sub/a b.bin"),
            "http://hub/o/n/resolve/main/sub/a%20b.bin"
        );
    }
}
