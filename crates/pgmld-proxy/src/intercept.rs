//! Statements that call pgml functions.
//!
//! pgmld evaluates the calls and splices their results into the client's own text, which
//! the upstream then runs: the rest of the statement keeps Postgres' semantics, and
//! RowDescription, command tags and transaction state come from Postgres itself.
//! Prepared statements are parsed upstream in their *shape* (calls replaced by typed NULLs
//! that keep the `$n` parameters), so Describe and Bind answer exactly; Execute evaluates
//! the calls with the bound parameters and runs the spliced text in a portal of pgmld's.
//!
//! Errors pgmld raises itself are queued in order with the upstream's answers; a failing
//! statement is then sent upstream so the transaction state becomes what Postgres would
//! have after an error (aborted block, rolled-back implicit transaction).

use crate::error::ProxyError;
use crate::expect::{Kind, Route};
use crate::per_row::Bound;
use crate::session::{LocalPortal, LocalStatement, Session};
use crate::stream::{Delivery, Served};
use crate::wire;
use bytes::{Bytes, BytesMut};
use pgmld_sql::analyze::{find_calls, mentions_pgml, mentions_pgml_bytes, split_statements};
use pgmld_sql::rowwise;
use pgmld_sql::streaming::{mentions_cursor_command, parse_cursor_command};
use pgmld_sql::{CursorCommand, Param, Plan, SqlError, StreamForm};
use pgwire::messages::extendedquery::{Bind, Execute, Parse};
use std::sync::Arc;
use tokio::io::AsyncWrite;

/// Text sent upstream to put the transaction into the state an error leaves; it fails
/// at parse time, touching nothing.
const ABORT_SQL: &str = "pgmld: abort the transaction after a pgml error";

/// Simple or extended protocol, which decides how an error is reported.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Simple,
    Extended,
}

impl<W: AsyncWrite + Unpin> Session<W> {
    pub(crate) async fn on_query(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        self.metrics.statements_proxied.inc();
        if !self.cursors.is_empty() && mentions_cursor_command(&frame) {
            // FETCH / MOVE / CLOSE on pgmld's cursors are served statement by statement.
            let sql = wire::query_text(&frame)?;
            if let Some(segments) = split_statements(&sql) {
                if segments.iter().any(|s| self.local_cursor_command(&sql[s.clone()]).is_some()) {
                    return self.on_multi_statement_query(&sql, segments).await;
                }
            }
        }
        if !mentions_pgml_bytes(&frame) {
            self.forward(&frame, Some(Kind::Query));
            return Ok(());
        }
        let sql = wire::query_text(&frame)?;
        if let Some(segments) = split_statements(&sql).filter(|s| s.len() > 1) {
            // Statement by statement: one that sqlparser cannot read (MOVE) must not hide
            // the pgml calls of the others.
            if segments.iter().any(|s| find_calls(&sql[s.clone()]).is_some()) {
                return self.on_multi_statement_query(&sql, segments).await;
            }
        }
        if rowwise::next_row_block(&sql, &self.registry).map_or(true, |b| b.is_some()) {
            // Per-row calls: the row sources and the completed statement must run in one
            // implicit transaction, as the client's single statement would; the
            // multi-statement path does exactly that (one extended batch, one Sync).
            let whole = 0..sql.len();
            return self.on_multi_statement_query(&sql, vec![whole]).await;
        }
        match Plan::build(&sql, &self.registry) {
            Ok(None) => {
                self.forward(&frame, Some(Kind::Query));
                return Ok(());
            }
            Ok(Some(_)) => {}
            Err(e) => return self.local_error(e, Mode::Simple).await,
        }
        // Served in the extended protocol upstream, as one-statement batches are: the
        // privilege check runs on this session first, in the same implicit transaction.
        let segments =
            split_statements(&sql).unwrap_or_else(|| std::iter::once(0..sql.len()).collect());
        self.on_multi_statement_query(&sql, segments).await
    }

