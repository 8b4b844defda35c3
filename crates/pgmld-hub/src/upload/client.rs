//! The Hub client that writes: one endpoint, one token, retries of transient failures, and
//! the errors of each step (never holding the token).

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::config::HubConfig;
use crate::error::error_chain;

/// Why an upload step failed. The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} failed ({url}): {message}")]
pub struct UploadError {
    /// What was being done: `checking the token (whoami)`, `creating repo o/n`, ….
    pub action: String,
    /// The URL requested (without its query string), or the local file read.
    pub url: String,
    /// The HTTP status, when the Hub answered.
    pub status: Option<u16>,
    /// What went wrong: the Hub's message, the network error, or the I/O error.
    pub message: String,
    /// Worth another try (network failure, 408, 429, 5xx).
    pub(super) transient: bool,
}

impl UploadError {
    /// A failure that is not the network's: bad answer, unreadable file, bad repo id.
    pub fn other(
        action: impl Into<String>,
        url: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        UploadError {
            action: action.into(),
            url: url.into(),
            status: None,
            message: message.into(),
            transient: false,
        }
    }

    /// The Hub refused the token (401) or its rights (403).
    pub fn is_auth(&self) -> bool {
        matches!(self.status, Some(401 | 403))
    }

    /// Another try may succeed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// A Hub client that writes: one endpoint, one token (see the module doc).
#[derive(Clone)]
pub struct UploadClient {
    /// The HTTP client (connection pool, timeouts).
    pub(super) http: reqwest::Client,
    /// Endpoint and token, for URLs and scrubbing.
    pub(super) cfg: HubConfig,
    /// Tries per request.
    tries: u32,
    /// The pause before the second try (doubling after).
    backoff: Duration,
}

impl std::fmt::Debug for UploadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadClient")
            .field("endpoint", &self.cfg.endpoint)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl UploadClient {
    /// A client for `endpoint` (no trailing `/` needed) sending `token` as Bearer token.
    pub fn new(endpoint: &str, token: &str) -> Result<Self, UploadError> {
        let cfg = HubConfig {
            endpoint: endpoint.trim().trim_end_matches('/').to_string(),
            token: Some(token.trim().to_string()),
            cache_dir: Default::default(),
            offline: false,
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("pgmld/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| {
                UploadError::other(
                    "setting up the Hub client",
                    &cfg.endpoint,
                    cfg.scrub(&error_chain(&e)),
                )
            })?;
        Ok(UploadClient { http, cfg, tries: 3, backoff: Duration::from_millis(500) })
    }

    /// Tries per request (at least 1) and the pause before the second one (doubling after).
    pub fn with_retries(mut self, tries: u32, backoff: Duration) -> Self {
        self.tries = tries.max(1);
        self.backoff = backoff;
        self
    }

    /// The Hub's base URL.
    pub fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    /// The web page of model repo `repo_id`: `{endpoint}/{repo_id}`.
    pub fn repo_url(&self, repo_id: &str) -> String {
        format!("{}/{repo_id}", self.cfg.endpoint)
    }

    /// Removes the token from a message.
    pub fn scrub(&self, msg: &str) -> String {
        self.cfg.scrub(msg)
    }

    pub(super) fn authorized(&self, rb: RequestBuilder) -> RequestBuilder {
        match self.cfg.token().and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
            Some(mut v) => {
                v.set_sensitive(true);
                rb.header(AUTHORIZATION, v)
            }
            None => rb,
        }
    }

