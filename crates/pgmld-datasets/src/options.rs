//! `pgml.load_dataset` arguments: source, subset, limit and the `kwargs` object.

use crate::error::DatasetError;
use serde_json::Value as Json;

/// What to do when the target table already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Build a new table and swap it in atomically (default).
    Replace,
    /// Add the rows to the existing table, in one transaction.
    Append,
    /// Refuse with 42P07.
    Error,
}

/// Everything a load is asked to do.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Dataset id, path or file:// URL as given.
    pub source: String,
    /// Hub config name.
    pub subset: Option<String>,
    /// Keep the first N rows.
    pub limit: Option<u64>,
    /// Only this split.
    pub split: Option<String>,
    /// Hub revision (branch, tag or commit).
    pub revision: Option<String>,
    /// Existing-table policy.
    pub if_exists: IfExists,
    /// Keep only these columns (and `split`).
    pub columns: Option<Vec<String>>,
    /// Field delimiter for csv/tsv files.
    pub delimiter: Option<u8>,
    /// Whether csv/tsv files start with a header row (default true).
    pub header: bool,
    /// Target table (`schema.name` or `name`, which goes in schema pgml).
    pub table: Option<String>,
}

/// kwargs keys pgmld understands.
pub const KWARGS: &[&str] =
    &["split", "revision", "if_exists", "columns", "delimiter", "header", "table"];

impl LoadOptions {
    /// Reads the SQL arguments; errors name the bad key or value.
    pub fn new(
        source: String,
        subset: Option<String>,
        limit: Option<i64>,
        kwargs: &Json,
    ) -> Result<Self, DatasetError> {
        let bad = |m: String| DatasetError::BadArgument(m);
        if source.trim().is_empty() {
            return Err(bad(
                "load_dataset needs a source: a Hugging Face dataset id, a file or a directory"
                    .into(),
            ));
        }
        let limit = match limit {
            None => None,
            Some(n) if n >= 0 => Some(n as u64),
            Some(n) => return Err(bad(format!("limit must be zero or more, got {n}"))),
        };
        let obj = match kwargs {
            Json::Null => serde_json::Map::new(),
            Json::Object(o) => o.clone(),
            other => return Err(bad(format!("kwargs must be a JSON object, got {other}"))),
        };
        if let Some(k) = obj.keys().find(|k| !KWARGS.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown kwargs key \"{k}\"; supported: {}",
                KWARGS.join(", ")
            )));
        }
        let string = |key: &str| -> Result<Option<String>, DatasetError> {
            match obj.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!("kwargs \"{key}\" must be a string, got {other}"))),
            }
        };
        let if_exists = match string("if_exists")?.as_deref() {
            None | Some("replace") => IfExists::Replace,
            Some("append") => IfExists::Append,
            Some("error") => IfExists::Error,
            Some(other) => {
                return Err(bad(format!(
                    "kwargs \"if_exists\" must be replace, append or error, got \"{other}\""
                )))
            }
        };
        let columns = match obj.get("columns") {
            None | Some(Json::Null) => None,
            Some(Json::Array(items)) if !items.is_empty() => Some(
                items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_string).ok_or_else(|| {
                            bad(format!("kwargs \"columns\" must list column names, got {i}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => {
                return Err(bad(format!(
                    "kwargs \"columns\" must be a non-empty array of names, got {other}"
                )))
            }
        };
        let delimiter = match string("delimiter")? {
            None => None,
            Some(d) if d.len() == 1 => Some(d.as_bytes()[0]),
            Some(d) if d == "\\t" => Some(b'\t'),
            Some(d) => {
                return Err(bad(format!(
                    "kwargs \"delimiter\" must be one ASCII character, got \"{d}\""
                )))
            }
        };
        let header = match obj.get("header") {
            None | Some(Json::Null) => true,
            Some(Json::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(format!("kwargs \"header\" must be true or false, got {other}")))
            }
        };
        Ok(LoadOptions {
            source,
            subset,
            limit,
            split: string("split")?,
            revision: string("revision")?,
            if_exists,
            columns,
            delimiter,
            header,
            table: string("table")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kwargs_are_read_and_checked() {
        let o = LoadOptions::new("imdb".into(), None, Some(10), &json!({"split": "train", "if_exists": "append", "columns": ["text"], "delimiter": ";", "header": false})).unwrap();
        assert_eq!(o.split.as_deref(), Some("train"));
        assert_eq!(o.if_exists, IfExists::Append);
        assert_eq!(o.delimiter, Some(b';'));
        assert!(!o.header);
        let e = LoadOptions::new("imdb".into(), None, None, &json!({"splti": "x"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"splti\"") && e.contains("split"), "{e}");
        let e = LoadOptions::new("imdb".into(), None, None, &json!({"if_exists": "merge"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("merge"), "{e}");
        assert!(LoadOptions::new("imdb".into(), None, Some(-1), &json!({})).is_err());
        assert!(LoadOptions::new(" ".into(), None, None, &json!({})).is_err());
    }
}
