//! A fake Hugging Face Hub for tests: serves dataset and model repos from a directory with the
//! routes and headers that hf-hub 1.0 uses, so the real hub client code runs against it.
//!
//! Layout of `root`:
//! - `root/{owner}/{name}/…` — the files of revision `main` of dataset `owner/name`;
//! - `root/{owner}/{name}@{rev}/…` — another revision, `/` in `rev` written `%2F`
//!   (see [`FakeHub::revision_dir`]; e.g. the parquet conversion `refs/convert/parquet`);
//! - `root/models/{owner}/{name}[@{rev}]/…` — the same for model `owner/name`
//!   (see [`FakeHub::model_revision_dir`], [`FakeHub::put_model`]); so `models` is no dataset
//!   owner here.
//!
//! Repos without owner (`imdb`, `distilbert-base-uncased`) are `root/{name}` (datasets) and
//! `root/models/{name}` (models): a directory with files of its own at the top.
//!
//! Routes (as on huggingface.co):
//! - `GET /api/datasets/{owner}/{name}[/revision/{rev}]` — repo info with `sha` and `siblings`;
//! - `GET /api/datasets/{owner}/{name}/tree/{rev}[/{path}][?recursive=true]` — tree listing;
//! - `POST /api/datasets/{owner}/{name}/paths-info/{rev}` — `{"paths": [...]}`;
//! - `HEAD|GET /datasets/{owner}/{name}/resolve/{rev}/{path}` — `ETag`, `X-Repo-Commit`,
//!   `Content-Length`, `Accept-Ranges`, `Range` (206), `If-None-Match` (304). Parquet, `.gz`,
//!   `.safetensors` and `.bin` files act as LFS files: a 302 to `/cdn/…` with `X-Linked-Etag`
//!   and `X-Linked-Size`;
//! - `HEAD|GET /cdn/{owner}/{name}/{commit}/{path}` — the bytes, no token needed (signed URLs);
//! - models: the same under `/api/models/{owner}/{name}/…`, with resolve URLs without prefix
//!   (`HEAD|GET /{owner}/{name}/resolve/{rev}/{path}`, `/{name}/resolve/…` without owner) and
//!   LFS redirects to `/cdn-models/{owner}/{name}/{commit}/{path}`.
//!
//! Errors carry the Hub's `X-Error-Code` / `X-Error-Message` headers and `{"error": "..."}`
//! bodies: 404 `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`; 401 when a token is
//! required ([`FakeHub::with_token`]) and missing or wrong.
//!
//! Commits and ETags are hashes of the files' contents, so they change when files change.
//!
//! Write routes (whoami, repo creation, preupload, LFS, commits) are in `hub_push.rs`; a pushed
//! repo is served back by the routes above.
#![allow(dead_code)]

#[path = "hub_http.rs"]
mod http;
#[path = "hub_push.rs"]
pub mod push;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;

use http::{
    entry_not_found, error, hex, is_lfs, json, percent_decode, percent_encode, repo_name,
    repo_not_found, revision_not_found, serve_bytes, walk,
};

/// A running fake hub on 127.0.0.1. Stopped on drop.
pub struct FakeHub {
    /// Base URL, e.g. `http://127.0.0.1:41234` (use as the hub endpoint).
    pub url: String,
    /// The directory served.
    pub root: PathBuf,
    shared: Arc<Shared>,
    stop_tx: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    root: PathBuf,
    url: String,
    token: Mutex<Option<String>>,
    log: Mutex<Vec<String>>,
    writes: push::Writes,
}

