//! Values passed to and returned from pgml functions, their Postgres types, their text
//! forms, and the typed literals spliced into the client's SQL.

use crate::error::{codes, SqlError};

/// The Postgres types pgml function signatures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `text`
    Text,
    /// `jsonb`
    Jsonb,
    /// `bigint`
    Int8,
    /// `integer`
    Int4,
    /// `real`
    Float4,
    /// `double precision`
    Float8,
    /// `boolean`
    Bool,
    /// `text[]`
    TextArray,
    /// `jsonb[]`
    JsonbArray,
    /// `real[]` (embeddings)
    Float4Array,
}

impl SqlType {
    /// The name used in casts (`::jsonb`).
    pub fn sql_name(self) -> &'static str {
        match self {
            SqlType::Text => "text",
            SqlType::Jsonb => "jsonb",
            SqlType::Int8 => "bigint",
            SqlType::Int4 => "integer",
            SqlType::Float4 => "real",
            SqlType::Float8 => "double precision",
            SqlType::Bool => "boolean",
            SqlType::TextArray => "text[]",
            SqlType::JsonbArray => "jsonb[]",
            SqlType::Float4Array => "real[]",
        }
    }

    /// Element type of an array type.
    pub fn element(self) -> Option<SqlType> {
        match self {
            SqlType::TextArray => Some(SqlType::Text),
            SqlType::JsonbArray => Some(SqlType::Jsonb),
            SqlType::Float4Array => Some(SqlType::Float4),
            _ => None,
        }
    }

    /// Array type whose elements are `self`.
    pub fn array_of(self) -> Option<SqlType> {
        match self {
            SqlType::Text => Some(SqlType::TextArray),
            SqlType::Jsonb => Some(SqlType::JsonbArray),
            SqlType::Float4 => Some(SqlType::Float4Array),
            _ => None,
        }
    }

    /// Reads a type name from a cast (`::jsonb`, `::text[]`, `::int8`).
    pub fn from_sql_name(name: &str) -> Option<SqlType> {
        let lower = name.trim().to_ascii_lowercase();
        let (base, array) = match lower.strip_suffix("[]") {
            Some(b) => (b.trim().to_string(), true),
            None => (lower, false),
        };
        let t = match base.as_str() {
            "text" | "varchar" | "character varying" | "name" | "char" | "bpchar" => SqlType::Text,
            "jsonb" | "json" => SqlType::Jsonb,
            "bigint" | "int8" => SqlType::Int8,
            "integer" | "int" | "int4" | "smallint" | "int2" => SqlType::Int4,
            "real" | "float4" => SqlType::Float4,
            "double precision" | "float8" | "float" | "numeric" | "decimal" => SqlType::Float8,
            "boolean" | "bool" => SqlType::Bool,
            _ => return None,
        };
        if array {
            t.array_of()
        } else {
            Some(t)
        }
    }
}

/// A value of one of the [`SqlType`]s. Untyped literals and text-format parameters arrive
/// as `Text` and are converted by [`Value::coerce`] once the expected type is known.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A string (also an untyped literal or a text-format parameter).
    Text(String),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A JSON document.
    Json(serde_json::Value),
    /// A one-dimensional array.
    Array(Vec<Value>),
}

/// What kind of JSON error `e` is, without serde's text (which can quote the input).
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "unexpected token",
        serde_json::error::Category::Data => "invalid value",
        serde_json::error::Category::Io => "unreadable input",
    }
}

impl Value {
    /// A `real` value: stored as the f64 with the f32's shortest decimal form, so its text
    /// is what Postgres prints for that `real` (`0.1`, not `0.10000000149011612`) and
    /// reads back as the same f32.
    pub fn real(f: f32) -> Value {
        Value::Float(f.to_string().parse().unwrap_or(f64::from(f)))
    }

