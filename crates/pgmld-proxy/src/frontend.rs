//! Strict decoding of the frontend messages pgmld looks into (Query, Parse, Bind, Execute,
//! Describe, Close).
//!
//! pgwire's decoders trust the counts and lengths inside a message and panic on a
//! truncated one, so client frames are read here instead: every read is bounds-checked,
//! nothing is reserved from a declared count beyond what the frame holds, and a message
//! whose fields do not fill its frame exactly is refused, as Postgres refuses it
//! (`insufficient data left in message`, `invalid message format`: SQLSTATE 08P01).

use crate::error::ProxyError;
use bytes::Bytes;
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Parse};
use pgwire::messages::simplequery::Query;

/// A frontend message pgmld decodes from a whole frame (type byte, length, body).
pub trait Frontend: Sized {
    /// The message type byte.
    const TYPE: u8;
    /// Its name in error messages.
    const NAME: &'static str;
    /// Reads the body; an error says what is wrong with it.
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str>;
}

/// Decodes a whole frame as `M`, refusing anything that is not exactly one well-formed
/// `M` with a [`ProxyError::Protocol`] (the session answers 08P01).
pub fn decode<M: Frontend>(frame: &Bytes) -> Result<M, ProxyError> {
    let bad = |why: &str| ProxyError::Protocol(format!("invalid {} message: {why}", M::NAME));
    if frame.first() != Some(&M::TYPE) {
        return Err(bad("wrong message type"));
    }
    let declared = frame.get(1..5).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if declared != Some(frame.len() - 1) {
        return Err(bad("length word does not match the frame"));
    }
    let mut r = Reader { frame, pos: 5 };
    let m = M::read(&mut r).map_err(bad)?;
    if r.pos != frame.len() {
        return Err(bad("invalid message format (bytes left over)"));
    }
    Ok(m)
}

/// A bounds-checked cursor over one frame.
pub struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
}

const SHORT: &str = "insufficient data left in message";

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.frame.len()).ok_or(SHORT)?;
        let s = &self.frame[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn left(&self) -> usize {
        self.frame.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn i16(&mut self) -> Result<i16, &'static str> {
        Ok(self.u16()? as i16)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(self.u32()? as i32)
    }

    /// A NUL-terminated string (lossy UTF-8, as pgwire reads it).
    fn string(&mut self) -> Result<String, &'static str> {
        let rest = self.frame.get(self.pos..).unwrap_or(&[]);
        let end = rest.iter().position(|&c| c == 0).ok_or("invalid string in message")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    /// A name: the empty string is the unnamed statement or portal (`None`, as pgwire).
    fn name(&mut self) -> Result<Option<String>, &'static str> {
        Ok(Some(self.string()?).filter(|s| !s.is_empty()))
    }

    /// A count of elements of at least `size` bytes each: one the frame cannot hold is
    /// refused before anything is allocated for it.
    fn count(&mut self, size: usize) -> Result<usize, &'static str> {
        let n = self.u16()? as usize;
        if n * size > self.left() {
            return Err(SHORT);
        }
        Ok(n)
    }

    fn i16s(&mut self) -> Result<Vec<i16>, &'static str> {
        let n = self.count(2)?;
        (0..n).map(|_| self.i16()).collect()
    }

    /// `n` bytes as a slice of the frame (no copy).
    fn bytes(&mut self, n: usize) -> Result<Bytes, &'static str> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.frame.slice(start..self.pos))
    }
}

impl Frontend for Query {
    const TYPE: u8 = b'Q';
    const NAME: &'static str = "Query";
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str> {
        Ok(Query::new(r.string()?))
    }
}

impl Frontend for Parse {
    const TYPE: u8 = b'P';
    const NAME: &'static str = "Parse";
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str> {
        let name = r.name()?;
        let query = r.string()?;
        let n = r.count(4)?;
        let types = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        Ok(Parse::new(name, query, types))
    }
}

impl Frontend for Bind {
    const TYPE: u8 = b'B';
    const NAME: &'static str = "Bind";
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str> {
        let portal = r.name()?;
        let statement = r.name()?;
        let formats = r.i16s()?;
        let n = r.count(4)?;
        let mut params = Vec::with_capacity(n);
        for _ in 0..n {
            params.push(match r.i32()? {
                -1 => None,
                len => Some(r.bytes(usize::try_from(len).map_err(|_| SHORT)?)?),
            });
        }
        let results = r.i16s()?;
        Ok(Bind::new(portal, statement, formats, params, results))
    }
}

