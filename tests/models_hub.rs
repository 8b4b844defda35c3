//! `pgmld_hub::fetch_model_files` against the fake Hugging Face Hub
//! (tests/support/hub.rs): model repos downloaded by the real hf-hub client over HTTP on
//! 127.0.0.1 into a real cache directory, then read back offline. File contents are small
//! stand-ins: nothing here parses weights.

#[path = "support/hub.rs"]
mod hub;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hub::FakeHub;
use pgmld_hub::{fetch_model_files, model_cache_dir, HubConfig, HubError};

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let d = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CONFIG: &str =
    r#"{"architectures": ["DistilBertForSequenceClassification"], "model_type": "distilbert"}"#;

fn cfg(hub: &FakeHub, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: hub.url.clone(),
        token: None,
        cache_dir: cache.to_path_buf(),
        offline: false,
    }
}

/// As pgmld builds it: from environment variables.
fn cfg_from_env(vars: &[(&str, String)]) -> HubConfig {
    let map: HashMap<String, String> =
        vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    HubConfig::from_lookup(|k| map.get(k).cloned())
}

/// Relative paths of the files (following symlinks) under `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if std::fs::metadata(e.path()).unwrap().is_dir() {
                walk(&e.path(), &rel, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

fn index_json(shards: &[&str]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("layer.{i}.weight"), serde_json::json!(s)))
        .collect();
    serde_json::json!({ "metadata": { "total_size": 100 }, "weight_map": map }).to_string()
}

#[tokio::test]
async fn downloads_into_the_cache_layout_then_works_offline() {
    let root = TempDir::new("pgmld-fakehub-models");
    let cache = TempDir::new("pgmld-hf-cache");
    let repo = "acme/tiny-bert";
    FakeHub::put_model(root.path(), repo, "main", "config.json", CONFIG);
    FakeHub::put_model(root.path(), repo, "main", "tokenizer.json", "{\"version\": \"1.0\"}");
    FakeHub::put_model(root.path(), repo, "main", "vocab.txt", "[PAD]\n[UNK]\n");
    FakeHub::put_model(root.path(), repo, "main", "model.safetensors", b"safetensors-bytes");
    FakeHub::put_model(root.path(), repo, "main", "pytorch_model.bin", b"not wanted");
    FakeHub::put_model(root.path(), repo, "main", "tf_model.h5", b"not wanted");
    FakeHub::put_model(root.path(), repo, "main", "onnx/model.onnx", b"not wanted");
    FakeHub::put_model(root.path(), repo, "main", "README.md", "# tiny\n");
    let hub = FakeHub::start(root.path().to_path_buf());

    let dir = fetch_model_files(&cfg(&hub, cache.path()), repo, None).await.unwrap();
    let repo_dir = cache.path().join("models--acme--tiny-bert");
    assert_eq!(model_cache_dir(&cfg(&hub, cache.path()), repo), repo_dir);
    let commit = std::fs::read_to_string(repo_dir.join("refs/main")).unwrap();
    assert_eq!(commit.len(), 40, "{commit:?}");
    assert_eq!(dir, repo_dir.join("snapshots").join(&commit));
    assert_eq!(
        files_in(&dir),
        vec!["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]
    );
    assert_eq!(std::fs::read_to_string(dir.join("config.json")).unwrap(), CONFIG);
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), b"safetensors-bytes");
    // huggingface_hub's layout: snapshot entries are symlinks into blobs/
    let target = std::fs::read_link(dir.join("model.safetensors")).unwrap();
    assert!(dir
        .join(&target)
        .canonicalize()
        .unwrap()
        .starts_with(repo_dir.join("blobs").canonicalize().unwrap()));
    let reqs = hub.requests();
    assert!(reqs.contains(&"GET /api/models/acme/tiny-bert/revision/main".to_string()), "{reqs:?}");
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("HEAD /acme/tiny-bert/resolve/") && r.ends_with("/config.json")),
        "{reqs:?}"
    );
    // weights are LFS files: fetched through the redirect
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /cdn-models/acme/tiny-bert/")
            && r.ends_with("/model.safetensors")),
        "{reqs:?}"
    );
    assert!(
        !reqs.iter().any(|r| r.contains("pytorch_model.bin")
            || r.contains("tf_model")
            || r.contains("README")),
        "{reqs:?}"
    );

    // Again online: the files are cached, only the revision is looked up.
    hub.clear_requests();
    assert_eq!(fetch_model_files(&cfg(&hub, cache.path()), repo, Some("main")).await.unwrap(), dir);
    assert_eq!(hub.requests(), vec!["GET /api/models/acme/tiny-bert/revision/main".to_string()]);

    hub.stop();
    // Offline, configured from the environment as pgmld does.
    let offline = cfg_from_env(&[
        ("HF_ENDPOINT", hub.url.clone()),
        ("HF_HUB_CACHE", cache.path().display().to_string()),
        ("HF_HUB_OFFLINE", "1".into()),
    ]);
    assert!(offline.offline);
    assert_eq!(fetch_model_files(&offline, repo, None).await.unwrap(), dir);
    // Online but the hub is gone: falls back to the cache.
    assert_eq!(fetch_model_files(&cfg(&hub, cache.path()), repo, None).await.unwrap(), dir);

    // Not cached: offline names the repo, the revision and where it looked.
    let err = fetch_model_files(&offline, "acme/other", None).await.unwrap_err();
    let HubError::Offline { ref cache_path, .. } = err else { panic!("{err}") };
    assert_eq!(cache_path, &cache.path().join("models--acme--other/refs/main"));
    let msg = err.to_string();
    assert!(
        msg.contains("acme/other")
            && msg.contains("`main`")
            && msg.contains(&cache.path().display().to_string()),
        "{msg}"
    );
    // Not cached and the hub unreachable: the URL tried and the cache path.
    let err =
        fetch_model_files(&cfg(&hub, cache.path()), "acme/other", Some("v1")).await.unwrap_err();
    let HubError::Network { ref url, .. } = err else { panic!("{err}") };
    assert_eq!(url, &format!("{}/api/models/acme/other/revision/v1", hub.url));
    let msg = err.to_string();
    assert!(msg.contains("`v1`") && msg.contains("models--acme--other/refs/v1"), "{msg}");
}

