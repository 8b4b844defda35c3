//! Where the hub is, the token, the cache and offline mode, from the environment.

use std::fmt;
use std::path::PathBuf;

use crate::error::RepoKind;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where the hub is and how to use it: built once from the environment at startup and
/// shared by every crate that talks to the Hub, so all of them see the same token and cache.
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

    /// The cache folder of a repo, as `huggingface_hub` names it:
    /// `{cache_dir}/datasets--{owner}--{name}` or `{cache_dir}/models--{owner}--{name}`
    /// (`models--{name}` for ids without owner).
    pub fn repo_cache_dir(&self, kind: RepoKind, repo: &str) -> PathBuf {
        self.cache_dir.join(format!("{}s--{}", kind.name(), repo.trim().replace('/', "--")))
    }

    /// The token to send, if any (never an empty one).
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// An hf-hub client for this endpoint, cache and token (two attempts per request).
    pub(crate) fn client(&self) -> Result<hf_hub::HFClient, hf_hub::HFError> {
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
    pub(crate) fn scrub(&self, msg: &str) -> String {
        match self.token() {
            Some(t) if t.len() >= 4 => msg.replace(t, "<redacted>"),
            _ => msg.to_string(),
        }
    }
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
    fn cache_folders_by_kind() {
        let c = cfg_from(&[("HF_HUB_CACHE", "/c")]);
        assert_eq!(c.repo_cache_dir(RepoKind::Model, "o/n"), PathBuf::from("/c/models--o--n"));
        assert_eq!(c.repo_cache_dir(RepoKind::Model, "gpt2"), PathBuf::from("/c/models--gpt2"));
        assert_eq!(c.repo_cache_dir(RepoKind::Dataset, "o/n"), PathBuf::from("/c/datasets--o--n"));
    }
}
