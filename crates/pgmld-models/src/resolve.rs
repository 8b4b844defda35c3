//! Where `model_name` points: a stored pgmld model (`pgml:<id>` or a project's deployed
//! model, read back from pgml.files), a local directory, a local `.gguf` file (causal LMs),
//! or a Hugging Face Hub repo (cache first when offline). Errors list every place looked at.

use std::path::{Path, PathBuf};

use pgmld_hub::HubConfig;
use pgmld_sql::Caller;
use tokio_postgres::Client;

use crate::access;
use crate::error::{ModelError, Result};
use crate::files;

/// A checkpoint directory (or GGUF file) ready to load.
#[derive(Debug)]
pub struct ModelSource {
    /// Holds config.json, tokenizer and weights; for [`ModelRef::Gguf`], the `.gguf` file
    /// itself (one file holds all three).
    pub dir: PathBuf,
    /// The stored model it came from (restart from a previous model).
    pub parent_id: Option<i64>,
    /// Where it was found, for notices.
    pub origin: String,
    /// Keeps a directory extracted from pgml.files alive while the job runs.
    _extracted: Option<tempfile::TempDir>,
}

impl ModelSource {
    /// A directory that needs no cleanup (a local checkpoint, a Hub cache snapshot).
    pub fn from_dir(dir: PathBuf, origin: String) -> Self {
        ModelSource { dir, parent_id: None, origin, _extracted: None }
    }
}

/// Whether `name` is written as a server path (absolute, `./`, `../`, `file://`).
pub fn looks_like_path(name: &str) -> bool {
    name.starts_with('/')
        || name.starts_with("./")
        || name.starts_with("../")
        || name.starts_with("file://")
}

/// The stored model a project serves: its latest deployment, else its newest successful
/// model.
async fn project_model(client: &Client, name: &str) -> Result<Option<i64>> {
    let row = client
        .query_opt(
            "SELECT COALESCE( \
               (SELECT d.model_id FROM pgml.deployments d WHERE d.project_id = p.id ORDER BY d.id DESC LIMIT 1), \
               (SELECT m.id FROM pgml.models m WHERE m.project_id = p.id AND m.status = 'successful' ORDER BY m.id DESC LIMIT 1)) \
             FROM pgml.projects p WHERE p.name = $1",
            &[&name],
        )
        .await
        .map_err(|e| ModelError::pg(format!("looking up project {name}"), e))?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
}

