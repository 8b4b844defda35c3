//! Hugging Face Hub access for `pgml.load_dataset`: resolves a dataset repo to local data files.
//!
//! What the `datasets` library does for repos without a loading script:
//! list the repo's files at a revision (default `main`), map data files (`.parquet`, `.csv`,
//! `.tsv`, `.json`, `.jsonl`, optionally `.gz`) to splits by the README's YAML `configs:` or the
//! default name patterns (see [`layout`]), and download them into the standard Hugging Face
//! cache (`$HF_HUB_CACHE`, `datasets--{owner}--{name}/snapshots/{commit}/…`, `refs/{revision}`).
//! Repos without data files of their own (script datasets) fall back to the Hub's parquet
//! conversion (revision `refs/convert/parquet`, files `{config}/{split}/NNNN.parquet`).
//!
//! Offline (`HF_HUB_OFFLINE=1`), only the cache is read. Online, when the Hub cannot be
//! reached, the cache is used if it holds the dataset (with a warning), as `datasets` does.
//!
//! The token is only ever sent as an `Authorization` header by hf-hub: no message or log
//! here contains it (messages built from hf-hub errors are scrubbed as well).

mod config;
mod error;
pub mod layout;
pub mod model;
pub mod upload;

pub use config::HubConfig;
use error::list;
pub use error::HubError;
pub use model::{fetch_model_files, model_cache_dir};

use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use hf_hub::{HFClient, HFError, HFRepository, RepoTypeDataset};

use layout::{LayoutError, SplitFiles};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The revision of the Hub's automatic parquet conversion of a dataset.
pub const PARQUET_CONVERSION_REVISION: &str = "refs/convert/parquet";
/// How many files are downloaded at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// Data file formats we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Parquet,
    Csv,
    Tsv,
    /// A JSON document: an array of objects, or `datasets`' `{"data": [...]}`-style object.
    Json,
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    JsonLines,
}

impl Format {
    /// The format of a file by its name, and whether it is gzip-compressed (`.csv.gz`).
    pub fn from_path(path: &Path) -> Option<(Format, bool)> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let (name, gzip) = match name.strip_suffix(".gz") {
            Some(n) => (n.to_string(), true),
            None => (name, false),
        };
        let (_, ext) = name.rsplit_once('.')?;
        let format = match ext {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::JsonLines,
            _ => return None,
        };
        Some((format, gzip))
    }

    /// Its name in messages: `parquet`, `csv`, `tsv`, `json`, `jsonl`.
    pub fn name(self) -> &'static str {
        self.extension()
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Json => "json",
            Format::JsonLines => "jsonl",
        }
    }
}

/// One data file of a dataset, on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub split: String,
    /// Local file in the cache (a symlink into `blobs/` in the standard layout).
    pub path: PathBuf,
    pub format: Format,
    /// Gzip-compressed (`.gz`): decompress while reading.
    pub gzip: bool,
    /// Where it came from, for messages: the file's `resolve` URL on the hub.
    pub origin: String,
}

/// The split the `datasets` default patterns give one file by its (relative) path, `train`
/// when none: `data/test-00000-of-00001.parquet` → `test`, `dev/a.csv` → `validation`.
/// For local files; a hub repo is mapped as a whole by [`fetch_dataset_files`].
pub fn split_from_path(path: &str) -> String {
    layout::split_of_path(&path.replace('\\', "/")).unwrap_or_else(|| "train".to_string())
}

/// Resolves a dataset repo to local data files, downloading into the cache (or cache only
/// when offline). `subset` picks a README config or a top-level directory; `revision` is a
/// branch, tag or commit (default `main`); `split` keeps one split.
pub async fn fetch_dataset_files(
    cfg: &HubConfig,
    repo: &str,
    subset: Option<&str>,
    revision: Option<&str>,
    split: Option<&str>,
) -> Result<Vec<DataFile>, HubError> {
    let id = RepoId::parse(repo)?;
    let req = Request {
        cfg,
        id: &id,
        subset: subset.map(str::trim).filter(|s| !s.is_empty()),
        revision: revision.map(str::trim).filter(|r| !r.is_empty()).unwrap_or("main"),
        split: split.map(str::trim).filter(|s| !s.is_empty()),
    };
    if cfg.offline {
        return req.offline();
    }
    match req.online().await {
        Err(err @ HubError::Network { .. }) => match req.offline() {
            Ok(files) => {
                tracing::warn!(repo = %id.full, error = %err, "the Hub is unreachable; using the cached files");
                Ok(files)
            }
            Err(_) => Err(err),
        },
        other => other,
    }
}