#[tokio::test]
async fn sharded_safetensors_download_every_shard() {
    let root = TempDir::new("pgmld-fakehub-models");
    let cache = TempDir::new("pgmld-hf-cache");
    let repo = "acme/big";
    let shards = [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ];
    FakeHub::put_model(root.path(), repo, "main", "config.json", CONFIG);
    FakeHub::put_model(root.path(), repo, "main", "tokenizer_config.json", "{}");
    FakeHub::put_model(root.path(), repo, "main", "special_tokens_map.json", "{}");
    FakeHub::put_model(
        root.path(),
        repo,
        "main",
        "model.safetensors.index.json",
        index_json(&[shards[0], shards[1], shards[2], shards[0]]),
    );
    for (i, s) in shards.iter().enumerate() {
        FakeHub::put_model(root.path(), repo, "main", s, format!("shard {i}"));
    }
    // lower in the order of preference: not fetched
    FakeHub::put_model(root.path(), repo, "main", "pytorch_model.bin", b"x");
    let hub = FakeHub::start(root.path().to_path_buf());

    let dir = fetch_model_files(&cfg(&hub, cache.path()), repo, None).await.unwrap();
    let mut want = vec![
        "config.json",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ];
    want.extend(shards);
    want.sort();
    assert_eq!(files_in(&dir), want);
    assert_eq!(std::fs::read_to_string(dir.join(shards[2])).unwrap(), "shard 2");

    // Sharded pytorch weights, on another revision.
    let bin_shards = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"];
    FakeHub::put_model(root.path(), repo, "v2", "config.json", CONFIG);
    FakeHub::put_model(
        root.path(),
        repo,
        "v2",
        "pytorch_model.bin.index.json",
        index_json(&bin_shards),
    );
    for s in bin_shards {
        FakeHub::put_model(root.path(), repo, "v2", s, s);
    }
    let dir2 = fetch_model_files(&cfg(&hub, cache.path()), repo, Some("v2")).await.unwrap();
    assert_ne!(dir2, dir);
    assert_eq!(
        files_in(&dir2),
        vec![
            "config.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
            "pytorch_model.bin.index.json"
        ]
    );
    let commit = std::fs::read_to_string(cache.path().join("models--acme--big/refs/v2")).unwrap();
    assert!(dir2.ends_with(&commit));

    // An index naming a shard the repo lacks.
    FakeHub::put_model(root.path(), "acme/broken", "main", "config.json", CONFIG);
    FakeHub::put_model(
        root.path(),
        "acme/broken",
        "main",
        "model.safetensors.index.json",
        index_json(&["a.safetensors", "b.safetensors"]),
    );
    FakeHub::put_model(root.path(), "acme/broken", "main", "a.safetensors", "a");
    let err = fetch_model_files(&cfg(&hub, cache.path()), "acme/broken", None).await.unwrap_err();
    let HubError::Unusable { ref reason, .. } = err else { panic!("{err}") };
    assert!(reason.contains("`b.safetensors`"), "{err}");

    // Offline: the shards come from the cache.
    hub.stop();
    let mut offline = cfg(&hub, cache.path());
    offline.offline = true;
    assert_eq!(fetch_model_files(&offline, repo, None).await.unwrap(), dir);
    assert_eq!(fetch_model_files(&offline, repo, Some("v2")).await.unwrap(), dir2);
}

