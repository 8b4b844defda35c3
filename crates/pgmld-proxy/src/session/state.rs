//! What a session knows of its pgml statements, portals and cursors, kept apart from the
//! wire loop so the loop's state is a handful of fields and this one.

use bytes::Bytes;
use pgmld_sql::analyze::mentions_pgml_bytes;
use pgmld_sql::cursor::StreamCursor;
use pgmld_sql::streaming::{mentions_cursor_command, parse_cursor_command};
use pgmld_sql::{CursorCommand, Plan, SqlType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A prepared statement that calls pgml functions. Upstream holds its shape under the
/// client's name, so Describe and Bind behave as Postgres; Execute runs the plan, parsed
/// once at Parse.
pub(crate) struct LocalStatement {
    pub plan: Arc<Plan>,
    /// Receives the upstream's Describe of the shape (for parameter types).
    pub describe: Option<tokio::sync::mpsc::UnboundedReceiver<(u8, Bytes)>>,
    /// Parameter types once known.
    pub param_types: Option<Vec<u32>>,
}

/// A portal bound to a [`LocalStatement`].
pub(crate) struct LocalPortal {
    pub statement: String,
    pub plan: Arc<Plan>,
    /// The client's Bind frame (re-encoded under pgmld's portal name at Execute).
    pub bind: Bytes,
    /// The upstream portal running the evaluated text, after the first Execute.
    pub running: Option<String>,
    /// A streaming SELECT suspended by Execute's row limit: the next Execute goes on.
    pub stream: Option<LocalCursor>,
}

/// A cursor, or a streaming portal, over a streaming call.
pub(crate) struct LocalCursor {
    /// The rows; `None` once a FETCH on it failed (Postgres will not run it again).
    pub cursor: Option<StreamCursor>,
    /// Column types, for encoding rows.
    pub types: Vec<SqlType>,
    /// `Shared::txn_end_count` when it was opened: a later transaction end drops it.
    pub txn: u64,
    /// The call's own cancel flag: set when the cursor goes, so a producer that polls
    /// `CallContext::cancelled` stops even before it notices the dropped stream.
    stop: Arc<AtomicBool>,
}

impl LocalCursor {
    pub fn new(cursor: StreamCursor, types: Vec<SqlType>, txn: u64, stop: Arc<AtomicBool>) -> Self {
        LocalCursor { cursor: Some(cursor), types, txn, stop }
    }

    /// Drops the stream after a failed FETCH.
    pub fn fail(&mut self) {
        self.cursor = None;
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for LocalCursor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The pgml state of one session: prepared statements and portals that call pgml
/// functions, cursors over streaming calls, and the prepared FETCH / MOVE / CLOSE that
/// may name them. Empty for a session that never called pgml, whose messages then pass
/// through without being decoded.
#[derive(Default)]
pub(crate) struct PgmlState {
    pub statements: HashMap<String, LocalStatement>,
    pub portals: HashMap<String, LocalPortal>,
    /// Cursors over streaming pgml calls, by name; upstream holds a cursor of the same
    /// name and shape that validates each FETCH (see `stream.rs`).
    pub cursors: HashMap<String, LocalCursor>,
    /// Prepared FETCH / MOVE / CLOSE statements, by name: their portals may name one of
    /// `cursors` when they run.
    pub cursor_statements: HashMap<String, CursorCommand>,
    /// Portals bound to those statements, with the client's result format codes.
    pub cursor_portals: HashMap<String, (CursorCommand, Vec<i16>)>,
    /// pgmld reported an error in extended mode: ignore pgml work until Sync.
    pub error_until_sync: bool,
    /// Numbers pgmld's own upstream statement and portal names.
    counter: u64,
}

impl PgmlState {
    /// True while any cursor or portal holds a stream.
    pub fn has_streams(&self) -> bool {
        !self.cursors.is_empty()
            || (!self.portals.is_empty() && self.portals.values().any(|p| p.stream.is_some()))
    }

    /// Drops the cursors and streaming portals of transactions before `txn_end_count`.
    pub fn prune_streams(&mut self, txn_end_count: u64) {
        self.cursors.retain(|_, c| c.txn == txn_end_count);
        self.portals.retain(|_, p| p.stream.as_ref().is_none_or(|c| c.txn == txn_end_count));
    }

    /// `CLOSE name` / `CLOSE ALL` (`None`): the streams stop now.
    pub fn close_cursor(&mut self, name: Option<&str>) {
        match name {
            Some(n) => {
                self.cursors.remove(n);
            }
            None => self.cursors.clear(),
        }
    }

    /// The FETCH / MOVE / CLOSE in `text` when it names one of pgmld's cursors (CLOSE ALL
    /// always does while there are some).
    pub fn cursor_command(&self, text: &str) -> Option<CursorCommand> {
        if self.cursors.is_empty() || !mentions_cursor_command(text.as_bytes()) {
            return None;
        }
        let cmd = parse_cursor_command(text)?;
        match cmd.cursor() {
            None => Some(cmd),
            Some(c) => self.cursors.contains_key(c).then_some(cmd),
        }
    }

    /// Whether a Bind can be forwarded without a look: no statement or portal of pgmld's.
    /// A Query that needs nothing of pgmld: it names no pgml and no cursor of pgmld's.
    pub fn query_passes(&self, frame: &[u8]) -> bool {
        !mentions_pgml_bytes(frame) && (self.cursors.is_empty() || !mentions_cursor_command(frame))
    }

    /// A Parse that needs nothing of pgmld: no pgml, no FETCH / MOVE / CLOSE to keep an eye
    /// on, and no statement of pgmld's it could replace.
    pub fn parse_passes(&self, frame: &[u8]) -> bool {
        !mentions_pgml_bytes(frame)
            && !mentions_cursor_command(frame)
            && self.statements.is_empty()
            && self.cursor_statements.is_empty()
    }

    /// An Execute that needs nothing of pgmld: no portal of pgmld's exists, or pgml work
    /// is ignored until Sync.
    pub fn execute_passes(&self) -> bool {
        (self.portals.is_empty() && self.cursor_portals.is_empty()) || self.error_until_sync
    }

    /// A Bind or Close that needs nothing of pgmld: no statement or portal of pgmld's.
    pub fn binds_pass_through(&self) -> bool {
        self.statements.is_empty()
            && self.portals.is_empty()
            && self.cursor_statements.is_empty()
            && self.cursor_portals.is_empty()
    }

    /// Names for pgmld's own upstream statement and portal (`{prefix}s<n>`,
    /// `{prefix}p<n>`), unique in the session.
    pub fn next_names(&mut self, prefix: &str) -> (String, String) {
        self.counter += 1;
        (format!("{prefix}s{}", self.counter), format!("{prefix}p{}", self.counter))
    }
}