    /// A query string of several statements with pgml calls. Postgres runs such a string
    /// statement by statement in one implicit transaction, stopping at the first error;
    /// pgmld sends the statements as one extended-protocol batch (same implicit
    /// transaction, same stop-at-error), evaluating each pgml call only after the
    /// statements before it ran.
    async fn on_multi_statement_query(
        &mut self,
        sql: &str,
        segments: Vec<std::ops::Range<usize>>,
    ) -> Result<(), ProxyError> {
        self.catch_up().await?;
        for seg in segments {
            let text = sql[seg.clone()].to_string();
            if let Some(cmd) = self.local_cursor_command(&text) {
                self.catch_up().await?;
                if self.shared.skipping() {
                    break;
                }
                match &cmd {
                    // Upstream closes its cursor as usual (below); the stream stops now.
                    CursorCommand::Close(name) => self.close_local(name.as_deref()),
                    CursorCommand::Fetch { .. } => {
                        self.bind_unnamed(&text);
                        if self.serve_fetch(&cmd, "", true, &[]).await? == Served::Failed {
                            break;
                        }
                        continue;
                    }
                }
            }
            if rowwise::next_row_block(&text, &self.registry).map_or(true, |b| b.is_some()) {
                self.catch_up().await?;
                if self.shared.skipping() {
                    break;
                }
            }
            let Some(text) = self.serve_row_blocks(text, &[], None).await? else { break };
            let text = text.as_str();
            let run = match Plan::build(text, &self.registry) {
                Ok(None) => Ok(text.to_string()),
                Ok(Some(plan)) if plan.streaming().is_some() => {
                    self.count_intercepted(&plan);
                    self.catch_up().await?;
                    if self.shared.skipping() {
                        break;
                    }
                    self.bind_unnamed(&plan.shape_sql());
                    let served = match plan.streaming() {
                        Some(StreamForm::Declare(d)) => {
                            self.serve_declare(&plan, d, &[], "").await?
                        }
                        _ => self.serve_select(&plan, &[], Delivery::Simple).await?,
                    };
                    if served == Served::Failed {
                        break;
                    }
                    continue;
                }
                Ok(Some(plan)) => {
                    self.count_intercepted(&plan);
                    self.catch_up().await?;
                    if self.shared.skipping() {
                        break; // an earlier statement failed; the rest does not run
                    }
                    self.evaluate(&plan, &[]).await?
                }
                Err(e) => {
                    self.catch_up().await?;
                    if self.shared.skipping() {
                        break;
                    }
                    let position = e.position.map(|p| p + sql[..seg.start].chars().count());
                    Err(SqlError { position, ..e })
                }
            };
            match run {
                Ok(text) => {
                    self.shared.expect(Kind::Parse, Route::Swallow);
                    wire::parse("", &text, vec![], &mut self.up);
                    self.shared.expect(Kind::Bind, Route::Swallow);
                    wire::bind_plain("", "", &mut self.up);
                    self.shared.expect(Kind::DescribePortal, Route::RowDescription);
                    wire::describe(b'P', "", &mut self.up);
                    self.shared.expect(Kind::Execute, Route::Client);
                    wire::execute("", 0, &mut self.up);
                }
                Err(e) => {
                    self.metrics.error("pgml");
                    // When the upstream failed pgmld's privilege check, its own error
                    // went to the client and it skips to the Sync below.
                    if !self.shared.skipping() {
                        let mut b = BytesMut::new();
                        wire::error_response(&e, &mut b);
                        self.shared.local(b.freeze());
                        self.shared.expect(Kind::Parse, Route::OnlyReady);
                        wire::parse("pgmld_abort", ABORT_SQL, vec![], &mut self.up);
                    }
                    break;
                }
            }
        }
        self.shared.expect(Kind::Sync, Route::Client);
        wire::sync(&mut self.up);
        self.error_until_sync = false;
        Ok(())
    }

