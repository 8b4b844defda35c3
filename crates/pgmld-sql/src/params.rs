//! Bound parameter values (`$1`, `$2`, ...) of the extended protocol, decoded into
//! [`Value`]s whatever format (text or binary) the client chose.

use crate::error::{codes, SqlError};
use crate::value::Value;

/// One parameter as it arrived in a Bind message.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Type OID as the server resolved it (ParameterDescription); 0 when unknown.
    pub type_oid: u32,
    /// True for binary format, false for text.
    pub binary: bool,
    /// The raw bytes; `None` is SQL NULL.
    pub bytes: Option<Vec<u8>>,
}

/// Type OIDs of the binary formats pgml calls accept.
pub mod oids {
    /// bool
    pub const BOOL: u32 = 16;
    /// int8
    pub const INT8: u32 = 20;
    /// int2
    pub const INT2: u32 = 21;
    /// int4
    pub const INT4: u32 = 23;
    /// text
    pub const TEXT: u32 = 25;
    /// json
    pub const JSON: u32 = 114;
    /// float4
    pub const FLOAT4: u32 = 700;
    /// float8
    pub const FLOAT8: u32 = 701;
    /// unknown (untyped literal)
    pub const UNKNOWN: u32 = 705;
    /// varchar
    pub const VARCHAR: u32 = 1043;
    /// name
    pub const NAME: u32 = 19;
    /// bpchar
    pub const BPCHAR: u32 = 1042;
    /// jsonb
    pub const JSONB: u32 = 3802;
    /// text[]
    pub const TEXT_ARRAY: u32 = 1009;
    /// varchar[]
    pub const VARCHAR_ARRAY: u32 = 1015;
    /// jsonb[]
    pub const JSONB_ARRAY: u32 = 3807;
    /// json[]
    pub const JSON_ARRAY: u32 = 199;
}

impl Param {
    /// Decodes the parameter; `index` is 1-based, for messages.
    pub fn decode(&self, index: usize) -> Result<Value, SqlError> {
        let Some(bytes) = &self.bytes else { return Ok(Value::Null) };
        if !self.binary {
            let text =
                std::str::from_utf8(bytes).map_err(|_| bad(index, "text is not valid UTF-8"))?;
            return Ok(Value::Text(text.to_string()));
        }
        decode_binary(self.type_oid, bytes).map_err(|why| bad(index, &why))
    }
}

fn bad(index: usize, why: &str) -> SqlError {
    SqlError::new(
        codes::INVALID_BINARY_REPRESENTATION,
        format!("parameter ${index} of a pgml call cannot be read: {why}"),
    )
}

fn decode_binary(oid: u32, b: &[u8]) -> Result<Value, String> {
    let fixed = |n: usize| -> Result<&[u8], String> {
        if b.len() == n {
            Ok(b)
        } else {
            Err(format!("expected {n} bytes for type oid {oid}, got {}", b.len()))
        }
    };
    let utf8 = |b: &[u8]| {
        std::str::from_utf8(b).map(str::to_string).map_err(|_| "not valid UTF-8".to_string())
    };
    Ok(match oid {
        oids::BOOL => Value::Bool(fixed(1)?[0] != 0),
        oids::INT2 => {
            Value::Int(i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| "int2")?) as i64)
        }
        oids::INT4 => {
            Value::Int(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| "int4")?) as i64)
        }
        oids::INT8 => Value::Int(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| "int8")?)),
        oids::FLOAT4 => {
            Value::Float(f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| "float4")?) as f64)
        }
        oids::FLOAT8 => {
            Value::Float(f64::from_be_bytes(fixed(8)?.try_into().map_err(|_| "float8")?))
        }
        oids::TEXT | oids::VARCHAR | oids::NAME | oids::BPCHAR | oids::UNKNOWN | 0 => {
            Value::Text(utf8(b)?)
        }
        oids::JSON => {
            Value::Json(serde_json::from_slice(b).map_err(|e| format!("invalid json: {e}"))?)
        }
        oids::JSONB => match b.split_first() {
            Some((1, rest)) => Value::Json(
                serde_json::from_slice(rest).map_err(|e| format!("invalid jsonb: {e}"))?,
            ),
            _ => return Err("unknown jsonb binary version".into()),
        },
        o if is_array(o) => decode_array(b)?,
        other => {
            return Err(format!(
                "binary format of type oid {other} is not supported in pgml calls; send it as text"
            ))
        }
    })
}

