//! Downloads: a repo's file list and files at a revision, through hf-hub into the standard
//! cache, with hf-hub's errors mapped to [`HubError`]s that name the repo and the URL.
//!
//! The token is only ever sent as an `Authorization` header by hf-hub: no message or log here
//! contains it (messages built from hf-hub errors are scrubbed as well).

use std::path::PathBuf;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use hf_hub::{HFError, HFRepository, RepoType, RepoTypeDataset, RepoTypeModel};

use crate::cache::is_commit_hash;
use crate::config::HubConfig;
use crate::error::{error_chain, HubError, RepoKind};
use crate::repo::RepoId;

/// How many files are downloaded at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// The hf-hub handle of a repo; the info endpoint's answer type depends on the kind.
enum Handle {
    Dataset(HFRepository<RepoTypeDataset>),
    Model(HFRepository<RepoTypeModel>),
}

/// One repo on the Hub, asked for at one revision (named in errors).
pub struct RemoteRepo<'a> {
    cfg: &'a HubConfig,
    id: &'a RepoId,
    revision: &'a str,
    handle: Handle,
}

impl<'a> RemoteRepo<'a> {
    /// A client for `id` at `revision`; `Network` when the client cannot be set up.
    pub fn open(cfg: &'a HubConfig, id: &'a RepoId, revision: &'a str) -> Result<Self, HubError> {
        let client = cfg.client().map_err(|e| HubError::Network {
            kind: id.kind,
            repo: id.full.clone(),
            revision: revision.to_string(),
            url: cfg.endpoint.clone(),
            message: format!("cannot set up the hub client: {}", cfg.scrub(&error_chain(&e))),
        })?;
        let handle = match id.kind {
            RepoKind::Dataset => Handle::Dataset(client.dataset(id.owner.clone(), id.name.clone())),
            RepoKind::Model => Handle::Model(client.model(id.owner.clone(), id.name.clone())),
        };
        Ok(RemoteRepo { cfg, id, revision, handle })
    }

    /// The `resolve` URL of a file, for messages and [`HubError`]s.
    pub fn file_url(&self, revision: &str, path: &str) -> String {
        self.id.file_url(&self.cfg.endpoint, revision, path)
    }

    /// The commit `revision` points at (when the Hub says) and the repo's files there, from
    /// the repo info endpoint (as `datasets` and `transformers` do), else the tree listing.
    pub async fn list_files(
        &self,
        revision: &str,
    ) -> Result<(Option<String>, Vec<String>), HubError> {
        let url = self.id.info_url(&self.cfg.endpoint, revision);
        tracing::debug!(repo = %self.id.full, kind = %self.id.kind, %url, "listing repo files");
        let map = |e| self.map_hf(e, &url, revision, &[]);
        let (sha, siblings) = match &self.handle {
            Handle::Dataset(r) => {
                let info = r.info().revision(revision).send().await.map_err(map)?;
                (info.sha, info.siblings.map(|s| s.into_iter().map(|s| s.rfilename).collect()))
            }
            Handle::Model(r) => {
                let info = r.info().revision(revision).send().await.map_err(map)?;
                (info.sha, info.siblings.map(|s| s.into_iter().map(|s| s.rfilename).collect()))
            }
        };
        let sha = sha.filter(|s| is_commit_hash(s));
        if let Some(files) = siblings {
            return Ok((sha, files));
        }
        // no siblings in the info: walk the tree
        let at = sha.clone().unwrap_or_else(|| revision.to_string());
        let files = match &self.handle {
            Handle::Dataset(r) => self.tree(r, &at, &url, revision).await?,
            Handle::Model(r) => self.tree(r, &at, &url, revision).await?,
        };
        Ok((sha, files))
    }

    /// Every file path of the tree at `at`.
    async fn tree<T: RepoType>(
        &self,
        r: &HFRepository<T>,
        at: &str,
        url: &str,
        revision: &str,
    ) -> Result<Vec<String>, HubError> {
        let map = |e| self.map_hf(e, url, revision, &[]);
        let tree = r.list_tree().revision(at).recursive(true).send().map_err(map)?;
        let entries: Vec<hf_hub::repository::RepoTreeEntry> =
            tree.try_collect().await.map_err(map)?;
        Ok(entries
            .into_iter()
            .filter_map(|e| match e {
                hf_hub::repository::RepoTreeEntry::File { path, .. } => Some(path),
                _ => None,
            })
            .collect())
    }

    /// Downloads `paths` at `revision` into the cache, a few at a time, and returns their
    /// local paths in order. `listed` is the repo's file list, named when a listed file turns
    /// out missing.
    pub async fn download_all(
        &self,
        revision: &str,
        paths: &[String],
        listed: &[String],
    ) -> Result<Vec<PathBuf>, HubError> {
        let downloads: Vec<_> = paths.iter().map(|p| self.download(revision, p, listed)).collect();
        stream::iter(downloads).buffered(PARALLEL_DOWNLOADS).try_collect().await
    }

    async fn download(
        &self,
        revision: &str,
        path: &str,
        listed: &[String],
    ) -> Result<PathBuf, HubError> {
        let url = self.file_url(revision, path);
        tracing::debug!(repo = %self.id.full, kind = %self.id.kind, %url, "fetching file");
        let got = match &self.handle {
            Handle::Dataset(r) => r.download_file().filename(path).revision(revision).send().await,
            Handle::Model(r) => r.download_file().filename(path).revision(revision).send().await,
        };
        got.map_err(|e| self.map_hf(e, &url, revision, listed))
    }

    /// An hf-hub error for a request to `url` at `revision`; `listed` is the repo's file
    /// list, when known.
    fn map_hf(&self, e: HFError, url: &str, revision: &str, listed: &[String]) -> HubError {
        let (kind, repo) = (self.id.kind, self.id.full.clone());
        let tried = url.to_string();
        match e {
            HFError::RepoNotFound { .. } => HubError::NotFound { kind, repo, tried },
            HFError::RevisionNotFound { ref context, .. } => {
                if context.as_ref().and_then(|c| c.error_code.as_deref()) == Some("RepoNotFound") {
                    HubError::NotFound { kind, repo, tried }
                } else {
                    HubError::RevisionNotFound { kind, repo, revision: revision.to_string(), tried }
                }
            }
            HFError::EntryNotFound { ref path, .. } if kind == RepoKind::Model => {
                HubError::Unusable {
                    kind,
                    repo,
                    revision: self.revision.to_string(),
                    reason: format!("`{path}` is listed but cannot be downloaded (404 at {url})"),
                    files: listed.to_vec(),
                }
            }
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => HubError::Unauthorized {
                kind,
                repo,
                url: tried,
                token_sent: self.cfg.token().is_some(),
            },
            HFError::Io(ref io) => HubError::Cache {
                kind,
                repo,
                path: self.cfg.cache_dir.clone(),
                message: self.cfg.scrub(&io.to_string()),
            },
            HFError::CacheLockTimeout { ref path } => HubError::Cache {
                kind,
                repo,
                path: path.clone(),
                message: "timed out waiting for the cache lock".into(),
            },
            HFError::Http { ref context } => self.network(
                tried,
                format!(
                    "HTTP {}{}",
                    context.status,
                    context.server_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                ),
            ),
            other => self.network(tried, error_chain(&other)),
        }
    }

    /// A `Network` error for `url`, its message scrubbed of the token.
    fn network(&self, url: String, message: String) -> HubError {
        HubError::Network {
            kind: self.id.kind,
            repo: self.id.full.clone(),
            revision: self.revision.to_string(),
            url,
            message: self.cfg.scrub(&message),
        }
    }
}