/// A validated `owner/name` (or legacy `name`).
struct RepoId {
    full: String,
    owner: String,
    name: String,
}

impl RepoId {
    fn parse(repo: &str) -> Result<RepoId, HubError> {
        let full =
            repo.trim().trim_start_matches("hf://datasets/").trim_end_matches('/').to_string();
        let bad = |reason: &str| HubError::InvalidRepo {
            repo: repo.to_string(),
            reason: reason.to_string(),
        };
        if full.is_empty() {
            return Err(bad("it is empty"));
        }
        let parts: Vec<&str> = full.split('/').collect();
        if parts.len() > 2 {
            return Err(bad("it has more than one `/`"));
        }
        for p in &parts {
            let ok = !p.is_empty()
                && p.len() <= 96
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !p.starts_with(['-', '.'])
                && !p.ends_with(['-', '.'])
                && !p.contains("..")
                && !p.contains("--");
            if !ok {
                return Err(bad("use letters, digits, `-`, `_` and `.`, as `owner/name`"));
            }
        }
        let (owner, name) = match parts.as_slice() {
            [o, n] => (o.to_string(), n.to_string()),
            [n] => (String::new(), n.to_string()),
            _ => unreachable!(),
        };
        Ok(RepoId { full, owner, name })
    }
}

struct Request<'a> {
    cfg: &'a HubConfig,
    id: &'a RepoId,
    subset: Option<&'a str>,
    revision: &'a str,
    split: Option<&'a str>,
}