    /// Sends what `build` makes (called again for each try), retrying transient failures.
    /// A status outside 2xx and `accept` is an error carrying the Hub's message.
    pub(super) async fn send(
        &self,
        action: &str,
        url: &str,
        accept: &[u16],
        build: impl Fn() -> Result<RequestBuilder, UploadError>,
    ) -> Result<Response, UploadError> {
        let shown = without_query(url);
        let mut pause = self.backoff;
        let mut attempt = 1;
        loop {
            let err = match build()?.send().await {
                Ok(resp)
                    if resp.status().is_success() || accept.contains(&resp.status().as_u16()) =>
                {
                    return Ok(resp)
                }
                Ok(resp) => self.http_error(action, &shown, resp).await,
                Err(e) => UploadError {
                    action: action.to_string(),
                    url: shown.clone(),
                    status: None,
                    message: self.scrub(&error_chain(&e.without_url())),
                    transient: true,
                },
            };
            if !err.transient || attempt >= self.tries {
                return Err(err);
            }
            tracing::debug!(action, url = %shown, attempt, error = %err.message, "Hub request failed; trying again");
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    /// The error for an answer outside 2xx: status, and the Hub's `X-Error-Message`, JSON
    /// `error` or (the start of) the body.
    pub(super) async fn http_error(&self, action: &str, url: &str, resp: Response) -> UploadError {
        let status = resp.status();
        let header =
            resp.headers().get("x-error-message").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        let detail = header
            .or_else(|| json_error(&body))
            .unwrap_or_else(|| body.chars().take(300).collect());
        let mut message = format!("HTTP {}", status.as_u16());
        if !detail.trim().is_empty() {
            message.push_str(": ");
            message.push_str(detail.trim());
        }
        match status {
            StatusCode::UNAUTHORIZED => message.push_str(" (the token was rejected)"),
            StatusCode::FORBIDDEN => message.push_str(" (the token may not write there)"),
            _ => {}
        }
        let code = status.as_u16();
        UploadError {
            action: action.to_string(),
            url: url.to_string(),
            status: Some(code),
            message: self.scrub(&message),
            transient: code == 408 || code == 429 || status.is_server_error(),
        }
    }

    /// Reads a JSON answer.
    pub(super) async fn json(
        &self,
        action: &str,
        url: &str,
        resp: Response,
    ) -> Result<serde_json::Value, UploadError> {
        let text = resp.text().await.map_err(|e| {
            UploadError::other(
                action,
                without_query(url),
                self.scrub(&error_chain(&e.without_url())),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            UploadError::other(
                action,
                without_query(url),
                format!("the Hub's answer is not JSON: {e}"),
            )
        })
    }
}

/// `url` without `?query` (signed URLs carry credentials there).
pub(super) fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

/// The message of a Hub JSON error body: `{"error": "..."}` or `{"error": {"message": ...}}`.
fn json_error(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    match v.get("error")? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => other.get("message").and_then(|m| m.as_str()).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn errors_and_debug_keep_the_token_out() {
        let c = UploadClient::new("http://hub/", "hf_upload_secret").unwrap();
        assert_eq!(c.endpoint(), "http://hub");
        assert_eq!(c.repo_url("o/n"), "http://hub/o/n");
        assert!(!format!("{c:?}").contains("hf_upload_secret"));
        assert_eq!(c.scrub("bad token hf_upload_secret!"), "bad token <redacted>!");
        assert_eq!(without_query("https://s3/x?X-Amz-Signature=abc"), "https://s3/x");
        assert_eq!(json_error(r#"{"error": "nope"}"#).as_deref(), Some("nope"));
        assert_eq!(json_error(r#"{"error": {"message": "deep"}}"#).as_deref(), Some("deep"));
        assert_eq!(json_error("<html>"), None);
    }

    /// A server answering `whoami` with 503 `fail` times, then 200; 401 for `/401`.
    async fn flaky_server(fail: usize) -> (String, Arc<AtomicUsize>) {
        use axum::http::StatusCode as S;
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/api/whoami-v2",
            axum::routing::get(move |h: axum::http::HeaderMap| {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let auth =
                    h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                async move {
                    if n < fail {
                        (S::SERVICE_UNAVAILABLE, "busy".to_string())
                    } else if auth == "Bearer hf_good" {
                        (S::OK, r#"{"type": "user", "name": "someone"}"#.to_string())
                    } else {
                        (S::UNAUTHORIZED, format!(r#"{{"error": "Invalid token {auth}"}}"#))
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, calls)
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_auth_failures_are_not() {
        let (url, calls) = flaky_server(2).await;
        let c =
            UploadClient::new(&url, "hf_good").unwrap().with_retries(3, Duration::from_millis(10));
        assert_eq!(c.whoami().await.unwrap(), "someone");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let (url, calls) = flaky_server(5).await;
        let c =
            UploadClient::new(&url, "hf_good").unwrap().with_retries(3, Duration::from_millis(10));
        let e = c.whoami().await.unwrap_err();
        assert_eq!((e.status, calls.load(Ordering::SeqCst)), (Some(503), 3), "{e}");
        assert!(e.is_transient());

        let (url, calls) = flaky_server(0).await;
        let c = UploadClient::new(&url, "hf_bad_secret")
            .unwrap()
            .with_retries(3, Duration::from_millis(10));
        let e = c.whoami().await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "401 is final");
        assert!(e.is_auth() && !e.is_transient(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("HTTP 401") && msg.contains("rejected") && msg.contains("whoami"),
            "{msg}"
        );
        assert!(!msg.contains("hf_bad_secret"), "the echoed token is scrubbed: {msg}");

        // nothing listens: a network error, retried, without the token
        let c = UploadClient::new("http://127.0.0.1:9", "hf_bad_secret")
            .unwrap()
            .with_retries(2, Duration::from_millis(1));
        let e = c.whoami().await.unwrap_err();
        assert!(
            e.status.is_none() && e.is_transient() && !e.to_string().contains("hf_bad_secret"),
            "{e}"
        );
    }
}