impl Frontend for Execute {
    const TYPE: u8 = b'E';
    const NAME: &'static str = "Execute";
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str> {
        let portal = r.name()?;
        Ok(Execute::new(portal, r.i32()?))
    }
}

impl Frontend for Describe {
    const TYPE: u8 = b'D';
    const NAME: &'static str = "Describe";
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str> {
        let kind = target(r.u8()?)?;
        Ok(Describe::new(kind, r.name()?))
    }
}

impl Frontend for Close {
    const TYPE: u8 = b'C';
    const NAME: &'static str = "Close";
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str> {
        let kind = target(r.u8()?)?;
        Ok(Close::new(kind, r.name()?))
    }
}

/// A Describe / Close target: statement or portal.
fn target(b: u8) -> Result<u8, &'static str> {
    match b {
        b'S' | b'P' => Ok(b),
        _ => Err("invalid target type (not 'S' or 'P')"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use bytes::BytesMut;

    fn framed(ty: u8, body: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        wire::frame(ty, body, &mut b);
        b.freeze()
    }

    #[test]
    fn decodes_what_pgmld_encodes() {
        let mut b = BytesMut::new();
        wire::parse("s1", "SELECT pgml.version($1)", vec![25], &mut b);
        let p: Parse = decode(&b.split().freeze()).unwrap();
        assert_eq!(
            (p.name.as_deref(), p.query.as_str(), p.type_oids),
            (Some("s1"), "SELECT pgml.version($1)", vec![25])
        );
        let from =
            Bind::new(None, None, vec![1], vec![Some(Bytes::from_static(b"ab")), None], vec![0, 1]);
        wire::bind("p", "s1", &from, &mut b);
        let bind: Bind = decode(&b.split().freeze()).unwrap();
        assert_eq!(bind.parameters, vec![Some(Bytes::from_static(b"ab")), None]);
        assert_eq!(
            (bind.parameter_format_codes, bind.result_column_format_codes),
            (vec![1], vec![0, 1])
        );
        wire::execute("", 7, &mut b);
        let e: Execute = decode(&b.split().freeze()).unwrap();
        assert_eq!((e.name, e.max_rows), (None, 7));
        wire::close(b'S', "s1", &mut b);
        let c: Close = decode(&b.split().freeze()).unwrap();
        assert_eq!((c.target_type, c.name.as_deref()), (b'S', Some("s1")));
        wire::describe(b'P', "", &mut b);
        let d: Describe = decode(&b.split().freeze()).unwrap();
        assert_eq!((d.target_type, d.name), (b'P', None));
        wire::query("SELECT 1", &mut b);
        assert_eq!(wire::query_text(&b.split().freeze()).unwrap(), "SELECT 1");
    }

    #[test]
    fn refuses_truncated_and_padded_messages() {
        let cases: &[(u8, &[u8])] = &[
            (b'P', b"s\0SELECT pgml.version()"),       // query not terminated
            (b'P', b"s\0SELECT 1\0\0"),                // half a count
            (b'P', b"s\0SELECT 1\0\0\x05\0\0\0\x19"),  // 5 types declared, 1 sent
            (b'B', b"\0\0\0\0\0\x01\0\0\0\x10ab\0\0"), // a 16-byte value of 2 bytes
            (b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfeab\0\0"), // negative length other than -1
            (b'B', b"\0\0\xff\xff"),                   // 65535 formats declared
            (b'E', b"portal\0\0\0"),                   // half a row count
            (b'E', b"\0\0\0\0\0extra"),                // bytes left over
            (b'C', b"Xname\0"),                        // bad target
            (b'D', b""),                               // no target
            (b'Q', b"SELECT pgml.version()"),          // no NUL
        ];
        for (ty, body) in cases {
            let f = framed(*ty, body);
            let r = match ty {
                b'P' => decode::<Parse>(&f).map(drop),
                b'B' => decode::<Bind>(&f).map(drop),
                b'E' => decode::<Execute>(&f).map(drop),
                b'C' => decode::<Close>(&f).map(drop),
                b'D' => decode::<Describe>(&f).map(drop),
                _ => decode::<Query>(&f).map(drop),
            };
            assert!(
                matches!(r, Err(ProxyError::Protocol(_))),
                "{:?} {body:?} decoded",
                char::from(*ty)
            );
        }
        // A length word that disagrees with the frame, and a frame of the wrong type.
        assert!(decode::<Query>(&Bytes::from_static(b"Q\0\0\0\x09x\0")).is_err());
        assert!(decode::<Parse>(&framed(b'Q', b"x\0")).is_err());
    }
}
