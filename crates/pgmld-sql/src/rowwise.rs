//! Per-row pgml calls: calls whose arguments read columns, such as
//! `SELECT pgml.transform(task => '...', inputs => ARRAY[text]) FROM docs`.
//!
//! The proxy serves them one query block at a time, innermost first, on the client's own
//! upstream session:
//! 1. [`next_row_block`] finds a SELECT block whose SELECT list holds per-row calls;
//! 2. upstream runs [`RowBlock::source_sql`]: the block as written, with each call item
//!    replaced by the call's non-constant arguments as columns;
//! 3. the proxy evaluates the calls for all rows ([`RowBlock::call_args`], then
//!    `PgmlFunction::call_rows`);
//! 4. [`RowBlock::complete`] splices a SELECT over a VALUES list of the kept columns and
//!    the results into the client's text, in place of the block; the proxy repeats from 1
//!    on that text until `next_row_block` returns `Ok(None)`.
//!
//! Integration notes:
//! - `source_sql` keeps the client's `$n` where the block's arguments, WHERE, LIMIT...
//!   use them, and the completed text drops those that only the block used: parse both
//!   with the client statement's full parameter type list and bind all its parameters.
//! - `source_sql` may contain constant pgml calls (a kept `pgml.version()` item): run it
//!   through [`crate::Plan`] like a client statement.
//! - Pass the source query's RowDescription as [`SourceColumn`]s (same order) with
//!   `type_name` filled, and its DataRows in text format as [`SourceRow`]s. The arguments
//!   are the columns named `pgmld_arg_<n>`; every other column is kept as is.
//! - A whole-query block keeps its own WITH in the source query, data-modifying ones
//!   included, and the completed text no longer has it: run the source queries and the
//!   final statement in one transaction when the client is not in one.

mod complete;
mod find;
mod source;
mod text;

pub use complete::builtin_type_name;

use crate::analyze::{ArgExpr, Parsed};
use crate::error::{codes, SqlError};
use crate::function::{PgmlFunction, Registry, Returns};
use crate::plan::BoundCall;
use find::{Collected, Place};
use source::Ctx;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

/// One column of the block's source query, as the upstream described it (RowDescription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    /// Column name (`pgmld_arg_<n>` for the call arguments).
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (-1 for none).
    pub type_modifier: i32,
    /// SQL type name usable in a cast, e.g. `text`, `integer`, `character varying`,
    /// `public.mood`; filled by the proxy ([`builtin_type_name`], else Postgres'
    /// `format_type`). Empty falls back to [`builtin_type_name`].
    pub type_name: String,
}

/// One source row in text format (`None` = NULL), as DataRow carries it.
pub type SourceRow = Vec<Option<String>>;

/// A per-row call of a [`RowBlock`], bound to its function's signature.
pub struct RowCall {
    /// The function called.
    pub function: Arc<dyn PgmlFunction>,
    /// 1-based character position of the call in the client's text.
    pub position: usize,
    /// Per declared parameter: where its value comes from.
    slots: Vec<Slot>,
}

/// The source of one parameter's value.
enum Slot {
    /// Omitted: the declared default.
    Default,
    /// A constant or `$n` argument, evaluated once.
    Const(ArgExpr),
    /// Read from source column `pgmld_arg_<n>`.
    Column(usize),
}

impl RowCall {
    /// The function's unqualified name.
    pub fn name(&self) -> &'static str {
        self.function.signature().name
    }
}

/// A SELECT block with per-row calls: the query to run upstream for its rows, and how to
/// put the rows and the call results back into the client's statement.
pub struct RowBlock {
    /// The client's statement.
    sql: String,
    /// Bytes of `sql` the block replaces: a whole query (WITH .. LIMIT) or a set
    /// operation's SELECT operand.
    range: Range<usize>,
    /// The range is a whole query, so the replacement keeps the source rows' order.
    whole_query: bool,
    source_sql: String,
    calls: Vec<RowCall>,
    /// The SELECT items that hold calls, in SELECT-list order.
    items: Vec<CallItem>,
    /// Number of `pgmld_arg_<n>` columns.
    arg_count: usize,
    /// Bytes of the enclosing WITH queries copied into the source query.
    cte_ranges: Vec<Range<usize>>,
}

/// A SELECT item holding per-row calls.
struct CallItem {
    /// The argument column that stands at the item's place in the source query.
    first_arg: usize,
    /// Output column name (alias, else what Postgres would name it).
    name: String,
    /// The item's expression with the calls cut out.
    template: Vec<Piece>,
}

/// Part of a [`CallItem`] expression.
enum Piece {
    Text(String),
    /// The result of call `i` of the block.
    Result(usize),
}

impl std::fmt::Debug for RowCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCall")
            .field("name", &self.name())
            .field("position", &self.position)
            .finish()
    }
}

impl std::fmt::Debug for RowBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowBlock")
            .field("range", &self.range)
            .field("source_sql", &self.source_sql)
            .field("calls", &self.calls)
            .finish()
    }
}

