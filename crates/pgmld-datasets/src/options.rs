//! `pgml.load_dataset` arguments: source, subset, limit and the `kwargs` object.
//!
//! kwargs hold pgmld's own keys ([`KWARGS`]) and, as PostgresML passes them on to
//! `datasets.load_dataset`, the builder's: the config (`name`, `subset`, `config_name`, or a
//! `lang1` / `lang2` pair for translation datasets such as `kde4`) is honoured, builder keys
//! that change nothing about the rows loaded are accepted with a NOTICE
//! ([`IGNORED_KWARGS`]), and those pgmld cannot honour are refused with a hint
//! ([`REFUSED_KWARGS`]), as is any other key.

use crate::error::DatasetError;
use crate::hub::Format;
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
    /// Hub config name: the `subset` argument, kwargs `name` / `subset` / `config_name`, or
    /// `<lang1>-<lang2>`.
    pub subset: Option<String>,
    /// kwargs `lang1` and `lang2`, when they chose the config, for messages.
    pub lang_pair: Option<(String, String)>,
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
    /// How local files are read, whatever their names say (kwargs `format`).
    pub format: Option<Format>,
    /// Field delimiter for csv/tsv files (kwargs `delimiter` or `sep`); given for a local
    /// file, it makes the file delimited text whatever its name.
    pub delimiter: Option<u8>,
    /// Whether csv/tsv files start with a header row (default true).
    pub header: bool,
    /// Target table (`schema.name` or `name`, which goes in schema pgml).
    pub table: Option<String>,
    /// NOTICEs for the client: builder kwargs that were accepted and ignored.
    pub notices: Vec<String>,
}

/// kwargs keys pgmld reads itself.
pub const KWARGS: &[&str] = &[
    "split",
    "revision",
    "if_exists",
    "columns",
    "format",
    "delimiter",
    "sep",
    "header",
    "table",
    "name",
    "subset",
    "config_name",
    "lang1",
    "lang2",
];

/// The keys that name the Hub config, as `datasets.load_dataset` (`name`), PostgresML
/// (`subset`) and README `configs:` (`config_name`) call it.
const CONFIG_KWARGS: &[&str] = &["name", "subset", "config_name"];

/// `datasets.load_dataset` kwargs that change nothing about the rows pgmld loads; each is
/// accepted with a NOTICE saying why it does not matter here.
pub const IGNORED_KWARGS: &[(&str, &str)] = &[
    (
        "trust_remote_code",
        "pgmld runs no dataset scripts; it reads the repo's data files or the Hub's parquet conversion",
    ),
    ("streaming", "pgmld always streams the rows into the table"),
    ("keep_in_memory", "pgmld never holds a dataset in memory"),
    ("num_proc", "pgmld reads with one thread and writes with COPY"),
    ("cache_dir", "pgmld uses the Hugging Face cache of its own environment (HF_HOME, HF_HUB_CACHE)"),
    ("download_mode", "pgmld downloads what its cache lacks and reuses the rest"),
    ("verification_mode", "pgmld checks every downloaded file against the Hub's size and hash"),
];

/// `datasets.load_dataset` kwargs pgmld cannot honour, each with what to do instead;
/// refused with 22023.
pub const REFUSED_KWARGS: &[(&str, &str)] = &[
    (
        "data_files",
        "pgmld picks a Hub dataset's files by its README configs or the Hub's parquet conversion: choose a config with subset => '...', one split with kwargs \"split\", or load a file or directory by its path",
    ),
    (
        "data_dir",
        "pgmld picks a Hub dataset's files by its README configs or the Hub's parquet conversion: choose a config with subset => '...' (a top-level directory is a config), or load a directory by its path",
    ),
    (
        "token",
        "pgmld reads the Hub token from HF_TOKEN in its own environment; a token in SQL text would reach logs",
    ),
    (
        "use_auth_token",
        "pgmld reads the Hub token from HF_TOKEN in its own environment; a token in SQL text would reach logs",
    ),
    (
        "features",
        "column types follow the data; cast in SQL after loading, or keep some columns with kwargs \"columns\"",
    ),
];

