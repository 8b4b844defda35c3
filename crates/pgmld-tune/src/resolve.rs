//! Where `model_name` points: a stored pgmld model (`pgml:<id>` or a project's deployed
//! model, read back from pgml.files), a local directory, or a Hugging Face Hub repo (cache
//! first when offline). Errors list every place looked at.

use std::path::{Path, PathBuf};

use pgmld_datasets::hub::HubConfig;
use tokio_postgres::Client;

use crate::error::{Result, TuneError};
use crate::files;

/// A checkpoint directory ready to load.
#[derive(Debug)]
pub struct ModelSource {
    /// Holds config.json, tokenizer and weights.
    pub dir: PathBuf,
    /// The stored model it came from (restart from a previous model).
    pub parent_id: Option<i64>,
    /// Where it was found, for notices.
    pub origin: String,
    /// Keeps a directory extracted from pgml.files alive while the job runs.
    _extracted: Option<tempfile::TempDir>,
}

fn looks_like_path(name: &str) -> bool {
    name.starts_with('/') || name.starts_with("./") || name.starts_with("../") || name.starts_with("file://")
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
        .map_err(|e| TuneError::pg(format!("looking up project {name}"), e))?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
}

async fn extract(client: &Client, model_id: i64, tmp_root: &Path) -> Result<(PathBuf, tempfile::TempDir)> {
    std::fs::create_dir_all(tmp_root)
        .map_err(|e| TuneError::Internal(format!("creating {}: {e}", tmp_root.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("model-{model_id}-"))
        .tempdir_in(tmp_root)
        .map_err(|e| TuneError::Internal(format!("creating a directory under {}: {e}", tmp_root.display())))?;
    let n = files::load_dir(client, model_id, tmp.path()).await?;
    if n == 0 {
        return Err(TuneError::ModelNotFound {
            message: format!("model {model_id} has no files in pgml.files"),
            detail: "Only successful pgml.tune runs store their files.".into(),
        });
    }
    Ok((tmp.path().to_path_buf(), tmp))
}

/// Resolves `name` in this order: `pgml:<id>`, a path, a project of this database, the Hub.
pub async fn resolve(client: &Client, name: &str, hub: &HubConfig, tmp_root: &Path) -> Result<ModelSource> {
    let name = name.trim();
    if let Some(id) = name.strip_prefix("pgml:") {
        let id: i64 = id.trim().parse().map_err(|_| {
            TuneError::bad(format!("invalid stored model reference \"{name}\""), "Use pgml:<model id>, e.g. pgml:42.")
        })?;
        let status: Option<String> = client
            .query_opt("SELECT status FROM pgml.models WHERE id = $1", &[&id])
            .await
            .map_err(|e| TuneError::pg(format!("looking up model {id}"), e))?
            .map(|r| r.get(0));
        return match status.as_deref() {
            Some("successful") => {
                let (dir, tmp) = extract(client, id, tmp_root).await?;
                Ok(ModelSource { dir, parent_id: Some(id), origin: format!("pgml.files (model {id})"), _extracted: Some(tmp) })
            }
            Some(other) => Err(TuneError::ModelNotFound {
                message: format!("model {id} is {other}, not successful"),
                detail: "Only successful models have files to start from.".into(),
            }),
            None => Err(TuneError::ModelNotFound {
                message: format!("model \"{name}\" not found"),
                detail: format!("pgml.models has no model with id {id} in this database."),
            }),
        };
    }
    let as_path = PathBuf::from(name.strip_prefix("file://").unwrap_or(name));
    if looks_like_path(name) || as_path.is_dir() {
        if as_path.join("config.json").is_file() {
            return Ok(ModelSource { dir: as_path, parent_id: None, origin: format!("local directory {name}"), _extracted: None });
        }
        return Err(TuneError::ModelNotFound {
            message: format!("model \"{name}\" not found"),
            detail: format!("{} is not a directory holding config.json.", as_path.display()),
        });
    }
    if let Some(id) = project_model(client, name).await? {
        let (dir, tmp) = extract(client, id, tmp_root).await?;
        return Ok(ModelSource {
            dir,
            parent_id: Some(id),
            origin: format!("project {name} (model {id}, from pgml.files)"),
            _extracted: Some(tmp),
        });
    }
    match pgmld_datasets::hub::fetch_model_files(hub, name, None).await {
        Ok(dir) => Ok(ModelSource { dir, parent_id: None, origin: format!("Hugging Face Hub {name}"), _extracted: None }),
        Err(e) => Err(TuneError::ModelNotFound {
            message: format!("model \"{name}\" not found"),
            detail: format!(
                "Looked for a local directory {name} (none), a pgml project named {name} with a stored model in this database (none), and the Hugging Face Hub: {e}"
            ),
        }),
    }
}
