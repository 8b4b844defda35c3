//! Who the token belongs to, and the repo pushed to: its full id and its creation.

use serde_json::json;

use super::client::{UploadClient, UploadError};
use crate::error::{HubError, RepoKind};
use crate::repo::RepoId;

/// What [`UploadClient::create_repo`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoCreated {
    /// `namespace/name`.
    pub repo_id: String,
    /// The repo's page.
    pub url: String,
    /// False when it existed already (it keeps its visibility then).
    pub created: bool,
}

/// The full `namespace/name` of a model repo: `wanted` as is when it has a namespace, else
/// under `user`'s (the token owner's). Both parts must be valid Hub names (letters, digits,
/// `-`, `_`, `.`; at most 96 characters; no leading or trailing `-` or `.`, no `--` or `..`).
pub fn resolve_repo_id(wanted: &str, user: &str) -> Result<String, String> {
    let wanted = wanted.trim().trim_matches('/');
    if wanted.is_empty() {
        return Err("`` is not a valid Hub model id: it is empty".into());
    }
    let full =
        if wanted.contains('/') { wanted.to_string() } else { format!("{}/{wanted}", user.trim()) };
    let id = RepoId::parse(RepoKind::Model, &full, &full).map_err(|e| match e {
        HubError::InvalidRepo { reason, .. } => {
            format!("`{full}` is not a valid Hub model id: {reason}")
        }
        other => other.to_string(),
    })?;
    if id.owner.is_empty() {
        return Err(format!("`{full}` is not a valid Hub model id: it has no namespace"));
    }
    Ok(id.full)
}

impl UploadClient {
    /// The token owner's user name (`GET /api/whoami-v2`).
    pub async fn whoami(&self) -> Result<String, UploadError> {
        let action = "checking the token (whoami)";
        let url = format!("{}/api/whoami-v2", self.endpoint());
        let resp =
            self.send(action, &url, &[], || Ok(self.authorized(self.http.get(&url)))).await?;
        let v = self.json(action, &url, resp).await?;
        match v.get("name").and_then(|n| n.as_str()).map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => Ok(name.to_string()),
            None => Err(UploadError::other(action, &url, "the answer names no user (no `name`)")),
        }
    }

    /// Creates model repo `repo_id` (`namespace/name`) for the token owner `user`, private or
    /// not; an existing repo (409) is fine and left as it is.
    pub async fn create_repo(
        &self,
        repo_id: &str,
        private: bool,
        user: &str,
    ) -> Result<RepoCreated, UploadError> {
        let action = format!("creating repo {repo_id}");
        let url = format!("{}/api/repos/create", self.endpoint());
        let body = create_body(repo_id, private, user);
        let resp = self
            .send(&action, &url, &[409], || Ok(self.authorized(self.http.post(&url)).json(&body)))
            .await?;
        let created = resp.status().as_u16() != 409;
        Ok(RepoCreated { repo_id: repo_id.to_string(), url: self.repo_url(repo_id), created })
    }
}

/// The body of `POST /api/repos/create`: the organization only when the namespace is not the
/// user's own.
fn create_body(repo_id: &str, private: bool, user: &str) -> serde_json::Value {
    let (namespace, name) = repo_id.split_once('/').unwrap_or(("", repo_id));
    let mut body = json!({"type": "model", "name": name, "private": private});
    if !namespace.is_empty() && namespace != user {
        body["organization"] = json!(namespace);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_default_to_the_token_owner() {
        assert_eq!(resolve_repo_id("my_model", "alice").unwrap(), "alice/my_model");
        assert_eq!(resolve_repo_id("acme/my_model", "alice").unwrap(), "acme/my_model");
        assert_eq!(resolve_repo_id(" /acme/x/ ", "alice").unwrap(), "acme/x");
        for bad in ["a b", "acme/a/b", "-x", "x..y", ""] {
            let e = resolve_repo_id(bad, "alice").unwrap_err();
            assert!(e.contains("not a valid Hub model id"), "{bad}: {e}");
        }
    }

    #[test]
    fn organization_only_for_another_namespace() {
        assert_eq!(
            create_body("alice/m", true, "alice"),
            json!({"type": "model", "name": "m", "private": true})
        );
        assert_eq!(
            create_body("acme/m", false, "alice"),
            json!({"type": "model", "name": "m", "private": false, "organization": "acme"})
        );
    }
}
