//! LFS uploads with the Git LFS batch API, basic transfer: which objects the Hub lacks, a
//! `PUT` of each one's bytes (streamed from its file), and the verify call.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{json, Value as Json};
use tokio::io::AsyncReadExt;

use super::client::{UploadClient, UploadError};
use super::file::UploadSource;
use crate::config::DEFAULT_ENDPOINT;

const LFS_JSON: &str = "application/vnd.git-lfs+json";
/// Bytes read from a file per chunk of a streamed upload.
const CHUNK: usize = 256 * 1024;

/// An object to upload: sha256 oid, size, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LfsObject {
    pub oid: String,
    pub size: u64,
    pub source: UploadSource,
}

/// One request the batch answer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Action {
    pub href: String,
    pub header: Vec<(String, String)>,
}

/// What the batch answer says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Transfer {
    /// The Hub has it already (no `actions`).
    Present,
    /// `PUT` it to `upload`, then `POST` `verify` if given.
    Upload { upload: Action, verify: Option<Action> },
}

/// The body of the batch request.
pub(super) fn batch_body(objects: &[(String, u64)], revision: &str) -> Json {
    let objects: Vec<Json> =
        objects.iter().map(|(oid, size)| json!({"oid": oid, "size": size})).collect();
    json!({"operation": "upload", "transfers": ["basic"], "objects": objects, "hash_algo": "sha256",
           "ref": {"name": revision}})
}

fn action(v: &Json) -> Result<Action, String> {
    let href = v.get("href").and_then(Json::as_str).ok_or("an action has no `href`")?.to_string();
    let header = match v.get("header") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Object(h)) => h
            .iter()
            .map(|(k, v)| {
                (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            })
            .collect(),
        Some(_) => return Err("an action's `header` is not an object".into()),
    };
    if header.iter().any(|(k, _)| k.eq_ignore_ascii_case("chunk_size")) {
        return Err("the Hub asks for a multipart upload, which pgmld does not do".into());
    }
    Ok(Action { href, header })
}

/// What to do with each of `wanted` (oid, size), from the batch answer. An object the
/// answer lacks or reports an `error` for is an error.
pub(super) fn parse_batch(
    answer: &Json,
    wanted: &[(String, u64)],
) -> Result<Vec<Transfer>, String> {
    let objects =
        answer.get("objects").and_then(Json::as_array).ok_or("the answer has no `objects` list")?;
    wanted
        .iter()
        .map(|(oid, _)| {
            let o = objects
                .iter()
                .find(|o| o.get("oid").and_then(Json::as_str) == Some(oid.as_str()))
                .ok_or_else(|| format!("the answer does not mention object {oid}"))?;
            if let Some(err) = o.get("error") {
                let msg = err.get("message").and_then(Json::as_str).unwrap_or("no message");
                let code = err.get("code").map(Json::to_string).unwrap_or_default();
                return Err(format!("object {oid} refused ({code}): {msg}"));
            }
            match o.get("actions").and_then(|a| a.get("upload")) {
                None => Ok(Transfer::Present),
                Some(up) => Ok(Transfer::Upload {
                    upload: action(up)?,
                    verify: o
                        .get("actions")
                        .and_then(|a| a.get("verify"))
                        .map(action)
                        .transpose()?,
                }),
            }
        })
        .collect()
}

fn headers(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            map.insert(k, v);
        }
    }
    map
}

/// A file as a stream of chunks, for a request body that never holds it whole.
fn file_body(file: std::fs::File) -> reqwest::Body {
    let stream =
        futures_util::stream::try_unfold(tokio::fs::File::from_std(file), |mut f| async move {
            let mut buf = vec![0u8; CHUNK];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), f)))
        });
    reqwest::Body::wrap_stream(stream)
}

impl UploadClient {
    /// `href` pointing at the public Hub when the client uses another endpoint (a mirror).
    fn fix_endpoint(&self, href: &str) -> String {
        match href.strip_prefix(DEFAULT_ENDPOINT) {
            Some(rest) if self.endpoint() != DEFAULT_ENDPOINT => {
                format!("{}{rest}", self.endpoint())
            }
            _ => href.to_string(),
        }
    }

    /// Uploads the objects the Hub lacks (one batch call; duplicates sent once).
    pub(super) async fn upload_lfs(
        &self,
        repo_id: &str,
        revision: &str,
        mut objects: Vec<LfsObject>,
    ) -> Result<(), UploadError> {
        objects.sort_by(|a, b| a.oid.cmp(&b.oid));
        objects.dedup_by(|a, b| a.oid == b.oid);
        let wanted: Vec<(String, u64)> = objects.iter().map(|o| (o.oid.clone(), o.size)).collect();
        let action = format!("asking {repo_id} which LFS files it lacks");
        let url = format!("{}/{repo_id}.git/info/lfs/objects/batch", self.endpoint());
        let body = batch_body(&wanted, revision);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let resp = self
            .send(&action, &url, &[], || {
                Ok(self
                    .authorized(self.http.post(&url))
                    .header(ACCEPT, LFS_JSON)
                    .header(CONTENT_TYPE, LFS_JSON)
                    .body(body.clone()))
            })
            .await?;
        let answer = self.json(&action, &url, resp).await?;
        let transfers =
            parse_batch(&answer, &wanted).map_err(|m| UploadError::other(&action, &url, m))?;
        for (object, transfer) in objects.iter().zip(transfers) {
            if let Transfer::Upload { upload, verify } = transfer {
                self.put_object(repo_id, object, &upload).await?;
                if let Some(verify) = verify {
                    self.verify_object(repo_id, object, &verify).await?;
                }
            }
        }
        Ok(())
    }

