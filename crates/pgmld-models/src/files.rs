//! Model files in `pgml.files`: written in parts of a bounded size, read back part by part,
//! so a file never has to fit in memory whole.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::{Client, Statement, Transaction};

use crate::error::{ModelError, Result};

fn io(what: &str, path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Internal(format!("{what} {}: {e}", path.display()))
}

/// The regular files directly in `dir`, by name.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("listing", dir, e))? {
        let entry = entry.map_err(|e| io("listing", dir, e))?;
        if entry.file_type().map_err(|e| io("listing", dir, e))?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Where a model's resumable checkpoint lives in `pgml.files`: `checkpoint/<file>`.
pub const CHECKPOINT_PREFIX: &str = "checkpoint/";

/// The training data of a checkpointed run, stored once per model next to its checkpoint.
pub const DATASET_FILE: &str = "dataset.jsonl";

/// Files belong to their model's owner.
const INSERT: &str = "INSERT INTO pgml.files (model_id, path, part, data, owner) \
                      SELECT $1, $2, $3, $4, m.owner FROM pgml.models m WHERE m.id = $1";

/// Inserts one file as `name`, cut into parts of at most `part_bytes`. Returns its size.
async fn insert_file(
    tx: &Transaction<'_>,
    stmt: &Statement,
    model_id: i64,
    name: &str,
    mut reader: impl Read,
    part_bytes: usize,
) -> Result<u64> {
    let mut part = 0i32;
    let mut total = 0u64;
    loop {
        let mut buf = Vec::with_capacity(part_bytes.min(1 << 24));
        (&mut reader)
            .take(part_bytes as u64)
            .read_to_end(&mut buf)
            .map_err(|e| ModelError::Internal(format!("reading {name}: {e}")))?;
        if buf.is_empty() && part > 0 {
            break;
        }
        total += buf.len() as u64;
        let last = buf.len() < part_bytes;
        tx.execute(stmt, &[&model_id, &name, &part, &buf])
            .await
            .map_err(|e| ModelError::pg(format!("storing {name} part {part}"), e))?;
        part += 1;
        if last {
            break;
        }
    }
    Ok(total)
}

/// Stores every file of `dir` for `model_id`, each cut into parts of at most `part_bytes`,
/// in one transaction (a model has all its files or none) that also drops the model's
/// checkpoint (`checkpoint/…`), which a finished model no longer needs. Returns (files,
/// bytes) stored.
pub async fn store_dir(
    client: &mut Client,
    model_id: i64,
    dir: &Path,
    part_bytes: usize,
) -> Result<(usize, u64)> {
    let part_bytes = part_bytes.max(1);
    let tx = client.transaction().await.map_err(|e| ModelError::pg("storing model files", e))?;
    let stmt = tx.prepare(INSERT).await.map_err(|e| ModelError::pg("storing model files", e))?;
    let (mut count, mut total) = (0usize, 0u64);
    for path in files_in(dir)? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = std::fs::File::open(&path).map_err(|e| io("opening", &path, e))?;
        total += insert_file(&tx, &stmt, model_id, &name, file, part_bytes).await?;
        count += 1;
    }
    delete_checkpoint_in(&tx, model_id, true).await?;
    tx.commit().await.map_err(|e| ModelError::pg("storing model files", e))?;
    Ok((count, total))
}

async fn delete_checkpoint_in(
    tx: &Transaction<'_>,
    model_id: i64,
    with_dataset: bool,
) -> Result<()> {
    let keep =
        if with_dataset { String::new() } else { format!("{CHECKPOINT_PREFIX}{DATASET_FILE}") };
    tx.execute(
        "DELETE FROM pgml.files WHERE model_id = $1 AND starts_with(path, $2) AND path <> $3",
        &[&model_id, &CHECKPOINT_PREFIX, &keep],
    )
    .await
    .map_err(|e| ModelError::pg("deleting the checkpoint's files", e))?;
    Ok(())
}

