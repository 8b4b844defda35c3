//! Postgres wire framing: splitting byte streams into messages and building the few
//! messages pgmld writes itself, with pgwire's message types.

use crate::error::ProxyError;
use bytes::{Buf, Bytes, BytesMut};
use pgmld_sql::SqlError;
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Flush, Parse};
use pgwire::messages::response::{ErrorResponse, NoticeResponse};
use pgwire::messages::simplequery::Query;
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads one length-prefixed startup-phase packet (no type byte), with its length word.
/// The buffer grows only as bytes arrive: a declared length reserves nothing.
pub async fn read_startup_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<BytesMut, ProxyError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&n) {
        return Err(ProxyError::Protocol(format!("invalid startup packet length {n}")));
    }
    let mut body = Vec::new();
    r.take((n - 4) as u64).read_to_end(&mut body).await?;
    if body.len() + 4 < n {
        return Err(ProxyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let mut buf = BytesMut::with_capacity(body.len() + 4);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// Largest startup packet, as Postgres (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// The protocol code word of a startup packet (after the length); 0 when too short.
pub fn startup_code(packet: &[u8]) -> u32 {
    packet.get(4..8).map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// SSLRequest code.
pub const SSL_REQUEST: u32 = 80877103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: u32 = 80877104;
/// CancelRequest code.
pub const CANCEL_REQUEST: u32 = 80877102;

/// Splits complete typed messages (type byte + length + body) off the front of `buf`.
/// Returns `Ok(None)` until a whole message is there. Nothing is reserved for the declared
/// length (the caller's reads grow the buffer as bytes arrive), so a client declaring a
/// huge message and sending little costs only what it sent. A length below 4 or above
/// `max` is a protocol violation.
pub fn split_message(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ProxyError> {
    Ok(frame_len(buf, max)?.map(|n| buf.split_to(n).freeze()))
}

/// The length (type byte included) of the whole message at the start of `buf`, `None`
/// until all of it is there; errors as [`split_message`].
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, ProxyError> {
    let Some(header) = buf.get(..5) else { return Ok(None) };
    let ty = char::from(header[0]);
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 {
        return Err(ProxyError::Protocol(format!(
            "invalid message length {len} for message type {ty:?}"
        )));
    }
    if len > max {
        return Err(ProxyError::Protocol(format!(
            "message of type {ty:?} declares a length of {len} bytes, over the limit of {max} bytes (max_message_bytes)"
        )));
    }
    if buf.len() <= len {
        return Ok(None);
    }
    Ok(Some(len + 1))
}

fn ctx() -> DecodeContext {
    DecodeContext::new(ProtocolVersion::PROTOCOL3_0)
}

pub use crate::frontend::decode;

/// Decodes a StartupMessage packet (length word first, no type byte).
pub fn decode_startup(packet: &[u8]) -> Result<pgwire::messages::startup::Startup, ProxyError> {
    let mut b = BytesMut::from(packet);
    pgwire::messages::startup::Startup::decode(&mut b, &ctx())?
        .ok_or_else(|| ProxyError::Protocol("truncated startup packet".into()))
}

/// Encodes a pgwire message into `out`.
pub fn encode<M: Message>(m: &M, out: &mut BytesMut) {
    // Encoding only fails for messages over the size limit, which pgmld never builds.
    if let Err(e) = m.encode(out) {
        tracing::error!("encoding a protocol message failed: {e}");
    }
}

/// Reads the NUL-terminated string at the start of `b`.
pub fn cstr(b: &mut &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    b.advance(end + 1);
    Some(s)
}

/// The text of a simple `Query` frame.
pub fn query_text(frame: &Bytes) -> Result<String, ProxyError> {
    Ok(crate::frontend::decode::<Query>(frame)?.query)
}

/// `ErrorResponse` for an error pgmld raises itself.
pub fn error_response(e: &SqlError, out: &mut BytesMut) {
    let mut fields = vec![
        (b'S', "ERROR".to_string()),
        (b'V', "ERROR".to_string()),
        (b'C', e.code.to_string()),
        (b'M', e.message.clone()),
    ];
    if let Some(d) = &e.detail {
        fields.push((b'D', d.clone()));
    }
    if let Some(h) = &e.hint {
        fields.push((b'H', h.clone()));
    }
    if let Some(p) = e.position {
        fields.push((b'P', p.to_string()));
    }
    encode(&ErrorResponse::new(fields), out);
}

/// A `FATAL` `ErrorResponse` written before pgmld closes a connection.
pub fn fatal_response(code: &str, message: &str, out: &mut BytesMut) {
    let fields = vec![
        (b'S', "FATAL".to_string()),
        (b'V', "FATAL".to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    encode(&ErrorResponse::new(fields), out);
}

/// Whether a whole backend `ErrorResponse` frame ends the session (severity FATAL or
/// PANIC): the backend closes right after it, so the client must see it whatever pgmld
/// was doing with the answer it interrupted (57P01 after `pg_terminate_backend`).
pub fn is_fatal_error(frame: &[u8]) -> bool {
    if frame.first() != Some(&b'E') {
        return false;
    }
    let fatal = |v: &[u8]| matches!(v, b"FATAL" | b"PANIC");
    let mut fields = frame.get(5..).unwrap_or(&[]);
    let mut localized = false;
    while let Some((&code, rest)) = fields.split_first() {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let value = &rest[..end];
        match code {
            // Never translated (9.6+): it decides.
            b'V' => return fatal(value),
            // May be translated; decides only for servers that send no 'V'.
            b'S' => localized = fatal(value),
            _ => {}
        }
        fields = rest.get(end + 1..).unwrap_or(&[]);
    }
    localized
}

/// `NoticeResponse` with the given severity (INFO, NOTICE, WARNING). The SQLSTATE is
/// Postgres' default for the level: 01000 (warning) for WARNING, 00000 otherwise.
pub fn notice_response(severity: &str, message: &str, out: &mut BytesMut) {
    let code = if severity == "WARNING" { "01000" } else { "00000" };
    notice_with_code(severity, code, message, out);
}

/// `NoticeResponse` with its own SQLSTATE (e.g. 42710 for "already exists, skipping").
pub fn notice_with_code(severity: &str, code: &str, message: &str, out: &mut BytesMut) {
    let fields = vec![
        (b'S', severity.to_string()),
        (b'V', severity.to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    encode(&NoticeResponse::new(fields), out);
}

/// Frontend `Query` (tests drive sessions with it).
#[cfg(test)]
pub fn query(sql: &str, out: &mut BytesMut) {
    encode(&Query::new(sql.to_string()), out);
}

/// Frontend `Parse`.
pub fn parse(name: &str, sql: &str, types: Vec<u32>, out: &mut BytesMut) {
    encode(&Parse::new(Some(name.to_string()), sql.to_string(), types), out);
}

/// Frontend `Bind` (all fields as the client sent them, new names).
pub fn bind(portal: &str, statement: &str, from: &Bind, out: &mut BytesMut) {
    let b = Bind::new(
        Some(portal.to_string()),
        Some(statement.to_string()),
        from.parameter_format_codes.clone(),
        from.parameters.clone(),
        from.result_column_format_codes.clone(),
    );
    encode(&b, out);
}

/// Frontend `Bind` with the client's parameters but text results (pgmld reads them).
pub fn bind_text_results(portal: &str, statement: &str, from: &Bind, out: &mut BytesMut) {
    let b = Bind::new(
        Some(portal.to_string()),
        Some(statement.to_string()),
        from.parameter_format_codes.clone(),
        from.parameters.clone(),
        vec![],
    );
    encode(&b, out);
}

/// Frontend `Bind` without parameters, text results.
pub fn bind_plain(portal: &str, statement: &str, out: &mut BytesMut) {
    encode(
        &Bind::new(Some(portal.to_string()), Some(statement.to_string()), vec![], vec![], vec![]),
        out,
    );
}

/// Frontend `Sync`.
pub fn sync(out: &mut BytesMut) {
    encode(&pgwire::messages::extendedquery::Sync::new(), out);
}

/// Frontend `Describe` of a statement (`S`) or portal (`P`).
pub fn describe(kind: u8, name: &str, out: &mut BytesMut) {
    encode(&Describe::new(kind, Some(name.to_string())), out);
}

/// Frontend `Execute`.
pub fn execute(portal: &str, max_rows: i32, out: &mut BytesMut) {
    encode(&Execute::new(Some(portal.to_string()), max_rows), out);
}

/// Frontend `Close` of a statement (`S`) or portal (`P`).
pub fn close(kind: u8, name: &str, out: &mut BytesMut) {
    encode(&Close::new(kind, Some(name.to_string())), out);
}

/// Frontend `Flush`: makes the upstream send what it has.
pub fn flush(out: &mut BytesMut) {
    encode(&Flush::new(), out);
}

/// Re-frames a message captured as (type, body) for the client.
pub fn frame(ty: u8, body: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(&[ty]);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

/// Backend `DataRow` with each field's bytes (`None` for NULL).
pub fn data_row(fields: &[Option<Vec<u8>>], out: &mut BytesMut) {
    let mut body = Vec::with_capacity(
        2 + fields.iter().map(|f| 4 + f.as_ref().map_or(0, Vec::len)).sum::<usize>(),
    );
    body.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for f in fields {
        match f {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                body.extend_from_slice(&(b.len() as i32).to_be_bytes());
                body.extend_from_slice(b);
            }
        }
    }
    frame(b'D', &body, out);
}

/// Backend `CommandComplete` with its tag (`SELECT 3`, `FETCH 1`, `DECLARE CURSOR`).
pub fn command_complete(tag: &str, out: &mut BytesMut) {
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    frame(b'C', &body, out);
}

/// Backend `PortalSuspended`: Execute's row limit was reached.
pub fn portal_suspended(out: &mut BytesMut) {
    frame(b's', &[], out);
}

/// Whether each of `columns` result columns is sent in binary, by Bind's format-code rules
/// (none: all text; one: all alike; else one per column).
pub fn result_binary(codes: &[i16], columns: usize) -> Vec<bool> {
    (0..columns)
        .map(|i| match codes.len() {
            0 => false,
            1 => codes[0] == 1,
            _ => codes.get(i).copied() == Some(1),
        })
        .collect()
}

/// Type OIDs from a `ParameterDescription` ('t') body.
pub fn parameter_types(body: &[u8]) -> Vec<u32> {
    let mut b = body;
    if b.len() < 2 {
        return vec![];
    }
    let n = u16::from_be_bytes([b[0], b[1]]) as usize;
    b = &b[2..];
    (0..n)
        .filter_map(|i| {
            b.get(i * 4..i * 4 + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_carry_sqlstate_01000_as_postgres_sends() {
        let code_of = |severity| {
            let mut b = BytesMut::new();
            notice_response(severity, "m", &mut b);
            // fields: a type byte, then a NUL-terminated value; the list ends with a NUL
            let mut rest = &b[5..];
            while let Some((&kind, tail)) = rest.split_first().filter(|(k, _)| **k != 0) {
                let end = tail.iter().position(|&c| c == 0).unwrap();
                if kind == b'C' {
                    return String::from_utf8_lossy(&tail[..end]).to_string();
                }
                rest = &tail[end + 1..];
            }
            panic!("no SQLSTATE field")
        };
        assert_eq!(code_of("WARNING"), "01000");
        assert_eq!(code_of("NOTICE"), "00000");
        assert_eq!(code_of("INFO"), "00000");
    }

    #[test]
    fn split_waits_for_whole_messages_and_rejects_garbage() {
        let mut b = BytesMut::new();
        query("SELECT 1", &mut b);
        let whole = b.clone();
        let mut part = BytesMut::from(&whole[..6]);
        assert!(split_message(&mut part, 1 << 20).unwrap().is_none());
        part.extend_from_slice(&whole[6..]);
        let f = split_message(&mut part, 1 << 20).unwrap().unwrap();
        assert_eq!(query_text(&f).unwrap(), "SELECT 1");
        let mut garbage = BytesMut::from(&b"Q\xff\xff\xff\xffxx"[..]);
        assert!(split_message(&mut garbage, 1 << 20).is_err());
    }

    #[test]
    fn a_declared_length_reserves_nothing_and_the_limit_is_named() {
        let mut b = BytesMut::from(&b"Q\x40\0\0\0SELECT"[..]);
        assert!(split_message(&mut b, 1 << 30).unwrap().is_none());
        assert!(b.capacity() < 1024, "reserved {} bytes", b.capacity());
        let mut b = BytesMut::from(&b"Q\x40\0\0\x01SELECT"[..]);
        let e = split_message(&mut b, 1 << 30).unwrap_err().to_string();
        assert!(e.contains("1073741825") && e.contains("1073741824"), "{e}");
        assert_eq!(startup_code(b"\0\0\0\x04"), 0);
    }

    #[test]
    fn rows_and_tags_are_framed_as_postgres_sends_them() {
        let mut b = BytesMut::new();
        data_row(&[Some(b"ab".to_vec()), None], &mut b);
        assert_eq!(&b[..], b"D\0\0\0\x10\0\x02\0\0\0\x02ab\xff\xff\xff\xff");
        b.clear();
        command_complete("FETCH 1", &mut b);
        assert_eq!(&b[..], b"C\0\0\0\x0cFETCH 1\0");
        assert_eq!(result_binary(&[1], 2), vec![true, true]);
        assert_eq!(result_binary(&[0, 1], 2), vec![false, true]);
        assert_eq!(result_binary(&[], 1), vec![false]);
    }

    #[test]
    fn fatal_errors_are_told_from_others() {
        let mut b = BytesMut::new();
        fatal_response("57P01", "terminating connection due to administrator command", &mut b);
        assert!(is_fatal_error(&b));
        b.clear();
        error_response(&SqlError::new("42P01", "no such table"), &mut b);
        assert!(!is_fatal_error(&b));
        // A translated 'S' with the untranslated 'V' after it.
        b.clear();
        frame(b'E', b"SFATAL\0VERROR\0C42000\0\0", &mut b);
        assert!(!is_fatal_error(&b));
        b.clear();
        frame(b'E', b"SFEHLER\0VFATAL\0C57P01\0\0", &mut b);
        assert!(is_fatal_error(&b));
        assert!(!is_fatal_error(b"E\0\0\0\x04"));
        assert!(!is_fatal_error(b"N\0\0\0\x0bSFATAL\0\0"));
    }

    #[test]
    fn parameter_description_types() {
        assert_eq!(parameter_types(&[0, 2, 0, 0, 0, 25, 0, 0, 14, 250]), vec![25, 3834]);
    }
}