impl FakeHub {
    /// Serves `root` on 127.0.0.1:0 from a background thread with its own tokio runtime, so it
    /// works from `#[test]` and `#[tokio::test]` alike.
    pub fn start(root: PathBuf) -> FakeHub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake hub");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            root: root.clone(),
            url: url.clone(),
            token: Mutex::new(None),
            log: Mutex::new(vec![]),
            writes: Default::default(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-hub".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let server = std::future::IntoFuture::into_future(axum::serve(listener, app));
                    tokio::select! {
                        r = server => { r.expect("fake hub server"); }
                        _ = stop_rx => {}
                    }
                });
                // dropping the runtime closes the listener and every open connection
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .expect("spawn fake hub");
        FakeHub {
            url,
            root,
            shared,
            stop_tx: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Requires `Authorization: Bearer {token}` on every API and resolve request (401 otherwise).
    pub fn with_token(self, token: impl Into<String>) -> FakeHub {
        *self.shared.token.lock().unwrap() = Some(token.into());
        self
    }

    /// Every request so far, as `METHOD /path?query` (path as sent, percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Stops serving: the port refuses connections afterwards. Idempotent.
    pub fn stop(&self) {
        if let Some(tx) = self.stop_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }

    /// Where the files of `repo` (`owner/name`) at `revision` live under `root`.
    pub fn revision_dir(root: &Path, repo: &str, revision: &str) -> PathBuf {
        if revision == "main" {
            root.join(repo)
        } else {
            root.join(format!("{repo}@{}", revision.replace('/', "%2F")))
        }
    }

    /// Writes `contents` at `path` in `repo` at `revision`, creating directories.
    pub fn put(
        root: &Path,
        repo: &str,
        revision: &str,
        path: &str,
        contents: impl AsRef<[u8]>,
    ) -> PathBuf {
        let p = Self::revision_dir(root, repo, revision).join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Where the files of model `repo` (`owner/name` or `name`) at `revision` live under `root`.
    pub fn model_revision_dir(root: &Path, repo: &str, revision: &str) -> PathBuf {
        Self::revision_dir(&Kind::Model.base(root), repo, revision)
    }

    /// Writes `contents` at `path` in model `repo` at `revision`, creating directories.
    pub fn put_model(
        root: &Path,
        repo: &str,
        revision: &str,
        path: &str,
        contents: impl AsRef<[u8]>,
    ) -> PathBuf {
        let p = Self::model_revision_dir(root, repo, revision).join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }
}

/// Dataset or model repos: where they live under `root` and where their LFS files redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dataset,
    Model,
}

impl Kind {
    fn base(self, root: &Path) -> PathBuf {
        match self {
            Kind::Dataset => root.to_path_buf(),
            Kind::Model => root.join("models"),
        }
    }

    fn cdn(self) -> &'static str {
        match self {
            Kind::Dataset => "cdn",
            Kind::Model => "cdn-models",
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let target = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    s.log.lock().unwrap().push(format!("{method} {target}"));
    let headers = req.headers().clone();
    let body = if method == Method::POST || method == Method::PUT {
        axum::body::to_bytes(req.into_body(), 1 << 30).await.unwrap_or_default().to_vec()
    } else {
        Vec::new()
    };
    s.route(&method, uri.path(), uri.query().unwrap_or(""), &headers, &body)
}

/// One revision of a repo, resolved.
struct Rev {
    dir: PathBuf,
    commit: String,
    files: Vec<String>,
}

impl Shared {
    fn route(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let segs: Vec<String> =
            path.trim_start_matches('/').split('/').map(percent_decode).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if segs.contains(&"..") {
            return error(StatusCode::BAD_REQUEST, None, "bad path");
        }
        if let Some(r) = self.route_write(method, &segs, headers, body) {
            return r;
        }
        // Canonical datasets have no owner (`imdb`): when `root/{a}/{b}` is no repo, read
        // the path as `root/{a}` followed by the rest.
        let joined;
        let segs: Vec<&str> = match segs.as_slice() {
            [kind @ ("cdn" | "datasets"), a, b, rest @ ..]
                if !self.is_repo(&format!("{a}/{b}")) && self.is_single_repo(a) =>
            {
                joined = [*kind, a, "", b].iter().map(|s| s.to_string()).collect::<Vec<_>>();
                joined.iter().map(String::as_str).chain(rest.iter().copied()).collect()
            }
            ["api", "datasets", a, rest @ ..]
                if !rest.first().is_some_and(|b| self.is_repo(&format!("{a}/{b}")))
                    && self.is_single_repo(a) =>
            {
                joined =
                    ["api", "datasets", a, ""].iter().map(|s| s.to_string()).collect::<Vec<_>>();
                joined.iter().map(String::as_str).chain(rest.iter().copied()).collect()
            }
            _ => segs,
        };
        if let Some(r) = self.route_model(method, &segs, query, headers, body) {
            return r;
        }
        let ds = Kind::Dataset;
        match segs.as_slice() {
            ["cdn", owner, name, commit, rest @ ..] if !rest.is_empty() => {
                self.cdn(ds, method, &repo_name(owner, name), commit, &rest.join("/"), headers)
            }
            ["api", "datasets", owner, name, rest @ ..] => {
                let repo = repo_name(owner, name);
                if let Some(r) = self.check_auth(headers) {
                    return r;
                }
                if !self.root.join(&repo).is_dir() {
                    return repo_not_found();
                }
                self.api(ds, method, &repo, rest, query, body)
            }
            ["datasets", owner, name, "resolve", rev, rest @ ..] if !rest.is_empty() => {
                let repo = repo_name(owner, name);
                if let Some(r) = self.check_auth(headers) {
                    return r;
                }
                if !self.root.join(&repo).is_dir() {
                    return repo_not_found();
                }
                self.resolve(ds, method, &repo, rev, &rest.join("/"), headers)
            }
            // spaces and anything else: no such repo
            _ => repo_not_found(),
        }
    }