/// Drops the stored checkpoint of `model_id` (and its training data) and clears its job's
/// `checkpoint_step`: for a model that failed in a way a resume would not fix.
pub async fn delete_checkpoint(client: &mut Client, model_id: i64) -> Result<()> {
    let tx =
        client.transaction().await.map_err(|e| ModelError::pg("deleting the checkpoint", e))?;
    delete_checkpoint_in(&tx, model_id, true).await?;
    tx.execute("UPDATE pgml.jobs SET checkpoint_step = NULL WHERE model_id = $1", &[&model_id])
        .await
        .map_err(|e| ModelError::pg("deleting the checkpoint", e))?;
    tx.commit().await.map_err(|e| ModelError::pg("deleting the checkpoint", e))
}

/// Stores the checkpoint `dir` holds (what `SavePoint::write_checkpoint` wrote) as the
/// model's `checkpoint/…` files, in one transaction that replaces the previous checkpoint's
/// rows, inserts `trainer_state.json` last, stores `dataset` (the run's training data, JSON
/// lines) when given, and sets the job's `checkpoint_step`. Returns the bytes stored.
pub async fn store_checkpoint(
    client: &mut Client,
    (model_id, job_id): (i64, i64),
    step: i64,
    dir: &Path,
    dataset: Option<&[u8]>,
    part_bytes: usize,
) -> Result<u64> {
    let part_bytes = part_bytes.max(1);
    let ctx = || format!("storing the checkpoint of step {step}");
    let is_state =
        |p: &PathBuf| p.file_name().is_some_and(|n| n == pgmld_train::train_state::STATE_FILE);
    let mut files = files_in(dir)?;
    // trainer_state.json marks a complete checkpoint: it goes in last.
    files.sort_by_key(is_state);
    if !files.last().is_some_and(is_state) {
        return Err(ModelError::Internal(format!("{} holds no trainer_state.json", dir.display())));
    }
    let tx = client.transaction().await.map_err(|e| ModelError::pg(ctx(), e))?;
    delete_checkpoint_in(&tx, model_id, dataset.is_some()).await?;
    let stmt = tx.prepare(INSERT).await.map_err(|e| ModelError::pg(ctx(), e))?;
    let mut total = 0u64;
    if let Some(data) = dataset {
        let name = format!("{CHECKPOINT_PREFIX}{DATASET_FILE}");
        total += insert_file(&tx, &stmt, model_id, &name, data, part_bytes).await?;
    }
    for path in files {
        let name = format!(
            "{CHECKPOINT_PREFIX}{}",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        );
        let file = std::fs::File::open(&path).map_err(|e| io("opening", &path, e))?;
        total += insert_file(&tx, &stmt, model_id, &name, file, part_bytes).await?;
    }
    tx.execute(
        "UPDATE pgml.jobs SET checkpoint_step = $2, heartbeat_at = clock_timestamp() WHERE id = $1",
        &[&job_id, &step],
    )
    .await
    .map_err(|e| ModelError::pg(ctx(), e))?;
    tx.commit().await.map_err(|e| ModelError::pg(ctx(), e))?;
    Ok(total)
}

/// Stores a queued run's training data (`checkpoint/dataset.jsonl`, JSON lines) before
/// any checkpoint exists, replacing a previous copy, so that whichever worker claims the
/// job trains on exactly these rows. Returns the bytes stored.
pub async fn store_dataset(
    client: &mut Client,
    model_id: i64,
    dataset: &[u8],
    part_bytes: usize,
) -> Result<u64> {
    let name = format!("{CHECKPOINT_PREFIX}{DATASET_FILE}");
    let tx =
        client.transaction().await.map_err(|e| ModelError::pg("storing the training data", e))?;
    tx.execute("DELETE FROM pgml.files WHERE model_id = $1 AND path = $2", &[&model_id, &name])
        .await
        .map_err(|e| ModelError::pg("storing the training data", e))?;
    let stmt =
        tx.prepare(INSERT).await.map_err(|e| ModelError::pg("storing the training data", e))?;
    let total = insert_file(&tx, &stmt, model_id, &name, dataset, part_bytes.max(1)).await?;
    tx.commit().await.map_err(|e| ModelError::pg("storing the training data", e))?;
    Ok(total)
}

