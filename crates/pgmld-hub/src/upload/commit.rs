//! One commit of files: each file's size, sample and sha256, the Hub's preupload verdict
//! (LFS or regular), the LFS uploads, and the ndjson commit itself.

use std::io::Read;

use base64::Engine;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use super::client::{UploadClient, UploadError};
use super::file::{UploadFile, UploadSource};
use super::lfs::LfsObject;
use crate::repo::encode_segment;

/// Bytes of a file's start sent to the preupload endpoint.
const SAMPLE_BYTES: usize = 512;
/// Files per preupload request, as `huggingface_hub` does.
const PREUPLOAD_CHUNK: usize = 256;

/// The commit the Hub made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit id (`commitOid`).
    pub oid: String,
    /// Its page (`commitUrl`, else `{repo url}/commit/{oid}`).
    pub url: String,
    /// The repo paths committed (those the Hub did not ask to ignore).
    pub files: Vec<String>,
}

/// A file measured for the preupload call and the LFS oid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prepared {
    pub file: UploadFile,
    pub size: u64,
    pub sample: Vec<u8>,
    /// sha256, lowercase hex.
    pub sha256: String,
}

/// How the Hub wants a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Regular,
    Lfs,
    Ignore,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size, first bytes and sha256 of a file, in one read.
pub(super) fn prepare(file: UploadFile) -> Result<Prepared, UploadError> {
    let mut hasher = Sha256::new();
    let mut sample = Vec::with_capacity(SAMPLE_BYTES);
    let mut size = 0u64;
    let mut take = |chunk: &[u8]| {
        hasher.update(chunk);
        if sample.len() < SAMPLE_BYTES {
            let n = (SAMPLE_BYTES - sample.len()).min(chunk.len());
            sample.extend_from_slice(&chunk[..n]);
        }
        size += chunk.len() as u64;
    };
    match &file.source {
        UploadSource::Bytes(b) => take(b),
        UploadSource::File(path) => {
            let err = |e: std::io::Error| {
                UploadError::other(
                    format!("reading {}", file.path_in_repo),
                    path.display().to_string(),
                    e.to_string(),
                )
            };
            let mut f = std::fs::File::open(path).map_err(err)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f.read(&mut buf).map_err(err)?;
                if n == 0 {
                    break;
                }
                take(&buf[..n]);
            }
        }
    }
    Ok(Prepared { sha256: hex(&hasher.finalize()), file, size, sample })
}

/// The body of `POST /api/models/{repo}/preupload/{revision}`.
pub(super) fn preupload_body(files: &[Prepared]) -> Json {
    let b64 = base64::engine::general_purpose::STANDARD;
    let files: Vec<Json> = files
        .iter()
        .map(|p| json!({"path": p.file.path_in_repo, "size": p.size, "sample": b64.encode(&p.sample)}))
        .collect();
    json!({ "files": files })
}

/// Each file's mode from the preupload answer `{"files": [{"path", "uploadMode",
/// "shouldIgnore"}]}`, in the order of `files`. A file the answer does not mention, or an
/// unknown mode, is an error.
pub(super) fn upload_modes(files: &[Prepared], answer: &Json) -> Result<Vec<Mode>, String> {
    let listed =
        answer.get("files").and_then(Json::as_array).ok_or("the answer has no `files` list")?;
    files
        .iter()
        .map(|p| {
            let path = &p.file.path_in_repo;
            let entry = listed
                .iter()
                .find(|f| f.get("path").and_then(Json::as_str) == Some(path.as_str()))
                .ok_or_else(|| format!("the answer does not mention {path}"))?;
            if entry.get("shouldIgnore").and_then(Json::as_bool).unwrap_or(false) {
                return Ok(Mode::Ignore);
            }
            match entry.get("uploadMode").and_then(Json::as_str) {
                Some("lfs") => Ok(Mode::Lfs),
                Some("regular") => Ok(Mode::Regular),
                other => Err(format!("unknown upload mode {other:?} for {path}")),
            }
        })
        .collect()
}

/// One line of the commit body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CommitEntry {
    /// Inline content.
    Regular { path: String, content: Vec<u8> },
    /// An LFS object already on the Hub.
    Lfs { path: String, oid: String, size: u64 },
}

