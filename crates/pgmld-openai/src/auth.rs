//! Bearer-token authentication, as OpenAI's API does it: `Authorization: Bearer <key>`.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Error};

/// The keys the endpoint accepts. Empty means no authentication (an explicit choice in the
/// configuration, never the default).
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<String>,
}

impl std::fmt::Debug for ApiKeys {
    /// Never shows the keys themselves, only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// The accepted keys, trimmed. A blank key is refused: it is a configuration mistake
    /// that must neither open the endpoint nor match an empty token.
    pub fn new(keys: impl IntoIterator<Item = String>) -> Result<Self, Error> {
        let keys: Vec<String> = keys.into_iter().map(|k| k.trim().to_string()).collect();
        if keys.iter().any(String::is_empty) {
            return Err(Error::BlankApiKey);
        }
        Ok(ApiKeys { keys })
    }

    /// Whether every request is let in.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a request's headers: 401 (OpenAI's wording) without a bearer token or with
    /// one that is not configured. Keys are compared in constant time.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
        let token = match value {
            Some(v) => match v.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => return Err(ApiError::missing_key()),
            },
            None => return Err(ApiError::missing_key()),
        };
        if token.is_empty() {
            return Err(ApiError::missing_key());
        }
        // Look at every key so the time taken does not tell which one nearly matched.
        let matched = self
            .keys
            .iter()
            .fold(0u8, |acc, k| acc | k.as_bytes().ct_eq(token.as_bytes()).unwrap_u8());
        if matched == 1 {
            Ok(())
        } else {
            Err(ApiError::wrong_key())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn accepts_configured_keys_only() {
        let keys = ApiKeys::new(["sk-one".to_string(), "sk-two".to_string()]).unwrap();
        assert!(keys.check(&headers(Some("Bearer sk-one"))).is_ok());
        assert!(
            keys.check(&headers(Some("bearer  sk-two "))).is_ok(),
            "scheme is case-insensitive"
        );
        let wrong = keys.check(&headers(Some("Bearer sk-three"))).unwrap_err();
        assert_eq!(
            (wrong.status, wrong.code.as_deref()),
            (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
        );
        assert!(keys.check(&headers(Some("Bearer sk-on"))).is_err(), "a prefix is not the key");
        for missing in [None, Some("Bearer "), Some("Basic c2stb25lOg=="), Some("sk-one")] {
            let e = keys.check(&headers(missing)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{missing:?}");
            assert!(e.message.contains("didn't provide an API key"), "{missing:?}: {}", e.message);
        }
    }

    #[test]
    fn no_keys_means_open_and_blank_keys_are_refused() {
        assert!(ApiKeys::new(Vec::new()).unwrap().check(&headers(None)).is_ok());
        assert!(matches!(
            ApiKeys::new(["ok".to_string(), " ".to_string()]),
            Err(Error::BlankApiKey)
        ));
        let keys = ApiKeys::new(["sk-secret".to_string()]).unwrap();
        assert_eq!(format!("{keys:?}"), "ApiKeys(1 keys)");
    }
}
