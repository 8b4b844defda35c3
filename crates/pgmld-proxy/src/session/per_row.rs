//! Statements that call pgml functions per row (arguments that read columns).
//!
//! For each such SELECT block, innermost first (`pgmld_sql::rowwise` finds them and
//! rewrites the text), the session:
//! 1. runs the block's *source query* upstream on the client's own connection (same
//!    transaction, temp tables, search_path, parameters) and reads its rows in text form;
//! 2. evaluates the calls for all rows at once through `call_rows` (transform batches
//!    them into a few forward passes);
//! 3. replaces the block by a VALUES list of its rows and results, so the upstream runs
//!    the rest of the statement (joins, WHERE, ORDER BY, LIMIT around it) as Postgres.
//!
//! Everything runs in the extended protocol without a Sync of pgmld's own, so the row
//! sources and the completed statement share the client's (implicit) transaction: a
//! simple query with per-row calls is sent as a one-statement extended batch. An upstream
//! error in step 1 reaches the client as the statement's error, leaving the transaction
//! as Postgres leaves it.

use super::Session;
use crate::error::ProxyError;
use crate::expect::{Kind, Route};
use crate::wire;
use bytes::{Bytes, BytesMut};
use pgmld_sql::rowwise::{self, SourceColumn, SourceRow};
use pgmld_sql::{codes, Param, Plan, SqlError};
use pgwire::messages::extendedquery::Bind;
use std::sync::Arc;
use tokio::io::AsyncWrite;

/// Blocks inside blocks are served one level per round; deeper nesting than this is
/// almost certainly a rewrite that does not converge.
const MAX_ROUNDS: usize = 16;

/// What an upstream run of pgmld's own query produced.
pub(super) enum Captured {
    /// Columns (name, type, modifier) and rows in text form.
    Rows(Vec<(String, u32, i32)>, Vec<SourceRow>),
    /// The upstream failed it; the error already went to the client.
    Failed,
}

/// The client's bind, for a source query that references `$n`.
pub(super) struct Bound<'a> {
    pub types: &'a [u32],
    pub bind: &'a Bind,
}

/// A statement whose per-row calls were served.
pub(super) enum Ready {
    /// No pgml call left: run this text as it is.
    Plain(String),
    /// Constant pgml calls left (or none were per row): evaluate this plan.
    Plan(Arc<Plan>),
}

