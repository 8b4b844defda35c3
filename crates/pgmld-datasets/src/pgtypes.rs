//! Arrow types → Postgres column types, and record batches → COPY text rows.

use crate::error::DatasetError;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, FieldRef, SchemaRef};
use std::sync::Arc;

/// How one column is written.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name (as in the data).
    pub name: String,
    /// Postgres type used in CREATE TABLE.
    pub pg_type: &'static str,
    /// The Arrow field batches are aligned to.
    pub field: FieldRef,
}

/// The Postgres type for an Arrow type; nested types become jsonb. Errors name the column.
pub fn pg_type(name: &str, dt: &DataType) -> Result<&'static str, DatasetError> {
    Ok(match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "text",
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 => "bigint",
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Time32(_) | DataType::Time64(_) => "time",
        DataType::Duration(_) | DataType::Interval(_) => "interval",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => "bytea",
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Struct(_)
        | DataType::Map(..) => "jsonb",
        DataType::Dictionary(_, value) => pg_type(name, value)?,
        other => {
            return Err(DatasetError::Unsupported(format!(
                "column \"{name}\" has type {other}, which pgmld cannot store; leave it out with kwargs => '{{\"columns\": [...]}}'"
            )))
        }
    })
}

/// Columns for a schema, keeping `wanted` (in that order) when given.
pub fn columns(schema: &SchemaRef, wanted: Option<&[String]>) -> Result<Vec<Column>, DatasetError> {
    let fields: Vec<FieldRef> = match wanted {
        None => schema.fields().iter().cloned().collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                schema.field_with_name(n).map(|f| Arc::new(f.clone())).map_err(|_| {
                    let have: Vec<&str> =
                        schema.fields().iter().map(|f| f.name().as_str()).collect();
                    DatasetError::BadArgument(format!(
                        "column \"{n}\" is not in the data; it has: {}",
                        have.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    fields
        .into_iter()
        .map(|f| {
            let dt = match f.data_type() {
                DataType::Dictionary(_, v) => v.as_ref().clone(),
                d => d.clone(),
            };
            Ok(Column {
                name: f.name().clone(),
                pg_type: pg_type(f.name(), &dt)?,
                field: Arc::new(f.as_ref().clone().with_data_type(dt)),
            })
        })
        .collect()
}

/// Appends `batch` to `out` in COPY text format, with a trailing `split` column when given. Columns
/// missing from the batch are NULL; types are cast to the column's.
pub fn encode_batch(
    batch: &RecordBatch,
    cols: &[Column],
    split: Option<&str>,
    rows: usize,
    out: &mut Vec<u8>,
) -> Result<(), DatasetError> {
    let arrays: Vec<Option<ArrayRef>> = cols
        .iter()
        .map(|c| match batch.column_by_name(&c.name) {
            None => Ok(None),
            Some(a) if a.data_type() == c.field.data_type() => Ok(Some(a.clone())),
            Some(a) => arrow_cast::cast(a, c.field.data_type()).map(Some).map_err(|e| {
                DatasetError::Malformed(format!(
                    "column \"{}\": cannot convert {} to {}: {e}",
                    c.name,
                    a.data_type(),
                    c.field.data_type()
                ))
            }),
        })
        .collect::<Result<_, _>>()?;
    let options = FormatOptions::default().with_display_error(false);
    let json_options = arrow_json::writer::EncoderOptions::default();
    let mut writers: Vec<Writer> = Vec::with_capacity(cols.len());
    for (c, a) in cols.iter().zip(&arrays) {
        writers.push(match a {
            None => Writer::Null,
            Some(a) if c.pg_type == "jsonb" => Writer::Json(
                arrow_json::writer::make_encoder(&c.field, a.as_ref(), &json_options).map_err(
                    |e| DatasetError::Unsupported(format!("column \"{}\": {e}", c.name)),
                )?,
                a.clone(),
            ),
            Some(a) if c.pg_type == "bytea" => Writer::Bytes(a.clone()),
            Some(a) => Writer::Display(
                ArrayFormatter::try_new(a.as_ref(), &options).map_err(|e| {
                    DatasetError::Unsupported(format!("column \"{}\": {e}", c.name))
                })?,
                a.clone(),
            ),
        });
    }
    let mut scratch = Vec::new();
    let mut text = String::new();
    for row in 0..rows {
        for (i, w) in writers.iter_mut().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match w {
                Writer::Null => out.extend_from_slice(b"\\N"),
                Writer::Display(f, a) => {
                    if a.is_null(row) {
                        out.extend_from_slice(b"\\N");
                    } else {
                        text.clear();
                        use std::fmt::Write;
                        let _ = write!(text, "{}", f.value(row));
                        escape(text.as_bytes(), out);
                    }
                }
                Writer::Json(enc, a) => {
                    if a.is_null(row) {
                        out.extend_from_slice(b"\\N");
                    } else {
                        scratch.clear();
                        enc.encode(row, &mut scratch);
                        escape(&scratch, out);
                    }
                }
                Writer::Bytes(a) => {
                    if a.is_null(row) {
                        out.extend_from_slice(b"\\N");
                    } else {
                        out.extend_from_slice(b"\\\\x");
                        for b in binary_value(a.as_ref(), row) {
                            out.extend_from_slice(format!("{b:02x}").as_bytes());
                        }
                    }
                }
            }
        }
        if let Some(split) = split {
            out.push(b'\t');
            escape(split.as_bytes(), out);
        }
        out.push(b'\n');
    }
    Ok(())
}

enum Writer<'a> {
    Null,
    Display(ArrayFormatter<'a>, ArrayRef),
    Json(arrow_json::writer::NullableEncoder<'a>, ArrayRef),
    Bytes(ArrayRef),
}

fn binary_value(a: &dyn Array, row: usize) -> Vec<u8> {
    match a.data_type() {
        DataType::Binary => a.as_binary::<i32>().value(row).to_vec(),
        DataType::LargeBinary => a.as_binary::<i64>().value(row).to_vec(),
        DataType::BinaryView => a.as_binary_view().value(row).to_vec(),
        DataType::FixedSizeBinary(_) => a.as_fixed_size_binary().value(row).to_vec(),
        _ => vec![],
    }
}

/// COPY text escaping; NUL bytes, which Postgres text cannot hold, are dropped. Runs of
/// plain bytes are copied whole.
fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t' | 0)) {
        out.extend_from_slice(&rest[..i]);
        match rest[i] {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {}
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::{Int64Array, ListArray, StringArray};
    use arrow_schema::{Field, Schema};

    #[test]
    fn types_and_copy_text() {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("text", DataType::Utf8, true),
            Field::new("label", DataType::Int64, true),
            Field::new("tags", list.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("a\tb\\c\nd"), None])),
                Arc::new(Int64Array::from(vec![Some(1), Some(-2)])),
                Arc::new(list),
            ],
        )
        .unwrap();
        let cols = columns(&schema, None).unwrap();
        assert_eq!(
            cols.iter().map(|c| c.pg_type).collect::<Vec<_>>(),
            vec!["text", "bigint", "jsonb"]
        );
        let mut out = Vec::new();
        encode_batch(&batch, &cols, Some("train"), 2, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\\\\c\\nd\t1\t[1,null]\ttrain\n\\N\t-2\t\\N\ttrain\n"
        );
        let e = columns(&schema, Some(&["nope".to_string()])).unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("text, label, tags"), "{e}");
    }
}