    /// The `/api/{datasets|models}/{repo}/…` endpoints, after auth and the repo check.
    fn api(
        &self,
        kind: Kind,
        method: &Method,
        repo: &str,
        rest: &[&str],
        query: &str,
        body: &[u8],
    ) -> Response {
        match rest {
            [] if *method == Method::GET => self.info(kind, repo, "main"),
            ["revision", rev] if *method == Method::GET => self.info(kind, repo, rev),
            ["tree", rev, sub @ ..] if *method == Method::GET => {
                let recursive =
                    query.split('&').any(|kv| kv == "recursive=true" || kv == "recursive=1");
                self.tree(kind, repo, rev, &sub.join("/"), recursive)
            }
            ["paths-info", rev] if *method == Method::POST => {
                self.paths_info(kind, repo, rev, body)
            }
            _ => error(StatusCode::NOT_FOUND, None, "Not Found"),
        }
    }

    /// Model routes: `/api/models/{repo}/…`, `/cdn-models/{repo}/{commit}/…` and
    /// `/{repo}/resolve/{rev}/…`, with `{repo}` either `owner/name` or an owner-less `name`.
    /// `None` for any other path.
    fn route_model(
        &self,
        method: &Method,
        segs: &[&str],
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Response> {
        let m = Kind::Model;
        // `(repo, rest)` from the segments starting at a repo id
        let split = |s: &[&str]| -> Option<(String, usize)> {
            match s {
                [a, b, ..] if self.is_kind_repo(m, &format!("{a}/{b}")) => {
                    Some((format!("{a}/{b}"), 2))
                }
                [a, ..] if self.is_kind_single_repo(m, a) => Some((a.to_string(), 1)),
                [a, b, ..] => Some((format!("{a}/{b}"), 2)),
                _ => None,
            }
        };
        match segs {
            ["api", "models", tail @ ..] => {
                if let Some(r) = self.check_auth(headers) {
                    return Some(r);
                }
                let Some((repo, n)) = split(tail) else { return Some(repo_not_found()) };
                if !self.is_kind_repo(m, &repo) {
                    return Some(repo_not_found());
                }
                Some(self.api(m, method, &repo, &tail[n..], query, body))
            }
            ["cdn-models", tail @ ..] => {
                let (repo, n) = split(tail)?;
                match &tail[n..] {
                    [commit, rest @ ..] if !rest.is_empty() => {
                        Some(self.cdn(m, method, &repo, commit, &rest.join("/"), headers))
                    }
                    _ => Some(error(StatusCode::NOT_FOUND, None, "NoSuchKey")),
                }
            }
            [first, ..] if matches!(*first, "api" | "cdn" | "datasets" | "spaces") => None,
            _ => {
                // `{owner}/{name}/resolve/{rev}/{path}` or `{name}/resolve/{rev}/{path}`
                let (repo, rev, path) = match segs {
                    [a, b, "resolve", rev, rest @ ..] if !rest.is_empty() && *b != "resolve" => {
                        (format!("{a}/{b}"), *rev, rest.join("/"))
                    }
                    [a, "resolve", rev, rest @ ..] if !rest.is_empty() => {
                        (a.to_string(), *rev, rest.join("/"))
                    }
                    _ => return None,
                };
                if let Some(r) = self.check_auth(headers) {
                    return Some(r);
                }
                if !self.is_kind_repo(m, &repo) {
                    return Some(repo_not_found());
                }
                Some(self.resolve(m, method, &repo, rev, &path, headers))
            }
        }
    }

    /// True when `root/{repo}` holds a repo's files (for `owner/name`, the name directory).
    fn is_repo(&self, repo: &str) -> bool {
        self.is_kind_repo(Kind::Dataset, repo)
    }

    fn is_kind_repo(&self, kind: Kind, repo: &str) -> bool {
        kind.base(&self.root).join(repo).is_dir()
    }

    /// A canonical repo without owner: `root/{name}` with files of its own at the top (a
    /// namespace directory holds only repo directories).
    fn is_single_repo(&self, name: &str) -> bool {
        self.is_kind_single_repo(Kind::Dataset, name)
    }

    fn is_kind_single_repo(&self, kind: Kind, name: &str) -> bool {
        std::fs::read_dir(kind.base(&self.root).join(name))
            .map(|rd| rd.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_file())))
            .unwrap_or(false)
    }