    /// Converts the value to `ty`, parsing text where needed. Errors name the value.
    pub fn coerce(self, ty: SqlType) -> Result<Value, SqlError> {
        let bad = |v: &dyn std::fmt::Display| {
            SqlError::new(
                codes::INVALID_TEXT_REPRESENTATION,
                format!("invalid input syntax for type {}: \"{v}\"", ty.sql_name()),
            )
        };
        Ok(match (self, ty) {
            (Value::Null, _) => Value::Null,
            (Value::Text(s), SqlType::Text) => Value::Text(s),
            (Value::Text(s), SqlType::Jsonb) => {
                // As Postgres: the position, never the text (it may hold a token).
                Value::Json(serde_json::from_str(&s).map_err(|e| {
                    SqlError::new(
                        codes::INVALID_TEXT_REPRESENTATION,
                        format!("invalid input syntax for type {}", ty.sql_name()),
                    )
                    .with_detail(format!(
                        "JSON error at line {} column {}: {}",
                        e.line(),
                        e.column(),
                        json_error_kind(&e)
                    ))
                })?)
            }
            (Value::Text(s), SqlType::Int8 | SqlType::Int4) => {
                Value::Int(s.trim().parse().map_err(|_| bad(&s))?)
            }
            (Value::Text(s), SqlType::Float4 | SqlType::Float8) => {
                Value::Float(s.trim().parse().map_err(|_| bad(&s))?)
            }
            (Value::Text(s), SqlType::Bool) => Value::Bool(parse_bool(&s).ok_or_else(|| bad(&s))?),
            (Value::Text(s), SqlType::TextArray | SqlType::JsonbArray | SqlType::Float4Array) => {
                let elem = ty.element().unwrap_or(SqlType::Text);
                let items = parse_array_literal(&s).ok_or_else(|| {
                    bad(&s)
                        .with_hint("Array text looks like {\"a\",\"b\"}, or write ARRAY['a', 'b'].")
                })?;
                Value::Array(
                    items
                        .into_iter()
                        .map(|i| i.map_or(Ok(Value::Null), |t| Value::Text(t).coerce(elem)))
                        .collect::<Result<_, _>>()?,
                )
            }
            (Value::Int(i), SqlType::Int8 | SqlType::Int4) => Value::Int(i),
            (Value::Int(i), SqlType::Float4 | SqlType::Float8) => Value::Float(i as f64),
            (Value::Int(i), SqlType::Text) => Value::Text(i.to_string()),
            (Value::Int(i), SqlType::Jsonb) => Value::Json(i.into()),
            (Value::Float(f), SqlType::Float4 | SqlType::Float8) => Value::Float(f),
            (Value::Float(f), SqlType::Text) => Value::Text(f.to_string()),
            (Value::Float(f), SqlType::Jsonb) => Value::Json(
                serde_json::Number::from_f64(f)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| bad(&f))?,
            ),
            (Value::Float(f), SqlType::Int8 | SqlType::Int4) if f.fract() == 0.0 => {
                Value::Int(f as i64)
            }
            (Value::Bool(b), SqlType::Bool) => Value::Bool(b),
            (Value::Bool(b), SqlType::Text) => Value::Text(b.to_string()),
            (Value::Bool(b), SqlType::Jsonb) => Value::Json(b.into()),
            (Value::Json(j), SqlType::Jsonb) => Value::Json(j),
            (Value::Json(j), SqlType::Text) => Value::Text(j.to_string()),
            (
                Value::Array(items),
                SqlType::TextArray | SqlType::JsonbArray | SqlType::Float4Array,
            ) => {
                let elem = ty.element().unwrap_or(SqlType::Text);
                Value::Array(items.into_iter().map(|v| v.coerce(elem)).collect::<Result<_, _>>()?)
            }
            (v, ty) => {
                return Err(SqlError::new(
                    codes::DATATYPE_MISMATCH,
                    format!("cannot use {} as type {}", v.describe(), ty.sql_name()),
                ))
            }
        })
    }

    /// Short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Text(s) => format!("text \"{}\"", truncate(s, 60)),
            Value::Int(i) => format!("integer {i}"),
            Value::Float(f) => format!("number {f}"),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Json(j) => format!("jsonb {}", truncate(&j.to_string(), 60)),
            Value::Array(a) => format!("array of {} elements", a.len()),
        }
    }

    /// Postgres text output form (what psql prints), `None` for NULL.
    pub fn to_pg_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Text(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Bool(b) => {
                if *b {
                    "t".into()
                } else {
                    "f".into()
                }
            }
            Value::Json(j) => j.to_string(),
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|v| match v.to_pg_text() {
                        None => "NULL".to_string(),
                        Some(t) => quote_array_element(&t),
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
        })
    }

    /// A SQL expression of type `ty` with this value, safe to splice into any statement
    /// whatever `standard_conforming_strings` says: text is dollar-quoted.
    pub fn to_sql_literal(&self, ty: SqlType) -> String {
        match self.to_pg_text() {
            None => format!("NULL::{}", ty.sql_name()),
            Some(text) => format!("{}::{}", dollar_quote(&text), ty.sql_name()),
        }
    }
}

