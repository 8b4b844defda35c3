//! Where the rows come from (hub dataset or local path) and which table they go to.

use crate::error::DatasetError;
use crate::hub::{DataFile, Format};
use std::path::{Path, PathBuf};

/// A parsed `source` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file or directory on pgmld's machine (path or `file://` URL).
    Local(PathBuf),
    /// A Hugging Face dataset id (`imdb`, `FinGPT/fingpt-sentiment-train`).
    Hub(String),
}

impl Source {
    /// Paths (absolute, `./`, `../`, `~/`, `file://`, or, when `look` allows asking the
    /// file system, anything that exists) are local; everything else is a hub id. Roles
    /// that may not read server files get no answer from the file system, not even
    /// whether a name exists there.
    pub fn parse(s: &str, look: bool) -> Source {
        if let Some(p) = s.strip_prefix("file://") {
            return Source::Local(PathBuf::from(p));
        }
        if let Some(rest) = s.strip_prefix("~/") {
            if let Some(home) = std::env::var_os("HOME") {
                return Source::Local(PathBuf::from(home).join(rest));
            }
        }
        if s.starts_with('/')
            || s.starts_with("./")
            || s.starts_with("../")
            || (look && Path::new(s).exists())
        {
            return Source::Local(PathBuf::from(s));
        }
        Source::Hub(s.to_string())
    }

    /// `(schema, table)` the rows go to: `kwargs.table` when given (`name` or
    /// `schema.name`), else `pgml."<dataset id>"` or `pgml.<file stem>`.
    pub fn table(&self, explicit: Option<&str>) -> Result<(String, String), DatasetError> {
        let (schema, name) = match explicit {
            Some(t) => match t.split_once('.') {
                Some((s, n)) if !s.is_empty() && !n.is_empty() => (s.to_string(), n.to_string()),
                _ => ("pgml".to_string(), t.to_string()),
            },
            None => match self {
                Source::Hub(id) => ("pgml".to_string(), id.clone()),
                Source::Local(p) => ("pgml".to_string(), file_stem(p)),
            },
        };
        if name.is_empty() || name.len() > 63 || schema.len() > 63 {
            return Err(DatasetError::BadArgument(format!(
                "table name \"{schema}.{name}\" must be 1 to 63 bytes per part; pass kwargs => '{{\"table\": \"...\"}}'"
            )));
        }
        Ok((schema, name))
    }
}

/// `reviews` for `reviews.csv.gz`, the directory name for a directory.
fn file_stem(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut stem = name.as_str();
    for ext in [".gz", ".parquet", ".csv", ".tsv", ".jsonl", ".json", ".ndjson"] {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s;
        }
    }
    stem.to_string()
}

/// The data files of a local file or directory (recursively, in name order).
pub fn local_files(path: &Path) -> Result<Vec<DataFile>, DatasetError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        DatasetError::MissingFile(format!("cannot read local source {}: {e}", path.display()))
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| {
                DatasetError::MissingFile(format!("cannot list {}: {e}", dir.display()))
            })?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(f) = data_file(&p, path) {
                    files.push(f);
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if files.is_empty() {
            return Err(DatasetError::MissingFile(format!(
                "directory {} holds no parquet, csv, tsv, json or jsonl file (optionally .gz)",
                path.display()
            )));
        }
    } else {
        files.push(data_file(path, path.parent().unwrap_or(Path::new("."))).ok_or_else(|| {
            DatasetError::Unsupported(format!(
                "cannot tell the format of {}: use a .parquet, .csv, .tsv, .json or .jsonl file (optionally .gz)",
                path.display()
            ))
        })?);
    }
    Ok(files)
}

fn data_file(p: &Path, root: &Path) -> Option<DataFile> {
    let (format, gzip) = Format::from_path(p)?;
    let rel = p.strip_prefix(root).unwrap_or(p);
    Some(DataFile {
        split: crate::hub::split_from_path(&rel.to_string_lossy()),
        path: p.to_path_buf(),
        format,
        gzip,
        origin: p.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_tables() {
        assert_eq!(Source::parse("imdb", true), Source::Hub("imdb".into()));
        assert_eq!(Source::parse("file:///x/a.csv", false), Source::Local("/x/a.csv".into()));
        assert_eq!(Source::parse("./a.csv", false), Source::Local("./a.csv".into()));
        assert_eq!(Source::parse("Cargo.toml", true), Source::Local("Cargo.toml".into()));
        assert_eq!(Source::parse("Cargo.toml", false), Source::Hub("Cargo.toml".into()));
        let hub = Source::Hub("FinGPT/fingpt-sentiment-train".into());
        assert_eq!(
            hub.table(None).unwrap(),
            ("pgml".into(), "FinGPT/fingpt-sentiment-train".into())
        );
        let local = Source::Local("/data/reviews.csv.gz".into());
        assert_eq!(local.table(None).unwrap(), ("pgml".into(), "reviews".into()));
        assert_eq!(local.table(Some("public.r")).unwrap(), ("public".into(), "r".into()));
        assert!(local.table(Some(&"x".repeat(64))).is_err());
    }
}