impl<W: AsyncWrite + Unpin> Session<W> {
    /// Serves every per-row block of `plan`, innermost first, and returns what is left to
    /// run. The client's statement is not parsed again: its plan has the parse; each
    /// completed text (a block replaced by VALUES) is parsed once. `None` when it failed:
    /// the error went to the client.
    pub(super) async fn serve_row_blocks(
        &mut self,
        mut plan: Arc<Plan>,
        params: &[Param],
        bound: Option<Bound<'_>>,
    ) -> Result<Option<Ready>, ProxyError> {
        for _ in 0..MAX_ROUNDS {
            let block = match plan.next_row_block() {
                Ok(None) => return Ok(Some(Ready::Plan(plan))),
                Ok(Some(b)) => b,
                Err(e) => {
                    self.local_error(e).await?;
                    return Ok(None);
                }
            };
            for call in block.calls() {
                self.metrics.intercepted(call.name());
            }
            // The source may keep constant pgml calls (a pgml.version() item): evaluate them.
            let source = match Plan::build(block.source_sql(), &self.registry) {
                Ok(None) => Ok(block.source_sql().to_string()),
                Ok(Some(plan)) => self.evaluate(&plan, params).await?,
                Err(e) => Err(e),
            };
            let source = match source {
                Ok(s) => s,
                Err(e) => {
                    self.local_error(e).await?;
                    return Ok(None);
                }
            };
            let (raw_columns, rows) = match self.run_captured(&source, bound.as_ref()).await? {
                Captured::Rows(c, r) => (c, r),
                Captured::Failed => return Ok(None),
            };
            let Some(columns) = self.source_columns(raw_columns).await? else { return Ok(None) };
            let names: Vec<&str> = block.calls().iter().map(|c| c.name()).collect();
            let caller = match self.authorize(&names).await? {
                Ok(c) => c,
                Err(e) => {
                    self.local_error(e).await?;
                    return Ok(None);
                }
            };
            let mut results = Vec::with_capacity(block.calls().len());
            for (i, call) in block.calls().iter().enumerate() {
                if rows.is_empty() {
                    results.push(vec![]);
                    continue;
                }
                let args = match block.call_args(i, &columns, &rows, params) {
                    Ok(a) => a,
                    Err(e) => {
                        self.local_error(e).await?;
                        return Ok(None);
                    }
                };
                self.info.cancel.store(false, std::sync::atomic::Ordering::Relaxed);
                let fut = call.function.clone().call_rows(self.call_context(caller.clone()), args);
                match self.watch_client(fut).await? {
                    Ok(values) => results.push(values),
                    Err(e) => {
                        self.local_error(e).await?;
                        return Ok(None);
                    }
                }
            }
            self.info.span.in_scope(|| {
                tracing::debug!(
                    rows = rows.len(),
                    calls = block.calls().len(),
                    "served a per-row block"
                )
            });
            let completed = block.complete(&columns, &rows, &results).and_then(|sql| {
                Ok(match Plan::build(&sql, &self.registry)? {
                    Some(next) => Ok(Arc::new(next)),
                    None => Err(sql),
                })
            });
            plan = match completed {
                Ok(Ok(next)) => next,
                Ok(Err(sql)) => return Ok(Some(Ready::Plain(sql))),
                Err(e) => {
                    self.local_error(e).await?;
                    return Ok(None);
                }
            };
        }
        let e = SqlError::new(
            codes::FEATURE_NOT_SUPPORTED,
            format!("pgml calls nested more than {MAX_ROUNDS} query levels deep"),
        )
        .with_hint("Compute the calls in fewer nested subqueries.");
        self.local_error(e).await?;
        Ok(None)
    }

    /// Runs `sql` upstream in this session (extended protocol, no Sync: inside the
    /// client's transaction) and collects its rows in text form.
    pub(super) async fn run_captured(
        &mut self,
        sql: &str,
        bound: Option<&Bound<'_>>,
    ) -> Result<Captured, ProxyError> {
        self.catch_up().await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (s, p) = self.pgml.next_names("pgmld_r");
        self.shared.expect(Kind::Parse, Route::Swallow);
        wire::parse(&s, sql, bound.map_or_else(Vec::new, |b| b.types.to_vec()), &mut self.up);
        self.shared.expect(Kind::Bind, Route::Swallow);
        match bound {
            Some(b) => wire::bind_text_results(&p, &s, b.bind, &mut self.up),
            None => wire::bind_plain(&p, &s, &mut self.up),
        }
        self.shared.expect(Kind::DescribePortal, Route::Capture(tx.clone()));
        wire::describe(b'P', &p, &mut self.up);
        self.shared.expect(Kind::Execute, Route::Capture(tx));
        wire::execute(&p, 0, &mut self.up);
        self.shared.expect(Kind::Close, Route::Swallow);
        wire::close(b'P', &p, &mut self.up);
        self.shared.expect(Kind::Close, Route::Swallow);
        wire::close(b'S', &s, &mut self.up);
        self.catch_up().await?;
        let (mut columns, mut rows, mut done) = (Vec::new(), Vec::new(), false);
        let mut error_frames = BytesMut::new();
        while let Ok((ty, body)) = rx.try_recv() {
            match ty {
                b'T' => columns = row_description(&body),
                b'D' => rows.push(data_row(&body)),
                b'C' => done = true,
                b'E' => wire::frame(ty, &body, &mut error_frames),
                _ => {}
            }
        }
        let failed = !error_frames.is_empty();
        if failed {
            self.shared.local(error_frames.freeze());
        }
        if failed || !done {
            // The upstream now skips to the client's Sync, as after its own error (a
            // Parse or Bind error already went to the client through Swallow).
            self.pgml.error_until_sync = true;
            return Ok(Captured::Failed);
        }
        Ok(Captured::Rows(columns, rows))
    }