impl Request<'_> {
    fn repo(&self) -> String {
        self.id.full.clone()
    }

    fn info_url(&self, revision: &str) -> String {
        format!(
            "{}/api/datasets/{}/revision/{}",
            self.cfg.endpoint,
            self.id.full,
            encode_segment(revision)
        )
    }

    fn file_url(&self, revision: &str, path: &str) -> String {
        let path: Vec<String> = path.split('/').map(encode_segment).collect();
        format!(
            "{}/datasets/{}/resolve/{}/{}",
            self.cfg.endpoint,
            self.id.full,
            encode_segment(revision),
            path.join("/")
        )
    }

    fn client(&self) -> Result<HFClient, HubError> {
        self.cfg.client().map_err(|e| HubError::Network {
            repo: self.repo(),
            url: self.cfg.endpoint.clone(),
            message: format!("cannot set up the hub client: {}", self.scrub(&error_chain(&e))),
        })
    }

    fn scrub(&self, msg: &str) -> String {
        self.cfg.scrub(msg)
    }

    fn map_hf(&self, e: HFError, url: &str, revision: &str) -> HubError {
        let repo = self.repo();
        let msg = |e: &HFError| self.scrub(&error_chain(e));
        match e {
            HFError::RepoNotFound { .. } => HubError::NotFound { repo, tried: url.to_string() },
            HFError::RevisionNotFound { ref context, .. } => {
                if context.as_ref().and_then(|c| c.error_code.as_deref()) == Some("RepoNotFound") {
                    HubError::NotFound { repo, tried: url.to_string() }
                } else {
                    HubError::RevisionNotFound {
                        repo,
                        revision: revision.to_string(),
                        tried: url.to_string(),
                    }
                }
            }
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => HubError::Unauthorized {
                repo,
                url: url.to_string(),
                token_sent: self.cfg.token().is_some(),
            },
            HFError::Io(ref io) => HubError::Cache {
                repo,
                path: self.cfg.cache_dir.clone(),
                message: self.scrub(&io.to_string()),
            },
            HFError::CacheLockTimeout { ref path } => HubError::Cache {
                repo,
                path: path.clone(),
                message: "timed out waiting for the cache lock".into(),
            },
            HFError::Http { ref context } => HubError::Network {
                repo,
                url: url.to_string(),
                message: self.scrub(&format!(
                    "HTTP {}{}",
                    context.status,
                    context.server_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                )),
            },
            other => HubError::Network { repo, url: url.to_string(), message: msg(&other) },
        }
    }

    /// The repo's file list at `revision`, from the repo info endpoint (as `datasets` does).
    async fn list_files(
        &self,
        ds: &HFRepository<RepoTypeDataset>,
        revision: &str,
    ) -> Result<Vec<String>, HubError> {
        let url = self.info_url(revision);
        tracing::debug!(repo = %self.id.full, %url, "listing dataset files");
        let info = ds
            .info()
            .revision(revision)
            .send()
            .await
            .map_err(|e| self.map_hf(e, &url, revision))?;
        if let Some(siblings) = info.siblings {
            return Ok(siblings.into_iter().map(|s| s.rfilename).collect());
        }
        // no siblings in the info: walk the tree
        let tree = ds
            .list_tree()
            .revision(revision)
            .recursive(true)
            .send()
            .map_err(|e| self.map_hf(e, &url, revision))?;
        let entries: Vec<hf_hub::repository::RepoTreeEntry> =
            tree.try_collect().await.map_err(|e| self.map_hf(e, &url, revision))?;
        Ok(entries
            .into_iter()
            .filter_map(|e| match e {
                hf_hub::repository::RepoTreeEntry::File { path, .. } => Some(path),
                _ => None,
            })
            .collect())
    }

    async fn download(
        &self,
        ds: &HFRepository<RepoTypeDataset>,
        revision: &str,
        path: &str,
    ) -> Result<PathBuf, HubError> {
        let url = self.file_url(revision, path);
        tracing::debug!(repo = %self.id.full, %url, "fetching dataset file");
        ds.download_file()
            .filename(path)
            .revision(revision)
            .send()
            .await
            .map_err(|e| self.map_hf(e, &url, revision))
    }

    async fn online(&self) -> Result<Vec<DataFile>, HubError> {
        let client = self.client()?;
        let ds = client.dataset(self.id.owner.clone(), self.id.name.clone());
        let files = self.list_files(&ds, self.revision).await?;
        let readme = match files.iter().any(|f| f == "README.md") {
            true => {
                let p = self.download(&ds, self.revision, "README.md").await?;
                Some(std::fs::read_to_string(&p).map_err(|e| HubError::Cache {
                    repo: self.repo(),
                    path: p.clone(),
                    message: e.to_string(),
                })?)
            }
            false => None,
        };
        let (revision, splits) = match self.resolve(&files, readme.as_deref()) {
            Ok(splits) => (self.revision, splits),
            Err(LayoutError::NoDataFiles) if self.revision == "main" => {
                tracing::info!(repo = %self.id.full, "no data files in the repo; using the Hub's parquet conversion");
                let conv = match self.list_files(&ds, PARQUET_CONVERSION_REVISION).await {
                    Ok(conv) => conv,
                    Err(HubError::RevisionNotFound { .. } | HubError::NotFound { .. }) => {
                        return Err(HubError::NoDataFiles { repo: self.repo(), files })
                    }
                    Err(e) => return Err(e),
                };
                match layout::resolve_parquet_conversion(&conv, self.subset) {
                    Ok(splits) => (PARQUET_CONVERSION_REVISION, splits),
                    Err(LayoutError::NoDataFiles) => {
                        return Err(HubError::NoDataFiles { repo: self.repo(), files })
                    }
                    Err(e) => return Err(self.layout_error(e, &files)),
                }
            }
            Err(e) => return Err(self.layout_error(e, &files)),
        };
        let splits = self.keep_split(splits).map_err(|available| HubError::UnknownSplit {
            repo: self.repo(),
            split: self.split.unwrap_or_default().to_string(),
            available,
        })?;
        let wanted: Vec<(String, String)> = splits
            .into_iter()
            .flat_map(|s| s.files.into_iter().map(move |f| (s.split.clone(), f)))
            .collect();
        let downloads: Vec<_> =
            wanted.iter().map(|(_, f)| self.download(&ds, revision, f)).collect();
        let paths: Vec<PathBuf> =
            stream::iter(downloads).buffered(PARALLEL_DOWNLOADS).try_collect().await?;
        let out: Vec<DataFile> = wanted
            .iter()
            .zip(paths)
            .map(|((split, f), local)| self.data_file(split, f, local, revision))
            .collect();
        tracing::info!(repo = %self.id.full, revision, files = out.len(), "dataset files ready");
        Ok(out)
    }

    /// The splits of the files of `self.revision` (the conversion revision has its own layout).
    fn resolve(
        &self,
        files: &[String],
        readme: Option<&str>,
    ) -> Result<Vec<SplitFiles>, LayoutError> {
        if self.revision == PARQUET_CONVERSION_REVISION {
            layout::resolve_parquet_conversion(files, self.subset)
        } else {
            layout::resolve(files, readme, self.subset)
        }
    }

    fn data_file(&self, split: &str, repo_path: &str, local: PathBuf, revision: &str) -> DataFile {
        // layout only yields paths with a known format
        let (format, gzip) =
            Format::from_path(Path::new(repo_path)).unwrap_or((Format::Parquet, false));
        DataFile {
            split: split.to_string(),
            path: local,
            format,
            gzip,
            origin: self.file_url(revision, repo_path),
        }
    }

    /// Keeps the requested split; `Err` lists the available ones.
    fn keep_split(&self, splits: Vec<SplitFiles>) -> Result<Vec<SplitFiles>, Vec<String>> {
        let Some(want) = self.split else { return Ok(splits) };
        let available: Vec<String> = splits.iter().map(|s| s.split.clone()).collect();
        let kept: Vec<SplitFiles> = splits.into_iter().filter(|s| s.split == want).collect();
        if kept.is_empty() {
            Err(available)
        } else {
            Ok(kept)
        }
    }

    fn layout_error(&self, e: LayoutError, files: &[String]) -> HubError {
        let repo = self.repo();
        match e {
            LayoutError::NoDataFiles => HubError::NoDataFiles { repo, files: files.to_vec() },
            LayoutError::UnknownSubset { subset, available } => {
                HubError::UnknownSubset { repo, subset, available }
            }
            LayoutError::SubsetRequired { available } => {
                HubError::SubsetRequired { repo, available }
            }
            LayoutError::BadConfig(message) => HubError::BadConfig { repo, message },
        }
    }

    /// The cached snapshot of `revision` and its files, through hf-hub's cache-only lookup.
    fn cached_snapshot(&self, revision: &str) -> Result<(PathBuf, Vec<String>), HubError> {
        let repo_dir = self.cfg.repo_cache_dir(&self.id.full);
        let not_cached = |path: PathBuf, detail: String| HubError::Offline {
            repo: self.repo(),
            revision: revision.to_string(),
            cache_path: path,
            detail,
        };
        let snapshot = if is_commit_hash(revision) {
            repo_dir.join("snapshots").join(revision)
        } else {
            let ref_path = repo_dir.join("refs").join(revision);
            match std::fs::read_to_string(&ref_path) {
                Ok(commit) => repo_dir.join("snapshots").join(commit.trim()),
                Err(_) => {
                    return Err(not_cached(
                        ref_path,
                        format!("revision `{revision}` has never been downloaded"),
                    ));
                }
            }
        };
        if !snapshot.is_dir() {
            return Err(not_cached(snapshot, "its snapshot is missing from the cache".into()));
        }
        let mut files = Vec::new();
        walk(&snapshot, "", &mut files).map_err(|e| HubError::Cache {
            repo: self.repo(),
            path: snapshot.clone(),
            message: e.to_string(),
        })?;
        files.sort();
        Ok((snapshot, files))
    }

    fn offline(&self) -> Result<Vec<DataFile>, HubError> {
        let (snapshot, files) = self.cached_snapshot(self.revision)?;
        let readme = std::fs::read_to_string(snapshot.join("README.md")).ok();
        let offline_err = |detail: String, path: PathBuf| HubError::Offline {
            repo: self.repo(),
            revision: self.revision.to_string(),
            cache_path: path,
            detail,
        };
        let (revision, dir, splits) = match self.resolve(&files, readme.as_deref()) {
            Ok(splits) => (self.revision, snapshot, splits),
            Err(LayoutError::NoDataFiles) if self.revision == "main" => {
                let (conv_dir, conv) =
                    self.cached_snapshot(PARQUET_CONVERSION_REVISION).map_err(|_| {
                        offline_err("no data files are cached for it".into(), snapshot.clone())
                    })?;
                match layout::resolve_parquet_conversion(&conv, self.subset) {
                    Ok(splits) => (PARQUET_CONVERSION_REVISION, conv_dir, splits),
                    Err(LayoutError::NoDataFiles) => {
                        return Err(offline_err("no data files are cached for it".into(), conv_dir))
                    }
                    Err(LayoutError::UnknownSubset { subset, available }) => {
                        return Err(offline_err(
                            format!(
                                "subset `{subset}` is not cached (cached: {})",
                                list(&available)
                            ),
                            conv_dir,
                        ))
                    }
                    Err(e) => return Err(self.layout_error(e, &conv)),
                }
            }
            Err(LayoutError::NoDataFiles) => {
                return Err(offline_err("no data files are cached for it".into(), snapshot))
            }
            Err(LayoutError::UnknownSubset { subset, available }) if readme.is_none() => {
                return Err(offline_err(
                    format!("subset `{subset}` is not cached (cached: {})", list(&available)),
                    snapshot,
                ))
            }
            Err(e) => return Err(self.layout_error(e, &files)),
        };
        let splits = self.keep_split(splits).map_err(|available| {
            offline_err(
                format!(
                    "split `{}` is not cached (cached: {})",
                    self.split.unwrap_or_default(),
                    list(&available)
                ),
                dir.clone(),
            )
        })?;
        let out: Vec<DataFile> = splits
            .iter()
            .flat_map(|s| s.files.iter().map(move |f| (s.split.as_str(), f)))
            .map(|(split, f)| self.data_file(split, f, dir.join(f), revision))
            .collect();
        tracing::info!(repo = %self.id.full, revision, files = out.len(), "dataset files from the cache");
        Ok(out)
    }
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

fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// Percent-encodes one URL path segment (everything but RFC 3986 unreserved characters),
/// as hf-hub does for revisions.
fn encode_segment(s: &str) -> String {
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

/// An error and its sources, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg_from(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn config_from_env_defaults_and_overrides() {
        let c = cfg_from(&[("HOME", "/home/u")]);
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(c.token, None);
        assert!(!c.offline);

        let c = cfg_from(&[
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HOME", "/srv/hf"),
            ("HUGGING_FACE_HUB_TOKEN", "hf_old"),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.cache_dir, PathBuf::from("/srv/hf/hub"));
        assert_eq!(c.token.as_deref(), Some("hf_old"));
        assert!(c.offline);

        let c = cfg_from(&[
            ("HF_HOME", "/srv/hf"),
            ("HF_HUB_CACHE", "/cache"),
            ("HF_TOKEN", "hf_new"),
            ("HUGGING_FACE_HUB_TOKEN", "hf_old"),
            ("HF_HUB_OFFLINE", "0"),
            ("HF_DATASETS_OFFLINE", "TRUE"),
        ]);
        assert_eq!(c.cache_dir, PathBuf::from("/cache"));
        assert_eq!(c.token.as_deref(), Some("hf_new"));
        assert!(c.offline);

        let c = cfg_from(&[
            ("HF_TOKEN", "hf_x"),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
            ("HF_HUB_OFFLINE", ""),
        ]);
        assert_eq!(c.token, None);
        assert!(!c.offline);
    }

    #[test]
    fn token_file_under_hf_home() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
        let c = cfg_from(&[("HF_HOME", home.path().to_str().unwrap())]);
        assert_eq!(c.token.as_deref(), Some("hf_from_file"));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = cfg_from(&[("HF_TOKEN", "hf_secret_value")]);
        let d = format!("{c:?}");
        assert!(!d.contains("hf_secret_value"), "{d}");
        assert!(d.contains("<redacted>"));
    }

    #[test]
    fn formats_from_names() {
        let f = |n: &str| Format::from_path(Path::new(n));
        assert_eq!(f("data/train-00000-of-00001.parquet"), Some((Format::Parquet, false)));
        assert_eq!(f("a.CSV"), Some((Format::Csv, false)));
        assert_eq!(f("a.tsv.gz"), Some((Format::Tsv, true)));
        assert_eq!(f("a.json"), Some((Format::Json, false)));
        assert_eq!(f("a.jsonl.gz"), Some((Format::JsonLines, true)));
        assert_eq!(f("a.ndjson"), Some((Format::JsonLines, false)));
        assert_eq!(f("a.txt"), None);
        assert_eq!(f("gz"), None);
        assert_eq!(f(".gz"), None);
    }

    #[test]
    fn repo_ids() {
        assert_eq!(RepoId::parse("stanfordnlp/imdb").unwrap().owner, "stanfordnlp");
        assert_eq!(RepoId::parse(" imdb ").unwrap().name, "imdb");
        assert_eq!(RepoId::parse("hf://datasets/a/b").unwrap().full, "a/b");
        for bad in ["", "a/b/c", "a//b", "../x", "a/b c", "a/-b"] {
            let e = RepoId::parse(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(matches!(e, HubError::InvalidRepo { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn urls_encode_revision_and_path() {
        let cfg = cfg_from(&[("HF_ENDPOINT", "http://hub")]);
        let id = RepoId::parse("o/n").unwrap();
        let r = Request { cfg: &cfg, id: &id, subset: None, revision: "main", split: None };
        assert_eq!(
            r.info_url("refs/convert/parquet"),
            "http://hub/api/datasets/o/n/revision/refs%2Fconvert%2Fparquet"
        );
        assert_eq!(
            r.file_url("main", "data/a b.csv"),
            "http://hub/datasets/o/n/resolve/main/data/a%20b.csv"
        );
    }

    /// Lays out a cache as hf-hub writes it: blobs, snapshot symlinks, refs.
    fn fake_cache(root: &Path, repo: &str, revision: &str, commit: &str, files: &[(&str, &str)]) {
        let repo_dir = root.join(format!("datasets--{}", repo.replace('/', "--")));
        for (i, (path, body)) in files.iter().enumerate() {
            let blob = repo_dir.join("blobs").join(format!("etag{i}{commit}"));
            std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
            std::fs::write(&blob, body).unwrap();
            let link = repo_dir.join("snapshots").join(commit).join(path);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&blob, &link).unwrap();
        }
        let r = repo_dir.join("refs").join(revision);
        std::fs::create_dir_all(r.parent().unwrap()).unwrap();
        std::fs::write(r, commit).unwrap();
    }

    fn offline_cfg(cache: &Path) -> HubConfig {
        HubConfig {
            endpoint: "http://hub.invalid".into(),
            token: None,
            cache_dir: cache.to_path_buf(),
            offline: true,
        }
    }

    #[tokio::test]
    async fn offline_with_empty_cache_names_the_cache_path() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = offline_cfg(cache.path());
        let err = fetch_dataset_files(&cfg, "o/n", None, None, None).await.unwrap_err();
        let HubError::Offline { ref cache_path, .. } = err else { panic!("{err}") };
        assert_eq!(cache_path, &cache.path().join("datasets--o--n/refs/main"));
        let msg = err.to_string();
        assert!(msg.contains("o/n") && msg.contains(&cache.path().display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn offline_reads_the_cached_snapshot() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "a".repeat(40);
        fake_cache(
            cache.path(),
            "o/n",
            "main",
            &commit,
            &[("README.md", "# x\n"), ("data/train.csv", "a\n1\n"), ("data/test.csv.gz", "")],
        );
        let cfg = offline_cfg(cache.path());
        let files = fetch_dataset_files(&cfg, "o/n", None, None, None).await.unwrap();
        let got: Vec<(&str, Format, bool)> =
            files.iter().map(|f| (f.split.as_str(), f.format, f.gzip)).collect();
        assert_eq!(got, vec![("train", Format::Csv, false), ("test", Format::Csv, true)]);
        assert_eq!(
            files[0].path,
            cache.path().join(format!("datasets--o--n/snapshots/{commit}/data/train.csv"))
        );
        assert_eq!(std::fs::read_to_string(&files[0].path).unwrap(), "a\n1\n");
        assert_eq!(files[0].origin, "http://hub.invalid/datasets/o/n/resolve/main/data/train.csv");

        // a split that is not cached
        let err =
            fetch_dataset_files(&cfg, "o/n", None, None, Some("validation")).await.unwrap_err();
        assert!(matches!(err, HubError::Offline { .. }), "{err}");
        assert!(err.to_string().contains("cached: train, test"), "{err}");
        // another revision
        let err = fetch_dataset_files(&cfg, "o/n", None, Some("v2"), None).await.unwrap_err();
        let HubError::Offline { cache_path, .. } = err else { panic!() };
        assert!(cache_path.ends_with("datasets--o--n/refs/v2"));
    }

    #[tokio::test]
    async fn offline_uses_a_cached_parquet_conversion() {
        let cache = tempfile::tempdir().unwrap();
        fake_cache(cache.path(), "o/script", "main", &"b".repeat(40), &[("script.py", "")]);
        fake_cache(
            cache.path(),
            "o/script",
            "refs/convert/parquet",
            &"c".repeat(40),
            &[("default/train/0000.parquet", ""), ("default/test/0000.parquet", "")],
        );
        let cfg = offline_cfg(cache.path());
        let files = fetch_dataset_files(&cfg, "o/script", None, None, Some("test")).await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].split, "test");
        assert_eq!(files[0].format, Format::Parquet);
        assert!(files[0]
            .origin
            .ends_with("/resolve/refs%2Fconvert%2Fparquet/default/test/0000.parquet"));

        let err =
            fetch_dataset_files(&cfg, "o/script", Some("other"), None, None).await.unwrap_err();
        assert!(matches!(err, HubError::Offline { .. }), "{err}");
    }

    #[tokio::test]
    async fn offline_subset_dirs() {
        let cache = tempfile::tempdir().unwrap();
        fake_cache(
            cache.path(),
            "o/multi",
            "main",
            &"d".repeat(40),
            &[("en/train.jsonl", "{}\n"), ("fr/train.jsonl", "{}\n")],
        );
        let cfg = offline_cfg(cache.path());
        let files = fetch_dataset_files(&cfg, "o/multi", Some("fr"), None, None).await.unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].path.ends_with("fr/train.jsonl"));
        assert_eq!(files[0].format, Format::JsonLines);
        let err = fetch_dataset_files(&cfg, "o/multi", Some("de"), None, None).await.unwrap_err();
        assert!(err.to_string().contains("subset `de` is not cached (cached: en, fr)"), "{err}");
    }

    #[test]
    fn messages_name_the_dataset() {
        let errs = [
            HubError::NotFound {
                repo: "o/n".into(),
                tried: "http://h/api/datasets/o/n/revision/main".into(),
            },
            HubError::Unauthorized {
                repo: "o/n".into(),
                url: "http://h/x".into(),
                token_sent: true,
            },
            HubError::NoDataFiles { repo: "o/n".into(), files: vec!["README.md".into()] },
            HubError::UnknownSplit {
                repo: "o/n".into(),
                split: "dev".into(),
                available: vec!["train".into()],
            },
        ];
        for e in errs {
            assert!(e.to_string().contains("`o/n`"), "{e}");
        }
    }
}