/// The ndjson body of `POST /api/models/{repo}/commit/{revision}`.
pub(super) fn commit_body(summary: &str, entries: &[CommitEntry]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines =
        vec![json!({"key": "header", "value": {"summary": summary, "description": ""}})];
    for e in entries {
        lines.push(match e {
            CommitEntry::Regular { path, content } => json!({"key": "file",
                "value": {"content": b64.encode(content), "path": path, "encoding": "base64"}}),
            CommitEntry::Lfs { path, oid, size } => json!({"key": "lfsFile",
                "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}),
        });
    }
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

impl UploadClient {
    /// Commits `files` to model repo `repo_id` at `revision` (a branch, e.g. `main`) with the
    /// commit message `summary`: preupload, LFS uploads, commit (see the module doc).
    pub async fn upload_files(
        &self,
        repo_id: &str,
        revision: &str,
        files: Vec<UploadFile>,
        summary: &str,
    ) -> Result<CommitInfo, UploadError> {
        let prepared = tokio::task::spawn_blocking(move || {
            files.into_iter().map(prepare).collect::<Result<Vec<Prepared>, UploadError>>()
        })
        .await
        .map_err(|e| UploadError::other("reading the files to upload", "", e.to_string()))??;
        let rev = encode_segment(revision);
        let action = format!("preparing the upload to {repo_id}");
        let url = format!("{}/api/models/{repo_id}/preupload/{rev}", self.endpoint());
        let mut modes = Vec::with_capacity(prepared.len());
        for chunk in prepared.chunks(PREUPLOAD_CHUNK) {
            let body = preupload_body(chunk);
            let resp = self
                .send(&action, &url, &[], || Ok(self.authorized(self.http.post(&url)).json(&body)))
                .await?;
            let answer = self.json(&action, &url, resp).await?;
            modes.extend(
                upload_modes(chunk, &answer).map_err(|m| UploadError::other(&action, &url, m))?,
            );
        }
        let lfs: Vec<LfsObject> = prepared
            .iter()
            .zip(&modes)
            .filter(|(_, m)| **m == Mode::Lfs)
            .map(|(p, _)| LfsObject {
                oid: p.sha256.clone(),
                size: p.size,
                source: p.file.source.clone(),
            })
            .collect();
        if !lfs.is_empty() {
            self.upload_lfs(repo_id, revision, lfs).await?;
        }
        let mut entries = Vec::new();
        for (p, mode) in prepared.into_iter().zip(modes) {
            let path = p.file.path_in_repo.clone();
            match mode {
                Mode::Ignore => continue,
                Mode::Lfs => entries.push(CommitEntry::Lfs { path, oid: p.sha256, size: p.size }),
                Mode::Regular => {
                    let content = match p.file.source {
                        UploadSource::Bytes(b) => b,
                        UploadSource::File(local) => std::fs::read(&local).map_err(|e| {
                            UploadError::other(
                                format!("reading {path}"),
                                local.display().to_string(),
                                e.to_string(),
                            )
                        })?,
                    };
                    entries.push(CommitEntry::Regular { path, content });
                }
            }
        }
        let committed: Vec<String> = entries
            .iter()
            .map(|e| match e {
                CommitEntry::Regular { path, .. } | CommitEntry::Lfs { path, .. } => path.clone(),
            })
            .collect();
        let body = commit_body(summary, &entries);
        let action = format!("committing to {repo_id}");
        let url = format!("{}/api/models/{repo_id}/commit/{rev}", self.endpoint());
        let resp = self
            .send(&action, &url, &[], || {
                Ok(self
                    .authorized(self.http.post(&url))
                    .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                    .body(body.clone()))
            })
            .await?;
        let answer = self.json(&action, &url, resp).await?;
        let oid = answer.get("commitOid").and_then(Json::as_str).unwrap_or_default().to_string();
        let url = answer
            .get("commitUrl")
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/commit/{oid}", self.repo_url(repo_id)));
        Ok(CommitInfo { oid, url, files: committed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(path: &str, bytes: &[u8]) -> Prepared {
        prepare(UploadFile::bytes(path, bytes.to_vec())).unwrap()
    }

    #[test]
    fn files_are_measured_and_hashed() {
        let p = prepared("a.txt", b"abc");
        assert_eq!(p.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!((p.size, p.sample.as_slice()), (3, &b"abc"[..]));
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("w.bin"), &big).unwrap();
        let f = prepare(UploadFile::file("w.bin", dir.path().join("w.bin"))).unwrap();
        assert_eq!(f.size, 300_000);
        assert_eq!(f.sample, big[..512].to_vec());
        assert_eq!(f.sha256, prepared("w.bin", &big).sha256, "streamed and in-memory hashes agree");
        let e = prepare(UploadFile::file("x", dir.path().join("missing"))).unwrap_err();
        assert!(e.to_string().contains("reading x"), "{e}");
    }

    #[test]
    fn preupload_body_and_modes() {
        let files = [
            prepared("config.json", b"{}"),
            prepared("model.safetensors", &[7u8; 600]),
            prepared(".gitattributes", b""),
        ];
        let body = preupload_body(&files);
        assert_eq!(body["files"][0], json!({"path": "config.json", "size": 2, "sample": "e30="}));
        assert_eq!(body["files"][1]["sample"].as_str().unwrap().len(), 684, "512 bytes of base64");
        let answer = json!({"files": [
            {"path": "model.safetensors", "uploadMode": "lfs", "shouldIgnore": false},
            {"path": "config.json", "uploadMode": "regular", "shouldIgnore": false},
            {"path": ".gitattributes", "uploadMode": "regular", "shouldIgnore": true}]});
        assert_eq!(
            upload_modes(&files, &answer).unwrap(),
            vec![Mode::Regular, Mode::Lfs, Mode::Ignore]
        );
        let partial = json!({"files": [{"path": "config.json", "uploadMode": "regular"}]});
        assert!(upload_modes(&files, &partial).unwrap_err().contains("model.safetensors"));
        let odd = json!({"files": [{"path": "config.json", "uploadMode": "xet"}]});
        assert!(upload_modes(&files[..1], &odd).unwrap_err().contains("xet"));
        assert!(upload_modes(&files, &json!({})).is_err());
    }

    #[test]
    fn commit_body_is_ndjson() {
        let body = commit_body(
            "End of training",
            &[
                CommitEntry::Regular { path: "config.json".into(), content: b"{}".to_vec() },
                CommitEntry::Lfs {
                    path: "model.safetensors".into(),
                    oid: "ab".repeat(32),
                    size: 600,
                },
            ],
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<Json> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            lines[0],
            json!({"key": "header", "value": {"summary": "End of training", "description": ""}})
        );
        assert_eq!(
            lines[1],
            json!({"key": "file", "value": {"content": "e30=", "path": "config.json", "encoding": "base64"}})
        );
        assert_eq!(
            lines[2],
            json!({"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": "ab".repeat(32), "size": 600}})
        );
        assert_eq!(lines.len(), 3);
    }
}
