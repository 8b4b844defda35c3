//! Reading data files as Arrow record batches: parquet, csv/tsv and json/jsonl, plain or
//! gzip-compressed. Readers run on a blocking thread and yield bounded batches, so memory
//! does not grow with the file.

use crate::error::DatasetError;
use crate::hub::{DataFile, Format};
use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

/// Rows per batch; keeps a batch of long reviews to a few MB.
pub const BATCH_ROWS: usize = 4096;
/// Records read to infer csv / json column types.
const INFER_RECORDS: usize = 100_000;

/// How csv/tsv files are split.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    /// Field delimiter (kwargs); `None` = the file's own ([`DataFile::delimiter`]), else `,`
    /// for csv and tab for tsv.
    pub delimiter: Option<u8>,
    /// First line holds column names.
    pub header: bool,
}

/// A stream of batches from one file.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

fn open(file: &DataFile) -> Result<Box<dyn BufRead + Send>, DatasetError> {
    let f = File::open(&file.path)
        .map_err(|e| DatasetError::MissingFile(format!("cannot open {}: {e}", file.origin)))?;
    Ok(if file.gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(f)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, f))
    })
}

fn malformed(file: &DataFile, e: impl std::fmt::Display) -> DatasetError {
    DatasetError::Malformed(format!("cannot read {} as {}: {e}", file.origin, file.format.name()))
}

fn csv_format(file: &DataFile, opts: TextOptions) -> arrow_csv::reader::Format {
    let default = if matches!(file.format, Format::Tsv) { b'\t' } else { b',' };
    arrow_csv::reader::Format::default()
        .with_header(opts.header)
        .with_delimiter(opts.delimiter.or(file.delimiter).unwrap_or(default))
}

/// The file's columns: from parquet metadata, or inferred from the first records.
pub fn schema(file: &DataFile, opts: TextOptions) -> Result<SchemaRef, DatasetError> {
    match file.format {
        Format::Parquet => {
            let f = File::open(&file.path).map_err(|e| {
                DatasetError::MissingFile(format!("cannot open {}: {e}", file.origin))
            })?;
            let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(|e| malformed(file, e))?;
            Ok(b.schema().clone())
        }
        Format::Csv | Format::Tsv => {
            let (s, _) = csv_format(file, opts)
                .infer_schema(open(file)?, Some(INFER_RECORDS))
                .map_err(|e| malformed(file, e))?;
            Ok(Arc::new(s))
        }
        Format::Json | Format::JsonLines => {
            let reader = json_lines(file)?;
            let (s, _) = arrow_json::reader::infer_json_schema(reader, Some(INFER_RECORDS))
                .map_err(|e| malformed(file, e))?;
            Ok(Arc::new(in_first_record_order(s, file)?))
        }
    }
}