    /// Names the source columns' types for casts: built-in types directly, others by
    /// asking the upstream (`format_type`) once per statement.
    async fn source_columns(
        &mut self,
        raw: Vec<(String, u32, i32)>,
    ) -> Result<Option<Vec<SourceColumn>>, ProxyError> {
        let unknown: Vec<u32> =
            raw.iter().map(|c| c.1).filter(|&o| rowwise::builtin_type_name(o).is_none()).collect();
        let mut names = std::collections::HashMap::new();
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(u32::to_string).collect();
            let sql = format!("SELECT t.oid::int8::text, format_type(t.oid, NULL) FROM pg_catalog.pg_type t WHERE t.oid IN ({})", list.join(", "));
            match self.run_captured(&sql, None).await? {
                Captured::Rows(_, rows) => {
                    for r in rows {
                        if let (Some(Some(oid)), Some(Some(name))) = (r.first(), r.get(1)) {
                            names.insert(oid.parse::<u32>().unwrap_or(0), name.clone());
                        }
                    }
                }
                Captured::Failed => return Ok(None),
            }
        }
        Ok(Some(
            raw.into_iter()
                .map(|(name, type_oid, type_modifier)| {
                    let type_name = rowwise::builtin_type_name(type_oid)
                        .map(str::to_string)
                        .or_else(|| names.get(&type_oid).cloned())
                        .unwrap_or_else(|| "text".into());
                    SourceColumn { name, type_oid, type_modifier, type_name }
                })
                .collect(),
        ))
    }
}

/// (name, type oid, type modifier) of each column of a RowDescription body.
fn row_description(body: &Bytes) -> Vec<(String, u32, i32)> {
    let mut b: &[u8] = body;
    let n = take_u16(&mut b).unwrap_or(0);
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Some(name) = wire::cstr(&mut b) else { break };
        // table oid (4), column number (2), type oid (4), type size (2), modifier (4), format (2)
        if b.len() < 18 {
            break;
        }
        let oid = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
        let modifier = i32::from_be_bytes([b[12], b[13], b[14], b[15]]);
        b = &b[18..];
        out.push((name, oid, modifier));
    }
    out
}

/// The values of a DataRow body, as text (None for NULL).
fn data_row(body: &Bytes) -> SourceRow {
    let mut b: &[u8] = body;
    let n = take_u16(&mut b).unwrap_or(0);
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        if b.len() < 4 {
            break;
        }
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        b = &b[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = (len as usize).min(b.len());
        out.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
        b = &b[len..];
    }
    out
}

fn take_u16(b: &mut &[u8]) -> Option<u16> {
    let v = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    *b = &b[2..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn decodes_row_descriptions_and_rows() {
        let mut t = BytesMut::new();
        t.put_u16(2);
        for (name, oid, m) in [("text", 25u32, -1i32), ("n", 1043, 14)] {
            t.extend_from_slice(name.as_bytes());
            t.put_u8(0);
            t.put_u32(0);
            t.put_u16(0);
            t.put_u32(oid);
            t.put_i16(-1);
            t.put_i32(m);
            t.put_u16(0);
        }
        assert_eq!(
            row_description(&t.freeze()),
            vec![("text".into(), 25, -1), ("n".into(), 1043, 14)]
        );
        let mut d = BytesMut::new();
        d.put_u16(2);
        d.put_i32(3);
        d.extend_from_slice("é!".as_bytes());
        d.put_i32(-1);
        assert_eq!(data_row(&d.freeze()), vec![Some("é!".to_string()), None]);
    }
}
