//! Hugging Face Hub access for `pgml.tune(model_name => …)`: resolves a *model* repo to a local
//! directory holding what fine-tuning or running a text classifier needs.
//!
//! What `transformers`' `from_pretrained` fetches, for the files it reads:
//! - `config.json` (required);
//! - the tokenizer files the repo has among [`TOKENIZER_FILES`];
//! - the other optional files it has among [`OPTIONAL_FILES`] (`generation_config.json`:
//!   the stop ids and sampling defaults `generate` reads);
//! - the weights, in `transformers`' order of preference ([`WEIGHT_FILES`]): `model.safetensors`,
//!   else `model.safetensors.index.json` and every shard its `weight_map` names, else
//!   `pytorch_model.bin`, else `pytorch_model.bin.index.json` and its shards.
//!
//! Files land in the standard Hugging Face cache as `huggingface_hub` lays it out
//! (`$HF_HUB_CACHE/models--{owner}--{name}/{blobs,snapshots/{commit},refs/{revision}}`, or
//! `models--{name}` for legacy ids without owner such as `distilbert-base-uncased`), and the
//! result is the snapshot directory `snapshots/{commit}`. A cache filled by Python's
//! `huggingface_hub` works as well.
//!
//! The file list comes from the repo info endpoint (`/api/models/{repo}/revision/{rev}`,
//! `siblings`; the tree listing when it has none); files are downloaded by hf-hub through their
//! `resolve` URLs (`{endpoint}/{repo}/resolve/{commit}/{path}`, no `/models/` prefix), pinned to
//! the commit the info names so all files come from one commit, and `refs/{revision}` is
//! written as `huggingface_hub` does.
//!
//! Offline (`HF_HUB_OFFLINE=1`), only the cache is read: `refs/{revision}` (or the revision
//! itself when it is a commit hash) → `snapshots/{commit}`. Online, when the Hub cannot be
//! reached, the cache is used if it holds a usable snapshot (with a warning).
//!
//! The token is only ever sent as an `Authorization` header by hf-hub: no message or log here
//! contains it (messages built from hf-hub errors are scrubbed as well).

use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use hf_hub::{HFClient, HFError, HFRepository, RepoTypeModel};

use super::error::list;
use super::{encode_segment, error_chain, is_commit_hash, walk, HubConfig, HubError, RepoId};

/// The model configuration, required.
pub const CONFIG_FILE: &str = "config.json";
/// Tokenizer files fetched when the repo has them.
pub const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];
/// Other files fetched when the repo has them: `generation_config.json` holds the end ids
/// (Llama 3 lists several) and the sampling defaults text generation uses.
pub const OPTIONAL_FILES: [&str; 1] = ["generation_config.json"];
/// Weight files in order of preference; the `.index.json` ones come with the shards they name.
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];
/// How many files are downloaded at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// Resolves a model repo (`owner/name` or legacy `name`) at `revision` (branch, tag or commit;
/// default `main`) to its snapshot directory in the hub cache, holding `config.json`, the
/// tokenizer files the repo has and its weights (see the module doc). Downloads what is missing,
/// or reads the cache only when offline or when the Hub cannot be reached.
pub async fn fetch_model_files(
    cfg: &HubConfig,
    repo: &str,
    revision: Option<&str>,
) -> Result<PathBuf, HubError> {
    let id = parse_model_id(repo)?;
    let req = ModelRequest {
        cfg,
        id: &id,
        revision: revision.map(str::trim).filter(|r| !r.is_empty()).unwrap_or("main"),
    };
    // `refs/{revision}` is a path in the cache: no way out of it
    if req.revision.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        || req.revision.contains('\\')
    {
        return Err(HubError::ModelRevisionNotFound {
            repo: id.full.clone(),
            revision: req.revision.to_string(),
            tried: "nothing: it is not a valid revision name".into(),
        });
    }
    if cfg.offline {
        return req.offline();
    }
    match req.online().await {
        Err(HubError::ModelNetwork { repo, revision, url, mut message }) => match req.offline() {
            Ok(dir) => {
                tracing::warn!(
                    repo = %id.full, revision = %revision, %url, error = %message,
                    "the Hub is unreachable; using the cached model files"
                );
                Ok(dir)
            }
            Err(cache_err) => {
                if let HubError::ModelOffline { detail, cache_path, .. } = &cache_err {
                    message.push_str(&format!(
                        "; the cache cannot stand in for it either: {detail} ({})",
                        cache_path.display()
                    ));
                }
                Err(HubError::ModelNetwork { repo, revision, url, message })
            }
        },
        other => other,
    }
}

