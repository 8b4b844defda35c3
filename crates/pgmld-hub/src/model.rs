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

use crate::cache::{self, is_commit_hash, Snapshot};
use crate::config::HubConfig;
use crate::error::{short_list, HubError, RepoKind};
use crate::remote::RemoteRepo;
use crate::repo::RepoId;

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
/// Resolves a model repo (`owner/name` or legacy `name`) at `revision` (branch, tag or commit;
/// default `main`) to its snapshot directory in the hub cache, holding `config.json`, the
/// tokenizer files the repo has and its weights (see the module doc). Downloads what is missing,
/// or reads the cache only when offline or when the Hub cannot be reached.
pub async fn fetch_model_files(
    cfg: &HubConfig,
    repo: &str,
    revision: Option<&str>,
) -> Result<PathBuf, HubError> {
    let id = RepoId::model(repo)?;
    let req = ModelRequest {
        cfg,
        id: &id,
        revision: revision.map(str::trim).filter(|r| !r.is_empty()).unwrap_or("main"),
    };
    cache::check_revision(&id, req.revision)?;
    if cfg.offline {
        return req.offline();
    }
    match req.online().await {
        Err(HubError::Network { kind, repo, revision, url, mut message }) => match req.offline() {
            Ok(dir) => {
                tracing::warn!(
                    repo = %id.full, revision = %revision, %url, error = %message,
                    "the Hub is unreachable; using the cached model files"
                );
                Ok(dir)
            }
            Err(cache_err) => {
                if let HubError::Offline { detail, cache_path, .. } = &cache_err {
                    message.push_str(&format!(
                        "; the cache cannot stand in for it either: {detail} ({})",
                        cache_path.display()
                    ));
                }
                Err(HubError::Network { kind, repo, revision, url, message })
            }
        },
        other => other,
    }
}

/// The cache folder of a model repo: `{cache_dir}/models--{owner}--{name}` (`models--{name}`
/// without owner), as `huggingface_hub` names it.
pub fn model_cache_dir(cfg: &HubConfig, repo: &str) -> PathBuf {
    cfg.repo_cache_dir(RepoKind::Model, repo)
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

/// One model asked for at one revision.
struct ModelRequest<'a> {
    cfg: &'a HubConfig,
    id: &'a RepoId,
    revision: &'a str,
}