#[tokio::test]
async fn pytorch_bin_fallback_and_owner_less_ids() {
    let root = TempDir::new("pgmld-fakehub-models");
    let cache = TempDir::new("pgmld-hf-cache");
    let repo = "distilbert-base-uncased";
    FakeHub::put_model(root.path(), repo, "main", "config.json", CONFIG);
    FakeHub::put_model(root.path(), repo, "main", "vocab.txt", "[PAD]\n");
    FakeHub::put_model(root.path(), repo, "main", "tokenizer.json", "{}");
    FakeHub::put_model(root.path(), repo, "main", "pytorch_model.bin", b"torch-bytes");
    FakeHub::put_model(root.path(), repo, "main", "rust_model.ot", b"x");
    // an owner/name repo next to it: both resolve
    FakeHub::put_model(root.path(), "FacebookAI/roberta-base", "main", "config.json", CONFIG);
    FakeHub::put_model(root.path(), "FacebookAI/roberta-base", "main", "vocab.json", "{}");
    FakeHub::put_model(
        root.path(),
        "FacebookAI/roberta-base",
        "main",
        "merges.txt",
        "#version: 0.2\n",
    );
    FakeHub::put_model(root.path(), "FacebookAI/roberta-base", "main", "model.safetensors", b"w");
    let hub = FakeHub::start(root.path().to_path_buf());

    let dir = fetch_model_files(&cfg(&hub, cache.path()), repo, None).await.unwrap();
    assert!(
        dir.starts_with(cache.path().join("models--distilbert-base-uncased/snapshots")),
        "{}",
        dir.display()
    );
    assert_eq!(
        files_in(&dir),
        vec!["config.json", "pytorch_model.bin", "tokenizer.json", "vocab.txt"]
    );
    assert_eq!(std::fs::read(dir.join("pytorch_model.bin")).unwrap(), b"torch-bytes");
    let reqs = hub.requests();
    assert!(
        reqs.contains(&"GET /api/models/distilbert-base-uncased/revision/main".to_string()),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().any(|r| r.starts_with("HEAD /distilbert-base-uncased/resolve/")),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /cdn-models/distilbert-base-uncased/")
            && r.ends_with("/pytorch_model.bin")),
        "{reqs:?}"
    );

    let dir =
        fetch_model_files(&cfg(&hub, cache.path()), "FacebookAI/roberta-base", None).await.unwrap();
    assert!(dir.starts_with(cache.path().join("models--FacebookAI--roberta-base/snapshots")));
    assert_eq!(
        files_in(&dir),
        vec!["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    );

    hub.stop();
    let mut offline = cfg(&hub, cache.path());
    offline.offline = true;
    let cached = fetch_model_files(&offline, repo, None).await.unwrap();
    assert!(cached.join("pytorch_model.bin").is_file());
}

#[tokio::test]
async fn missing_repo_or_revision_names_what_was_tried() {
    let root = TempDir::new("pgmld-fakehub-models");
    let cache = TempDir::new("pgmld-hf-cache");
    FakeHub::put_model(root.path(), "acme/tiny", "main", "config.json", CONFIG);
    FakeHub::put_model(root.path(), "acme/tiny", "main", "model.safetensors", "w");
    let hub = FakeHub::start(root.path().to_path_buf());
    let c = cfg(&hub, cache.path());

    let err = fetch_model_files(&c, "nobody/nothing", None).await.unwrap_err();
    let HubError::NotFound { ref repo, ref tried, .. } = err else { panic!("{err}") };
    assert_eq!(repo, "nobody/nothing");
    assert_eq!(tried, &format!("{}/api/models/nobody/nothing/revision/main", hub.url));
    let msg = err.to_string();
    assert!(msg.contains("model `nobody/nothing`") && msg.contains(&hub.url), "{msg}");

    let err = fetch_model_files(&c, "gpt-nothing", None).await.unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err}");

    // a dataset of that name is no model
    FakeHub::put(root.path(), "acme/reviews", "main", "train.csv", "a\n1\n");
    let err = fetch_model_files(&c, "acme/reviews", None).await.unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err}");

    let err = fetch_model_files(&c, "acme/tiny", Some("v9")).await.unwrap_err();
    let HubError::RevisionNotFound { ref revision, ref tried, .. } = err else { panic!("{err}") };
    assert_eq!(revision, "v9");
    assert!(tried.ends_with("/api/models/acme/tiny/revision/v9"), "{tried}");

    let err = fetch_model_files(&c, "acme/tiny/extra", None).await.unwrap_err();
    assert!(matches!(err, HubError::InvalidRepo { .. }), "{err}");
}

