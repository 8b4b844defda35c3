//! Finding the Postgres server binaries (`initdb`, `pg_ctl`, `postgres`).

use crate::SchemaError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian and Ubuntu install one directory per Postgres major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Returns the directory holding the server binaries.
///
/// `explicit` (the `pg_bin_dir` setting) wins and is not second-guessed: when it lacks the
/// binaries that is an error. Otherwise `pg_config --bindir` is asked, then the newest
/// `/usr/lib/postgresql/<version>/bin` is taken (Debian's `pg_config` may point at
/// `/usr/bin`, which has no `initdb`).
pub fn find_bin_dir(explicit: Option<&Path>) -> Result<PathBuf, SchemaError> {
    if let Some(dir) = explicit {
        return if has_server_bins(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(SchemaError::BinariesNotFound { tried: format!("{} (configured)", dir.display()) })
        };
    }
    let mut tried = Vec::new();
    match Command::new("pg_config").arg("--bindir").output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_bins(&dir) {
                return Ok(dir);
            }
            tried.push(format!("{} (from pg_config --bindir)", dir.display()));
        }
        Ok(out) => tried.push(format!("pg_config --bindir ({})", out.status)),
        Err(e) => tried.push(format!("pg_config --bindir ({e})")),
    }
    let names: Vec<String> = match std::fs::read_dir(DEBIAN_ROOT) {
        Ok(entries) => entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(_) => Vec::new(),
    };
    for name in by_version_newest_first(names) {
        let dir = Path::new(DEBIAN_ROOT).join(&name).join("bin");
        if has_server_bins(&dir) {
            return Ok(dir);
        }
        tried.push(dir.display().to_string());
    }
    tried.push(format!("{DEBIAN_ROOT}/*/bin"));
    Err(SchemaError::BinariesNotFound { tried: tried.join(", ") })
}

/// Whether `dir` holds everything the private cluster needs.
fn has_server_bins(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file())
}

/// Keeps the names that look like Postgres versions ("15", "9.6"), newest first.
fn by_version_newest_first(names: Vec<String>) -> Vec<String> {
    let mut versions: Vec<((u32, u32), String)> = names
        .into_iter()
        .filter_map(|name| {
            let mut parts = name.splitn(2, '.');
            let major = parts.next()?.parse().ok()?;
            let minor = match parts.next() {
                Some(m) => m.parse().ok()?,
                None => 0,
            };
            Some(((major, minor), name))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, name)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let names = ["9.6", "15", "10", "README", "16", "x.1"].map(String::from).to_vec();
        assert_eq!(by_version_newest_first(names), vec!["16", "15", "10", "9.6"]);
    }

    #[test]
    fn explicit_dir_without_binaries_is_an_error() {
        let err = find_bin_dir(Some(Path::new("/nonexistent"))).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent"), "{err}");
    }

    #[test]
    fn found_dir_has_the_binaries() {
        // The test machine has a Postgres installation (it also serves the migration tests).
        let dir = find_bin_dir(None).expect("server binaries on this machine");
        assert!(has_server_bins(&dir));
        assert_eq!(find_bin_dir(Some(&dir)).expect("explicit"), dir);
    }
}
