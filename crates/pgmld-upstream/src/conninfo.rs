//! Reading a connection string (`postgres://` URL or libpq `key=value` form) before
//! tokio-postgres does: taking out the TLS settings it does not know (`sslmode=verify-ca`,
//! `verify-full`, `sslrootcert`), and redacting passwords for display.

use crate::error::UpstreamError;

/// Keys pgmld handles itself; tokio-postgres never sees them.
const OWN_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];
/// Shown instead of a password.
pub const REDACTED: &str = "<redacted>";

/// A connection string with pgmld's own keys taken out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Split {
    /// The rest, for tokio-postgres (may hold a password: never log it).
    pub rest: String,
    /// `sslmode`, when given.
    pub sslmode: Option<String>,
    /// `sslrootcert`, when given.
    pub sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of `url`.
pub(crate) fn split(url: &str) -> Result<Split, UpstreamError> {
    let mut out = Split::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => out.sslmode = Some(value),
        _ => out.sslrootcert = Some(value),
    };
    let rest = match url_parts(url) {
        Some((head, Some(query))) => {
            let mut kept = Vec::new();
            for piece in query.split('&') {
                let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
                let key = percent_decode(k)?;
                if OWN_KEYS.contains(&key.as_str()) {
                    take(&key, percent_decode(v)?);
                } else {
                    kept.push(piece);
                }
            }
            match kept.is_empty() {
                true => head.to_string(),
                false => format!("{head}?{}", kept.join("&")),
            }
        }
        Some((head, None)) => head.to_string(),
        None => {
            let mut kept = Vec::new();
            for (key, value) in key_values(url)? {
                if OWN_KEYS.contains(&key.as_str()) {
                    take(&key, value);
                } else {
                    kept.push((key, value));
                }
            }
            join_key_values(&kept)
        }
    };
    Ok(Split { rest, ..out })
}

/// `url` with every password replaced by `<redacted>`, for `--print-config` and logs. A
/// string that cannot be read comes back entirely redacted.
pub fn redact(url: &str) -> String {
    match url_parts(url) {
        Some((head, query)) => {
            let prefix = url.find("://").map_or(0, |i| i + 3);
            let mut head = head.to_string();
            if let Some(at) = head[prefix..].find('@').map(|i| i + prefix) {
                if let Some(colon) = head[prefix..at].find(':').map(|i| i + prefix) {
                    head.replace_range(colon + 1..at, REDACTED);
                }
            }
            let Some(query) = query else { return head };
            let pieces: Vec<String> = query
                .split('&')
                .map(|piece| match piece.split_once('=') {
                    Some((k, _)) if percent_decode(k).is_ok_and(|k| k == "password") => {
                        format!("{k}={REDACTED}")
                    }
                    _ => piece.to_string(),
                })
                .collect();
            format!("{head}?{}", pieces.join("&"))
        }
        None => match key_values(url) {
            Ok(pairs) => {
                let shown: Vec<(String, String)> = pairs
                    .into_iter()
                    .map(|(k, v)| match k == "password" {
                        true => (k, REDACTED.to_string()),
                        false => (k, v),
                    })
                    .collect();
                join_key_values(&shown)
            }
            Err(_) => format!("{REDACTED} (unreadable connection string)"),
        },
    }
}

/// For the URL form: everything before the query, and the query (without `?`). The
/// query starts at the first `?` after the credentials, which end at the first `@`, as
/// tokio-postgres reads it. `None` for the `key=value` form.
fn url_parts(url: &str) -> Option<(&str, Option<&str>)> {
    let prefix = ["postgres://", "postgresql://"].iter().find(|p| url.starts_with(**p))?.len();
    let after_creds = url[prefix..].find('@').map_or(prefix, |i| prefix + i + 1);
    Some(match url[after_creds..].find('?') {
        Some(i) => (&url[..after_creds + i], Some(&url[after_creds + i + 1..])),
        None => (url, None),
    })
}

/// `%XX` sequences decoded, as tokio-postgres decodes URL parts.
fn percent_decode(s: &str) -> Result<String, UpstreamError> {
    let bad = || UpstreamError::InvalidUrl("bad percent-encoding in a URL parameter".into());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The pairs of a `key=value` string, with libpq's quoting: values in `'…'` or bare, `\`
/// escaping the next character in both.
fn key_values(s: &str) -> Result<Vec<(String, String)>, UpstreamError> {
    let bad = |what: &str| UpstreamError::InvalidUrl(format!("connection string: {what}"));
    let mut pairs = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(bad(&format!("expected `=` after `{key}`")));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    Some('\'') => break,
                    Some('\\') => {
                        value.push(it.next().ok_or_else(|| bad("unterminated quoted value"))?)
                    }
                    Some(c) => value.push(c),
                    None => return Err(bad("unterminated quoted value")),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(it.next()),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Writes pairs back as a `key=value` string, quoting values that need it.
fn join_key_values(pairs: &[(String, String)]) -> String {
    let quote = |v: &str| {
        if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
            return v.to_string();
        }
        let mut out = String::from("'");
        for c in v.chars() {
            if c == '\'' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\'');
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", if v == REDACTED { v.clone() } else { quote(v) }))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_ok(url: &str) -> Split {
        split(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn url_form_loses_only_the_tls_keys() {
        let s = split_ok("postgres://u:p%40ss@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(s.rest, "postgres://u:p%40ss@h:5/db?application_name=x");
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
        let s = split_ok("postgresql://h/db?sslmode=require");
        assert_eq!(
            (s.rest.as_str(), s.sslmode.as_deref(), s.sslrootcert),
            ("postgresql://h/db", Some("require"), None)
        );
        // A `?` inside the password is not the query.
        let s = split_ok("postgres://u:a?b@h/db?sslmode=disable");
        assert_eq!(
            (s.rest.as_str(), s.sslmode.as_deref()),
            ("postgres://u:a?b@h/db", Some("disable"))
        );
        assert!(split("postgres://h/db?sslmode=%zz").is_err());
    }

    #[test]
    fn key_value_form_keeps_quoting() {
        let s = split_ok(
            r"host=h  port = 5 password='a b\'c' sslmode=verify-ca sslrootcert='/x y/ca.pem' dbname=d",
        );
        assert_eq!(s.rest, r"host=h port=5 password='a b\'c' dbname=d");
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/x y/ca.pem"));
        assert!(split("host='h").is_err());
        assert!(split("host").is_err());
        assert_eq!(split_ok("").rest, "");
    }

    #[test]
    fn redaction_hides_every_password() {
        assert_eq!(redact("postgres://u:s3cret@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(
            redact("postgresql://u@h:5/db?sslmode=require"),
            "postgresql://u@h:5/db?sslmode=require"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact("postgres://u:p@h/db?password=q&x=1"),
            "postgres://u:<redacted>@h/db?password=<redacted>&x=1"
        );
        assert_eq!(redact("postgres://u:a?b@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(redact(r"host=h password='a b\'c' user=u"), "host=h password=<redacted> user=u");
        let broken = redact("host=h password='unterminated");
        assert!(!broken.contains("unterminated"), "{broken}");
    }
}