/// Whether `model_id` has a complete stored checkpoint (its `trainer_state.json`).
pub async fn has_checkpoint(client: &Client, model_id: i64) -> Result<bool> {
    let name = format!("{CHECKPOINT_PREFIX}{}", pgmld_train::train_state::STATE_FILE);
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pgml.files WHERE model_id = $1 AND path = $2)",
            &[&model_id, &name],
        )
        .await
        .map_err(|e| ModelError::pg("looking for a checkpoint", e))?;
    Ok(row.get(0))
}

/// A stored path that stays inside the target directory.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// Writes the files of `model_id` into `dest`, one part in memory at a time (a stored
/// checkpoint, `checkpoint/…`, is left out). Returns how many files were written (0 when
/// the model has none).
pub async fn load_dir(client: &Client, model_id: i64, dest: &Path) -> Result<usize> {
    load_files(client, model_id, None, dest).await
}

/// Writes the stored checkpoint of `model_id` (its `checkpoint/…` files, without the
/// prefix) into `dest`. Returns how many files were written.
pub async fn load_checkpoint(client: &Client, model_id: i64, dest: &Path) -> Result<usize> {
    load_files(client, model_id, Some(CHECKPOINT_PREFIX), dest).await
}

async fn load_files(
    client: &Client,
    model_id: i64,
    prefix: Option<&str>,
    dest: &Path,
) -> Result<usize> {
    std::fs::create_dir_all(dest).map_err(|e| io("creating", dest, e))?;
    let (sql, wanted) = match prefix {
        Some(p) => ("SELECT path, part, data FROM pgml.files WHERE model_id = $1 AND starts_with(path, $2) ORDER BY path, part", p),
        None => ("SELECT path, part, data FROM pgml.files WHERE model_id = $1 AND NOT starts_with(path, $2) ORDER BY path, part", CHECKPOINT_PREFIX),
    };
    let rows = client
        .query_raw(sql, [&model_id as &(dyn tokio_postgres::types::ToSql + Sync), &wanted])
        .await
        .map_err(|e| ModelError::pg(format!("reading the files of model {model_id}"), e))?;
    pin_mut!(rows);
    let mut current: Option<(String, std::fs::File, i32)> = None;
    let mut count = 0;
    while let Some(row) =
        rows.try_next().await.map_err(|e| ModelError::pg("reading model files", e))?
    {
        let stored: String = row.get(0);
        let path = match prefix {
            Some(p) => stored.strip_prefix(p).unwrap_or(&stored).to_string(),
            None => stored,
        };
        let part: i32 = row.get(1);
        let data: &[u8] = row.get(2);
        let same = matches!(&current, Some((p, _, _)) if *p == path);
        if !same {
            let rel = safe_relative(&path).ok_or_else(|| {
                ModelError::Internal(format!(
                    "model {model_id} has a file with an unsafe path {path:?}"
                ))
            })?;
            let target = dest.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
            }
            let f = std::fs::File::create(&target).map_err(|e| io("creating", &target, e))?;
            current = Some((path.clone(), f, -1));
            count += 1;
        }
        if let Some((p, f, last)) = current.as_mut() {
            if part != *last + 1 {
                return Err(ModelError::Internal(format!(
                    "file {p} of model {model_id} lacks part {} (found part {part})",
                    *last + 1
                )));
            }
            f.write_all(data).map_err(|e| io("writing", &dest.join(p.as_str()), e))?;
            *last = part;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(safe_relative("config.json").is_some());
        assert!(safe_relative("sub/model.safetensors").is_some());
        for bad in ["", "../x", "/etc/passwd", "a/../../b"] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
