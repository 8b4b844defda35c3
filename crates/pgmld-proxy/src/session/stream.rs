//! Streaming pgml calls (`RETURNS SETOF`): rows reach the client as the call produces them,
//! and cursors over such calls are served by pgmld.
//!
//! The upstream still judges every statement: it holds the statement's *shape* (the call
//! replaced by an empty `unnest`, see `pgmld_sql::Plan::shape_sql`), so a streaming
//! `SELECT` is described by Postgres, `DECLARE c CURSOR FOR SELECT pgml.f(...)` really
//! declares a cursor `c` upstream (25P01 outside a transaction block, 42P03 for a
//! duplicate name, 25P02 in an aborted transaction: Postgres' own errors), and each
//! `FETCH`/`MOVE` on `c` runs upstream first on that empty cursor, which checks that the
//! cursor still exists and the transaction is usable and yields the RowDescription.
//! Only then does pgmld send the rows itself, one `DataRow` per value as it comes, with
//! the command tag Postgres would send (`FETCH n`, `MOVE n`, `SELECT n`).
//!
//! The upstream is spoken to in the extended protocol without a Sync of pgmld's own, so
//! everything stays in the client's transaction. A stream ends (and its generation with
//! it) when its cursor is closed, when the transaction ends (non-holdable cursors), when
//! a FETCH is cancelled or fails, or when the client goes away.

use super::state::LocalCursor;
use super::Session;
use crate::error::ProxyError;
use crate::expect::{Kind, Route};
use crate::wire;
use bytes::{Bytes, BytesMut};
use pgmld_sql::cursor::{Count, Direction, StreamCursor};
use pgmld_sql::output::encode_field;
use pgmld_sql::{
    codes, CallContext, Caller, CursorCommand, CursorDecl, Param, Plan, SqlError, SqlType, Value,
};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc::UnboundedReceiver;

/// How often a wait for the next value checks for a CancelRequest.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Where a streaming SELECT's rows go.
#[derive(Debug, Clone, Copy)]
pub(super) enum Delivery<'a> {
    /// A simple query (served upstream in the unnamed portal): RowDescription first, then
    /// every row, in text.
    Simple,
    /// The client's Execute of its portal `name` (bound upstream under that name): rows in
    /// its result formats, at most `max_rows` (0: all) per Execute; the portal keeps the
    /// stream for the next one.
    Portal { name: &'a str, formats: &'a [i16], max_rows: i32 },
}

/// Whether a statement served inside an extended batch succeeded; after `Failed` the
/// error went to the client and the upstream skips to the next Sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    Done,
    Failed,
}

fn canceled() -> SqlError {
    SqlError::new(codes::QUERY_CANCELED, "canceling statement due to user request")
}

impl<W: AsyncWrite + Unpin> Session<W> {
    /// True while any cursor or portal holds a stream.
    pub(super) fn has_streams(&self) -> bool {
        self.pgml.has_streams()
    }

    /// Drops the cursors and streaming portals of transactions that have ended.
    pub(super) fn prune_streams(&mut self) {
        self.pgml.prune_streams(self.shared.txn_end_count());
    }

    /// A call context whose cancel flag belongs to the stream alone: a CancelRequest
    /// between FETCHes must not end a cursor that nothing is running on.
    fn stream_context(&self, caller: Caller) -> (CallContext, Arc<AtomicBool>) {
        let mut ctx = self.call_context(caller);
        let stop = Arc::new(AtomicBool::new(false));
        ctx.cancelled = stop.clone();
        (ctx, stop)
    }

