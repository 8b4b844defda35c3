//! The fake hub's write routes (as on huggingface.co, as `huggingface_hub` uses them):
//!
//! - `GET /api/whoami-v2` — the token's user, always [`FakeHub::USER`] (with organization
//!   [`FakeHub::ORG`]);
//! - `POST /api/repos/create` — `{"type": "model", "name", "organization", "private"}`; 409
//!   when the repo exists; records the private flag ([`FakeHub::repo_private`]);
//! - `POST /api/models/{ns}/{name}/preupload/{rev}` — `lfs` for `*.safetensors` and files over
//!   1 KiB, else `regular`;
//! - `POST /{ns}/{name}.git/info/lfs/objects/batch` — Git LFS batch (basic transfer): objects
//!   already stored get no `actions`, the others an upload `href` on the fake hub itself
//!   (`/lfs-upload/{oid}?sig=…`, header `X-Fake-Upload`) and a verify `href`;
//! - `PUT /lfs-upload/{oid}` — stores the bytes when their sha256 is `oid`; refuses requests
//!   carrying a token (signed URLs get none) or lacking the batch's header;
//! - `POST /lfs-verify/{ns}/{name}` — 200 when the object is stored with that size;
//! - `POST /api/models/{ns}/{name}/commit/{rev}` — ndjson (`header`, `file` base64,
//!   `lfsFile`, `deletedFile`): writes the files into the layout the read routes serve (so a
//!   pushed repo can be pulled back), records the commit ([`FakeHub::commits`]).
//!
//! Every route but the storage `PUT` needs `Authorization: Bearer …` (the configured token when
//! the hub was started [`FakeHub::with_token`], any token otherwise).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{error, json as json_response, repo_not_found, FakeHub, Kind, Shared};

/// One commit the fake hub received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// `namespace/name`.
    pub repo: String,
    /// The branch committed to.
    pub revision: String,
    /// The commit message.
    pub summary: String,
    /// The paths added, in the commit's order.
    pub files: Vec<String>,
    /// The paths that came as LFS objects.
    pub lfs_files: Vec<String>,
}

/// What the write routes keep.
#[derive(Default)]
pub struct Writes {
    private: Mutex<HashMap<String, bool>>,
    commits: Mutex<Vec<Commit>>,
    objects: Mutex<HashMap<String, Vec<u8>>>,
}

impl FakeHub {
    /// The user every accepted token belongs to.
    pub const USER: &'static str = "pgmld-user";
    /// The organization [`FakeHub::USER`] belongs to.
    pub const ORG: &'static str = "pgmld-org";

    /// Every commit received, in order.
    pub fn commits(&self) -> Vec<Commit> {
        self.shared.writes.commits.lock().unwrap().clone()
    }

    /// Whether `repo` was created private (`None`: not created through the API).
    pub fn repo_private(&self, repo: &str) -> Option<bool> {
        self.shared.writes.private.lock().unwrap().get(repo).copied()
    }
}