impl RowBlock {
    /// The source query to run upstream. It may contain the client's `$n` parameters and
    /// constant pgml calls (e.g. `pgml.version()` in a kept item): run it like a client
    /// statement without per-row calls ([`crate::Plan`]).
    pub fn source_sql(&self) -> &str {
        &self.source_sql
    }

    /// The per-row calls, in text order.
    pub fn calls(&self) -> &[RowCall] {
        &self.calls
    }

    /// Bytes of the client's statement that [`RowBlock::complete`] replaces.
    pub fn replaced_range(&self) -> Range<usize> {
        self.range.clone()
    }
}

/// Finds the next block to serve. `Ok(None)`: no per-row call left in `sql` (or it does not
/// parse). Errors: binding errors exactly like [`crate::Plan::build`] (42883 etc., with
/// position), and 0A000 with a hint showing a supported rewrite for a per-row call where
/// it cannot be served. A proxy that already has the statement's [`crate::Plan`] calls
/// [`crate::Plan::next_row_block`] instead, which parses nothing again.
pub fn next_row_block(sql: &str, registry: &Registry) -> Result<Option<RowBlock>, SqlError> {
    match crate::Plan::build(sql, registry)? {
        Some(plan) => plan.next_row_block(),
        None => Ok(None),
    }
}

/// [`next_row_block`] over a statement already parsed, with its calls bound.
pub(crate) fn row_block_of(
    parsed: &Parsed,
    bound: Vec<BoundCall>,
) -> Result<Option<RowBlock>, SqlError> {
    if !bound.iter().any(BoundCall::is_per_row) {
        return Ok(None);
    }
    let toks = text::Tokens::new(parsed).ok_or_else(|| source::cannot_locate("the statement"))?;
    let col = find::collect(parsed);
    let cx = Ctx { p: parsed, toks: &toks, col: &col };
    let mut blocks: BTreeMap<usize, Vec<BoundCall>> = BTreeMap::new();
    let per_row: Vec<usize> =
        bound.iter().filter(|c| c.is_per_row()).map(|c| c.site.range.start).collect();
    for call in bound.into_iter().filter(BoundCall::is_per_row) {
        let select = place_of(&cx, &col, &call)?;
        blocks.entry(select).or_default().push(call);
    }
    let mut built: Vec<RowBlock> = blocks
        .into_iter()
        .map(|(select, calls)| source::build_block(&cx, select, calls))
        .collect::<Result<_, _>>()?;
    // Innermost first: a block whose text holds no other block and whose copied WITH
    // queries hold no per-row call (WITH RECURSIVE may refer forward); the earliest.
    let ready = |b: &RowBlock| {
        let holds_block = built.iter().any(|o| {
            o.range != b.range && o.range.start >= b.range.start && o.range.end <= b.range.end
        });
        let reads_calls = per_row.iter().any(|s| b.cte_ranges.iter().any(|r| r.contains(s)));
        !holds_block && !reads_calls
    };
    let pick = built.iter().filter(|b| ready(b)).map(|b| b.range.start).min();
    let Some(block) =
        built.iter().position(|b| Some(b.range.start) == pick).map(|i| built.swap_remove(i))
    else {
        return Err(source::unordered(built.first()));
    };
    Ok(Some(block))
}

/// The SELECT block a per-row call belongs to, or why it cannot be served.
fn place_of(cx: &Ctx<'_>, col: &Collected, call: &BoundCall) -> Result<usize, SqlError> {
    let name = call.site.name.as_str();
    let at = call.position(&cx.p.sql);
    let node = col
        .calls
        .iter()
        .find(|n| cx.p.byte(n.start) == Some(call.site.range.start))
        .ok_or_else(|| source::cannot_locate(&format!("pgml.{name}")).at(at))?;
    if matches!(call.function.signature().returns, Returns::Table(_) | Returns::SetOf(_)) {
        return Err(SqlError::new(
            codes::FEATURE_NOT_SUPPORTED,
            format!(
                "pgml.{name} returns a {} and cannot be called with arguments that read columns",
                if matches!(call.function.signature().returns, Returns::Table(_)) {
                    "table"
                } else {
                    "set"
                }
            ),
        )
        .with_hint(format!(
            "Call it once with constants or $n parameters: SELECT * FROM pgml.{name}(...);"
        ))
        .at(at));
    }
    if let Some(stmt) = node.frozen {
        return Err(source::reject_frozen(name, stmt).at(at));
    }
    if node.nested_in_call {
        return Err(SqlError::new(
            codes::FEATURE_NOT_SUPPORTED,
            format!("pgml.{name} inside another pgml call's arguments cannot be called per row"),
        )
        .with_hint(format!(
            "Compute it in a subquery and pass the result: \
             SELECT pgml.other(..., s.result) FROM (SELECT *, pgml.{name}(...) AS result FROM ...) AS s"
        ))
        .at(at));
    }
    match node.place {
        Place::Select(id) => Ok(id),
        Place::Query(id) => {
            Err(source::reject_query_clause(name, col.queries[id].body_values).at(at))
        }
        Place::Statement(kind) => Err(source::reject_statement(name, kind).at(at)),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_live;
#[cfg(test)]
mod tests_reject;