    /// The caller of a streaming plan, or `None` once its refusal was reported.
    async fn authorized(&mut self, plan: &Plan) -> Result<Option<Caller>, ProxyError> {
        match self.authorize(&plan.function_names()).await? {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                self.local_error(e).await?;
                Ok(None)
            }
        }
    }

    /// Awaits `fut` while reading the client: a CancelRequest for this session, or the
    /// client going away, ends it with 57014 (dropping `fut`).
    async fn interruptible<T>(
        &mut self,
        fut: impl Future<Output = Result<T, SqlError>>,
    ) -> Result<T, SqlError> {
        let local_call = self.info.local_call.clone();
        let _local = super::LocalCall::start(&local_call);
        tokio::pin!(fut);
        let mut poll = tokio::time::interval(CANCEL_POLL);
        loop {
            tokio::select! {
                r = &mut fut => return r,
                n = self.client.read_buf(&mut self.inbuf), if !self.client_gone => {
                    if !matches!(n, Ok(n) if n > 0) {
                        self.client_gone = true;
                        self.info.cancel.store(true, Ordering::Relaxed);
                    }
                }
                _ = poll.tick() => {}
            }
            if self.client_gone || self.info.cancel.load(Ordering::Relaxed) {
                return Err(canceled());
            }
        }
    }

    /// Sends each row to the client as a DataRow, in the formats asked for.
    fn row_sink(
        &self,
        types: Vec<SqlType>,
        formats: &[i16],
    ) -> impl FnMut(&[Value]) -> Result<(), SqlError> {
        let shared = self.shared.clone();
        let binary = wire::result_binary(formats, types.len());
        move |row: &[Value]| {
            if row.len() != types.len() {
                return Err(SqlError::new(
                    codes::INTERNAL_ERROR,
                    format!(
                        "a streaming call produced a row of {} values where {} are expected",
                        row.len(),
                        types.len()
                    ),
                ));
            }
            let fields = row
                .iter()
                .zip(types.iter().zip(&binary))
                .map(|(v, (t, b))| encode_field(v, *t, *b))
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = BytesMut::new();
            wire::data_row(&fields, &mut out);
            shared.local(out.freeze());
            Ok(())
        }
    }

    fn local_bytes(&self, write: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        write(&mut out);
        self.shared.local(out.freeze());
    }

    /// Queues `kind` with its answer captured for pgmld.
    fn capture(&mut self, kind: Kind) -> UnboundedReceiver<(u8, Bytes)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared.expect(kind, Route::Capture(tx));
        rx
    }

    /// After a catch-up: true when the upstream answered with `complete` (CommandComplete
    /// or RowDescription). Its errors go to the client (the upstream now skips to Sync);
    /// no answer at all means an earlier error already did.
    fn upstream_ok(&mut self, answers: &[(u8, Bytes)], complete: u8) -> bool {
        let mut errors = BytesMut::new();
        for (ty, body) in answers.iter().filter(|(ty, _)| *ty == b'E') {
            wire::frame(*ty, body, &mut errors);
        }
        if !errors.is_empty() {
            self.shared.local(errors.freeze());
            self.pgml.error_until_sync = true;
            return false;
        }
        answers.iter().any(|(ty, _)| *ty == complete)
    }

    /// `DECLARE` of a cursor over a streaming call, whose shape the upstream holds bound
    /// in `portal`: the upstream declares its cursor, then the call starts and the cursor
    /// is pgmld's.
    pub(super) async fn serve_declare(
        &mut self,
        plan: &Plan,
        decl: &CursorDecl,
        params: &[Param],
        portal: &str,
    ) -> Result<Served, ProxyError> {
        let mut rx = self.capture(Kind::Execute);
        wire::execute(portal, 0, &mut self.up);
        self.catch_up().await?;
        if !self.upstream_ok(&drain(&mut rx), b'C') {
            return Ok(Served::Failed);
        }
        let Some(caller) = self.authorized(plan).await? else { return Ok(Served::Failed) };
        self.info.cancel.store(false, Ordering::Relaxed);
        let (ctx, stop) = self.stream_context(caller);
        match self.interruptible(plan.open_stream(params, &ctx)).await {
            Ok(stream) => {
                let txn = self.shared.txn_end_count();
                let cursor = StreamCursor::new(stream, decl.scrollable);
                self.pgml.cursors.insert(
                    decl.name.clone(),
                    LocalCursor::new(cursor, plan.stream_types(), txn, stop),
                );
                self.info.span.in_scope(
                    || tracing::debug!(cursor = %decl.name, "declared a streaming cursor"),
                );
                self.local_bytes(|b| wire::command_complete("DECLARE CURSOR", b));
                Ok(Served::Done)
            }
            Err(e) => {
                self.local_error(e).await?;
                Ok(Served::Failed)
            }
        }
    }

    /// FETCH / MOVE on one of pgmld's cursors; the statement is bound upstream in
    /// `portal`. `describe` sends the RowDescription first (simple protocol); `formats` are
    /// the client's result formats (extended protocol).
    pub(super) async fn serve_fetch(
        &mut self,
        cmd: &CursorCommand,
        portal: &str,
        describe: bool,
        formats: &[i16],
    ) -> Result<Served, ProxyError> {
        let CursorCommand::Fetch { cursor, direction, is_move } = cmd else {
            return Ok(Served::Done);
        };
        let mut description = describe.then(|| {
            let rx = self.capture(Kind::DescribePortal);
            wire::describe(b'P', portal, &mut self.up);
            rx
        });
        let mut rx = self.capture(Kind::Execute);
        wire::execute(portal, 0, &mut self.up);
        self.catch_up().await?;
        let mut answers = description.as_mut().map(drain).unwrap_or_default();
        let row_description: Vec<(u8, Bytes)> =
            answers.iter().filter(|(ty, _)| *ty == b'T').cloned().collect();
        answers.extend(drain(&mut rx));
        if !self.upstream_ok(&answers, b'C') {
            if answers.iter().any(|(ty, body)| *ty == b'E' && error_code(body) == Some("34000")) {
                // Gone upstream (ROLLBACK TO SAVEPOINT undid its DECLARE): stop the stream.
                self.pgml.cursors.remove(cursor);
            }
            return Ok(Served::Failed);
        }
        let tag = if *is_move { "MOVE" } else { "FETCH" };
        for (ty, body) in &row_description {
            self.local_bytes(|b| wire::frame(*ty, body, b));
        }
        let Some(mut lc) = self.pgml.cursors.remove(cursor) else {
            // Gone meanwhile; the upstream's empty cursor answered for it.
            self.local_bytes(|b| wire::command_complete(&format!("{tag} 0"), b));
            return Ok(Served::Done);
        };
        let sink = self.row_sink(lc.types.clone(), formats);
        let result = match lc.cursor.as_mut() {
            Some(c) => {
                self.info.cancel.store(false, Ordering::Relaxed);
                self.interruptible(c.fetch(*direction, *is_move, sink)).await
            }
            None => Err(SqlError::new(
                codes::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("portal \"{cursor}\" cannot be run"),
            )),
        };
        let served = match result {
            Ok(n) => {
                self.local_bytes(|b| wire::command_complete(&format!("{tag} {n}"), b));
                Served::Done
            }
            Err(e) => {
                lc.fail();
                self.local_error(e).await?;
                Served::Failed
            }
        };
        self.pgml.cursors.insert(cursor.clone(), lc);
        Ok(served)
    }

    /// A streaming `SELECT` whose shape the upstream holds bound in the portal `delivery`
    /// names (the unnamed one for a simple query).
    pub(super) async fn serve_select(
        &mut self,
        plan: &Plan,
        params: &[Param],
        delivery: Delivery<'_>,
    ) -> Result<Served, ProxyError> {
        let mut row_description = Vec::new();
        if let Delivery::Simple = delivery {
            let mut rx = self.capture(Kind::DescribePortal);
            wire::describe(b'P', "", &mut self.up);
            self.catch_up().await?;
            row_description = drain(&mut rx);
            if !self.upstream_ok(&row_description, b'T') {
                return Ok(Served::Failed);
            }
        }
        let Some(caller) = self.authorized(plan).await? else { return Ok(Served::Failed) };
        self.info.cancel.store(false, Ordering::Relaxed);
        let (ctx, stop) = self.stream_context(caller);
        let stream = match self.interruptible(plan.open_stream(params, &ctx)).await {
            Ok(s) => s,
            Err(e) => {
                self.local_error(e).await?;
                return Ok(Served::Failed);
            }
        };
        for (ty, body) in row_description.iter().filter(|(ty, _)| *ty == b'T') {
            self.local_bytes(|b| wire::frame(*ty, body, b));
        }
        let txn = self.shared.txn_end_count();
        let lc = LocalCursor::new(StreamCursor::new(stream, false), plan.stream_types(), txn, stop);
        match delivery {
            Delivery::Simple => self.run_portal(lc, 0, &[], None).await,
            Delivery::Portal { name, formats, max_rows } => {
                self.run_portal(lc, max_rows, formats, Some(name)).await
            }
        }
    }

    /// One Execute of a streaming portal: up to `max_rows` rows (0: all), then
    /// PortalSuspended or the command tag. The stream stays with the client's portal.
    pub(super) async fn run_portal(
        &mut self,
        mut lc: LocalCursor,
        max_rows: i32,
        formats: &[i16],
        keep: Option<&str>,
    ) -> Result<Served, ProxyError> {
        let limit = u64::try_from(max_rows).ok().filter(|&n| n > 0);
        let sink = self.row_sink(lc.types.clone(), formats);
        self.info.cancel.store(false, Ordering::Relaxed);
        let result = match lc.cursor.as_mut() {
            Some(c) => {
                self.interruptible(c.fetch(
                    Direction::Forward(limit.map_or(Count::All, Count::N)),
                    false,
                    sink,
                ))
                .await
            }
            None => {
                Err(SqlError::new(codes::OBJECT_NOT_IN_PREREQUISITE_STATE, "portal cannot be run"))
            }
        };
        match result {
            Ok(n) => {
                if limit == Some(n) {
                    self.local_bytes(wire::portal_suspended);
                } else {
                    self.local_bytes(|b| wire::command_complete(&format!("SELECT {n}"), b));
                }
                if let Some(p) = keep.and_then(|k| self.pgml.portals.get_mut(k)) {
                    p.stream = Some(lc);
                }
                Ok(Served::Done)
            }
            Err(e) => {
                self.local_error(e).await?;
                Ok(Served::Failed)
            }
        }
    }
}

/// The SQLSTATE field of an ErrorResponse body.
fn error_code(body: &[u8]) -> Option<&str> {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .and_then(|c| std::str::from_utf8(c).ok())
}

/// Everything captured so far.
fn drain(rx: &mut UnboundedReceiver<(u8, Bytes)>) -> Vec<(u8, Bytes)> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_error_fields() {
        assert_eq!(
            error_code(b"SERROR\0VERROR\0C34000\0Mcursor \"c\" does not exist\0\0"),
            Some("34000")
        );
        assert_eq!(error_code(b"SERROR\0\0"), None);
    }
}