/// What the hint of a refused or unknown key says pgmld accepts.
fn accepted_hint() -> String {
    format!(
        "pgml.load_dataset reads the kwargs {}; it ignores {} with a NOTICE.",
        KWARGS.join(", "),
        IGNORED_KWARGS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
    )
}

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
        let mut notices = Vec::new();
        for k in obj.keys() {
            if KWARGS.contains(&k.as_str()) {
                continue;
            }
            if let Some((_, why)) = IGNORED_KWARGS.iter().find(|(name, _)| name == k) {
                notices.push(format!("load_dataset ignores kwargs \"{k}\": {why}"));
            } else if let Some((_, instead)) = REFUSED_KWARGS.iter().find(|(name, _)| name == k) {
                // The value is never echoed: it may be a token.
                return Err(DatasetError::invalid(
                    format!("load_dataset cannot honour kwargs \"{k}\""),
                    format!("{}. {}", capitalise(instead), accepted_hint()),
                ));
            } else {
                return Err(DatasetError::invalid(
                    format!("unknown kwargs key \"{k}\"; supported: {}", KWARGS.join(", ")),
                    accepted_hint(),
                ));
            }
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
        let delimiter = delimiter(string("delimiter")?, string("sep")?)?;
        let format = match string("format")? {
            None => None,
            Some(name) => Some(Format::from_name(&name).ok_or_else(|| {
                DatasetError::invalid(
                    format!("kwargs \"format\" must be one of {}, got \"{name}\"", Format::NAMES),
                    "Drop \"format\" to go by the file's name or content.",
                )
            })?),
        };
        if let (Some(f), Some(d)) = (format, delimiter) {
            if !f.is_delimited() {
                return Err(DatasetError::invalid(
                    format!(
                        "kwargs \"delimiter\" {} applies to csv and tsv files, not to format \"{}\"",
                        show_delimiter(d),
                        f.name()
                    ),
                    "Drop \"delimiter\", or pass \"format\": \"csv\".",
                ));
            }
        }
        let header = match obj.get("header") {
            None | Some(Json::Null) => true,
            Some(Json::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(format!("kwargs \"header\" must be true or false, got {other}")))
            }
        };
        let (subset, lang_pair) = config(subset, &string, string("lang1")?, string("lang2")?)?;
        Ok(LoadOptions {
            source,
            subset,
            lang_pair,
            limit,
            split: string("split")?,
            revision: string("revision")?,
            if_exists,
            columns,
            format,
            delimiter,
            header,
            table: string("table")?,
            notices,
        })
    }
}

/// The config name, and the `lang1` / `lang2` pair when that chose it.
type ChosenConfig = (Option<String>, Option<(String, String)>);

/// The Hub config asked for: the `subset` argument and kwargs `name` / `subset` /
/// `config_name` (which must agree), or `<lang1>-<lang2>`, the name the `datasets` builders
/// of translation corpora (kde4, opus_books, …) give a language pair's config.
fn config(
    arg: Option<String>,
    string: &dyn Fn(&str) -> Result<Option<String>, DatasetError>,
    lang1: Option<String>,
    lang2: Option<String>,
) -> Result<ChosenConfig, DatasetError> {
    let mut named: Vec<(String, String)> = Vec::new();
    if let Some(s) = arg.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
        named.push(("the subset argument".into(), s));
    }
    for key in CONFIG_KWARGS {
        if let Some(s) = string(key)?.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
            named.push((format!("kwargs \"{key}\""), s));
        }
    }
    let pair = match (lang1, lang2) {
        (None, None) => None,
        (Some(l1), Some(l2)) if !l1.trim().is_empty() && !l2.trim().is_empty() => {
            let (l1, l2) = (l1.trim().to_string(), l2.trim().to_string());
            named.push((
                format!("kwargs \"lang1\" and \"lang2\" ({l1}, {l2})"),
                format!("{l1}-{l2}"),
            ));
            Some((l1, l2))
        }
        (l1, l2) => {
            let (given, missing) = if l1.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                ("lang1", "lang2")
            } else if l2.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                ("lang2", "lang1")
            } else {
                ("lang1", "lang2")
            };
            return Err(DatasetError::invalid(
                format!("kwargs \"{given}\" needs \"{missing}\": together they name a language pair's config, <lang1>-<lang2>"),
                "Pass both, e.g. kwargs => '{\"lang1\": \"en\", \"lang2\": \"es\"}', or name the config with subset => '...'.",
            ));
        }
    };
    if let Some((first_from, first)) = named.first() {
        if let Some((from, other)) = named.iter().find(|(_, s)| s != first) {
            return Err(DatasetError::invalid(
                format!("{first_from} names config \"{first}\" but {from} names \"{other}\""),
                "Name the config once: subset => '...', or kwargs \"name\", or lang1 and lang2.",
            ));
        }
    }
    Ok((named.into_iter().next().map(|(_, s)| s), pair))
}

