//! Uploads to the Hugging Face Hub (`pgml.tune` with `push_to_hub`), over the Hub's HTTP API
//! as `huggingface_hub` uses it:
//!
//! 1. `GET /api/whoami-v2` (Bearer token) → the token owner's `name` ([`UploadClient::whoami`]);
//! 2. `POST /api/repos/create` `{"type": "model", "name", "organization", "private"}`; 409
//!    means the repo exists, which is fine ([`UploadClient::create_repo`]);
//! 3. `POST /api/models/{repo}/preupload/{revision}` with each file's path, size and the
//!    base64 of its first 512 bytes → `uploadMode` (`lfs` or `regular`) and `shouldIgnore`;
//! 4. LFS files: `POST {endpoint}/{repo}.git/info/lfs/objects/batch` (basic transfer, sha256
//!    oids) → for each object not on the Hub yet, `PUT` its bytes (streamed from the file) to
//!    `actions.upload.href`, then `POST` `actions.verify` when the Hub asks for it;
//! 5. `POST /api/models/{repo}/commit/{revision}`, `application/x-ndjson`: a header line with
//!    the summary, then one line per file: inline base64 for regular files, `lfsFile` with
//!    the oid for LFS files ([`UploadClient::upload_files`]).
//!
//! Every request is tried up to three times, with a doubling pause, when the network fails or
//! the Hub answers 408, 429 or 5xx. The token only ever travels in `Authorization` headers
//! (marked sensitive); no [`UploadError`] contains it (messages are scrubbed as
//! [`HubConfig`]'s are) nor the query strings of signed upload URLs.

mod client;
mod commit;
mod file;
mod lfs;
mod repo;

pub use client::{UploadClient, UploadError};
pub use commit::CommitInfo;
pub use file::{UploadFile, UploadSource};
pub use repo::{resolve_repo_id, RepoCreated};
