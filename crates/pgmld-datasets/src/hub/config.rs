//! Where the hub is, the token, the cache and offline mode, from the environment.

use std::fmt;
use std::path::PathBuf;

use super::DEFAULT_ENDPOINT;

/// Where the hub is and how to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL, no trailing `/` (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Bearer token (`HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, `HF_TOKEN_PATH`, `$HF_HOME/token`).
    /// When `None`, hf-hub may still use an ambient `HF_TOKEN` or token file, unless
    /// `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
    pub token: Option<String>,
    /// The hub cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Cache only, no network (`HF_HUB_OFFLINE=1` or `HF_DATASETS_OFFLINE=1`).
    pub offline: bool,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .finish()
    }
}

impl HubConfig {
    /// From the environment, with the `huggingface_hub` variable names and precedence.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`HubConfig::from_env`], reading variables through `get` (empty values count as unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            match var("XDG_CACHE_HOME") {
                Some(x) => PathBuf::from(x),
                None => PathBuf::from(var("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache"),
            }
            .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let read_token = |p: PathBuf| {
            std::fs::read_to_string(p).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        };
        let token = if var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
            None
        } else {
            var("HF_TOKEN")
                .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
                .or_else(|| var("HF_TOKEN_PATH").and_then(|p| read_token(PathBuf::from(p))))
                .or_else(|| read_token(hf_home.join("token")))
        };
        let truthy = |k: &str| {
            var(k).is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            })
        };
        let offline = truthy("HF_HUB_OFFLINE") || truthy("HF_DATASETS_OFFLINE");
        HubConfig { endpoint, token, cache_dir, offline }
    }

    /// The cache folder of a dataset repo: `{cache_dir}/datasets--{owner}--{name}`.
    pub fn repo_cache_dir(&self, repo: &str) -> PathBuf {
        self.cache_dir.join(format!("datasets--{}", repo.trim().replace('/', "--")))
    }

    pub(super) fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// An hf-hub client for this endpoint, cache and token (two attempts per request).
    pub(super) fn client(&self) -> Result<hf_hub::HFClient, hf_hub::HFError> {
        let mut b = hf_hub::HFClient::builder()
            .endpoint(self.endpoint.clone())
            .cache_dir(self.cache_dir.clone())
            .retry_max_attempts(2);
        if let Some(t) = self.token() {
            b = b.token(t);
        }
        b.build()
    }

    /// Removes the token from a message, should any text ever carry it.
    pub(super) fn scrub(&self, msg: &str) -> String {
        match self.token() {
            Some(t) if t.len() >= 4 => msg.replace(t, "<redacted>"),
            _ => msg.to_string(),
        }
    }
}