    /// Parses and binds `sql` upstream in the unnamed statement and portal; errors reach
    /// the client as the statement's own.
    fn bind_unnamed(&mut self, sql: &str) {
        self.shared.expect(Kind::Parse, Route::Swallow);
        wire::parse("", sql, vec![], &mut self.up);
        self.shared.expect(Kind::Bind, Route::Swallow);
        wire::bind_plain("", "", &mut self.up);
    }

    pub(crate) async fn on_parse(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        let pgml = mentions_pgml_bytes(&frame);
        let cursorish = mentions_cursor_command(&frame);
        if !pgml && !cursorish && self.statements.is_empty() && self.cursor_statements.is_empty() {
            self.forward(&frame, Some(Kind::Parse));
            return Ok(());
        }
        let parse: Parse = wire::decode(&frame)?;
        let name = parse.name.clone().unwrap_or_default();
        self.statements.remove(&name);
        self.cursor_statements.remove(&name);
        if let Some(cmd) = cursorish.then(|| parse_cursor_command(&parse.query)).flatten() {
            // Whether it names one of pgmld's cursors is decided when it runs: a prepared
            // FETCH is reused for the next cursor of the same name.
            self.cursor_statements.insert(name.clone(), cmd);
        }
        if !pgml || self.error_until_sync || !mentions_pgml(&parse.query) {
            self.forward(&frame, Some(Kind::Parse));
            return Ok(());
        }
        let plan = match Plan::build(&parse.query, &self.registry) {
            Ok(None) => {
                self.forward(&frame, Some(Kind::Parse));
                return Ok(());
            }
            Ok(Some(plan)) => plan,
            Err(e) => return self.local_error(e, Mode::Extended).await,
        };
        self.shared.expect(Kind::Parse, Route::Client);
        wire::parse(&name, &plan.shape_sql(), parse.type_oids, &mut self.up);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared.expect(Kind::DescribeStatement, Route::Capture(tx));
        wire::describe(b'S', &name, &mut self.up);
        self.statements.insert(
            name,
            LocalStatement { plan: Arc::new(plan), describe: Some(rx), param_types: None },
        );
        Ok(())
    }

    pub(crate) fn on_bind(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        let cursor_maps_empty = self.cursor_statements.is_empty() && self.cursor_portals.is_empty();
        if self.statements.is_empty() && self.portals.is_empty() && cursor_maps_empty {
            self.forward(&frame, Some(Kind::Bind));
            return Ok(());
        }
        let bind: Bind = wire::decode(&frame)?;
        let portal = bind.portal_name.clone().unwrap_or_default();
        let statement = bind.statement_name.clone().unwrap_or_default();
        self.portals.remove(&portal);
        self.cursor_portals.remove(&portal);
        if let Some(cmd) = self.cursor_statements.get(&statement) {
            self.cursor_portals
                .insert(portal.clone(), (cmd.clone(), bind.result_column_format_codes.clone()));
        }
        if let Some(ls) = self.statements.get(&statement) {
            let plan = ls.plan.clone();
            self.portals.insert(
                portal,
                LocalPortal { statement, plan, bind: frame.clone(), running: None, stream: None },
            );
        }
        self.forward(&frame, Some(Kind::Bind));
        Ok(())
    }

