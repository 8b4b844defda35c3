//! Where the rows come from (hub dataset or local path) and which table they go to.

use crate::error::DatasetError;
use crate::hub::{DataFile, Format};
use crate::options::show_delimiter;
use crate::sniff::{self, Sniffed};
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

/// `reviews` for `reviews.csv.gz`, `tweets` for `tweets.txt`, the directory name for a
/// directory. A last extension of letters only goes too, so `v1.0` stays `v1.0`.
fn file_stem(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut stem = name.as_str();
    for ext in [".gz", ".parquet", ".csv", ".tsv", ".jsonl", ".json", ".ndjson"] {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s;
        }
    }
    if stem == name.as_str() {
        if let Some((s, ext)) = stem.rsplit_once('.') {
            if !s.is_empty()
                && (1..=5).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphabetic())
            {
                stem = s;
            }
        }
    }
    stem.to_string()
}

/// How the caller said local files are to be read (kwargs `format`, `delimiter`); unset,
/// a file's name decides, else its content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    /// kwargs `format`.
    pub format: Option<Format>,
    /// kwargs `delimiter` (or `sep`): delimited text, whatever the name says.
    pub delimiter: Option<u8>,
}

impl Declared {
    /// The declared format, if any: `format`, else delimited text when a delimiter was given
    /// (tsv for a tab, else csv).
    fn format(self) -> Option<Format> {
        match (self.format, self.delimiter) {
            (Some(f), _) => Some(f),
            (None, Some(b'\t')) => Some(Format::Tsv),
            (None, Some(_)) => Some(Format::Csv),
            (None, None) => None,
        }
    }

    /// What the kwargs said, for messages: `kwargs "format" csv`.
    fn describe(self) -> String {
        match (self.format, self.delimiter) {
            (Some(f), _) => format!("kwargs \"format\" says {}", f.name()),
            (None, Some(d)) => {
                format!("kwargs \"delimiter\" {} says delimited text", show_delimiter(d))
            }
            (None, None) => String::new(),
        }
    }
}

/// Extensions of formats pgmld does not read, so a name that says something unreadable is
/// refused (0A000) rather than sniffed.
const UNSUPPORTED_EXTENSIONS: &[&str] = &[
    "xlsx", "xls", "xlsm", "ods", "zip", "tar", "tgz", "bz2", "xz", "zst", "7z", "rar", "arrow",
    "feather", "ipc", "avro", "orc", "pkl", "pickle", "h5", "hdf5", "npy", "npz", "sqlite", "db",
];

/// The hint of an undecided format: the kwargs that settle it.
pub const FORMAT_HINT: &str = "Say what it holds: kwargs => '{\"format\": \"csv\"}' (one of csv, tsv, json, jsonl, parquet), or '{\"delimiter\": \"\\t\"}' for delimited text split by that character.";

/// The data files of a local file or directory (recursively, in name order).
///
/// A directory's files are picked by name (`.parquet`, `.csv`, `.tsv`, `.json`, `.jsonl`,
/// `.ndjson`, each optionally `.gz`). A single file is read as `declared` says, else as its
/// name says, else as its content says ([`crate::sniff`]); `declared` also overrides the
/// names of a directory's files.
pub fn local_files(path: &Path, declared: Declared) -> Result<Vec<DataFile>, DatasetError> {
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
                } else if let Some((format, gzip)) = Format::from_path(&p) {
                    let format = declared.format().unwrap_or(format);
                    files.push(data_file(&p, path, format, gzip, declared.delimiter));
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if files.is_empty() {
            return Err(DatasetError::MissingFile(format!(
                "directory {} holds no parquet, csv, tsv, json or jsonl file (optionally .gz); a directory's files are picked by their names, so load a file of another name by its own path",
                path.display()
            )));
        }
    } else {
        files.push(single_file(path, declared)?);
    }
    Ok(files)
}