    fn check_auth(&self, headers: &HeaderMap) -> Option<Response> {
        let want = self.token.lock().unwrap().clone()?;
        match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            Some(v) if v == format!("Bearer {want}") => None,
            Some(_) => Some(error(
                StatusCode::UNAUTHORIZED,
                None,
                "Invalid credentials in Authorization header",
            )),
            None => {
                Some(error(StatusCode::UNAUTHORIZED, Some("RepoNotFound"), "Repository not found"))
            }
        }
    }

    /// Revision names of a repo: `main` and every `{name}@{rev}` directory.
    fn revisions(&self, kind: Kind, repo: &str) -> Vec<String> {
        let mut out = vec!["main".to_string()];
        let (owner, name) = repo.split_once('/').unwrap_or(("", repo));
        if let Ok(rd) = std::fs::read_dir(kind.base(&self.root).join(owner)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if let Some(rev) = n.strip_prefix(&format!("{name}@")) {
                    out.push(rev.replace("%2F", "/"));
                }
            }
        }
        out
    }

    fn load_rev(&self, kind: Kind, repo: &str, rev: &str) -> Option<Rev> {
        let load = |dir: PathBuf| {
            let mut files = Vec::new();
            walk(&dir, "", &mut files);
            files.sort();
            let mut h = Vec::new();
            for f in &files {
                h.extend_from_slice(f.as_bytes());
                h.push(0);
                h.extend_from_slice(
                    hex(&std::fs::read(dir.join(f)).unwrap_or_default(), 40).as_bytes(),
                );
            }
            Rev { commit: hex(&h, 40), dir, files }
        };
        let base = kind.base(&self.root);
        let dir = FakeHub::revision_dir(&base, repo, rev);
        if dir.is_dir() {
            return Some(load(dir));
        }
        if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
            for r in self.revisions(kind, repo) {
                let d = FakeHub::revision_dir(&base, repo, &r);
                if d.is_dir() {
                    let loaded = load(d);
                    if loaded.commit == rev {
                        return Some(loaded);
                    }
                }
            }
        }
        None
    }

    fn info(&self, kind: Kind, repo: &str, rev: &str) -> Response {
        let Some(r) = self.load_rev(kind, repo, rev) else { return revision_not_found(rev) };
        let (owner, _) = repo.split_once('/').unwrap_or(("", repo));
        let siblings: Vec<serde_json::Value> =
            r.files.iter().map(|f| serde_json::json!({ "rfilename": f })).collect();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "_id": hex(repo.as_bytes(), 24),
                "id": repo,
                "author": owner,
                "sha": r.commit,
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "private": self.token.lock().unwrap().is_some(),
                "gated": false,
                "disabled": false,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }),
        )
    }

    fn entry(&self, r: &Rev, path: &str) -> serde_json::Value {
        let full = r.dir.join(path);
        if full.is_dir() {
            return serde_json::json!({ "type": "directory", "oid": hex(path.as_bytes(), 40), "size": 0, "path": path });
        }
        let bytes = std::fs::read(&full).unwrap_or_default();
        let mut v = serde_json::json!({ "type": "file", "oid": hex(&bytes, 40), "size": bytes.len(), "path": path });
        if is_lfs(path) {
            v["lfs"] = serde_json::json!({ "oid": hex(&bytes, 64), "size": bytes.len(), "pointerSize": 134 });
        }
        v
    }

    fn tree(&self, kind: Kind, repo: &str, rev: &str, sub: &str, recursive: bool) -> Response {
        let Some(r) = self.load_rev(kind, repo, rev) else { return revision_not_found(rev) };
        let sub = sub.trim_matches('/');
        if !sub.is_empty() && !r.dir.join(sub).is_dir() {
            return entry_not_found(&r.commit);
        }
        let prefix = if sub.is_empty() { String::new() } else { format!("{sub}/") };
        let mut paths = std::collections::BTreeSet::new();
        for f in &r.files {
            let Some(rest) = f.strip_prefix(&prefix) else { continue };
            if recursive {
                // every directory on the way, then the file
                let parts: Vec<&str> = rest.split('/').collect();
                for i in 1..parts.len() {
                    paths.insert(format!("{prefix}{}", parts[..i].join("/")));
                }
                paths.insert(f.clone());
            } else {
                paths.insert(format!("{prefix}{}", rest.split('/').next().unwrap()));
            }
        }
        let entries: Vec<serde_json::Value> = paths.iter().map(|p| self.entry(&r, p)).collect();
        json(StatusCode::OK, &serde_json::Value::Array(entries))
    }

    fn paths_info(&self, kind: Kind, repo: &str, rev: &str, body: &[u8]) -> Response {
        let Some(r) = self.load_rev(kind, repo, rev) else { return revision_not_found(rev) };
        let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let entries: Vec<serde_json::Value> = req["paths"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| r.dir.join(p).exists())
            .map(|p| self.entry(&r, p))
            .collect();
        json(StatusCode::OK, &serde_json::Value::Array(entries))
    }

    fn resolve(
        &self,
        kind: Kind,
        method: &Method,
        repo: &str,
        rev: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Response {
        let Some(r) = self.load_rev(kind, repo, rev) else { return revision_not_found(rev) };
        let full = r.dir.join(path);
        if !full.is_file() {
            return entry_not_found(&r.commit);
        }
        let bytes = std::fs::read(&full).unwrap_or_default();
        let etag = hex(&bytes, 40);
        if is_lfs(path) {
            let location = format!(
                "{}/{}/{repo}/{}/{}",
                self.url,
                kind.cdn(),
                r.commit,
                path.split('/').map(percent_encode).collect::<Vec<_>>().join("/")
            );
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .header(header::ETAG, format!("\"{etag}\""))
                .header("X-Repo-Commit", &r.commit)
                .header("X-Linked-Etag", format!("\"{}\"", hex(&bytes, 64)))
                .header("X-Linked-Size", bytes.len().to_string())
                .header(header::CONTENT_LENGTH, "0")
                .body(Body::empty())
                .unwrap();
        }
        let quoted = format!("\"{etag}\"");
        if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(quoted.as_str())
        {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, &quoted)
                .header("X-Repo-Commit", &r.commit)
                .body(Body::empty())
                .unwrap();
        }
        serve_bytes(method, bytes, &quoted, &r.commit, headers)
    }

    fn cdn(
        &self,
        kind: Kind,
        method: &Method,
        repo: &str,
        commit: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Response {
        let Some(r) = self.load_rev(kind, repo, commit) else {
            return error(StatusCode::NOT_FOUND, None, "NoSuchKey");
        };
        let Ok(bytes) = std::fs::read(r.dir.join(path)) else {
            return error(StatusCode::NOT_FOUND, None, "NoSuchKey");
        };
        let etag = format!("\"{}\"", hex(&bytes, 64));
        serve_bytes(method, bytes, &etag, &r.commit, headers)
    }
}
