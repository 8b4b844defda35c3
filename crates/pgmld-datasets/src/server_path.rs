//! Which server files a call may read: what `COPY ... FROM '<file>'` allows (superuser or
//! `pg_read_server_files`), further confined to the `dataset_dirs` setting when it is set.
//! A refusal never says whether the path exists.

use crate::error::DatasetError;
use pgmld_sql::{codes, Caller, SqlError};
use std::path::{Component, Path, PathBuf};

/// `path` resolved (symlinks and `..`), when the caller may read it; else the 42501.
/// `dirs` empty means no confinement beyond the role check.
pub fn allowed(caller: &Caller, path: &Path, dirs: &[PathBuf]) -> Result<PathBuf, DatasetError> {
    if !caller.read_server_files {
        return Err(DatasetError::Denied(caller.server_files_denied("a dataset")));
    }
    if dirs.is_empty() {
        return Ok(path.to_path_buf());
    }
    let resolved = resolve(path);
    if dirs.iter().any(|d| resolved.starts_with(resolve(d))) {
        return Ok(resolved);
    }
    Err(DatasetError::Denied(
        SqlError::new(
            codes::INSUFFICIENT_PRIVILEGE,
            format!("permission denied to read \"{}\": outside dataset_dirs", path.display()),
        )
        .with_detail(
            "pgmld's dataset_dirs setting confines local dataset sources to: ".to_string()
                + &list(dirs),
        )
        .with_hint(
            "Put the file under one of those directories, or load it from the Hugging Face Hub.",
        ),
    ))
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The canonical form of `path`: its longest existing ancestor canonicalised (symlinks
/// followed), the rest appended with `.` and `..` applied lexically. Paths that do not
/// exist resolve too, so confinement is decided the same way whether or not they exist.
fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(path)
    };
    let mut existing = absolute.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let base = loop {
        if let Ok(c) = existing.canonicalize() {
            break c;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent().map(Path::to_path_buf),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent;
            }
            // `..` at the end, or the root: apply what is left lexically.
            _ => break normalize(&existing),
        }
    };
    let mut out = base;
    for name in rest.iter().rev() {
        out.push(name);
    }
    normalize(&out)
}

/// `.` dropped and `..` applied without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Caller {
        Caller { role: "loader".into(), superuser: false, read_server_files: true }
    }

    #[test]
    fn roles_without_server_files_are_refused_whatever_the_path() {
        for p in ["/etc/passwd", "/nonexistent/x.csv"] {
            let e: SqlError = allowed(&Caller::plain("app"), Path::new(p), &[]).unwrap_err().into();
            assert_eq!(e.code, "42501");
            assert!(!e.message.contains(p) && !e.message.contains("exist"), "{}", e.message);
        }
        assert_eq!(
            allowed(&reader(), Path::new("/x/y.csv"), &[]).unwrap(),
            PathBuf::from("/x/y.csv")
        );
    }

    #[test]
    fn dataset_dirs_confine_after_resolving_links_and_dots() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("a.csv"), "x\n1\n").unwrap();
        std::fs::write(root.path().join("secret.csv"), "x\n1\n").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.csv"), data.join("link.csv")).unwrap();
        let dirs = vec![data.clone()];
        assert!(allowed(&reader(), &data.join("a.csv"), &dirs).is_ok());
        assert!(
            allowed(&reader(), &data.join("missing.csv"), &dirs).is_ok(),
            "inside: the load says it is missing"
        );
        for bad in [
            data.join("../secret.csv"),
            data.join("link.csv"),
            root.path().join("secret.csv"),
            data.join("nope/../../secret.csv"),
        ] {
            let e: SqlError = allowed(&reader(), &bad, &dirs).unwrap_err().into();
            assert_eq!(e.code, "42501", "{}", bad.display());
        }
        let missing: SqlError =
            allowed(&reader(), &root.path().join("missing.csv"), &dirs).unwrap_err().into();
        let present: SqlError =
            allowed(&reader(), &root.path().join("secret.csv"), &dirs).unwrap_err().into();
        assert_eq!(missing.message.replace("missing", "X"), present.message.replace("secret", "X"));
    }
}