/// One local file: its format as declared, named, or sniffed.
fn single_file(path: &Path, declared: Declared) -> Result<DataFile, DatasetError> {
    let root = path.parent().unwrap_or(Path::new("."));
    let named = Format::from_path(path);
    let head = sniff::head(path, 4).map_err(|e| {
        DatasetError::MissingFile(format!("cannot read local source {}: {e}", path.display()))
    })?;
    let gzip =
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz")) || sniff::is_gzip(&head);
    if let Some(format) = declared.format() {
        if format != Format::Parquet && sniff::is_parquet(&head) {
            return Err(DatasetError::invalid(
                format!(
                    "{} is a parquet file (it starts with PAR1), but {}",
                    path.display(),
                    declared.describe()
                ),
                "Drop \"format\" and \"delimiter\" from kwargs: parquet files carry their own columns.",
            ));
        }
        return Ok(data_file(path, root, format, gzip, declared.delimiter));
    }
    if let Some((format, _)) = named {
        return Ok(data_file(path, root, format, gzip, None));
    }
    let ext = extension_without_gz(path);
    if let Some(ext) = ext.as_deref().filter(|e| UNSUPPORTED_EXTENSIONS.contains(e)) {
        return Err(DatasetError::Unsupported(format!(
            "cannot read {}: pgmld does not read .{ext} files; use a parquet, csv, tsv, json or jsonl file (optionally .gz)",
            path.display()
        )));
    }
    let sniffed = sniff::sniff_file(path, gzip).map_err(|e| {
        DatasetError::Malformed(format!("cannot read {} to tell its format: {e}", path.display()))
    })?;
    match sniffed {
        Sniffed::Format(format, delimiter) => {
            tracing::info!(path = %path.display(), format = format.name(), delimiter = delimiter.map(show_delimiter), gzip, "format told by content");
            Ok(data_file(path, root, format, gzip, delimiter))
        }
        Sniffed::Unsupported(what) => Err(DatasetError::Unsupported(format!(
            "cannot read {}: it is {what}",
            path.display()
        ))),
        Sniffed::Undecided(why) => Err(DatasetError::invalid(
            format!(
                "cannot tell the format of {}: its name says nothing (.parquet, .csv, .tsv, .json, .jsonl) and {why}",
                path.display()
            ),
            FORMAT_HINT,
        )),
    }
}

/// The last extension, lower case, after a `.gz`: `txt` for `a.TXT.gz`.
fn extension_without_gz(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_string())
}