/// The cache folder of a model repo: `{cache_dir}/models--{owner}--{name}` (`models--{name}`
/// without owner), as `huggingface_hub` names it.
pub fn model_cache_dir(cfg: &HubConfig, repo: &str) -> PathBuf {
    cfg.cache_dir.join(format!("models--{}", repo.trim().replace('/', "--")))
}

/// `owner/name` or `name`; an `hf://` prefix is accepted.
fn parse_model_id(repo: &str) -> Result<RepoId, HubError> {
    let trimmed = repo.trim();
    let bare = trimmed.strip_prefix("hf://").unwrap_or(trimmed);
    if bare.starts_with("datasets/") {
        return Err(HubError::InvalidModelRepo {
            repo: repo.to_string(),
            reason: "it names a dataset".into(),
        });
    }
    RepoId::parse(bare).map_err(|e| match e {
        HubError::InvalidRepo { reason, .. } => {
            HubError::InvalidModelRepo { repo: repo.to_string(), reason }
        }
        other => other,
    })
}

/// Which weights a model repo offers, by preference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Weights {
    /// One file: `model.safetensors` or `pytorch_model.bin`.
    Single(&'static str),
    /// An index (`*.index.json`) whose `weight_map` names the shards.
    Sharded(&'static str),
}

impl Weights {
    fn file(&self) -> &'static str {
        match self {
            Weights::Single(f) | Weights::Sharded(f) => f,
        }
    }
}

/// The files to fetch first: config, tokenizer and optional files present, and the weights
/// entry.
/// `Err` is the reason the repo cannot be used.
fn pick(files: &[String]) -> Result<(Vec<&'static str>, Weights), String> {
    let has = |f: &str| files.iter().any(|x| x == f);
    if !has(CONFIG_FILE) {
        return Err(format!("it has no {CONFIG_FILE}"));
    }
    let weights = WEIGHT_FILES
        .iter()
        .find(|f| has(f))
        .map(|f| if f.ends_with(".index.json") { Weights::Sharded(f) } else { Weights::Single(f) })
        .ok_or_else(|| format!("it has no weights (none of {})", WEIGHT_FILES.join(", ")))?;
    let mut wanted = vec![CONFIG_FILE];
    wanted.extend(TOKENIZER_FILES.iter().copied().filter(|f| has(f)));
    wanted.extend(OPTIONAL_FILES.iter().copied().filter(|f| has(f)));
    Ok((wanted, weights))
}

/// The shard files a `*.index.json` names (its `weight_map` values), deduplicated, in order.
fn shards_of_index(index: &str, text: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{index} is not valid JSON: {e}"))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("{index} has no `weight_map` object"))?;
    let mut out: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            return Err(format!("{index}: the shard of `{tensor}` is not a string"));
        };
        let ok = !file.is_empty()
            && !file.starts_with('/')
            && !file.contains('\\')
            && file.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        if !ok {
            return Err(format!("{index}: `{file}` is not a file of the repo"));
        }
        if !out.iter().any(|f| f == file) {
            out.push(file.to_string());
        }
    }
    if out.is_empty() {
        return Err(format!("{index} names no shards"));
    }
    Ok(out)
}

struct ModelRequest<'a> {
    cfg: &'a HubConfig,
    id: &'a RepoId,
    revision: &'a str,
}