/// Decodes the binary array format (one dimension) recursively with [`decode_binary`].
fn decode_array(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b, pos: 0 };
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let elem_oid = r.i32()? as u32;
    if ndim == 0 {
        return Ok(Value::Array(vec![]));
    }
    if ndim != 1 {
        return Err(format!("{ndim}-dimensional arrays are not supported"));
    }
    if is_array(elem_oid) {
        // Arrays of arrays are multi-dimensional arrays in Postgres; refusing them here
        // also bounds the recursion a client could ask for.
        return Err("arrays of arrays are not supported".into());
    }
    let len = r.i32()?;
    let _lower = r.i32()?;
    // The count is the client's word: each element takes at least 4 bytes, so never
    // reserve more than the bytes could hold.
    let mut items = Vec::with_capacity((len.max(0) as usize).min(b.len() / 4));
    for _ in 0..len {
        let n = r.i32()?;
        if n < 0 {
            items.push(Value::Null);
        } else {
            items.push(decode_binary(elem_oid, r.take(n as usize)?)?);
        }
    }
    Ok(Value::Array(items))
}

fn is_array(oid: u32) -> bool {
    matches!(oid, oids::TEXT_ARRAY | oids::VARCHAR_ARRAY | oids::JSONB_ARRAY | oids::JSON_ARRAY)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("array value is truncated")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn i32(&mut self) -> Result<i32, String> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(oid: u32, b: Vec<u8>) -> Param {
        Param { type_oid: oid, binary: true, bytes: Some(b) }
    }

    #[test]
    fn decodes_binary_scalars_and_arrays() {
        assert_eq!(bin(oids::INT4, 7i32.to_be_bytes().to_vec()).decode(1).unwrap(), Value::Int(7));
        let mut jb = vec![1u8];
        jb.extend_from_slice(b"{\"a\":1}");
        assert_eq!(
            bin(oids::JSONB, jb).decode(1).unwrap(),
            Value::Json(serde_json::json!({"a":1}))
        );
        let mut arr = Vec::new();
        for v in [1i32, 0, oids::TEXT as i32, 2, 1] {
            arr.extend_from_slice(&v.to_be_bytes());
        }
        arr.extend_from_slice(&2i32.to_be_bytes());
        arr.extend_from_slice(b"hi");
        arr.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            bin(oids::TEXT_ARRAY, arr).decode(1).unwrap(),
            Value::Array(vec![Value::Text("hi".into()), Value::Null])
        );
    }

    #[test]
    fn bad_binary_names_the_parameter() {
        let e = bin(oids::INT8, vec![1, 2]).decode(3).unwrap_err();
        assert_eq!(e.code, "22P03");
        assert!(e.message.contains("$3"), "{}", e.message);
        // A count far beyond the bytes reserves nothing; an array of arrays is refused.
        let mut huge = Vec::new();
        for v in [1i32, 0, oids::TEXT as i32, i32::MAX, 1] {
            huge.extend_from_slice(&v.to_be_bytes());
        }
        assert!(bin(oids::TEXT_ARRAY, huge).decode(1).unwrap_err().message.contains("truncated"));
        let mut nested = Vec::new();
        for v in [1i32, 0, oids::TEXT_ARRAY as i32, 1, 1] {
            nested.extend_from_slice(&v.to_be_bytes());
        }
        assert!(bin(oids::TEXT_ARRAY, nested)
            .decode(1)
            .unwrap_err()
            .message
            .contains("arrays of arrays"));
        let e = bin(600, vec![1]).decode(1).unwrap_err();
        assert!(e.message.contains("oid 600"), "{}", e.message);
    }
}