/// Dollar-quotes `text` with a tag that does not occur in it.
pub fn dollar_quote(text: &str) -> String {
    let mut tag = String::from("$pgmld$");
    let mut n = 0u32;
    // The closing tag must be the first occurrence of the tag after the opening one: also
    // not formed by the text's end with the tag's first characters (`x$pgmld` + `$pgmld$`).
    while format!("{text}{tag}").find(&tag) != Some(text.len()) {
        n += 1;
        tag = format!("$pgmld{n}$");
    }
    format!("{tag}{text}{tag}")
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        f.to_string()
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A boolean as Postgres' `boolean` input reads it (`t`, `true`, `yes`, `on`, `1`, ... in any
/// case, surrounding spaces ignored); `None` for anything else. Shared by SQL arguments and
/// JSON options given as strings, so both accept the same spellings.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "yes" | "y" | "on" | "1" => Some(true),
        "f" | "false" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn quote_array_element(t: &str) -> String {
    let needs = t.is_empty()
        || t.eq_ignore_ascii_case("null")
        || t.chars().any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
    if !needs {
        return t.to_string();
    }
    let mut out = String::with_capacity(t.len() + 2);
    out.push('"');
    for c in t.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Parses a one-dimensional Postgres array literal (`{a,"b c",NULL}`); `None` when malformed.
pub fn parse_array_literal(s: &str) -> Option<Vec<Option<String>>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '}' || c == '"' {
                    return None; // nested arrays are not pgml argument shapes
                }
                if c == '\\' {
                    chars.next();
                    item.push(chars.next()?);
                    continue;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim_end().to_string();
        }
        if !quoted && item.eq_ignore_ascii_case("null") {
            items.push(None);
        } else {
            items.push(Some(item));
        }
        match chars.next() {
            None => return Some(items),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_round_trip() {
        let v = Value::Array(vec![
            Value::Text("a".into()),
            Value::Text("b c".into()),
            Value::Null,
            Value::Text("q\"\\".into()),
            Value::Text("".into()),
        ]);
        let text = v.to_pg_text().unwrap();
        assert_eq!(text, r#"{a,"b c",NULL,"q\"\\",""}"#);
        let back = parse_array_literal(&text).unwrap();
        assert_eq!(
            back,
            vec![Some("a".into()), Some("b c".into()), None, Some("q\"\\".into()), Some("".into())]
        );
        assert_eq!(parse_array_literal("{}"), Some(vec![]));
        assert_eq!(parse_array_literal("{a,{b}}"), None);
        assert_eq!(parse_array_literal("a,b"), None);
    }

    #[test]
    fn coercion_parses_and_names_bad_values() {
        assert_eq!(
            Value::Text("{\"a\":1}".into()).coerce(SqlType::Jsonb).unwrap(),
            Value::Json(serde_json::json!({"a":1}))
        );
        assert_eq!(Value::Text(" 42 ".into()).coerce(SqlType::Int8).unwrap(), Value::Int(42));
        let e = Value::Text("4x".into()).coerce(SqlType::Int8).unwrap_err();
        assert_eq!(e.code, "22P02");
        assert!(e.message.contains("\"4x\""), "{}", e.message);
        let e =
            Value::Text("{\"token\": \"hf_SECRET\" bad".into()).coerce(SqlType::Jsonb).unwrap_err();
        assert!(e.message.contains("jsonb"), "{}", e.message);
        let shown = format!("{} {:?}", e.message, e.detail);
        assert!(!shown.contains("SECRET") && shown.contains("column"), "{shown}");
        assert_eq!(
            Value::Text("{x,NULL}".into()).coerce(SqlType::TextArray).unwrap(),
            Value::Array(vec![Value::Text("x".into()), Value::Null])
        );
    }

    #[test]
    fn literals_are_dollar_quoted_with_a_free_tag() {
        assert_eq!(
            Value::Text("it's".into()).to_sql_literal(SqlType::Text),
            "$pgmld$it's$pgmld$::text"
        );
        assert_eq!(
            Value::Text("a$pgmld$b".into()).to_sql_literal(SqlType::Text),
            "$pgmld1$a$pgmld$b$pgmld1$::text"
        );
        assert_eq!(Value::Null.to_sql_literal(SqlType::Jsonb), "NULL::jsonb");
        assert_eq!(dollar_quote("x$pgmld"), "$pgmld1$x$pgmld$pgmld1$");
        assert_eq!(dollar_quote("a$"), "$pgmld$a$$pgmld$");
    }

    #[test]
    fn type_names_from_casts() {
        assert_eq!(SqlType::from_sql_name("JSONB"), Some(SqlType::Jsonb));
        assert_eq!(SqlType::from_sql_name("text[]"), Some(SqlType::TextArray));
        assert_eq!(SqlType::from_sql_name("float4[]"), Some(SqlType::Float4Array));
        assert_eq!(SqlType::from_sql_name("geometry"), None);
    }

    #[test]
    fn reals_print_as_postgres_prints_real_and_arrays_of_them_splice_as_real_arrays() {
        assert_eq!(Value::real(0.1).to_pg_text().as_deref(), Some("0.1"));
        assert_eq!(Value::real(-2.5e-8).to_pg_text().as_deref(), Some("-0.000000025"));
        assert_eq!(Value::real(f32::NAN).to_pg_text().as_deref(), Some("NaN"));
        assert_eq!(Value::real(f32::NEG_INFINITY).to_pg_text().as_deref(), Some("-Infinity"));
        let v = Value::Array(vec![Value::real(0.1), Value::real(1.0), Value::Null]);
        assert_eq!(v.to_sql_literal(SqlType::Float4Array), "$pgmld${0.1,1,NULL}$pgmld$::real[]");
        let parsed = Value::Text("{0.5, -1}".into()).coerce(SqlType::Float4Array).unwrap();
        assert_eq!(parsed, Value::Array(vec![Value::Float(0.5), Value::Float(-1.0)]));
        assert!(Value::Text("{x}".into()).coerce(SqlType::Float4Array).is_err());
    }
}