    async fn put_object(
        &self,
        repo_id: &str,
        object: &LfsObject,
        upload: &Action,
    ) -> Result<(), UploadError> {
        let action =
            format!("uploading LFS object {} ({} bytes) to {repo_id}", object.oid, object.size);
        let url = self.fix_endpoint(&upload.href);
        let extra = headers(&upload.header);
        // The upload URL is signed: no token goes there.
        self.send(&action, &url, &[], || {
            let rb = self.http.put(&url).headers(extra.clone()).header(CONTENT_LENGTH, object.size);
            Ok(match &object.source {
                UploadSource::Bytes(b) => rb.body(b.clone()),
                UploadSource::File(path) => {
                    let f = std::fs::File::open(path).map_err(|e| {
                        UploadError::other(&action, path.display().to_string(), e.to_string())
                    })?;
                    rb.body(file_body(f))
                }
            })
        })
        .await?;
        Ok(())
    }

    async fn verify_object(
        &self,
        repo_id: &str,
        object: &LfsObject,
        verify: &Action,
    ) -> Result<(), UploadError> {
        let action = format!("verifying LFS object {} on {repo_id}", object.oid);
        let url = self.fix_endpoint(&verify.href);
        let extra = headers(&verify.header);
        let body = json!({"oid": object.oid, "size": object.size});
        self.send(&action, &url, &[], || {
            Ok(self
                .authorized(self.http.post(&url))
                .headers(extra.clone())
                .header(ACCEPT, LFS_JSON)
                .json(&body))
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Vec<(String, u64)> {
        vec![("a".repeat(64), 10), ("b".repeat(64), 20)]
    }

    #[test]
    fn batch_request_body() {
        let body = batch_body(&wanted()[..1], "main");
        assert_eq!(
            body,
            json!({"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
                   "objects": [{"oid": "a".repeat(64), "size": 10}], "ref": {"name": "main"}})
        );
    }

    #[test]
    fn batch_answers_decide_what_to_upload() {
        let answer = json!({"transfer": "basic", "objects": [
            {"oid": "b".repeat(64), "size": 20, "actions": {
                "upload": {"href": "https://s3/x?sig=1", "header": {"X-Amz-Acl": "private"}},
                "verify": {"href": "https://hub/verify"}}},
            {"oid": "a".repeat(64), "size": 10}]});
        let t = parse_batch(&answer, &wanted()).unwrap();
        assert_eq!(t[0], Transfer::Present, "no actions: already on the Hub");
        assert_eq!(
            t[1],
            Transfer::Upload {
                upload: Action {
                    href: "https://s3/x?sig=1".into(),
                    header: vec![("X-Amz-Acl".into(), "private".into())]
                },
                verify: Some(Action { href: "https://hub/verify".into(), header: vec![] }),
            }
        );
        let missing = json!({"objects": [{"oid": "a".repeat(64), "size": 10}]});
        assert!(parse_batch(&missing, &wanted()).unwrap_err().contains(&"b".repeat(64)));
        let refused = json!({"objects": [{"oid": "a".repeat(64), "error": {"code": 422, "message": "too big"}}]});
        let e = parse_batch(&refused, &wanted()[..1]).unwrap_err();
        assert!(e.contains("422") && e.contains("too big"), "{e}");
        let multipart = json!({"objects": [{"oid": "a".repeat(64),
            "actions": {"upload": {"href": "h", "header": {"chunk_size": "5000000", "00001": "u"}}}}]});
        assert!(parse_batch(&multipart, &wanted()[..1]).unwrap_err().contains("multipart"));
        assert!(parse_batch(&json!({}), &wanted()).is_err());
    }

    #[test]
    fn hrefs_follow_a_mirror_endpoint() {
        let c = UploadClient::new("http://mirror:8080", "t").unwrap();
        assert_eq!(
            c.fix_endpoint("https://huggingface.co/o/n.git/info/lfs/x"),
            "http://mirror:8080/o/n.git/info/lfs/x"
        );
        assert_eq!(c.fix_endpoint("https://s3/x"), "https://s3/x");
        let hub = UploadClient::new(DEFAULT_ENDPOINT, "t").unwrap();
        assert_eq!(hub.fix_endpoint("https://huggingface.co/x"), "https://huggingface.co/x");
    }
}