async fn extract(
    client: &Client,
    model_id: i64,
    tmp_root: &Path,
) -> Result<(PathBuf, tempfile::TempDir)> {
    std::fs::create_dir_all(tmp_root)
        .map_err(|e| ModelError::Internal(format!("creating {}: {e}", tmp_root.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("model-{model_id}-"))
        .tempdir_in(tmp_root)
        .map_err(|e| {
        ModelError::Internal(format!("creating a directory under {}: {e}", tmp_root.display()))
    })?;
    let n = files::load_dir(client, model_id, tmp.path()).await?;
    if n == 0 {
        return Err(ModelError::NotFound {
            message: format!("model {model_id} has no files in pgml.files"),
            detail: "Only successful pgml.tune runs store their files.".into(),
        });
    }
    Ok((tmp.path().to_path_buf(), tmp))
}

/// Where a model name points, before anything is downloaded or extracted: cheap enough to
/// run on every `pgml.transform` call, so a model cache can be keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// A successful model stored in pgml.files (`pgml:<id>`, or a project's model).
    Stored {
        /// `pgml.models.id`.
        id: i64,
        /// Its project's task (text-classification, ...).
        task: String,
        /// How the caller named it, for messages.
        via: String,
    },
    /// A local checkpoint directory.
    Dir(PathBuf),
    /// A local GGUF file (config, tokenizer and weights in one file), named directly or as
    /// the only `.gguf` of a directory without config.json.
    Gguf(PathBuf),
    /// Anything else: a Hugging Face Hub repo id.
    Hub(String),
}

impl ModelRef {
    /// A stable identity for caches (`pgml:<database>:<id>`, `dir:<path>`, `gguf:<path>`,
    /// `hub:<repo>`).
    pub fn cache_key(&self, database: &str) -> String {
        match self {
            ModelRef::Stored { id, .. } => format!("pgml:{database}:{id}"),
            ModelRef::Dir(p) => format!("dir:{}", p.display()),
            ModelRef::Gguf(p) => format!("gguf:{}", p.display()),
            ModelRef::Hub(r) => format!("hub:{r}"),
        }
    }
}

async fn stored(client: &Client, id: i64, name: &str, caller: &Caller) -> Result<ModelRef> {
    let row = client
        .query_opt(
            "SELECT m.status, p.task, m.owner::text FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE m.id = $1",
            &[&id],
        )
        .await
        .map_err(|e| ModelError::pg(format!("looking up model {id}"), e))?;
    let Some(row) = row else {
        return Err(ModelError::NotFound {
            message: format!("model \"{name}\" not found"),
            detail: format!("pgml.models has no model with id {id} in this database."),
        });
    };
    let (status, task): (String, Option<String>) = (row.get(0), row.get(1));
    access::check(client, caller, row.get(2), &format!("model {id}")).await?;
    if status != "successful" {
        return Err(ModelError::NotFound {
            message: format!("model {id} is {status}, not successful"),
            detail: "Only successful models have files to start from.".into(),
        });
    }
    Ok(ModelRef::Stored { id, task: task.unwrap_or_default(), via: name.to_string() })
}

/// Whether `path` is an existing file named `*.gguf`.
fn is_gguf(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The `.gguf` file of a directory that holds exactly one.
fn only_gguf_in(dir: &Path) -> Option<PathBuf> {
    let mut found = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| is_gguf(p));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Finds what `name` refers to, in this order: `pgml:<id>`, a path, a project of this
/// database (its deployed model), else a Hub repo id. Touches neither the Hub nor the files.
/// A stored model needs membership in its owner role; a server path needs what reading a
/// server file needs, and for other roles the file system is not even asked whether a
/// bare name exists there.
pub async fn locate(client: &Client, name: &str, caller: &Caller) -> Result<ModelRef> {
    let name = name.trim();
    if let Some(id) = name.strip_prefix("pgml:") {
        let id: i64 = id.trim().parse().map_err(|_| {
            ModelError::bad(
                format!("invalid stored model reference \"{name}\""),
                "Use pgml:<model id>, e.g. pgml:42.",
            )
        })?;
        return stored(client, id, name, caller).await;
    }
    let as_path = PathBuf::from(name.strip_prefix("file://").unwrap_or(name));
    let may_read = caller.read_server_files;
    if looks_like_path(name) && !may_read {
        return Err(access::server_files_denied(caller));
    }
    if looks_like_path(name) || (may_read && (as_path.is_dir() || is_gguf(&as_path))) {
        if as_path.join("config.json").is_file() {
            return Ok(ModelRef::Dir(as_path));
        }
        if is_gguf(&as_path) {
            return Ok(ModelRef::Gguf(as_path));
        }
        if let Some(file) = only_gguf_in(&as_path) {
            return Ok(ModelRef::Gguf(file));
        }
        return Err(ModelError::NotFound {
            message: format!("model \"{name}\" not found"),
            detail: format!("{} is neither a directory holding config.json (or one .gguf file) nor a .gguf file.", as_path.display()),
        });
    }
    if let Some(id) = project_model(client, name).await? {
        return stored(client, id, &format!("project {name}"), caller).await;
    }
    Ok(ModelRef::Hub(name.to_string()))
}

/// Makes `r` a directory on disk: extracts a stored model from pgml.files under
/// `tmp_root`, or downloads a Hub repo (cache first when offline).
pub async fn fetch(
    client: &Client,
    r: &ModelRef,
    hub: &HubConfig,
    tmp_root: &Path,
) -> Result<ModelSource> {
    match r {
        ModelRef::Stored { id, via, .. } => {
            let (dir, tmp) = extract(client, *id, tmp_root).await?;
            let origin = if via.starts_with("project ") {
                format!("{via} (model {id}, from pgml.files)")
            } else {
                format!("pgml.files (model {id})")
            };
            Ok(ModelSource { dir, parent_id: Some(*id), origin, _extracted: Some(tmp) })
        }
        ModelRef::Dir(dir) => {
            Ok(ModelSource { dir: dir.clone(), parent_id: None, origin: format!("local directory {}", dir.display()), _extracted: None })
        }
        ModelRef::Gguf(file) => {
            Ok(ModelSource { dir: file.clone(), parent_id: None, origin: format!("local GGUF file {}", file.display()), _extracted: None })
        }
        ModelRef::Hub(name) => match pgmld_hub::fetch_model_files(hub, name, None).await {
            Ok(dir) => Ok(ModelSource { dir, parent_id: None, origin: format!("Hugging Face Hub {name}"), _extracted: None }),
            Err(e) => Err(ModelError::NotFound {
                message: format!("model \"{name}\" not found"),
                detail: format!(
                    "Looked for a local directory {name} (none), a pgml project named {name} with a stored model in this database (none), and the Hugging Face Hub: {e}"
                ),
            }),
        },
    }
}

/// [`fetch`], at a Hub `revision` when one is given (other references have none).
pub async fn fetch_at(
    client: &Client,
    r: &ModelRef,
    revision: Option<&str>,
    hub: &HubConfig,
    tmp_root: &Path,
) -> Result<ModelSource> {
    match (r, revision) {
        (ModelRef::Hub(name), Some(rev)) => {
            let dir = pgmld_hub::fetch_model_files(hub, name, Some(rev)).await.map_err(|e| {
                ModelError::NotFound {
                    message: format!("model \"{name}\" revision {rev} not found"),
                    detail: format!("Hugging Face Hub: {e}"),
                }
            })?;
            Ok(ModelSource::from_dir(dir, format!("Hugging Face Hub {name}@{rev}")))
        }
        _ => fetch(client, r, hub, tmp_root).await,
    }
}

/// [`locate`] then [`fetch`].
pub async fn resolve(
    client: &Client,
    name: &str,
    caller: &Caller,
    hub: &HubConfig,
    tmp_root: &Path,
) -> Result<ModelSource> {
    let r = locate(client, name, caller).await?;
    fetch(client, &r, hub, tmp_root).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_files_are_found_directly_or_alone_in_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("Model.Q4_1.GGUF");
        std::fs::write(&file, b"GGUF").unwrap();
        assert!(is_gguf(&file));
        assert!(!is_gguf(tmp.path()));
        assert_eq!(only_gguf_in(tmp.path()), Some(file.clone()));
        std::fs::write(tmp.path().join("other.gguf"), b"GGUF").unwrap();
        assert_eq!(only_gguf_in(tmp.path()), None, "two files: ambiguous");
        assert_eq!(
            ModelRef::Gguf(file.clone()).cache_key("db"),
            format!("gguf:{}", file.display())
        );
    }
}
