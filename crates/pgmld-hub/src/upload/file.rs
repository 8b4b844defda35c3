//! The files of a commit: a path in the repo and where the bytes come from.

use std::path::PathBuf;

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadSource {
    /// A local file, read (and streamed for LFS uploads) when the commit is made.
    File(PathBuf),
    /// Bytes in memory (a generated model card).
    Bytes(Vec<u8>),
}

/// One file of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFile {
    /// Its path in the repo, `/`-separated (`config.json`, `last-checkpoint/config.json`).
    pub path_in_repo: String,
    /// Its bytes.
    pub source: UploadSource,
}

impl UploadFile {
    /// A local file at `path_in_repo`.
    pub fn file(path_in_repo: impl Into<String>, local: impl Into<PathBuf>) -> Self {
        UploadFile { path_in_repo: path_in_repo.into(), source: UploadSource::File(local.into()) }
    }

    /// Bytes at `path_in_repo`.
    pub fn bytes(path_in_repo: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        UploadFile { path_in_repo: path_in_repo.into(), source: UploadSource::Bytes(bytes.into()) }
    }
}