impl ModelRequest<'_> {
    fn unusable(&self, reason: String, files: &[String]) -> HubError {
        HubError::Unusable {
            kind: RepoKind::Model,
            repo: self.id.full.clone(),
            revision: self.revision.to_string(),
            reason,
            files: files.to_vec(),
        }
    }

    fn cache_error(&self, path: &Path, e: std::io::Error) -> HubError {
        HubError::Cache {
            kind: RepoKind::Model,
            repo: self.id.full.clone(),
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    async fn online(&self) -> Result<PathBuf, HubError> {
        let remote = RemoteRepo::open(self.cfg, self.id, self.revision)?;
        let (sha, files) = remote.list_files(self.revision).await?;
        let (wanted, weights) = pick(&files).map_err(|reason| self.unusable(reason, &files))?;
        // Pinned to the commit, so every file comes from the same one even if the branch moves.
        let pinned = sha.as_deref().unwrap_or(self.revision);
        let mut first: Vec<String> = wanted.iter().map(|f| f.to_string()).collect();
        first.push(weights.file().to_string());
        let paths = remote.download_all(pinned, &first, &files).await?;
        let config = &paths[0];
        let snapshot = config.parent().map(Path::to_path_buf).ok_or_else(|| HubError::Cache {
            kind: RepoKind::Model,
            repo: self.id.full.clone(),
            path: config.clone(),
            message: "the downloaded config.json has no parent directory".into(),
        })?;
        let mut count = paths.len();
        if let (Weights::Sharded(index), Some(index_path)) = (&weights, paths.last()) {
            let text =
                std::fs::read_to_string(index_path).map_err(|e| self.cache_error(index_path, e))?;
            let shards =
                shards_of_index(index, &text).map_err(|reason| self.unusable(reason, &files))?;
            if let Some(missing) = shards.iter().find(|s| !files.contains(s)) {
                return Err(self.unusable(
                    format!("{index} names shard `{missing}`, which the repo lacks"),
                    &files,
                ));
            }
            count += remote.download_all(pinned, &shards, &files).await?.len();
        }
        if let Some(commit) = sha.as_deref() {
            if !is_commit_hash(self.revision) {
                cache::write_ref(self.cfg, self.id, self.revision, commit)?;
            }
        }
        tracing::info!(repo = %self.id.full, revision = self.revision, files = count, dir = %snapshot.display(), "model files ready");
        Ok(snapshot)
    }

    /// The cached snapshot of `self.revision`, checked to hold a usable model.
    fn offline(&self) -> Result<PathBuf, HubError> {
        let Snapshot { dir: snapshot, files } =
            cache::cached_snapshot(self.cfg, self.id, self.revision)?;
        let not_cached =
            |path: PathBuf, detail: String| cache::offline(self.id, self.revision, path, detail);
        let (_, weights) = pick(&files).map_err(|reason| {
            not_cached(
                snapshot.clone(),
                format!(
                    "the cached copy cannot be used: {reason} (cached: {})",
                    short_list(&files)
                ),
            )
        })?;
        if let Weights::Sharded(index) = weights {
            let index_path = snapshot.join(index);
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| self.cache_error(&index_path, e))?;
            let shards = shards_of_index(index, &text).map_err(|reason| {
                not_cached(index_path.clone(), format!("the cached copy cannot be used: {reason}"))
            })?;
            let missing: Vec<String> = shards.into_iter().filter(|s| !files.contains(s)).collect();
            if !missing.is_empty() {
                return Err(not_cached(
                    snapshot,
                    format!("shards named by {index} are not cached: {}", short_list(&missing)),
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

    /// A model cache laid out by hand (see [`crate::cache::testing::fake_cache`]).
    fn fake_cache(
        root: &Path,
        repo: &str,
        revision: Option<&str>,
        commit: &str,
        files: &[(&str, &str)],
    ) -> PathBuf {
        crate::cache::testing::fake_cache(root, RepoKind::Model, repo, revision, commit, files)
    }

    use crate::cache::testing::offline_config as offline_cfg;

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
    fn model_cache_folders() {
        let cfg = HubConfig {
            endpoint: "http://hub".into(),
            token: None,
            cache_dir: "/c".into(),
            offline: false,
        };
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
        let HubError::Offline { ref cache_path, ref revision, .. } = err else { panic!("{err}") };
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
            assert!(matches!(err, HubError::RevisionNotFound { .. }), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn offline_with_empty_cache_or_missing_snapshot() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = offline_cfg(cache.path());
        let err = fetch_model_files(&cfg, "o/n", Some("dev")).await.unwrap_err();
        let HubError::Offline { cache_path, .. } = err else { panic!("{err}") };
        assert_eq!(cache_path, cache.path().join("models--o--n/refs/dev"));

        let commit = "c".repeat(40);
        let refs = cache.path().join("models--o--n/refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("main"), &commit).unwrap();
        let err = fetch_model_files(&cfg, "o/n", None).await.unwrap_err();
        let HubError::Offline { cache_path, detail, .. } = err else { panic!() };
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
        assert!(matches!(err, HubError::Offline { .. }), "{err}");
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
        assert!(matches!(err, HubError::Offline { .. }), "{msg}");
        assert!(
            msg.contains("model-00002-of-00002.safetensors") && !msg.contains("model-00001-of"),
            "{msg}"
        );
    }

    #[test]
    fn messages_name_the_model_and_map_to_sqlstates() {
        let cases: Vec<(HubError, &str)> = vec![
            (
                HubError::NotFound {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    tried: "http://h/api/models/o/n/revision/main".into(),
                },
                "58P01",
            ),
            (
                HubError::RevisionNotFound {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    revision: "v9".into(),
                    tried: "http://h/x".into(),
                },
                "58P01",
            ),
            (
                HubError::Unauthorized {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    url: "http://h/x".into(),
                    token_sent: false,
                },
                "42501",
            ),
            (
                HubError::Unusable {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    revision: "main".into(),
                    reason: "it has no config.json".into(),
                    files: strings(&["README.md"]),
                },
                "58P01",
            ),
            (
                HubError::Offline {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    revision: "main".into(),
                    cache_path: "/c/models--o--n/refs/main".into(),
                    detail: "x".into(),
                },
                "58P01",
            ),
            (
                HubError::Network {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    revision: "main".into(),
                    url: "http://h/x".into(),
                    message: "down".into(),
                },
                "58000",
            ),
            (
                HubError::Cache {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    path: "/c".into(),
                    message: "x".into(),
                },
                "58030",
            ),
            (
                HubError::InvalidRepo {
                    kind: RepoKind::Model,
                    repo: "o/n".into(),
                    reason: "x".into(),
                },
                "22023",
            ),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            assert!(msg.contains("`o/n`") && !msg.contains("dataset"), "{msg}");
            let sql: pgmld_sql::SqlError = e.into();
            assert_eq!(sql.code, code, "{msg}");
        }
    }
}
