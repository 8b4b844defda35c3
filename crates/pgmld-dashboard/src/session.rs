//! Who is looking: a Postgres role logs in with its own password, which the upstream checks
//! (pgmld never decides whether a password is right), and gets a random session token in
//! an HttpOnly cookie. Only the role and database are kept; the password is dropped as
//! soon as the upstream has answered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use pgmld_upstream::Upstream;
use rand::RngCore;

/// The cookie that carries the session token.
pub const COOKIE: &str = "pgmld_dashboard";

/// How long a login attempt may take before it counts as an unreachable upstream.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A logged-in role, as a page sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The Postgres role that logged in.
    pub role: String,
    /// The database whose `pgml` schema it looks at.
    pub database: String,
}

/// The live sessions of one dashboard, by token. In memory: a restart logs everyone out.
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, (Login, Instant)>>,
}

impl Sessions {
    /// Sessions that last `ttl` after login.
    pub fn new(ttl: Duration) -> Self {
        Sessions { ttl, map: Mutex::new(HashMap::new()) }
    }

    /// Starts a session for `login` and returns its token (32 random bytes, hex).
    pub fn create(&self, login: Login) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        map.insert(token.clone(), (login, now + self.ttl));
        token
    }

    /// The login behind `token`, unless it expired or was logged out.
    pub fn get(&self, token: &str) -> Option<Login> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token).filter(|(_, expires)| *expires > Instant::now()).map(|(l, _)| l.clone())
    }

    /// Ends the session behind `token`.
    pub fn remove(&self, token: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }

    /// `Set-Cookie` value for a new session token.
    pub fn cookie(&self, token: &str) -> String {
        format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            self.ttl.as_secs()
        )
    }
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session token in the request's cookies.
pub fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// Why a login was refused. The messages never say whether the role exists.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    /// Empty role name.
    #[error("enter a role name")]
    NoRole,
    /// The upstream refused the role or its password (28P01, 28000).
    #[error(
        "login refused: wrong role or password, or the role may not log in to database \"{0}\""
    )]
    Refused(String),
    /// The database does not exist (3D000).
    #[error("database \"{0}\" does not exist")]
    NoDatabase(String),
    /// The upstream could not be reached or failed otherwise.
    #[error("the upstream Postgres could not be reached: {0}")]
    Unreachable(String),
}

/// Asks the upstream whether `role` may log in to `database` with `password`, by logging in
/// there (with pgmld's TLS settings, none of its credentials). The connection is closed
/// again at once.
pub async fn verify(
    upstream: &Upstream,
    database: &str,
    role: &str,
    password: &str,
) -> Result<(), LoginError> {
    if role.trim().is_empty() {
        return Err(LoginError::NoRole);
    }
    let attempt = upstream.connect_as(database, role, password);
    match tokio::time::timeout(LOGIN_TIMEOUT, attempt).await {
        Err(_) => Err(LoginError::Unreachable("timed out".into())),
        Ok(Ok(_client)) => Ok(()),
        Ok(Err(e)) => Err(match e.code().map(|c| c.code()) {
            Some("28P01") | Some("28000") => LoginError::Refused(database.to_string()),
            Some("3D000") => LoginError::NoDatabase(database.to_string()),
            // The driver's own message names no password (it never holds it in text form).
            _ => LoginError::Unreachable(
                e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_string()),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_expire_and_log_out() {
        let s = Sessions::new(Duration::from_secs(60));
        let login = Login { role: "alice".into(), database: "db".into() };
        let t = s.create(login.clone());
        assert_eq!(t.len(), 64);
        assert_eq!(s.get(&t), Some(login.clone()));
        assert_ne!(s.create(login.clone()), t, "tokens are random");
        s.remove(&t);
        assert_eq!(s.get(&t), None);
        let short = Sessions::new(Duration::ZERO);
        let t = short.create(login);
        assert_eq!(short.get(&t), None, "expired at once");
        assert!(s.cookie("abc").contains("HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn token_is_read_from_any_cookie_header() {
        let mut h = HeaderMap::new();
        assert_eq!(token(&h), None);
        h.append(header::COOKIE, HeaderValue::from_static("a=1; other=2"));
        h.append(header::COOKIE, HeaderValue::from_static("x=y; pgmld_dashboard=tok; z=w"));
        assert_eq!(token(&h).as_deref(), Some("tok"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("pgmld_dashboard="));
        assert_eq!(token(&empty), None);
    }
}