#[tokio::test]
async fn token_required() {
    let root = TempDir::new("pgmld-fakehub-models");
    let cache = TempDir::new("pgmld-hf-cache");
    FakeHub::put_model(root.path(), "acme/private", "main", "config.json", CONFIG);
    FakeHub::put_model(root.path(), "acme/private", "main", "model.safetensors", "w");
    let secret = "hf_SecretToken0123456789";
    let hub = FakeHub::start(root.path().to_path_buf()).with_token(secret);

    // no token
    let mut c = cfg(&hub, cache.path());
    let err = fetch_model_files(&c, "acme/private", None).await.unwrap_err();
    let HubError::Unauthorized { token_sent, ref url, .. } = err else { panic!("{err}") };
    assert!(!token_sent);
    assert!(url.contains("/api/models/acme/private"), "{url}");
    assert!(err.to_string().contains("set HF_TOKEN"), "{err}");

    // a wrong token: refused, and never shown
    let wrong = "hf_WrongToken9876543210";
    c.token = Some(wrong.to_string());
    let err = fetch_model_files(&c, "acme/private", None).await.unwrap_err();
    let HubError::Unauthorized { token_sent, .. } = err else { panic!("{err}") };
    assert!(token_sent);
    let msg = err.to_string();
    let dbg = format!("{err:?}");
    assert!(!msg.contains(wrong) && !dbg.contains(wrong) && !msg.contains(secret), "{msg}");
    let sql: pgmld_sql::SqlError = err.into();
    assert_eq!(sql.code, "42501");

    // the right one
    c.token = Some(secret.to_string());
    let dir = fetch_model_files(&c, "acme/private", None).await.unwrap();
    assert!(dir.join("model.safetensors").is_file());
}

#[tokio::test]
async fn repos_without_config_or_weights_are_clear_errors() {
    let root = TempDir::new("pgmld-fakehub-models");
    let cache = TempDir::new("pgmld-hf-cache");
    FakeHub::put_model(root.path(), "acme/no-weights", "main", "config.json", CONFIG);
    FakeHub::put_model(root.path(), "acme/no-weights", "main", "tokenizer.json", "{}");
    FakeHub::put_model(root.path(), "acme/no-weights", "main", "tf_model.h5", "w");
    FakeHub::put_model(root.path(), "acme/no-config", "main", "model.safetensors", "w");
    FakeHub::put_model(root.path(), "acme/no-config", "main", "README.md", "# x");
    let hub = FakeHub::start(root.path().to_path_buf());
    let c = cfg(&hub, cache.path());

    let err = fetch_model_files(&c, "acme/no-weights", None).await.unwrap_err();
    let HubError::Unusable { ref files, ref reason, ref revision, .. } = err else {
        panic!("{err}")
    };
    assert!(reason.contains("no weights"), "{reason}");
    assert_eq!(revision, "main");
    let mut files = files.clone();
    files.sort();
    assert_eq!(files, vec!["config.json", "tf_model.h5", "tokenizer.json"]);
    let msg = err.to_string();
    assert!(
        msg.contains("acme/no-weights")
            && msg.contains("model.safetensors")
            && msg.contains("tf_model.h5"),
        "{msg}"
    );
    let sql: pgmld_sql::SqlError = err.into();
    assert_eq!(sql.code, "58P01");

    let err = fetch_model_files(&c, "acme/no-config", None).await.unwrap_err();
    assert!(matches!(err, HubError::Unusable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("no config.json") && msg.contains("README.md"), "{msg}");
    // nothing was downloaded for either
    assert!(!hub.requests().iter().any(|r| r.contains("/resolve/")), "{:?}", hub.requests());
}