    pub(crate) async fn on_execute(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        self.metrics.statements_proxied.inc();
        if (self.portals.is_empty() && self.cursor_portals.is_empty()) || self.error_until_sync {
            self.forward(&frame, Some(Kind::Execute));
            return Ok(());
        }
        let exec: Execute = wire::decode(&frame)?;
        let portal = exec.name.clone().unwrap_or_default();
        if let Some((cmd, formats)) = self.cursor_portals.get(&portal).cloned() {
            return self.execute_cursor_command(&frame, &portal, &cmd, &formats).await;
        }
        if self.portals.get(&portal).is_some_and(|lp| lp.stream.is_some()) {
            return self.continue_stream(&frame, &portal, exec.max_rows).await;
        }
        let Some(lp) = self.portals.get(&portal) else {
            self.forward(&frame, Some(Kind::Execute));
            return Ok(());
        };
        if let Some(running) = lp.running.clone() {
            self.shared.expect(Kind::Execute, Route::Client);
            wire::execute(&running, exec.max_rows, &mut self.up);
            return Ok(());
        }
        let (plan, statement) = (lp.plan.clone(), lp.statement.clone());
        self.count_intercepted(&plan);
        self.catch_up().await?;
        if self.shared.skipping() {
            // The upstream failed an earlier message of this batch and ignores this one.
            self.forward(&frame, Some(Kind::Execute));
            return Ok(());
        }
        let types = self.parameter_types(&statement).await;
        let Some(lp) = self.portals.get(&portal) else { return Ok(()) };
        let bind: Bind = wire::decode(&lp.bind)?;
        let params = bound_params(&bind, &types);
        if let Some(form) = plan.streaming() {
            let formats = bind.result_column_format_codes.clone();
            match form {
                StreamForm::Declare(d) => {
                    if self.serve_declare(&plan, d, &params, &portal).await? == Served::Done {
                        // Executing it again declares again upstream (42P03), as in Postgres.
                        if let Some(lp) = self.portals.get_mut(&portal) {
                            lp.running = Some(portal.clone());
                        }
                    }
                }
                StreamForm::Select => {
                    let delivery = Delivery::Portal {
                        name: &portal,
                        formats: &formats,
                        max_rows: exec.max_rows,
                    };
                    self.serve_select(&plan, &params, delivery).await?;
                }
            }
            return Ok(());
        }
        let bound = Bound { types: &types, bind: &bind };
        let Some(run) = self.serve_row_blocks(plan.sql().to_string(), &params, Some(bound)).await?
        else {
            return Ok(());
        };
        let evaluated = if run == plan.sql() {
            self.evaluate(&plan, &params).await?
        } else {
            match Plan::build(&run, &self.registry) {
                Ok(None) => Ok(run),
                Ok(Some(rest)) => self.evaluate(&rest, &params).await?,
                Err(e) => Err(e),
            }
        };
        match evaluated {
            Ok(text) => {
                self.counter += 1;
                let (s, p) =
                    (format!("pgmld_s{}", self.counter), format!("pgmld_p{}", self.counter));
                self.shared.expect(Kind::Parse, Route::Swallow);
                wire::parse(&s, &text, types, &mut self.up);
                self.shared.expect(Kind::Bind, Route::Swallow);
                wire::bind(&p, &s, &bind, &mut self.up);
                self.shared.expect(Kind::Execute, Route::Client);
                wire::execute(&p, exec.max_rows, &mut self.up);
                self.shared.expect(Kind::Close, Route::Swallow);
                wire::close(b'S', &s, &mut self.up);
                if let Some(lp) = self.portals.get_mut(&portal) {
                    lp.running = Some(p);
                }
                Ok(())
            }
            Err(e) => self.local_error(e, Mode::Extended).await,
        }
    }

    pub(crate) fn on_close(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        let local = !self.statements.is_empty() || !self.portals.is_empty();
        if local || !self.cursor_statements.is_empty() || !self.cursor_portals.is_empty() {
            let close: pgwire::messages::extendedquery::Close = wire::decode(&frame)?;
            let name = close.name.unwrap_or_default();
            if close.target_type == b'S' {
                self.statements.remove(&name);
                self.cursor_statements.remove(&name);
            } else {
                self.cursor_portals.remove(&name);
                if let Some(LocalPortal { running: Some(p), .. }) = self.portals.remove(&name) {
                    if p != name {
                        self.shared.expect(Kind::Close, Route::Swallow);
                        wire::close(b'P', &p, &mut self.up);
                    }
                }
            }
        }
        self.forward(&frame, Some(Kind::Close));
        Ok(())
    }

