//! Statements pgmld can answer row by row while a streaming call produces them, and the
//! cursor commands it serves for cursors over such calls.
//!
//! A statement streams when its rows are exactly the values of one `SETOF` pgml call:
//! `SELECT pgml.f(...) [AS x]` or `SELECT * FROM pgml.f(...) [AS t[(x)]]`, alone or as the
//! query of `DECLARE name CURSOR FOR ...`. Anything around the call (WHERE, ORDER BY,
//! aggregates, joins) needs Postgres, so those statements take the ordinary path: the
//! call's values are collected and spliced in, and the upstream runs the statement.

use crate::analyze::{ident_name, pgml_name};
use crate::cursor::{Count, Direction};
use sqlparser::ast::{
    DeclareType, Expr, GroupByExpr, Query, SelectItem, SetExpr, Statement, TableFactor,
    WildcardAdditionalOptions,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Word};

/// How a statement streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamForm {
    /// The statement is the query: its rows go to the client as they are produced.
    Select,
    /// `DECLARE` of a cursor over the query: FETCH serves its rows.
    Declare(CursorDecl),
}

/// What a `DECLARE` says about its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorDecl {
    /// Cursor name as Postgres folds it.
    pub name: String,
    /// `SCROLL`, `NO SCROLL` or, when neither is written, what Postgres picks for the
    /// plan: a function in FROM can scan backward, a set-returning select item cannot.
    pub scrollable: bool,
}

/// `Some` when `sql` is one of the streaming forms (see the module docs). WITH HOLD
/// cursors are left to the ordinary path: Postgres materialises them at commit anyway.
pub fn stream_form(sql: &str) -> Option<StreamForm> {
    stream_form_of(&Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?)
}

/// [`stream_form`] of statements already parsed.
pub(crate) fn stream_form_of(statements: &[Statement]) -> Option<StreamForm> {
    let [statement] = statements else { return None };
    match statement {
        Statement::Query(q) => pure_select(q).map(|_| StreamForm::Select),
        Statement::Declare { stmts, .. } => {
            let [d] = stmts.as_slice() else { return None };
            if d.declare_type != Some(DeclareType::Cursor)
                || d.hold == Some(true)
                || d.names.len() != 1
                || d.binary == Some(true)
            {
                return None;
            }
            let in_from = pure_select(d.for_query.as_ref()?)?;
            Some(StreamForm::Declare(CursorDecl {
                name: ident_name(&d.names[0]),
                scrollable: d.scroll.unwrap_or(in_from),
            }))
        }
        _ => None,
    }
}

/// `Some(in_from)` when the query is the bare call: a lone select item, or `*` from the
/// lone call.
fn pure_select(q: &Query) -> Option<bool> {
    let plain_query = q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty()
        && q.for_clause.is_none()
        && q.settings.is_none()
        && q.format_clause.is_none()
        && q.pipe_operators.is_empty();
    let SetExpr::Select(s) = q.body.as_ref() else { return None };
    let plain_select = s.distinct.is_none()
        && s.top.is_none()
        && s.exclude.is_none()
        && s.into.is_none()
        && s.lateral_views.is_empty()
        && s.prewhere.is_none()
        && s.selection.is_none()
        && s.connect_by.is_empty()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.cluster_by.is_empty()
        && s.distribute_by.is_empty()
        && s.sort_by.is_empty()
        && s.having.is_none()
        && s.named_window.is_empty()
        && s.qualify.is_none()
        && s.value_table_mode.is_none();
    if !plain_query || !plain_select {
        return None;
    }
    match (s.from.as_slice(), s.projection.as_slice()) {
        ([], [item]) => {
            let e = match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                _ => return None,
            };
            let Expr::Function(f) = e else { return None };
            let plain = f.over.is_none()
                && f.filter.is_none()
                && f.within_group.is_empty()
                && f.null_treatment.is_none();
            (plain && pgml_name(&f.name).is_some()).then_some(false)
        }
        ([t], [SelectItem::Wildcard(w)]) if t.joins.is_empty() && plain_wildcard(w) => {
            let (name, alias) = match &t.relation {
                TableFactor::Table {
                    name, alias, args: Some(_), with_ordinality: false, ..
                } => (name, alias),
                TableFactor::Function { name, alias, .. } => (name, alias),
                _ => return None,
            };
            let one_column = alias.as_ref().is_none_or(|a| a.columns.len() <= 1);
            (one_column && pgml_name(name).is_some()).then_some(true)
        }
        _ => None,
    }
}

fn plain_wildcard(w: &WildcardAdditionalOptions) -> bool {
    w.opt_ilike.is_none()
        && w.opt_exclude.is_none()
        && w.opt_except.is_none()
        && w.opt_replace.is_none()
        && w.opt_rename.is_none()
}

/// A cursor command pgmld serves itself when it names one of its cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorCommand {
    /// `FETCH` or `MOVE`.
    Fetch {
        /// The cursor.
        cursor: String,
        /// Which rows.
        direction: Direction,
        /// `MOVE`: position only, no rows.
        is_move: bool,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    Close(Option<String>),
}