/// kwargs `delimiter` or its pandas / `datasets` csv name `sep` (which must agree): one ASCII
/// character, or `\t` spelt out.
fn delimiter(delimiter: Option<String>, sep: Option<String>) -> Result<Option<u8>, DatasetError> {
    let parse = |key: &str, d: String| -> Result<u8, DatasetError> {
        match d.as_str() {
            "\\t" => Ok(b'\t'),
            _ if d.len() == 1 && d.is_ascii() && d != "\n" && d != "\r" && d != "\"" => {
                Ok(d.as_bytes()[0])
            }
            _ => Err(DatasetError::BadArgument(format!(
                "kwargs \"{key}\" must be one ASCII character other than a quote or line break, got {d:?}"
            ))),
        }
    };
    let delimiter = delimiter.map(|d| parse("delimiter", d)).transpose()?;
    let sep = sep.map(|d| parse("sep", d)).transpose()?;
    match (delimiter, sep) {
        (Some(d), Some(s)) if d != s => Err(DatasetError::invalid(
            format!(
                "kwargs \"delimiter\" {} and \"sep\" {} disagree",
                show_delimiter(d),
                show_delimiter(s)
            ),
            "Pass one of them.",
        )),
        (d, s) => Ok(d.or(s)),
    }
}

/// A delimiter for messages: `"\t"` for a tab, else the character quoted.
pub fn show_delimiter(d: u8) -> String {
    match d {
        b'\t' => "\"\\t\" (tab)".into(),
        _ => format!("{:?}", char::from(d).to_string()),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmld_sql::SqlError;
    use serde_json::json;

    fn opts(subset: Option<&str>, kwargs: Json) -> Result<LoadOptions, DatasetError> {
        LoadOptions::new("kde4".into(), subset.map(str::to_string), None, &kwargs)
    }

    fn sql(e: DatasetError) -> SqlError {
        e.into()
    }

    #[test]
    fn kwargs_are_read_and_checked() {
        let o = LoadOptions::new("imdb".into(), None, Some(10), &json!({"split": "train", "if_exists": "append", "columns": ["text"], "delimiter": ";", "header": false})).unwrap();
        assert_eq!(o.split.as_deref(), Some("train"));
        assert_eq!(o.if_exists, IfExists::Append);
        assert_eq!(o.delimiter, Some(b';'));
        assert!(!o.header);
        assert!(o.notices.is_empty());
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

    #[test]
    fn format_and_delimiter() {
        let o = opts(None, json!({"format": "TSV"})).unwrap();
        assert_eq!((o.format, o.delimiter), (Some(Format::Tsv), None));
        assert_eq!(
            opts(None, json!({"format": "ndjson"})).unwrap().format,
            Some(Format::JsonLines)
        );
        assert_eq!(opts(None, json!({"delimiter": "\t"})).unwrap().delimiter, Some(b'\t'));
        assert_eq!(opts(None, json!({"delimiter": "\\t"})).unwrap().delimiter, Some(b'\t'));
        assert_eq!(opts(None, json!({"sep": "|"})).unwrap().delimiter, Some(b'|'));
        assert_eq!(
            opts(None, json!({"sep": "|", "delimiter": "|"})).unwrap().delimiter,
            Some(b'|')
        );
        let e = sql(opts(None, json!({"sep": "|", "delimiter": ","})).unwrap_err());
        assert_eq!(e.code, "22023");
        assert!(e.message.contains("\"|\"") && e.message.contains("\",\""), "{}", e.message);
        let e = sql(opts(None, json!({"format": "xlsx"})).unwrap_err());
        assert_eq!(e.code, "22023");
        assert!(
            e.message.contains("\"xlsx\"") && e.message.contains(Format::NAMES),
            "{}",
            e.message
        );
        let e = sql(opts(None, json!({"format": "json", "delimiter": "\t"})).unwrap_err());
        assert_eq!(e.code, "22023");
        assert!(e.message.contains("tab") && e.message.contains("\"json\""), "{}", e.message);
        assert!(e.hint.unwrap_or_default().contains("csv"));
        assert!(opts(None, json!({"format": "csv", "delimiter": ";"})).is_ok());
        for d in ["", "ab", "\n", "\"", "é"] {
            let e = sql(opts(None, json!({"delimiter": d})).unwrap_err());
            assert_eq!(e.code, "22023", "{d:?}");
        }
    }

    #[test]
    fn the_config_comes_from_the_argument_or_the_builder_kwargs() {
        for kw in CONFIG_KWARGS {
            let o = opts(None, json!({*kw: "en-fr"})).unwrap();
            assert_eq!(o.subset.as_deref(), Some("en-fr"), "{kw}");
            assert_eq!(o.lang_pair, None);
        }
        let o = opts(Some("en-fr"), json!({"name": "en-fr"})).unwrap();
        assert_eq!(o.subset.as_deref(), Some("en-fr"));
        let e = sql(opts(Some("en-fr"), json!({"name": "en-es"})).unwrap_err());
        assert_eq!(e.code, "22023");
        assert!(
            e.message.contains("the subset argument")
                && e.message.contains("\"en-fr\"")
                && e.message.contains("kwargs \"name\"")
                && e.message.contains("\"en-es\""),
            "{}",
            e.message
        );
        let o = opts(None, json!({"lang1": "en", "lang2": "es"})).unwrap();
        assert_eq!(o.subset.as_deref(), Some("en-es"));
        assert_eq!(o.lang_pair, Some(("en".into(), "es".into())));
        assert!(opts(Some("en-es"), json!({"lang1": "en", "lang2": "es"})).is_ok());
        let e = sql(opts(Some("fr-es"), json!({"lang1": "en", "lang2": "es"})).unwrap_err());
        assert!(e.message.contains("lang1") && e.message.contains("\"fr-es\""), "{}", e.message);
        let e = sql(opts(None, json!({"lang1": "en"})).unwrap_err());
        assert_eq!(e.code, "22023");
        assert!(e.message.contains("\"lang1\" needs \"lang2\""), "{}", e.message);
        let e = sql(opts(None, json!({"lang2": "es"})).unwrap_err());
        assert!(e.message.contains("\"lang2\" needs \"lang1\""), "{}", e.message);
        // A blank argument is no config.
        assert_eq!(opts(Some(" "), json!({})).unwrap().subset, None);
    }

    #[test]
    fn builder_kwargs_are_ignored_with_a_notice_or_refused_with_a_hint() {
        let o = opts(None, json!({"trust_remote_code": true, "streaming": false})).unwrap();
        assert_eq!(o.notices.len(), 2, "{:?}", o.notices);
        assert!(o.notices[0].contains("\"trust_remote_code\"") && o.notices[0].contains("scripts"));
        for (key, _) in REFUSED_KWARGS {
            let e = sql(opts(None, json!({*key: "hf_secretvalue"})).unwrap_err());
            assert_eq!(e.code, "22023", "{key}");
            assert!(e.message.contains(&format!("\"{key}\"")), "{}", e.message);
            let hint = e.hint.unwrap_or_default();
            assert!(
                hint.contains("subset") || hint.contains("HF_TOKEN") || hint.contains("columns"),
                "{hint}"
            );
            assert!(!e.message.contains("hf_secretvalue") && !hint.contains("hf_secretvalue"));
        }
        let e = sql(opts(None, json!({"revison": "v1"})).unwrap_err());
        assert_eq!(e.code, "22023");
        assert!(e.message.contains("\"revison\""), "{}", e.message);
        let hint = e.hint.unwrap_or_default();
        assert!(hint.contains("revision") && hint.contains("trust_remote_code"), "{hint}");
    }
}
