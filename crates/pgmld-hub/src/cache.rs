//! The one cache/offline resolver, for datasets and models alike: the standard Hugging Face
//! cache as `huggingface_hub` and hf-hub lay it out
//! (`{kind}s--{owner}--{name}/{blobs,snapshots/{commit},refs/{revision}}`).
//!
//! Offline (`HF_HUB_OFFLINE=1`), or online when the Hub cannot be reached, a revision is
//! looked up here only: `refs/{revision}` (or the revision itself when it is a commit hash)
//! → `snapshots/{commit}`, whose files are listed following the cache's symlinks.

use std::path::{Path, PathBuf};

use crate::config::HubConfig;
use crate::error::HubError;
use crate::repo::RepoId;

/// A cached snapshot of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `snapshots/{commit}`: the repo's files at that commit, as the Hub lays them out.
    pub dir: PathBuf,
    /// Its files, `/`-separated paths relative to `dir`, sorted.
    pub files: Vec<String>,
}

/// Refuses a revision that could leave the repo's cache folder (`refs/{revision}` is a path):
/// empty, `.` or `..` segments, or a backslash.
pub fn check_revision(id: &RepoId, revision: &str) -> Result<(), HubError> {
    if revision.split('/').any(|p| p.is_empty() || p == "." || p == "..") || revision.contains('\\')
    {
        return Err(HubError::RevisionNotFound {
            kind: id.kind,
            repo: id.full.clone(),
            revision: revision.to_string(),
            tried: "nothing: it is not a valid revision name".into(),
        });
    }
    Ok(())
}

/// The cached snapshot of `revision` and its files. `Offline` names the missing ref or
/// snapshot; `Cache` an unreadable one.
pub fn cached_snapshot(cfg: &HubConfig, id: &RepoId, revision: &str) -> Result<Snapshot, HubError> {
    let repo_dir = cfg.repo_cache_dir(id.kind, &id.full);
    let not_cached = |path: PathBuf, detail: String| offline(id, revision, path, detail);
    let dir = if is_commit_hash(revision) {
        repo_dir.join("snapshots").join(revision)
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        match std::fs::read_to_string(&ref_path) {
            Ok(commit) if is_commit_hash(commit.trim()) => {
                repo_dir.join("snapshots").join(commit.trim())
            }
            Ok(_) => return Err(not_cached(ref_path, "the ref holds no commit hash".into())),
            Err(_) => {
                return Err(not_cached(
                    ref_path,
                    format!("revision `{revision}` has never been downloaded"),
                ))
            }
        }
    };
    if !dir.is_dir() {
        return Err(not_cached(dir, "its snapshot is missing from the cache".into()));
    }
    let mut files = Vec::new();
    walk(&dir, "", &mut files).map_err(|e| HubError::Cache {
        kind: id.kind,
        repo: id.full.clone(),
        path: dir.clone(),
        message: e.to_string(),
    })?;
    files.sort();
    Ok(Snapshot { dir, files })
}

/// The `Offline` error of `id` at `revision`: `detail` says what is missing at `path`.
pub fn offline(id: &RepoId, revision: &str, path: PathBuf, detail: String) -> HubError {
    HubError::Offline {
        kind: id.kind,
        repo: id.full.clone(),
        revision: revision.to_string(),
        cache_path: path,
        detail,
    }
}

/// Records `refs/{revision}` → `commit`, as `huggingface_hub` does (no trailing newline), so
/// the cache can answer for the revision offline later.
pub fn write_ref(
    cfg: &HubConfig,
    id: &RepoId,
    revision: &str,
    commit: &str,
) -> Result<(), HubError> {
    let path = cfg.repo_cache_dir(id.kind, &id.full).join("refs").join(revision);
    if std::fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
        return Ok(());
    }
    let err = |e: std::io::Error| HubError::Cache {
        kind: id.kind,
        repo: id.full.clone(),
        path: path.clone(),
        message: e.to_string(),
    };
    let parent = path.parent().ok_or_else(|| err(std::io::ErrorKind::InvalidInput.into()))?;
    std::fs::create_dir_all(parent).map_err(err)?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, commit).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// A full 40-digit commit hash (a snapshot folder name), not a branch or tag.
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// Files under `dir` (following the cache's symlinks; broken ones skipped), `/`-separated.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_dir() => walk(&entry.path(), &rel, out)?,
            Ok(m) if m.is_file() => out.push(rel),
            _ => {}
        }
    }
    Ok(())
}

/// Caches laid out by hand, for the tests of this crate and of pgmld-datasets (feature
/// `testing`): what the resolver reads without any Hub.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::path::{Path, PathBuf};

    use crate::config::HubConfig;
    use crate::error::RepoKind;

    /// Lays out a cache as `huggingface_hub` and hf-hub write it: blobs, snapshot symlinks,
    /// and `refs/{revision}` when given. Returns the snapshot folder. Panics on I/O errors
    /// (test code).
    pub fn fake_cache(
        root: &Path,
        kind: RepoKind,
        repo: &str,
        revision: Option<&str>,
        commit: &str,
        files: &[(&str, &str)],
    ) -> PathBuf {
        let repo_dir = root.join(format!("{}s--{}", kind.name(), repo.replace('/', "--")));
        for (i, (path, body)) in files.iter().enumerate() {
            let blob = repo_dir.join("blobs").join(format!("etag{i}{commit}"));
            std::fs::create_dir_all(blob.parent().expect("blobs/")).expect("blobs dir");
            std::fs::write(&blob, body).expect("blob");
            let link = repo_dir.join("snapshots").join(commit).join(path);
            std::fs::create_dir_all(link.parent().expect("snapshot dir")).expect("snapshot dir");
            std::os::unix::fs::symlink(&blob, &link).expect("snapshot symlink");
        }
        if let Some(revision) = revision {
            let r = repo_dir.join("refs").join(revision);
            std::fs::create_dir_all(r.parent().expect("refs/")).expect("refs dir");
            std::fs::write(r, commit).expect("ref");
        }
        repo_dir.join("snapshots").join(commit)
    }

    /// An offline configuration over `cache`, its endpoint unreachable by design.
    pub fn offline_config(cache: &Path) -> HubConfig {
        HubConfig {
            endpoint: "http://hub.invalid".into(),
            token: None,
            cache_dir: cache.to_path_buf(),
            offline: true,
        }
    }
}
