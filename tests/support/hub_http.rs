//! HTTP and file helpers of the fake hub (tests/support/hub.rs): byte ranges, the Hub's
//! error shapes, content hashes, percent-encoding.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;

/// 200 with the bytes, or 206 for a `Range: bytes=a-b` request; no body for HEAD.
pub(super) fn serve_bytes(
    method: &Method,
    bytes: Vec<u8>,
    etag: &str,
    commit: &str,
    headers: &HeaderMap,
) -> Response {
    let total = bytes.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| parse_range(r, total));
    let (status, body, content_range) = match range {
        Some((a, b)) => (
            StatusCode::PARTIAL_CONTENT,
            bytes[a..=b].to_vec(),
            Some(format!("bytes {a}-{b}/{total}")),
        ),
        None if headers.contains_key(header::RANGE) && total > 0 => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{total}"))
                .body(Body::empty())
                .unwrap();
        }
        None => (StatusCode::OK, bytes, None),
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::ETAG, etag)
        .header("X-Repo-Commit", commit)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, body.len().to_string());
    if let Some(cr) = content_range {
        b = b.header(header::CONTENT_RANGE, cr);
    }
    let body = if *method == Method::HEAD { Body::empty() } else { Body::from(body) };
    b.body(body).unwrap()
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive range within `total`.
pub(super) fn parse_range(r: &str, total: usize) -> Option<(usize, usize)> {
    let spec = r.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if total == 0 {
        return None;
    }
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (total.saturating_sub(n), total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

pub(super) fn is_lfs(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.ends_with(".parquet")
        || p.ends_with(".gz")
        || p.ends_with(".arrow")
        || p.ends_with(".zip")
        || p.ends_with(".safetensors")
        || p.ends_with(".bin")
}

pub(super) fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// The Hub's error shape: `X-Error-Code`, `X-Error-Message`, `{"error": "..."}`.
pub(super) fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("X-Error-Message", message);
    if let Some(c) = code {
        b = b.header("X-Error-Code", c);
    }
    b.body(Body::from(serde_json::json!({ "error": message }).to_string())).unwrap()
}

pub(super) fn repo_not_found() -> Response {
    error(StatusCode::NOT_FOUND, Some("RepoNotFound"), "Repository not found")
}

pub(super) fn revision_not_found(rev: &str) -> Response {
    error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"))
}

pub(super) fn entry_not_found(commit: &str) -> Response {
    let mut r = error(StatusCode::NOT_FOUND, Some("EntryNotFound"), "Entry not found");
    r.headers_mut().insert("X-Repo-Commit", commit.parse().unwrap());
    r
}

pub(super) fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        match std::fs::metadata(e.path()) {
            Ok(m) if m.is_dir() => walk(&e.path(), &rel, out),
            Ok(m) if m.is_file() => out.push(rel),
            _ => {}
        }
    }
}

/// `len` hex digits derived from `data` (stable across runs: SipHash with fixed keys).
pub(super) fn hex(data: &[u8], len: usize) -> String {
    let mut out = String::new();
    let mut seed = 0u64;
    while out.len() < len {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        data.hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
        seed += 1;
    }
    out.truncate(len);
    out
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `owner/name`, or just `owner` for a canonical dataset without namespace.
pub(super) fn repo_name(owner: &str, name: &str) -> String {
    if name.is_empty() {
        owner.to_string()
    } else {
        format!("{owner}/{name}")
    }
}