impl CursorCommand {
    /// The cursor named, `None` for `CLOSE ALL`.
    pub fn cursor(&self) -> Option<&str> {
        match self {
            CursorCommand::Fetch { cursor, .. } => Some(cursor),
            CursorCommand::Close(c) => c.as_deref(),
        }
    }
}

/// Cheap test run on every statement: could this be a FETCH, MOVE or CLOSE? One pass that
/// looks further only at an `f`, `m` or `c` (either case): every Parse of a session that
/// calls no pgml comes through here, and three scans of every window were a twentieth of
/// the proxy's CPU under pgbench's extended protocol.
pub fn mentions_cursor_command(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| {
        let word: &[u8] = match bytes[i] | 0x20 {
            b'f' => b"fetch",
            b'm' => b"move",
            b'c' => b"close",
            _ => return false,
        };
        bytes.get(i..i + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word))
    })
}

/// Reads `FETCH`/`MOVE`/`CLOSE` in Postgres' grammar (`fetch_args`). sqlparser's own FETCH
/// parser lacks most of it (a bare cursor name, no FROM/IN, signed counts, bare FORWARD,
/// MOVE), so this walks sqlparser's tokens instead. `None` for anything else.
pub fn parse_cursor_command(sql: &str) -> Option<CursorCommand> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut t: Vec<Token> =
        tokens.into_iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    while t.last() == Some(&Token::SemiColon) {
        t.pop();
    }
    let Some((Token::Word(first), rest)) = t.split_first() else { return None };
    match first.keyword {
        Keyword::CLOSE => match rest {
            [Token::Word(w)] if w.quote_style.is_none() && w.keyword == Keyword::ALL => {
                Some(CursorCommand::Close(None))
            }
            [Token::Word(w)] => Some(CursorCommand::Close(Some(word_name(w)))),
            _ => None,
        },
        Keyword::FETCH => fetch_args(rest, false),
        _ if first.quote_style.is_none() && first.value.eq_ignore_ascii_case("move") => {
            fetch_args(rest, true)
        }
        _ => None,
    }
}

fn word_name(w: &Word) -> String {
    if w.quote_style.is_some() {
        w.value.clone()
    } else {
        w.value.to_ascii_lowercase()
    }
}

fn fetch_args(t: &[Token], is_move: bool) -> Option<CursorCommand> {
    let kw = |i: usize| match t.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    // The cursor name ends the statement, after an optional FROM / IN.
    let name_at = |i: usize| -> Option<String> {
        let i = if matches!(kw(i).as_str(), "FROM" | "IN") && t.len() == i + 2 { i + 1 } else { i };
        match (t.len() == i + 1, t.get(i)) {
            (true, Some(Token::Word(w))) => Some(word_name(w)),
            _ => None,
        }
    };
    let signed = |i: usize| -> Option<(i64, usize)> {
        match (t.get(i), t.get(i + 1)) {
            (Some(Token::Number(n, _)), _) => Some((n.parse().ok()?, i + 1)),
            (Some(Token::Minus), Some(Token::Number(n, _))) => {
                Some((-n.parse::<i64>().ok()?, i + 2))
            }
            (Some(Token::Plus), Some(Token::Number(n, _))) => Some((n.parse().ok()?, i + 2)),
            _ => None,
        }
    };
    let counted = |n: i64, forward: bool| {
        let c = Count::N(n.unsigned_abs());
        if (n >= 0) == forward {
            Direction::Forward(c)
        } else {
            Direction::Backward(c)
        }
    };
    let fetch = |direction: Direction, at: usize| {
        name_at(at).map(|cursor| CursorCommand::Fetch { cursor, direction, is_move })
    };
    if let Some(c) = name_at(0) {
        return Some(CursorCommand::Fetch {
            cursor: c,
            direction: Direction::Forward(Count::N(1)),
            is_move,
        });
    }
    if let Some((n, next)) = signed(0) {
        return fetch(counted(n, true), next);
    }
    match kw(0).as_str() {
        "NEXT" => fetch(Direction::Forward(Count::N(1)), 1),
        "PRIOR" => fetch(Direction::Backward(Count::N(1)), 1),
        "FIRST" => fetch(Direction::Absolute(1), 1),
        "LAST" => fetch(Direction::Absolute(-1), 1),
        "ALL" => fetch(Direction::Forward(Count::All), 1),
        "ABSOLUTE" => signed(1).and_then(|(n, next)| fetch(Direction::Absolute(n), next)),
        "RELATIVE" => signed(1).and_then(|(n, next)| fetch(Direction::Relative(n), next)),
        dir @ ("FORWARD" | "BACKWARD") => {
            let forward = dir == "FORWARD";
            if kw(1) == "ALL" {
                let all = if forward {
                    Direction::Forward(Count::All)
                } else {
                    Direction::Backward(Count::All)
                };
                return fetch(all, 2);
            }
            match signed(1) {
                Some((n, next)) => fetch(counted(n, forward), next),
                None => fetch(counted(1, forward), 1),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "streaming_tests.rs"]
mod tests;
