//! The data file formats `pgml.load_dataset` reads, told by file name.

use std::path::Path;

/// Data file formats we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Parquet,
    Csv,
    Tsv,
    /// A JSON document: an array of objects, or `datasets`' `{"data": [...]}`-style object.
    Json,
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    JsonLines,
}

impl Format {
    /// The format of a file by its name, and whether it is gzip-compressed (`.csv.gz`).
    pub fn from_path(path: &Path) -> Option<(Format, bool)> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let (name, gzip) = match name.strip_suffix(".gz") {
            Some(n) => (n.to_string(), true),
            None => (name, false),
        };
        let (_, ext) = name.rsplit_once('.')?;
        let format = match ext {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::JsonLines,
            _ => return None,
        };
        Some((format, gzip))
    }

    /// The format a `format` kwarg names: `parquet`, `csv`, `tsv`, `json`, `jsonl` (or its
    /// other name `ndjson`), in any case.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.trim().to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "tsv" => Some(Format::Tsv),
            "json" => Some(Format::Json),
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            _ => None,
        }
    }

    /// Whether rows are delimited text (csv, tsv), where `delimiter` and `header` apply.
    pub fn is_delimited(self) -> bool {
        matches!(self, Format::Csv | Format::Tsv)
    }

    /// Its name in messages: `parquet`, `csv`, `tsv`, `json`, `jsonl`.
    pub fn name(self) -> &'static str {
        self.extension()
    }

    /// The names [`Format::from_name`] takes, for messages.
    pub const NAMES: &'static str = "csv, tsv, json, jsonl, parquet";

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Json => "json",
            Format::JsonLines => "jsonl",
        }
    }
}