    /// Execute of a prepared FETCH / MOVE / CLOSE: served by pgmld when it names one of its
    /// cursors, forwarded otherwise.
    async fn execute_cursor_command(
        &mut self,
        frame: &Bytes,
        portal: &str,
        cmd: &CursorCommand,
        formats: &[i16],
    ) -> Result<(), ProxyError> {
        match cmd {
            CursorCommand::Close(name) => self.close_local(name.as_deref()),
            CursorCommand::Fetch { cursor, .. } if self.cursors.contains_key(cursor) => {
                self.catch_up().await?;
                if !self.shared.skipping() {
                    self.serve_fetch(cmd, portal, false, formats).await?;
                    return Ok(());
                }
            }
            CursorCommand::Fetch { .. } => {}
        }
        self.forward(frame, Some(Kind::Execute));
        Ok(())
    }

    /// Execute of a streaming portal that a row limit suspended (or that ended).
    async fn continue_stream(
        &mut self,
        frame: &Bytes,
        portal: &str,
        max_rows: i32,
    ) -> Result<(), ProxyError> {
        self.catch_up().await?;
        let Some(lp) = self.portals.get_mut(portal) else { return Ok(()) };
        let Some(lc) = lp.stream.take() else { return Ok(()) };
        if self.shared.skipping() {
            self.forward(frame, Some(Kind::Execute));
            return Ok(());
        }
        let bind: Bind = wire::decode(&lp.bind)?;
        self.run_portal(lc, max_rows, &bind.result_column_format_codes, Some(portal)).await?;
        Ok(())
    }

    /// Parameter types of a local statement from the upstream's Describe of its shape.
    async fn parameter_types(&mut self, statement: &str) -> Vec<u32> {
        let Some(ls) = self.statements.get_mut(statement) else { return vec![] };
        if let Some(t) = &ls.param_types {
            return t.clone();
        }
        let mut types = vec![];
        if let Some(mut rx) = ls.describe.take() {
            while let Some((ty, body)) = rx.recv().await {
                if ty == b't' {
                    types = wire::parameter_types(&body);
                }
            }
        }
        ls.param_types = Some(types.clone());
        types
    }

    /// Reports an error pgmld raised, in order, and leaves the transaction as Postgres
    /// would after that error.
    pub(crate) async fn local_error(&mut self, e: SqlError, mode: Mode) -> Result<(), ProxyError> {
        self.metrics.error("pgml");
        tracing::info!(code = e.code, "pgml call failed: {}", e.message);
        self.catch_up().await?;
        let mut b = BytesMut::new();
        match mode {
            Mode::Simple => {
                wire::error_response(&e, &mut b);
                if self.shared.txn_status() == b'I' {
                    wire::ready_for_query(b'I', &mut b);
                    self.shared.local(b.freeze());
                } else {
                    self.shared.local(b.freeze());
                    self.shared.expect(Kind::Query, Route::OnlyReady);
                    wire::query(ABORT_SQL, &mut self.up);
                }
            }
            Mode::Extended => {
                self.error_until_sync = true;
                if self.shared.skipping() {
                    return Ok(()); // Postgres would ignore this message after the earlier error.
                }
                wire::error_response(&e, &mut b);
                self.shared.local(b.freeze());
                self.shared.expect(Kind::Parse, Route::OnlyReady);
                wire::parse("pgmld_abort", ABORT_SQL, vec![], &mut self.up);
            }
        }
        Ok(())
    }

    fn count_intercepted(&self, plan: &Plan) {
        for f in plan.function_names() {
            self.metrics.intercepted(f);
        }
    }
}

/// Bind parameters with their formats (Bind's format-code rules) and resolved types.
fn bound_params(bind: &Bind, types: &[u32]) -> Vec<Param> {
    let formats = &bind.parameter_format_codes;
    bind.parameters
        .iter()
        .enumerate()
        .map(|(i, v)| Param {
            type_oid: types.get(i).copied().unwrap_or(0),
            binary: match formats.len() {
                0 => false,
                1 => formats[0] == 1,
                _ => formats.get(i).copied().unwrap_or(0) == 1,
            },
            bytes: v.as_ref().map(|b| b.to_vec()),
        })
        .collect()
}
