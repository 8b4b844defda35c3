//! Model files in `pgml.files`: written in parts of a bounded size, read back part by part,
//! so a file never has to fit in memory whole.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::Client;

use crate::error::{Result, TuneError};

fn io(what: &str, path: &Path, e: std::io::Error) -> TuneError {
    TuneError::Internal(format!("{what} {}: {e}", path.display()))
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

/// Stores every file of `dir` for `model_id`, each cut into parts of at most `part_bytes`,
/// in one transaction (a model has all its files or none). Returns (files, bytes) stored.
pub async fn store_dir(client: &mut Client, model_id: i64, dir: &Path, part_bytes: usize) -> Result<(usize, u64)> {
    let part_bytes = part_bytes.max(1);
    let tx = client.transaction().await.map_err(|e| TuneError::pg("storing model files", e))?;
    let stmt = tx
        .prepare("INSERT INTO pgml.files (model_id, path, part, data) VALUES ($1, $2, $3, $4)")
        .await
        .map_err(|e| TuneError::pg("storing model files", e))?;
    let (mut count, mut total) = (0usize, 0u64);
    for path in files_in(dir)? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut file = std::fs::File::open(&path).map_err(|e| io("opening", &path, e))?;
        let mut part = 0i32;
        loop {
            let mut buf = Vec::with_capacity(part_bytes);
            (&mut file).take(part_bytes as u64).read_to_end(&mut buf).map_err(|e| io("reading", &path, e))?;
            if buf.is_empty() && part > 0 {
                break;
            }
            total += buf.len() as u64;
            let last = buf.len() < part_bytes;
            tx.execute(&stmt, &[&model_id, &name, &part, &buf])
                .await
                .map_err(|e| TuneError::pg(format!("storing {name} part {part}"), e))?;
            part += 1;
            if last {
                break;
            }
        }
        count += 1;
    }
    tx.commit().await.map_err(|e| TuneError::pg("storing model files", e))?;
    Ok((count, total))
}

/// A stored path that stays inside the target directory.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// Writes the files of `model_id` into `dest`, one part in memory at a time. Returns how
/// many files were written (0 when the model has none).
pub async fn load_dir(client: &Client, model_id: i64, dest: &Path) -> Result<usize> {
    std::fs::create_dir_all(dest).map_err(|e| io("creating", dest, e))?;
    let rows = client
        .query_raw(
            "SELECT path, part, data FROM pgml.files WHERE model_id = $1 ORDER BY path, part",
            &[&model_id],
        )
        .await
        .map_err(|e| TuneError::pg(format!("reading the files of model {model_id}"), e))?;
    pin_mut!(rows);
    let mut current: Option<(String, std::fs::File, i32)> = None;
    let mut count = 0;
    while let Some(row) = rows.try_next().await.map_err(|e| TuneError::pg("reading model files", e))? {
        let path: String = row.get(0);
        let part: i32 = row.get(1);
        let data: &[u8] = row.get(2);
        let same = matches!(&current, Some((p, _, _)) if *p == path);
        if !same {
            let rel = safe_relative(&path)
                .ok_or_else(|| TuneError::Internal(format!("model {model_id} has a file with an unsafe path {path:?}")))?;
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
                return Err(TuneError::Internal(format!(
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