impl Shared {
    /// The write routes; `None` for any other request.
    pub(super) fn route_write(
        &self,
        method: &Method,
        segs: &[&str],
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Response> {
        let post = *method == Method::POST;
        let r = match segs {
            ["api", "whoami-v2"] if *method == Method::GET => self.authed(headers, || {
                json_response(
                    StatusCode::OK,
                    &json!({"type": "user", "name": FakeHub::USER,
                    "orgs": [{"name": FakeHub::ORG}]}),
                )
            }),
            ["api", "repos", "create"] if post => self.authed(headers, || self.create(body)),
            ["api", "models", ns, name, "preupload", _rev] if post => {
                self.authed(headers, || self.existing(ns, name, |_| preupload(body)))
            }
            ["api", "models", ns, name, "commit", rev] if post => self.authed(headers, || {
                self.existing(ns, name, |repo| self.commit(repo, rev, headers, body))
            }),
            [ns, git, "info", "lfs", "objects", "batch"] if post && git.ends_with(".git") => {
                let name = git.trim_end_matches(".git");
                let lfs = "application/vnd.git-lfs+json";
                let accepts = |h: header::HeaderName| {
                    headers.get(h).and_then(|v| v.to_str().ok()) == Some(lfs)
                };
                if !accepts(header::ACCEPT) || !accepts(header::CONTENT_TYPE) {
                    return Some(error(
                        StatusCode::NOT_ACCEPTABLE,
                        None,
                        "use application/vnd.git-lfs+json",
                    ));
                }
                self.authed(headers, || self.existing(ns, name, |repo| self.batch(repo, body)))
            }
            ["lfs-upload", oid] if *method == Method::PUT => self.upload(oid, headers, body),
            ["lfs-verify", ns, name] if post => self.authed(headers, || {
                self.existing(ns, name, |_| {
                    let req: Value = serde_json::from_slice(body).unwrap_or_default();
                    let (oid, size) = (req["oid"].as_str().unwrap_or(""), req["size"].as_u64());
                    match self.writes.objects.lock().unwrap().get(oid) {
                        Some(b) if Some(b.len() as u64) == size => {
                            json_response(StatusCode::OK, &json!({}))
                        }
                        _ => error(StatusCode::NOT_FOUND, None, "object not uploaded"),
                    }
                })
            }),
            _ => return None,
        };
        Some(r)
    }

    /// 401 unless a Bearer token (the configured one, when there is one) comes with it.
    fn authed(&self, headers: &HeaderMap, f: impl FnOnce() -> Response) -> Response {
        let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok = match (self.token.lock().unwrap().clone(), sent) {
            (Some(want), Some(v)) => v == format!("Bearer {want}"),
            (None, Some(v)) => v.starts_with("Bearer ") && v.len() > 7,
            (_, None) => false,
        };
        if ok {
            f()
        } else {
            error(StatusCode::UNAUTHORIZED, None, "Invalid credentials in Authorization header")
        }
    }

    fn existing(&self, ns: &str, name: &str, f: impl FnOnce(&str) -> Response) -> Response {
        let repo = format!("{ns}/{name}");
        if self.is_kind_repo(Kind::Model, &repo) {
            f(&repo)
        } else {
            repo_not_found()
        }
    }

    fn create(&self, body: &[u8]) -> Response {
        let req: Value = serde_json::from_slice(body).unwrap_or_default();
        let Some(name) = req["name"].as_str().filter(|n| !n.is_empty() && !n.contains('/')) else {
            return error(StatusCode::BAD_REQUEST, None, "no valid name");
        };
        if req["type"].as_str().unwrap_or("model") != "model" {
            return error(StatusCode::BAD_REQUEST, None, "only model repos here");
        }
        let ns = req["organization"].as_str().unwrap_or(FakeHub::USER);
        if ns != FakeHub::USER && ns != FakeHub::ORG {
            return error(
                StatusCode::FORBIDDEN,
                None,
                "You don't have the rights to create a model under this namespace",
            );
        }
        let repo = format!("{ns}/{name}");
        let url = format!("{}/{repo}", self.url);
        let dir = FakeHub::model_revision_dir(&self.root, &repo, "main");
        if dir.is_dir() {
            return json_response(
                StatusCode::CONFLICT,
                &json!({"error": "You already created this model repo", "url": url}),
            );
        }
        std::fs::create_dir_all(&dir).unwrap();
        let private = req["private"].as_bool().unwrap_or(false);
        self.writes.private.lock().unwrap().insert(repo.clone(), private);
        json_response(StatusCode::OK, &json!({"url": url, "name": repo}))
    }

    fn batch(&self, repo: &str, body: &[u8]) -> Response {
        let req: Value = serde_json::from_slice(body).unwrap_or_default();
        if req["operation"] != "upload" || req["hash_algo"] != "sha256" {
            return error(StatusCode::BAD_REQUEST, None, "upload of sha256 objects only");
        }
        let stored = self.writes.objects.lock().unwrap();
        let objects: Vec<Value> = req["objects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|o| {
                let (oid, size) = (o["oid"].as_str().unwrap_or("").to_string(), o["size"].as_u64().unwrap_or(0));
                match stored.get(&oid) {
                    Some(b) if b.len() as u64 == size => json!({"oid": oid, "size": size}),
                    _ => json!({"oid": oid, "size": size, "authenticated": true, "actions": {
                        "upload": {"href": format!("{}/lfs-upload/{oid}?sig=fake-signature", self.url),
                                   "header": {"X-Fake-Upload": "1"}},
                        "verify": {"href": format!("{}/lfs-verify/{repo}", self.url), "header": {}}}}),
                }
            })
            .collect();
        json_response(StatusCode::OK, &json!({"transfer": "basic", "objects": objects}))
    }