/// Arrow's JSON inference sorts columns by name; users expect the file's own order, which
/// is the key order of the first record (later keys go last).
fn in_first_record_order(schema: Schema, file: &DataFile) -> Result<Schema, DatasetError> {
    let mut first = String::new();
    let mut r = json_lines(file)?;
    while first.trim().is_empty() {
        first.clear();
        if r.read_line(&mut first).map_err(|e| malformed(file, e))? == 0 {
            return Ok(schema);
        }
    }
    let order: Vec<String> =
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(first.trim()) {
            Ok(m) => m.keys().cloned().collect(),
            Err(_) => return Ok(schema),
        };
    let rank = |name: &str| order.iter().position(|k| k == name).unwrap_or(usize::MAX);
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.sort_by_key(|f| rank(f.name()));
    Ok(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Batches of the file with the given (possibly merged) schema.
pub fn batches(
    file: &DataFile,
    schema: SchemaRef,
    opts: TextOptions,
) -> Result<Batches, DatasetError> {
    match file.format {
        Format::Parquet => {
            let f = File::open(&file.path).map_err(|e| {
                DatasetError::MissingFile(format!("cannot open {}: {e}", file.origin))
            })?;
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(|e| malformed(file, e))?
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| malformed(file, e))?;
            Ok(Box::new(r))
        }
        Format::Csv | Format::Tsv => {
            let r = arrow_csv::ReaderBuilder::new(schema)
                .with_format(csv_format(file, opts))
                .with_batch_size(BATCH_ROWS)
                .build(open(file)?)
                .map_err(|e| malformed(file, e))?;
            Ok(Box::new(r))
        }
        Format::Json | Format::JsonLines => {
            let r = arrow_json::ReaderBuilder::new(schema)
                .with_batch_size(BATCH_ROWS)
                .build(json_lines(file)?)
                .map_err(|e| malformed(file, e))?;
            Ok(Box::new(r))
        }
    }
}

/// A reader of newline-delimited JSON. A `.json` file holding one top-level array is
/// turned into lines on the fly (streamed, not loaded).
fn json_lines(file: &DataFile) -> Result<Box<dyn BufRead + Send>, DatasetError> {
    let mut r = open(file)?;
    let first = loop {
        let buf = r.fill_buf().map_err(|e| malformed(file, e))?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let c = buf[i];
                r.consume(i);
                break Some(c);
            }
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    };
    if first == Some(b'[') {
        r.consume(1);
        return Ok(Box::new(BufReader::new(ArrayToLines {
            inner: r,
            depth: 0,
            in_string: false,
            escaped: false,
            done: false,
        })));
    }
    Ok(r)
}

/// Rewrites `[{...}, {...}]` into `{...}\n{...}\n` by tracking nesting outside strings;
/// line breaks between tokens become spaces, so each record is one line.
struct ArrayToLines {
    inner: Box<dyn BufRead + Send>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl Read for ArrayToLines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() && !self.done {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let mut used = 0;
            for &b in buf {
                if n >= out.len() {
                    break;
                }
                used += 1;
                if self.in_string {
                    out[n] = b;
                    n += 1;
                    if self.escaped {
                        self.escaped = false;
                    } else if b == b'\\' {
                        self.escaped = true;
                    } else if b == b'"' {
                        self.in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => {
                        self.in_string = true;
                        out[n] = b;
                        n += 1;
                    }
                    b'{' | b'[' => {
                        self.depth += 1;
                        out[n] = b;
                        n += 1;
                    }
                    b'}' | b']' if self.depth > 0 => {
                        self.depth -= 1;
                        out[n] = b;
                        n += 1;
                    }
                    b']' => {
                        self.done = true;
                        break;
                    }
                    b',' if self.depth == 0 => {
                        out[n] = b'\n';
                        n += 1;
                    }
                    // Pretty-printed arrays: one record per line for line-based readers.
                    b'\n' | b'\r' => {
                        out[n] = b' ';
                        n += 1;
                    }
                    _ => {
                        out[n] = b;
                        n += 1;
                    }
                }
            }
            self.inner.consume(used);
        }
        Ok(n)
    }
}

/// One schema for all files: columns in first-seen order, types widened where files differ.
pub fn merge(schemas: &[SchemaRef]) -> Result<SchemaRef, DatasetError> {
    let plain: Vec<Schema> = schemas.iter().map(|s| Schema::new(s.fields().clone())).collect();
    Schema::try_merge(plain).map(Arc::new).map_err(|e| {
        DatasetError::Malformed(format!("the data files disagree on their columns: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn json_arrays_become_lines() {
        let src = br#"  [ {"a": "x,]}", "b": [1, 2]}, {"a": "\"q\"", "b": []} ]"#;
        let mut r = ArrayToLines {
            inner: Box::new(&src[3..]),
            depth: 0,
            in_string: false,
            escaped: false,
            done: false,
        };
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        let lines: Vec<&str> = s.lines().map(str::trim).collect();
        assert_eq!(lines, vec![r#"{"a": "x,]}", "b": [1, 2]}"#, r#"{"a": "\"q\"", "b": []}"#]);
    }
}
