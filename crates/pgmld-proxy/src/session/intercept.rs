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

use super::per_row::{Bound, Ready};
use super::state::{LocalPortal, LocalStatement, PgmlState};
use super::stream::{Delivery, Served};
use super::Session;
use crate::error::ProxyError;
use crate::expect::{Kind, Route};
use crate::wire;
use bytes::{Bytes, BytesMut};
use pgmld_sql::analyze::{mentions_pgml, mentions_pgml_bytes, split_statements};
use pgmld_sql::streaming::{mentions_cursor_command, parse_cursor_command};
use pgmld_sql::{
    create_pgml_extension, CreateExtension, CursorCommand, Param, Plan, Registry, SqlError,
    StreamForm,
};
use pgwire::messages::extendedquery::{Bind, Execute, Parse};
use std::sync::Arc;
use tokio::io::AsyncWrite;

/// Text sent upstream to put the transaction into the state an error leaves; it fails
/// at parse time, touching nothing.
const ABORT_SQL: &str = "pgmld: abort the transaction after a pgml error";

/// One statement of a simple Query, looked at once: its text and what pgmld does with it.
struct Statement<'a> {
    /// Characters of the query string before it, for the position of its errors.
    chars_before: usize,
    /// Its text.
    text: &'a str,
    /// What it is, decided from one parse.
    kind: StatementKind,
}

/// What pgmld does with one statement of a simple Query.
enum StatementKind {
    /// No pgml call: it runs upstream as written.
    Plain,
    /// FETCH / MOVE / CLOSE naming one of pgmld's cursors.
    Cursor(CursorCommand),
    /// Calls pgml functions; parsed and bound once, here.
    Pgml(Arc<Plan>),
    /// Calls pgml functions wrongly (42883 and the like), reported when its turn comes.
    Invalid(SqlError),
    /// `CREATE EXTENSION pgml`, which pgmld answers (see `extension.rs`).
    CreateExtension(CreateExtension),
}

/// A simple Query's text split into statements, each parsed once; this is the per-request
/// context the statements are served from, borrowed from the message's text.
struct Request<'a> {
    statements: Vec<Statement<'a>>,
}

impl<'a> Request<'a> {
    /// Splits `sql` (statement by statement, so one that sqlparser cannot read, such as
    /// MOVE, does not hide the pgml calls of the others) and looks at each statement once.
    fn new(sql: &'a str, registry: &Registry, pgml: &PgmlState) -> Self {
        let segments =
            split_statements(sql).unwrap_or_else(|| std::iter::once(0..sql.len()).collect());
        let statements = segments
            .into_iter()
            .map(|seg| {
                let text = &sql[seg.clone()];
                let kind = if let Some(cmd) = pgml.cursor_command(text) {
                    StatementKind::Cursor(cmd)
                } else if let Some(ce) = create_pgml_extension(text) {
                    StatementKind::CreateExtension(ce)
                } else {
                    match Plan::build(text, registry) {
                        Ok(None) => StatementKind::Plain,
                        Ok(Some(plan)) => StatementKind::Pgml(Arc::new(plan)),
                        Err(e) => StatementKind::Invalid(e),
                    }
                };
                let chars_before = match kind {
                    StatementKind::Invalid(_) => sql[..seg.start].chars().count(),
                    _ => 0,
                };
                Statement { chars_before, text, kind }
            })
            .collect();
        Request { statements }
    }

    /// Whether pgmld has anything to do: otherwise the Query goes upstream untouched.
    fn intercepts(&self) -> bool {
        self.statements.iter().any(|s| !matches!(s.kind, StatementKind::Plain))
    }
}

impl<W: AsyncWrite + Unpin> Session<W> {
    /// A Query that `Session::pass_through` did not forward: it names pgml or a cursor.
    pub(super) async fn on_query(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        self.metrics.statements_proxied.inc();
        let sql = wire::query_text(&frame)?;
        let request = Request::new(&sql, &self.registry, &self.pgml);
        if !request.intercepts() {
            self.forward(&frame, Some(Kind::Query));
            return Ok(());
        }
        self.serve_request(request).await
    }