fn data_file(p: &Path, root: &Path, format: Format, gzip: bool, delimiter: Option<u8>) -> DataFile {
    let rel = p.strip_prefix(root).unwrap_or(p);
    DataFile {
        split: crate::hub::split_from_path(&rel.to_string_lossy()),
        path: p.to_path_buf(),
        format,
        gzip,
        delimiter,
        origin: p.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmld_sql::SqlError;

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
        let txt = Source::Local("/data/tweets_GroundTruth.txt".into());
        assert_eq!(txt.table(None).unwrap().1, "tweets_GroundTruth");
        assert_eq!(Source::Local("/d/v1.0".into()).table(None).unwrap().1, "v1.0");
        assert_eq!(Source::Local("/d/movies".into()).table(None).unwrap().1, "movies");
    }

    fn one(path: &Path, declared: Declared) -> Result<(Format, bool, Option<u8>), SqlError> {
        let files = local_files(path, declared).map_err(SqlError::from)?;
        assert_eq!(files.len(), 1);
        Ok((files[0].format, files[0].gzip, files[0].delimiter))
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    }

    const TWEETS: &str = "264183816548130816\tpositive\tGas by my house hit $3.39!!!! I'm going to Chapel Hill on Sat. :)\n\
        263405084770172928\tnegative\tTheo Walcott is still shit, watch Rafa and Johnny deal with him on Saturday.\n\
        262163168678248449\tnegative\t\"Can't wait, said no one\"\n";

    #[test]
    fn a_file_is_read_as_declared_else_as_named_else_as_its_content_says() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("tweets_GroundTruth.txt");
        std::fs::write(&txt, TWEETS).unwrap();
        let none = Declared::default();
        // Content: tab-delimited.
        assert_eq!(one(&txt, none).unwrap(), (Format::Tsv, false, None));
        // An explicit delimiter means delimited text whatever the name.
        let tab = Declared { format: None, delimiter: Some(b'\t') };
        assert_eq!(one(&txt, tab).unwrap(), (Format::Tsv, false, Some(b'\t')));
        let json_named = dir.path().join("rows.json");
        std::fs::write(&json_named, "a;b\n1;2\n").unwrap();
        let semi = Declared { format: None, delimiter: Some(b';') };
        assert_eq!(one(&json_named, semi).unwrap(), (Format::Csv, false, Some(b';')));
        assert_eq!(one(&json_named, none).unwrap(), (Format::Json, false, None));
        // kwargs format wins over the name.
        let jsonl = Declared { format: Some(Format::JsonLines), delimiter: None };
        assert_eq!(one(&txt, jsonl).unwrap().0, Format::JsonLines);
        // Gzip by magic, whatever the name; its content sniffed.
        let packed = dir.path().join("packed.data");
        std::fs::write(&packed, gz(b"a|b\n1|2\n")).unwrap();
        assert_eq!(one(&packed, none).unwrap(), (Format::Csv, true, Some(b'|')));
        let csv_gz = dir.path().join("rows.csv");
        std::fs::write(&csv_gz, gz(b"a,b\n1,2\n")).unwrap();
        assert_eq!(one(&csv_gz, none).unwrap(), (Format::Csv, true, None));
        // Parquet by magic; declared text on a parquet file is refused.
        let par = dir.path().join("blob");
        std::fs::write(&par, b"PAR1 not really").unwrap();
        assert_eq!(one(&par, none).unwrap().0, Format::Parquet);
        let e = one(&par, tab).unwrap_err();
        assert_eq!(e.code, "22023");
        assert!(e.message.contains("PAR1") && e.message.contains("delimiter"), "{}", e.message);
    }

    #[test]
    fn undecidable_and_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let prose = dir.path().join("notes.txt");
        std::fs::write(&prose, "one line of prose, and another clause\nshort\n").unwrap();
        let e = one(&prose, Declared::default()).unwrap_err();
        assert_eq!(e.code, "22023");
        assert!(
            e.message.contains("notes.txt") && e.message.contains("cannot tell the format"),
            "{}",
            e.message
        );
        let hint = e.hint.unwrap_or_default();
        assert!(
            hint.contains("\"format\"") && hint.contains("\"delimiter\"") && hint.contains("jsonl"),
            "{hint}"
        );
        // The hint's kwargs settle it.
        let comma = Declared { format: Some(Format::Csv), delimiter: None };
        assert_eq!(one(&prose, comma).unwrap().0, Format::Csv);
        // A name that says something pgmld does not read.
        let sheet = dir.path().join("data.xlsx");
        std::fs::write(&sheet, "x").unwrap();
        assert_eq!(one(&sheet, Declared::default()).unwrap_err().code, "0A000");
        // Content that says so.
        let zip = dir.path().join("export");
        std::fs::write(&zip, b"PK\x03\x04....").unwrap();
        let e = one(&zip, Declared::default()).unwrap_err();
        assert_eq!(e.code, "0A000");
        assert!(e.message.contains("zip"), "{}", e.message);
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(one(&empty, Declared::default()).unwrap_err().code, "22023");
        assert_eq!(
            one(&dir.path().join("missing.txt"), Declared::default()).unwrap_err().code,
            "58P01"
        );
    }

    #[test]
    fn directories_pick_files_by_name_and_read_them_as_declared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.csv"), "a;b\n1;2\n").unwrap();
        std::fs::write(dir.path().join("test.csv"), "a;b\n3;4\n").unwrap();
        std::fs::write(dir.path().join("README.txt"), "about\n").unwrap();
        let files = local_files(dir.path(), Declared::default()).unwrap();
        let got: Vec<(&str, Format)> = files.iter().map(|f| (f.split.as_str(), f.format)).collect();
        assert_eq!(got, vec![("test", Format::Csv), ("train", Format::Csv)]);
        let files =
            local_files(dir.path(), Declared { format: Some(Format::Tsv), delimiter: Some(b';') })
                .unwrap();
        assert!(files.iter().all(|f| f.format == Format::Tsv && f.delimiter == Some(b';')));
        let bare = tempfile::tempdir().unwrap();
        std::fs::write(bare.path().join("rows.txt"), "a\tb\n").unwrap();
        let e: SqlError = local_files(bare.path(), Declared::default()).unwrap_err().into();
        assert_eq!(e.code, "58P01");
        assert!(e.message.contains("by its own path"), "{}", e.message);
    }
}