impl ModelRequest<'_> {
    fn repo(&self) -> String {
        self.id.full.clone()
    }

    fn info_url(&self) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.cfg.endpoint,
            self.id.full,
            encode_segment(self.revision)
        )
    }

    fn file_url(&self, revision: &str, path: &str) -> String {
        let path: Vec<String> = path.split('/').map(encode_segment).collect();
        format!(
            "{}/{}/resolve/{}/{}",
            self.cfg.endpoint,
            self.id.full,
            encode_segment(revision),
            path.join("/")
        )
    }

    fn unusable(&self, reason: String, files: &[String]) -> HubError {
        HubError::ModelUnusable {
            repo: self.repo(),
            revision: self.revision.to_string(),
            reason,
            files: files.to_vec(),
        }
    }

    fn client(&self) -> Result<HFClient, HubError> {
        self.cfg.client().map_err(|e| HubError::ModelNetwork {
            repo: self.repo(),
            revision: self.revision.to_string(),
            url: self.cfg.endpoint.clone(),
            message: format!("cannot set up the hub client: {}", self.scrub(&error_chain(&e))),
        })
    }

    fn scrub(&self, msg: &str) -> String {
        self.cfg.scrub(msg)
    }

    /// An hf-hub error for a request to `url`; `files` is the repo's file list, when known.
    fn map_hf(&self, e: HFError, url: &str, files: &[String]) -> HubError {
        let repo = self.repo();
        let revision = self.revision.to_string();
        match e {
            HFError::RepoNotFound { .. } => {
                HubError::ModelNotFound { repo, tried: url.to_string() }
            }
            HFError::RevisionNotFound { ref context, .. } => {
                if context.as_ref().and_then(|c| c.error_code.as_deref()) == Some("RepoNotFound") {
                    HubError::ModelNotFound { repo, tried: url.to_string() }
                } else {
                    HubError::ModelRevisionNotFound { repo, revision, tried: url.to_string() }
                }
            }
            HFError::EntryNotFound { ref path, .. } => self.unusable(
                format!("`{path}` is listed but cannot be downloaded (404 at {url})"),
                files,
            ),
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => {
                HubError::ModelUnauthorized {
                    repo,
                    url: url.to_string(),
                    token_sent: self.cfg.token().is_some(),
                }
            }
            HFError::Io(ref io) => HubError::ModelCache {
                repo,
                path: self.cfg.cache_dir.clone(),
                message: self.scrub(&io.to_string()),
            },
            HFError::CacheLockTimeout { ref path } => HubError::ModelCache {
                repo,
                path: path.clone(),
                message: "timed out waiting for the cache lock".into(),
            },
            HFError::Http { ref context } => HubError::ModelNetwork {
                repo,
                revision,
                url: url.to_string(),
                message: self.scrub(&format!(
                    "HTTP {}{}",
                    context.status,
                    context.server_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                )),
            },
            other => HubError::ModelNetwork {
                repo,
                revision,
                url: url.to_string(),
                message: self.scrub(&error_chain(&other)),
            },
        }
    }

    /// The commit `self.revision` points at (when the Hub says) and the repo's files there.
    async fn list_files(
        &self,
        model: &HFRepository<RepoTypeModel>,
    ) -> Result<(Option<String>, Vec<String>), HubError> {
        let url = self.info_url();
        tracing::debug!(repo = %self.id.full, %url, "listing model files");
        let info = model
            .info()
            .revision(self.revision)
            .send()
            .await
            .map_err(|e| self.map_hf(e, &url, &[]))?;
        let sha = info.sha.filter(|s| is_commit_hash(s));
        if let Some(siblings) = info.siblings {
            return Ok((sha, siblings.into_iter().map(|s| s.rfilename).collect()));
        }
        // no siblings in the info: walk the tree
        let rev = sha.clone().unwrap_or_else(|| self.revision.to_string());
        let tree = model
            .list_tree()
            .revision(rev)
            .recursive(true)
            .send()
            .map_err(|e| self.map_hf(e, &url, &[]))?;
        let entries: Vec<hf_hub::repository::RepoTreeEntry> =
            tree.try_collect().await.map_err(|e| self.map_hf(e, &url, &[]))?;
        let files = entries
            .into_iter()
            .filter_map(|e| match e {
                hf_hub::repository::RepoTreeEntry::File { path, .. } => Some(path),
                _ => None,
            })
            .collect();
        Ok((sha, files))
    }

    /// Downloads `paths` at `revision` into the cache, a few at a time.
    async fn download_all(
        &self,
        model: &HFRepository<RepoTypeModel>,
        revision: &str,
        paths: &[String],
        files: &[String],
    ) -> Result<Vec<PathBuf>, HubError> {
        let downloads: Vec<_> = paths
            .iter()
            .map(|path| async move {
                let url = self.file_url(revision, path);
                tracing::debug!(repo = %self.id.full, %url, "fetching model file");
                model
                    .download_file()
                    .filename(path.as_str())
                    .revision(revision)
                    .send()
                    .await
                    .map_err(|e| self.map_hf(e, &url, files))
            })
            .collect();
        stream::iter(downloads).buffered(PARALLEL_DOWNLOADS).try_collect().await
    }

    async fn online(&self) -> Result<PathBuf, HubError> {
        let client = self.client()?;
        let model = client.model(self.id.owner.clone(), self.id.name.clone());
        let (sha, files) = self.list_files(&model).await?;
        let (wanted, weights) = pick(&files).map_err(|reason| self.unusable(reason, &files))?;
        // Pinned to the commit, so every file comes from the same one even if the branch moves.
        let pinned = sha.as_deref().unwrap_or(self.revision);
        let mut first: Vec<String> = wanted.iter().map(|f| f.to_string()).collect();
        first.push(weights.file().to_string());
        let paths = self.download_all(&model, pinned, &first, &files).await?;
        let config = &paths[0];
        let snapshot =
            config.parent().map(Path::to_path_buf).ok_or_else(|| HubError::ModelCache {
                repo: self.repo(),
                path: config.clone(),
                message: "the downloaded config.json has no parent directory".into(),
            })?;
        let mut count = paths.len();
        if let Weights::Sharded(index) = weights {
            let index_path = paths.last().expect("the index was downloaded");
            let text = std::fs::read_to_string(index_path).map_err(|e| HubError::ModelCache {
                repo: self.repo(),
                path: index_path.clone(),
                message: e.to_string(),
            })?;
            let shards =
                shards_of_index(index, &text).map_err(|reason| self.unusable(reason, &files))?;
            if let Some(missing) = shards.iter().find(|s| !files.contains(s)) {
                return Err(self.unusable(
                    format!("{index} names shard `{missing}`, which the repo lacks"),
                    &files,
                ));
            }
            count += self.download_all(&model, pinned, &shards, &files).await?.len();
        }
        if let Some(commit) = sha.as_deref() {
            if !is_commit_hash(self.revision) {
                self.write_ref(commit)?;
            }
        }
        tracing::info!(repo = %self.id.full, revision = self.revision, files = count, dir = %snapshot.display(), "model files ready");
        Ok(snapshot)
    }

    /// Records `refs/{revision}` → `commit`, as `huggingface_hub` does (no trailing newline).
    fn write_ref(&self, commit: &str) -> Result<(), HubError> {
        let path = model_cache_dir(self.cfg, &self.id.full).join("refs").join(self.revision);
        if std::fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        let err = |e: std::io::Error| HubError::ModelCache {
            repo: self.repo(),
            path: path.clone(),
            message: e.to_string(),
        };
        let parent = path.parent().expect("a ref has a parent");
        std::fs::create_dir_all(parent).map_err(err)?;
        let tmp = parent.join(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&tmp, commit).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// The cached snapshot of `self.revision`, checked to hold a usable model.
    fn offline(&self) -> Result<PathBuf, HubError> {
        let repo_dir = model_cache_dir(self.cfg, &self.id.full);
        let not_cached = |path: PathBuf, detail: String| HubError::ModelOffline {
            repo: self.repo(),
            revision: self.revision.to_string(),
            cache_path: path,
            detail,
        };
        let snapshot = if is_commit_hash(self.revision) {
            repo_dir.join("snapshots").join(self.revision)
        } else {
            let ref_path = repo_dir.join("refs").join(self.revision);
            match std::fs::read_to_string(&ref_path) {
                Ok(commit) if is_commit_hash(commit.trim()) => {
                    repo_dir.join("snapshots").join(commit.trim())
                }
                Ok(_) => return Err(not_cached(ref_path, "the ref holds no commit hash".into())),
                Err(_) => {
                    return Err(not_cached(
                        ref_path,
                        format!("revision `{}` has never been downloaded", self.revision),
                    ))
                }
            }
        };
        if !snapshot.is_dir() {
            return Err(not_cached(snapshot, "its snapshot is missing from the cache".into()));
        }
        let mut files = Vec::new();
        walk(&snapshot, "", &mut files).map_err(|e| HubError::ModelCache {
            repo: self.repo(),
            path: snapshot.clone(),
            message: e.to_string(),
        })?;
        files.sort();
        let (_, weights) = pick(&files).map_err(|reason| {
            not_cached(
                snapshot.clone(),
                format!("the cached copy cannot be used: {reason} (cached: {})", list(&files)),
            )
        })?;
        if let Weights::Sharded(index) = weights {
            let index_path = snapshot.join(index);
            let text = std::fs::read_to_string(&index_path).map_err(|e| HubError::ModelCache {
                repo: self.repo(),
                path: index_path.clone(),
                message: e.to_string(),
            })?;
            let shards = shards_of_index(index, &text).map_err(|reason| {
                not_cached(index_path.clone(), format!("the cached copy cannot be used: {reason}"))
            })?;
            let missing: Vec<String> = shards.into_iter().filter(|s| !files.contains(s)).collect();
            if !missing.is_empty() {
                return Err(not_cached(
                    snapshot,
                    format!("shards named by {index} are not cached: {}", list(&missing)),
                ));
            }
        }
        tracing::info!(repo = %self.id.full, revision = self.revision, dir = %snapshot.display(), "model files from the cache");
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Lays out a cache as `huggingface_hub` writes it: blobs, snapshot symlinks, refs.
    fn fake_cache(
        root: &Path,
        repo: &str,
        revision: Option<&str>,
        commit: &str,
        files: &[(&str, &str)],
    ) -> PathBuf {
        let repo_dir = root.join(format!("models--{}", repo.replace('/', "--")));
        for (i, (path, body)) in files.iter().enumerate() {
            let blob = repo_dir.join("blobs").join(format!("etag{i}{commit}"));
            std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
            std::fs::write(&blob, body).unwrap();
            let link = repo_dir.join("snapshots").join(commit).join(path);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&blob, &link).unwrap();
        }
        if let Some(revision) = revision {
            let r = repo_dir.join("refs").join(revision);
            std::fs::create_dir_all(r.parent().unwrap()).unwrap();
            std::fs::write(r, commit).unwrap();
        }
        repo_dir.join("snapshots").join(commit)
    }

    fn offline_cfg(cache: &Path) -> HubConfig {
        HubConfig {
            endpoint: "http://hub.invalid".into(),
            token: None,
            cache_dir: cache.to_path_buf(),
            offline: true,
        }
    }

    const INDEX: &str = r#"{"metadata": {"total_size": 8}, "weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors",
        "c.weight": "model-00001-of-00002.safetensors"}}"#;

    #[test]
    fn picks_config_tokenizer_and_preferred_weights() {
        let (wanted, w) = pick(&strings(&[
            "config.json",
            "vocab.txt",
            "tokenizer.json",
            "README.md",
            "generation_config.json",
            "pytorch_model.bin",
            "model.safetensors",
            "tf_model.h5",
        ]))
        .unwrap();
        assert_eq!(
            wanted,
            vec!["config.json", "tokenizer.json", "vocab.txt", "generation_config.json"]
        );
        assert_eq!(w, Weights::Single("model.safetensors"));
        let (_, w) =
            pick(&strings(&["config.json", "pytorch_model.bin", "model.safetensors.index.json"]))
                .unwrap();
        assert_eq!(w, Weights::Sharded("model.safetensors.index.json"));
        let (_, w) =
            pick(&strings(&["config.json", "pytorch_model.bin.index.json", "pytorch_model.bin"]))
                .unwrap();
        assert_eq!(w, Weights::Single("pytorch_model.bin"));
        let (_, w) = pick(&strings(&["config.json", "pytorch_model.bin.index.json"])).unwrap();
        assert_eq!(w, Weights::Sharded("pytorch_model.bin.index.json"));
        assert_eq!(pick(&strings(&["model.safetensors"])).unwrap_err(), "it has no config.json");
        let e = pick(&strings(&["config.json", "tf_model.h5"])).unwrap_err();
        assert!(e.starts_with("it has no weights") && e.contains("pytorch_model.bin"), "{e}");
    }

    #[test]
    fn shards_from_an_index() {
        assert_eq!(
            shards_of_index("model.safetensors.index.json", INDEX).unwrap(),
            strings(&["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        );
        for bad in [
            "not json",
            "{}",
            r#"{"weight_map": {}}"#,
            r#"{"weight_map": {"a": 1}}"#,
            r#"{"weight_map": {"a": "../x.bin"}}"#,
            r#"{"weight_map": {"a": "/etc/passwd"}}"#,
        ] {
            assert!(shards_of_index("i.json", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_ids_and_urls() {
        let id = parse_model_id("distilbert-base-uncased").unwrap();
        assert_eq!((id.owner.as_str(), id.name.as_str()), ("", "distilbert-base-uncased"));
        let id = parse_model_id(" hf://google-bert/bert-base-uncased ").unwrap();
        assert_eq!(id.full, "google-bert/bert-base-uncased");
        for bad in ["", "a/b/c", "hf://datasets/a/b", "a b", "../x"] {
            let e = parse_model_id(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(matches!(e, HubError::InvalidModelRepo { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("model id"), "{e}");
        }
        let cfg = HubConfig {
            endpoint: "http://hub".into(),
            token: None,
            cache_dir: "/c".into(),
            offline: false,
        };
        let id = parse_model_id("o/n").unwrap();
        let r = ModelRequest { cfg: &cfg, id: &id, revision: "refs/pr/1" };
        assert_eq!(r.info_url(), "http://hub/api/models/o/n/revision/refs%2Fpr%2F1");
        assert_eq!(r.file_url("main", "sub/a b.bin"), "http://hub/o/n/resolve/main/sub/a%20b.bin");
        assert_eq!(model_cache_dir(&cfg, "o/n"), PathBuf::from("/c/models--o--n"));
        assert_eq!(model_cache_dir(&cfg, "gpt2"), PathBuf::from("/c/models--gpt2"));
    }

    #[tokio::test]
    async fn offline_reads_a_huggingface_hub_cache() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "a".repeat(40);
        let snap = fake_cache(
            cache.path(),
            "o/bert",
            Some("main"),
            &commit,
            &[("config.json", "{}"), ("vocab.txt", "[PAD]\n"), ("model.safetensors", "w")],
        );
        let cfg = offline_cfg(cache.path());
        let dir = fetch_model_files(&cfg, "o/bert", None).await.unwrap();
        assert_eq!(dir, cache.path().join(format!("models--o--bert/snapshots/{commit}")));
        assert_eq!(dir, snap);
        assert_eq!(std::fs::read_to_string(dir.join("vocab.txt")).unwrap(), "[PAD]\n");
        // by commit hash, no ref needed
        let dir = fetch_model_files(&cfg, "o/bert", Some(&commit)).await.unwrap();
        assert_eq!(dir, snap);
    }

    #[tokio::test]
    async fn offline_owner_less_and_other_revisions() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "b".repeat(40);
        fake_cache(
            cache.path(),
            "distilbert-base-uncased",
            Some("v1"),
            &commit,
            &[("config.json", "{}"), ("pytorch_model.bin", "w")],
        );
        let cfg = offline_cfg(cache.path());
        let dir = fetch_model_files(&cfg, "distilbert-base-uncased", Some("v1")).await.unwrap();
        assert!(
            dir.ends_with(format!("models--distilbert-base-uncased/snapshots/{commit}")),
            "{}",
            dir.display()
        );
        // `main` was never fetched
        let err = fetch_model_files(&cfg, "distilbert-base-uncased", None).await.unwrap_err();
        let HubError::ModelOffline { ref cache_path, ref revision, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(cache_path, &cache.path().join("models--distilbert-base-uncased/refs/main"));
        assert_eq!(revision, "main");
        let msg = err.to_string();
        assert!(
            msg.contains("model `distilbert-base-uncased`")
                && msg.contains("revision `main`")
                && msg.contains(&cache.path().display().to_string()),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn revisions_stay_inside_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = offline_cfg(cache.path());
        for bad in ["../../etc", "a//b", "/abs", "refs/..", "a\\b"] {
            let err = fetch_model_files(&cfg, "o/n", Some(bad)).await.unwrap_err();
            assert!(matches!(err, HubError::ModelRevisionNotFound { .. }), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn offline_with_empty_cache_or_missing_snapshot() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = offline_cfg(cache.path());
        let err = fetch_model_files(&cfg, "o/n", Some("dev")).await.unwrap_err();
        let HubError::ModelOffline { cache_path, .. } = err else { panic!("{err}") };
        assert_eq!(cache_path, cache.path().join("models--o--n/refs/dev"));

        let commit = "c".repeat(40);
        let refs = cache.path().join("models--o--n/refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("main"), &commit).unwrap();
        let err = fetch_model_files(&cfg, "o/n", None).await.unwrap_err();
        let HubError::ModelOffline { cache_path, detail, .. } = err else { panic!() };
        assert_eq!(cache_path, cache.path().join(format!("models--o--n/snapshots/{commit}")));
        assert!(detail.contains("snapshot is missing"), "{detail}");
    }

    #[tokio::test]
    async fn offline_incomplete_snapshots() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = offline_cfg(cache.path());
        // only the config was cached (e.g. by AutoConfig)
        fake_cache(
            cache.path(),
            "o/cfg-only",
            Some("main"),
            &"d".repeat(40),
            &[("config.json", "{}"), ("vocab.txt", "")],
        );
        let err = fetch_model_files(&cfg, "o/cfg-only", None).await.unwrap_err();
        assert!(matches!(err, HubError::ModelOffline { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("no weights") && msg.contains("cached: config.json, vocab.txt"),
            "{msg}"
        );

        fake_cache(
            cache.path(),
            "o/no-config",
            Some("main"),
            &"e".repeat(40),
            &[("model.safetensors", "")],
        );
        let err = fetch_model_files(&cfg, "o/no-config", None).await.unwrap_err();
        assert!(err.to_string().contains("no config.json"), "{err}");
    }

    #[tokio::test]
    async fn offline_sharded_weights() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = offline_cfg(cache.path());
        let commit = "f".repeat(40);
        let snap = fake_cache(
            cache.path(),
            "o/big",
            Some("main"),
            &commit,
            &[
                ("config.json", "{}"),
                ("model.safetensors.index.json", INDEX),
                ("model-00001-of-00002.safetensors", "1"),
                ("model-00002-of-00002.safetensors", "2"),
            ],
        );
        assert_eq!(fetch_model_files(&cfg, "o/big", None).await.unwrap(), snap);

        fake_cache(
            cache.path(),
            "o/partial",
            Some("main"),
            &commit,
            &[
                ("config.json", "{}"),
                ("model.safetensors.index.json", INDEX),
                ("model-00001-of-00002.safetensors", "1"),
            ],
        );
        let err = fetch_model_files(&cfg, "o/partial", None).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, HubError::ModelOffline { .. }), "{msg}");
        assert!(
            msg.contains("model-00002-of-00002.safetensors") && !msg.contains("model-00001-of"),
            "{msg}"
        );
    }

    #[test]
    fn messages_name_the_model_and_map_to_sqlstates() {
        let cases: Vec<(HubError, &str)> = vec![
            (
                HubError::ModelNotFound {
                    repo: "o/n".into(),
                    tried: "http://h/api/models/o/n/revision/main".into(),
                },
                "58P01",
            ),
            (
                HubError::ModelRevisionNotFound {
                    repo: "o/n".into(),
                    revision: "v9".into(),
                    tried: "http://h/x".into(),
                },
                "58P01",
            ),
            (
                HubError::ModelUnauthorized {
                    repo: "o/n".into(),
                    url: "http://h/x".into(),
                    token_sent: false,
                },
                "42501",
            ),
            (
                HubError::ModelUnusable {
                    repo: "o/n".into(),
                    revision: "main".into(),
                    reason: "it has no config.json".into(),
                    files: strings(&["README.md"]),
                },
                "58P01",
            ),
            (
                HubError::ModelOffline {
                    repo: "o/n".into(),
                    revision: "main".into(),
                    cache_path: "/c/models--o--n/refs/main".into(),
                    detail: "x".into(),
                },
                "58P01",
            ),
            (
                HubError::ModelNetwork {
                    repo: "o/n".into(),
                    revision: "main".into(),
                    url: "http://h/x".into(),
                    message: "down".into(),
                },
                "58000",
            ),
            (
                HubError::ModelCache { repo: "o/n".into(), path: "/c".into(), message: "x".into() },
                "58030",
            ),
            (HubError::InvalidModelRepo { repo: "o/n".into(), reason: "x".into() }, "22023"),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            assert!(msg.contains("`o/n`") && !msg.contains("dataset"), "{msg}");
            let sql: pgmld_sql::SqlError = e.into();
            assert_eq!(sql.code, code, "{msg}");
        }
    }
}