    /// A Query with pgml calls (or pgmld's cursors). Postgres runs a query string statement
    /// by statement in one implicit transaction, stopping at the first error; pgmld sends
    /// the statements as one extended-protocol batch (same implicit transaction, same
    /// stop-at-error), evaluating each pgml call only after the statements before it ran,
    /// and after the privilege check that runs on this session first. Per-row calls need
    /// this too: their row sources and the completed statement share the transaction.
    async fn serve_request(&mut self, request: Request<'_>) -> Result<(), ProxyError> {
        self.catch_up().await?;
        if self.shared.skipping() {
            // An extended-protocol message before this Query failed and no Sync followed:
            // Postgres discards a Query until the Sync, so pgmld does too.
            return Ok(());
        }
        for st in request.statements {
            // Whether a FETCH / MOVE / CLOSE names one of pgmld's cursors is decided when
            // its turn comes: a DECLARE (or CLOSE) earlier in the same string changes it.
            let kind = match (self.pgml.cursor_command(st.text), st.kind) {
                (Some(cmd), _) => StatementKind::Cursor(cmd),
                (None, StatementKind::Cursor(_)) => StatementKind::Plain,
                (None, kind) => kind,
            };
            let run = match kind {
                StatementKind::Plain => Ok(st.text.to_string()),
                StatementKind::Cursor(cmd) => {
                    self.catch_up().await?;
                    if self.shared.skipping() {
                        break;
                    }
                    match &cmd {
                        // Upstream closes its cursor as usual (below); the stream stops now.
                        CursorCommand::Close(name) => self.pgml.close_cursor(name.as_deref()),
                        CursorCommand::Fetch { .. } => {
                            self.bind_unnamed(st.text);
                            if self.serve_fetch(&cmd, "", true, &[]).await? == Served::Failed {
                                break;
                            }
                            continue;
                        }
                    }
                    Ok(st.text.to_string())
                }
                StatementKind::CreateExtension(ce) => {
                    self.catch_up().await?;
                    if self.shared.skipping() {
                        break;
                    }
                    match self.create_extension(&ce).await? {
                        Served::Done => continue,
                        Served::Failed => break,
                    }
                }
                StatementKind::Invalid(e) => {
                    self.catch_up().await?;
                    if self.shared.skipping() {
                        break;
                    }
                    let position = e.position.map(|p| p + st.chars_before);
                    Err(SqlError { position, ..e })
                }
                StatementKind::Pgml(plan) => {
                    self.count_intercepted(&plan);
                    self.catch_up().await?;
                    if self.shared.skipping() {
                        break; // an earlier statement failed; the rest does not run
                    }
                    let plan = match self.serve_row_blocks(plan, &[], None).await? {
                        None => break,
                        Some(Ready::Plain(text)) => {
                            self.run_unnamed(&text);
                            continue;
                        }
                        Some(Ready::Plan(plan)) => plan,
                    };
                    if plan.streaming().is_some() {
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
                    self.evaluate(&plan, &[]).await?
                }
            };
            match run {
                Ok(text) => self.run_unnamed(&text),
                Err(e) => {
                    // When the upstream failed pgmld's privilege check, its own error
                    // went to the client and it skips to the Sync below.
                    self.report_error(&e);
                    break;
                }
            }
        }
        self.shared.expect(Kind::Sync, Route::Client);
        wire::sync(&mut self.up);
        self.pgml.error_until_sync = false;
        Ok(())
    }

    /// Runs `sql` upstream in the unnamed statement and portal, its answers (with a
    /// RowDescription from Describe, as a simple Query would send) going to the client.
    fn run_unnamed(&mut self, sql: &str) {
        self.shared.expect(Kind::Parse, Route::Swallow);
        wire::parse("", sql, vec![], &mut self.up);
        self.shared.expect(Kind::Bind, Route::Swallow);
        wire::bind_plain("", "", &mut self.up);
        self.shared.expect(Kind::DescribePortal, Route::RowDescription);
        wire::describe(b'P', "", &mut self.up);
        self.shared.expect(Kind::Execute, Route::Client);
        wire::execute("", 0, &mut self.up);
    }

    /// Parses and binds `sql` upstream in the unnamed statement and portal; errors reach
    /// the client as the statement's own.
    fn bind_unnamed(&mut self, sql: &str) {
        self.shared.expect(Kind::Parse, Route::Swallow);
        wire::parse("", sql, vec![], &mut self.up);
        self.shared.expect(Kind::Bind, Route::Swallow);
        wire::bind_plain("", "", &mut self.up);
    }

    /// A Parse that `Session::pass_through` did not forward.
    pub(super) async fn on_parse(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        let pgml = mentions_pgml_bytes(&frame);
        let cursorish = mentions_cursor_command(&frame);
        let parse: Parse = wire::decode(&frame)?;
        let name = parse.name.clone().unwrap_or_default();
        self.pgml.statements.remove(&name);
        self.pgml.cursor_statements.remove(&name);
        if let Some(cmd) = cursorish.then(|| parse_cursor_command(&parse.query)).flatten() {
            // Whether it names one of pgmld's cursors is decided when it runs: a prepared
            // FETCH is reused for the next cursor of the same name.
            self.pgml.cursor_statements.insert(name.clone(), cmd);
        }
        if !pgml || self.pgml.error_until_sync || !mentions_pgml(&parse.query) {
            self.forward(&frame, Some(Kind::Parse));
            return Ok(());
        }
        let plan = match Plan::build(&parse.query, &self.registry) {
            Ok(None) => {
                self.forward(&frame, Some(Kind::Parse));
                return Ok(());
            }
            Ok(Some(plan)) => plan,
            Err(e) => return self.local_error(e).await,
        };
        self.shared.expect(Kind::Parse, Route::Client);
        wire::parse(&name, &plan.shape_sql(), parse.type_oids, &mut self.up);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared.expect(Kind::DescribeStatement, Route::Capture(tx));
        wire::describe(b'S', &name, &mut self.up);
        self.pgml.statements.insert(
            name,
            LocalStatement { plan: Arc::new(plan), describe: Some(rx), param_types: None },
        );
        Ok(())
    }

    /// A Bind that `Session::pass_through` did not forward: pgmld has statements or portals.
    pub(super) fn on_bind(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        let bind: Bind = wire::decode(&frame)?;
        let portal = bind.portal_name.clone().unwrap_or_default();
        let statement = bind.statement_name.clone().unwrap_or_default();
        self.pgml.portals.remove(&portal);
        self.pgml.cursor_portals.remove(&portal);
        if let Some(cmd) = self.pgml.cursor_statements.get(&statement) {
            self.pgml
                .cursor_portals
                .insert(portal.clone(), (cmd.clone(), bind.result_column_format_codes.clone()));
        }
        if let Some(ls) = self.pgml.statements.get(&statement) {
            let plan = ls.plan.clone();
            self.pgml.portals.insert(
                portal,
                LocalPortal { statement, plan, bind: frame.clone(), running: None, stream: None },
            );
        }
        self.forward(&frame, Some(Kind::Bind));
        Ok(())
    }

    /// An Execute that `Session::pass_through` did not forward: a portal of pgmld's exists.
    pub(super) async fn on_execute(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        self.metrics.statements_proxied.inc();
        let exec: Execute = wire::decode(&frame)?;
        let portal = exec.name.clone().unwrap_or_default();
        if let Some((cmd, formats)) = self.pgml.cursor_portals.get(&portal).cloned() {
            return self.execute_cursor_command(&frame, &portal, &cmd, &formats).await;
        }
        if self.pgml.portals.get(&portal).is_some_and(|lp| lp.stream.is_some()) {
            return self.continue_stream(&frame, &portal, exec.max_rows).await;
        }
        let Some(lp) = self.pgml.portals.get(&portal) else {
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
        let Some(lp) = self.pgml.portals.get(&portal) else { return Ok(()) };
        let bind: Bind = wire::decode(&lp.bind)?;
        let params = bound_params(&bind, &types);
        if let Some(form) = plan.streaming() {
            let formats = bind.result_column_format_codes.clone();
            match form {
                StreamForm::Declare(d) => {
                    if self.serve_declare(&plan, d, &params, &portal).await? == Served::Done {
                        // Executing it again declares again upstream (42P03), as in Postgres.
                        if let Some(lp) = self.pgml.portals.get_mut(&portal) {
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
        let evaluated = match self.serve_row_blocks(plan, &params, Some(bound)).await? {
            None => return Ok(()),
            Some(Ready::Plain(text)) => Ok(text),
            Some(Ready::Plan(rest)) => self.evaluate(&rest, &params).await?,
        };
        match evaluated {
            Ok(text) => {
                let (s, p) = self.pgml.next_names("pgmld_");
                self.shared.expect(Kind::Parse, Route::Swallow);
                wire::parse(&s, &text, types, &mut self.up);
                self.shared.expect(Kind::Bind, Route::Swallow);
                wire::bind(&p, &s, &bind, &mut self.up);
                self.shared.expect(Kind::Execute, Route::Client);
                wire::execute(&p, exec.max_rows, &mut self.up);
                self.shared.expect(Kind::Close, Route::Swallow);
                wire::close(b'S', &s, &mut self.up);
                if let Some(lp) = self.pgml.portals.get_mut(&portal) {
                    lp.running = Some(p);
                }
                Ok(())
            }
            Err(e) => self.local_error(e).await,
        }
    }

    /// A Close that `Session::pass_through` did not forward: pgmld has statements or portals.
    pub(super) fn on_close(&mut self, frame: Bytes) -> Result<(), ProxyError> {
        let close: pgwire::messages::extendedquery::Close = wire::decode(&frame)?;
        let name = close.name.unwrap_or_default();
        if close.target_type == b'S' {
            self.pgml.statements.remove(&name);
            self.pgml.cursor_statements.remove(&name);
        } else {
            self.pgml.cursor_portals.remove(&name);
            if let Some(LocalPortal { running: Some(p), .. }) = self.pgml.portals.remove(&name) {
                if p != name {
                    self.shared.expect(Kind::Close, Route::Swallow);
                    wire::close(b'P', &p, &mut self.up);
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
            CursorCommand::Close(name) => self.pgml.close_cursor(name.as_deref()),
            CursorCommand::Fetch { cursor, .. } if self.pgml.cursors.contains_key(cursor) => {
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
        let Some(lp) = self.pgml.portals.get_mut(portal) else { return Ok(()) };
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
        let Some(ls) = self.pgml.statements.get_mut(statement) else { return vec![] };
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

    /// Reports an error pgmld raised, in order after everything sent before, and leaves
    /// the transaction as Postgres would after that error.
    pub(super) async fn local_error(&mut self, e: SqlError) -> Result<(), ProxyError> {
        self.catch_up().await?;
        self.report_error(&e);
        Ok(())
    }

    /// [`Session::local_error`] once caught up: the error goes to the client (unless the
    /// upstream already failed this batch and skips to Sync, as Postgres would ignore the
    /// message), and a statement that fails at parse time puts the transaction into the
    /// state an error leaves. pgml work is ignored until Sync.
    pub(super) fn report_error(&mut self, e: &SqlError) {
        self.metrics.error("pgml");
        self.info
            .span
            .in_scope(|| tracing::info!(code = e.code, "pgml call failed: {}", e.message));
        self.pgml.error_until_sync = true;
        if self.shared.skipping() {
            return;
        }
        let mut b = BytesMut::new();
        wire::error_response(e, &mut b);
        self.shared.local(b.freeze());
        self.shared.expect(Kind::Parse, Route::OnlyReady);
        wire::parse("pgmld_abort", ABORT_SQL, vec![], &mut self.up);
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
