//! Values written straight into `DataRow`s, in the text or binary form Postgres itself
//! would send for the column's type. Streamed rows never pass through the upstream, so
//! what a client reads must be byte-for-byte what Postgres prints: `jsonb` as Postgres
//! formats it (`{"a": 1, "b": [1, 2]}`), not as serde_json does.

use crate::error::{codes, SqlError};
use crate::value::{SqlType, Value};
use serde_json::Value as Json;

/// Type OID of each [`SqlType`], as in `pg_type`.
pub fn type_oid(ty: SqlType) -> u32 {
    match ty {
        SqlType::Text => 25,
        SqlType::Jsonb => 3802,
        SqlType::Int8 => 20,
        SqlType::Int4 => 23,
        SqlType::Float4 => 700,
        SqlType::Float8 => 701,
        SqlType::Bool => 16,
        SqlType::TextArray => 1009,
        SqlType::JsonbArray => 3807,
        SqlType::Float4Array => 1021,
    }
}

/// The bytes of one `DataRow` field: `None` for NULL. `binary` picks the binary format
/// (format code 1) the client asked for in Bind or with a BINARY cursor.
pub fn encode_field(value: &Value, ty: SqlType, binary: bool) -> Result<Option<Vec<u8>>, SqlError> {
    let value = value.clone().coerce(ty)?;
    if matches!(value, Value::Null) {
        return Ok(None);
    }
    if !binary {
        return Ok(Some(text_form(&value).into_bytes()));
    }
    let bytes = match (&value, ty) {
        (Value::Text(s), SqlType::Text) => s.as_bytes().to_vec(),
        (Value::Json(j), SqlType::Jsonb) => {
            // jsonb's binary format: a version byte, then the text form.
            let mut b = vec![1u8];
            b.extend_from_slice(jsonb_text(j).as_bytes());
            b
        }
        (Value::Int(i), SqlType::Int8) => i.to_be_bytes().to_vec(),
        (Value::Int(i), SqlType::Int4) => i32::try_from(*i)
            .map_err(|_| {
                SqlError::new(
                    codes::INVALID_PARAMETER_VALUE,
                    format!("value {i} is out of range for type integer"),
                )
            })?
            .to_be_bytes()
            .to_vec(),
        (Value::Float(f), SqlType::Float4) => (*f as f32).to_be_bytes().to_vec(),
        (Value::Float(f), SqlType::Float8) => f.to_be_bytes().to_vec(),
        (Value::Bool(b), SqlType::Bool) => vec![u8::from(*b)],
        _ => {
            return Err(SqlError::new(
                codes::FEATURE_NOT_SUPPORTED,
                format!("pgmld cannot send {} values in binary format", ty.sql_name()),
            )
            .with_hint("Ask for text results for this column."))
        }
    };
    Ok(Some(bytes))
}

/// Postgres' text output of a non-NULL value already coerced to its column type.
fn text_form(value: &Value) -> String {
    match value {
        Value::Json(j) => jsonb_text(j),
        other => other.to_pg_text().unwrap_or_default(),
    }
}

/// `jsonb_out`: keys ordered as jsonb stores them (shorter first, then bytewise), `", "`
/// between items and `": "` after keys, strings escaped as Postgres' `escape_json`.
pub fn jsonb_text(j: &Json) -> String {
    let mut out = String::new();
    write_jsonb(j, &mut out);
    out
}

fn write_jsonb(j: &Json, out: &mut String) {
    match j {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n.to_string()),
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(k, out);
                out.push_str(": ");
                write_jsonb(&map[k], out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonb_text_matches_postgres_layout() {
        let j = json!({"bb": [1, 2.5, "x"], "a": {"zz": null, "y": true}, "ccc": "q\"\\\n\u{1}é"});
        assert_eq!(
            jsonb_text(&j),
            r#"{"a": {"y": true, "zz": null}, "bb": [1, 2.5, "x"], "ccc": "q\"\\\n\u0001é"}"#
        );
        assert_eq!(jsonb_text(&json!(["Hel"])), r#"["Hel"]"#);
        assert_eq!(jsonb_text(&json!([])), "[]");
    }

    #[test]
    fn fields_in_text_and_binary() {
        let piece = Value::Json(json!(["a", "b"]));
        assert_eq!(
            encode_field(&piece, SqlType::Jsonb, false).unwrap().unwrap(),
            br#"["a", "b"]"#.to_vec()
        );
        assert_eq!(
            encode_field(&piece, SqlType::Jsonb, true).unwrap().unwrap(),
            b"\x01[\"a\", \"b\"]".to_vec()
        );
        assert_eq!(encode_field(&Value::Null, SqlType::Jsonb, true).unwrap(), None);
        assert_eq!(
            encode_field(&Value::Int(7), SqlType::Int8, true).unwrap().unwrap(),
            7i64.to_be_bytes().to_vec()
        );
        assert_eq!(
            encode_field(&Value::Int(7), SqlType::Int4, false).unwrap().unwrap(),
            b"7".to_vec()
        );
        // Text arrives as text and is checked against the column type.
        assert_eq!(
            encode_field(&Value::Text("{\"k\":1}".into()), SqlType::Jsonb, false).unwrap().unwrap(),
            br#"{"k": 1}"#.to_vec()
        );
        assert!(encode_field(&Value::Text("nope".into()), SqlType::Jsonb, false).is_err());
        assert!(encode_field(&Value::Array(vec![]), SqlType::TextArray, true).is_err());
    }
}