    fn upload(&self, oid: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        if headers.contains_key(header::AUTHORIZATION) {
            return error(
                StatusCode::BAD_REQUEST,
                None,
                "signed storage URLs take no Authorization header",
            );
        }
        if headers.get("x-fake-upload").and_then(|v| v.to_str().ok()) != Some("1") {
            return error(StatusCode::BAD_REQUEST, None, "the batch answer's header is missing");
        }
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if length != Some(body.len()) || sha256_hex(body) != oid {
            return error(StatusCode::BAD_REQUEST, None, "the bytes do not match the oid");
        }
        self.writes.objects.lock().unwrap().insert(oid.to_string(), body.to_vec());
        Response::builder().status(StatusCode::OK).body(axum::body::Body::empty()).unwrap()
    }

    fn commit(&self, repo: &str, rev: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.starts_with("application/x-ndjson") {
            return error(StatusCode::BAD_REQUEST, None, "commits are application/x-ndjson");
        }
        let dir = FakeHub::model_revision_dir(&self.root, repo, rev);
        let mut commit = Commit {
            repo: repo.into(),
            revision: rev.into(),
            summary: String::new(),
            files: vec![],
            lfs_files: vec![],
        };
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for line in String::from_utf8_lossy(body).lines().filter(|l| !l.trim().is_empty()) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                return error(StatusCode::BAD_REQUEST, None, "a line is not JSON");
            };
            let val = &v["value"];
            let path = val["path"].as_str().unwrap_or("").to_string();
            let bad_path = path.is_empty()
                || path.starts_with('/')
                || path.split('/').any(|p| p.is_empty() || p == "..");
            match v["key"].as_str() {
                Some("header") => {
                    commit.summary = val["summary"].as_str().unwrap_or("").to_string()
                }
                _ if bad_path => return error(StatusCode::BAD_REQUEST, None, "bad path"),
                Some("file") if val["encoding"] == "base64" => {
                    let Some(bytes) = base64_decode(val["content"].as_str().unwrap_or("")) else {
                        return error(StatusCode::BAD_REQUEST, None, "bad base64");
                    };
                    commit.files.push(path.clone());
                    writes.push((path, Some(bytes)));
                }
                Some("lfsFile") => {
                    let oid = val["oid"].as_str().unwrap_or("");
                    let bytes = match self.writes.objects.lock().unwrap().get(oid) {
                        Some(b)
                            if Some(b.len() as u64) == val["size"].as_u64()
                                && val["algo"] == "sha256" =>
                        {
                            b.clone()
                        }
                        _ => {
                            return error(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                None,
                                "LFS object not uploaded",
                            )
                        }
                    };
                    commit.files.push(path.clone());
                    commit.lfs_files.push(path.clone());
                    writes.push((path, Some(bytes)));
                }
                Some("deletedFile") => writes.push((path, None)),
                _ => return error(StatusCode::BAD_REQUEST, None, "unknown line"),
            }
        }
        for (path, bytes) in writes {
            let p = dir.join(&path);
            match bytes {
                Some(b) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, b).unwrap();
                }
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let oid = self.load_rev(Kind::Model, repo, rev).map(|r| r.commit).unwrap_or_default();
        self.writes.commits.lock().unwrap().push(commit.clone());
        json_response(
            StatusCode::OK,
            &json!({"success": true, "commitOid": oid, "commitUrl": format!("{}/{repo}/commit/{oid}", self.url),
                    "commitMessage": commit.summary}),
        )
    }
}

fn preupload(body: &[u8]) -> Response {
    let req: Value = serde_json::from_slice(body).unwrap_or_default();
    let files: Vec<Value> = req["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap_or("").to_string();
            let lfs = f["size"].as_u64().unwrap_or(0) > 1024 || path.ends_with(".safetensors");
            let ignore = path.starts_with(".git/");
            json!({"path": path, "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": ignore})
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "files": files }))
}

/// Standard base64 (with padding) → bytes.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// SHA-256 as lowercase hex (the LFS object id).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
