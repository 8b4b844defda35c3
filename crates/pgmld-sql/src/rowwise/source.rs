//! Checks a SELECT block with per-row calls, numbers the calls' non-constant arguments and
//! writes the block's source query; the 0A000 errors for calls it cannot serve.

use super::find::{figure_colname, item_problem, Collected, StmtKind};
use super::text::{Clause, Tokens};
use super::{CallItem, Piece, RowBlock, RowCall, Slot};
use crate::analyze::{ident_name, pgml_name, Parsed};
use crate::error::{codes, SqlError};
use crate::plan::BoundCall;
use sqlparser::ast::{Expr, SelectItem, Value as AstValue};
use sqlparser::keywords::Keyword;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;

/// What block building reads.
pub(crate) struct Ctx<'a> {
    /// The statement.
    pub p: &'a Parsed,
    /// Its solid tokens.
    pub toks: &'a Tokens,
    /// Its blocks and calls.
    pub col: &'a Collected,
}

/// Builds the [`RowBlock`] of SELECT block `select` holding the per-row `calls` (text order).
pub(crate) fn build_block(
    cx: &Ctx<'_>,
    select: usize,
    calls: Vec<BoundCall>,
) -> Result<RowBlock, SqlError> {
    let sql = cx.p.sql.as_str();
    let node = &cx.col.selects[select];
    let s = &node.select;
    let Some(first) = calls.first() else { return Err(cannot_locate("the query block")) };
    let (fname, at) = (first.site.name.clone(), first.position(sql));
    let unsupported = |message: String, hint: String| {
        SqlError::new(codes::FEATURE_NOT_SUPPORTED, message).with_hint(hint).at(at)
    };
    if s.distinct {
        return Err(unsupported(
            format!("pgml.{fname} with arguments that read columns is not supported in a SELECT DISTINCT"),
            format!(
                "Deduplicate first, then call it: SELECT s.*, pgml.{fname}(...) AS result FROM (SELECT DISTINCT ... FROM ...) AS s"
            ),
        ));
    }
    if s.into {
        return Err(unsupported(
            format!(
                "pgml.{fname} with arguments that read columns is not supported in SELECT ... INTO"
            ),
            format!("Use CREATE TABLE name AS SELECT ..., pgml.{fname}(...) AS result FROM ..."),
        ));
    }
    let toks = cx.toks;
    let sel_tok = toks.at_loc(cx.p, s.select_token).ok_or_else(|| cannot_locate("SELECT"))?;
    let sel_end = toks.block_end(sel_tok, true);
    let items = toks.select_items(sel_tok, sel_end);
    if items.len() != s.projection.len() {
        return Err(cannot_locate("the SELECT list").at(at));
    }
    let item_bytes: Vec<Range<usize>> = items
        .iter()
        .map(|r| toks.bytes(r.clone()))
        .collect::<Option<_>>()
        .ok_or_else(|| cannot_locate("the SELECT list"))?;

    // Which item holds each call; calls outside the SELECT list are not served.
    let mut item_calls: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (ci, c) in calls.iter().enumerate() {
        match item_bytes.iter().position(|r| r.contains(&c.site.range.start)) {
            Some(k) => item_calls.entry(k).or_default().push(ci),
            None => {
                let clause = toks
                    .at(c.site.range.start)
                    .map_or(Clause::From, |t| toks.clause_at(sel_tok, t));
                return Err(reject_clause(&c.site.name, clause).at(c.position(sql)));
            }
        }
    }
    let grouped = s.grouped;

    // Arguments that read columns, numbered in text order: source column pgmld_arg_<n>.
    let mut arg_ranges: Vec<Range<usize>> = Vec::new();
    let mut arg_types = Vec::new();
    let mut row_calls = Vec::new();
    let mut call_args: Vec<Vec<usize>> = Vec::new();
    for c in &calls {
        let sig = c.function.signature();
        let mut per_row: Vec<(usize, Range<usize>)> = Vec::new();
        for (slot, a) in c.args.iter().enumerate() {
            if let Some(a) = a.as_ref().filter(|a| !a.expr.is_constant()) {
                let r = a
                    .range
                    .clone()
                    .ok_or_else(|| cannot_locate("an argument").at(c.position(sql)))?;
                per_row.push((slot, r));
            }
        }
        per_row.sort_by_key(|(_, r)| r.start);
        let mut slots: Vec<Slot> = c
            .args
            .iter()
            .map(|a| a.as_ref().map_or(Slot::Default, |a| Slot::Const(a.expr.clone())))
            .collect();
        let mut numbers = Vec::new();
        for (slot, r) in per_row {
            arg_ranges.push(r);
            arg_types.push(sig.params[slot].ty);
            slots[slot] = Slot::Column(arg_ranges.len());
            numbers.push(arg_ranges.len());
        }
        call_args.push(numbers);
        row_calls.push(RowCall { function: c.function.clone(), position: c.position(sql), slots });
    }
    let cast = |n: usize| {
        format!("({})::{}", &sql[arg_ranges[n - 1].clone()], arg_types[n - 1].sql_name())
    };

    // The call items: their output names and expressions, and their source columns.
    let mut call_items = Vec::new();
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut appended = Vec::new();
    let mut names = HashSet::new();
    for (&k, cis) in &item_calls {
        let (c_at, cname) = (calls[cis[0]].position(sql), &calls[cis[0]].site.name);
        let (expr, alias) = match &s.projection[k] {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            _ => return Err(cannot_locate("a SELECT item").at(c_at)),
        };
        let whole = is_whole_call(expr);
        if !whole {
            let hint = format!(
                "Compute the call as its own item of a subquery and use the result outside: \
                 SELECT ..., s.result ... FROM (SELECT *, pgml.{cname}(...) AS result FROM ...) AS s"
            );
            if let Some(why) = item_problem(expr) {
                return Err(SqlError::new(
                    codes::FEATURE_NOT_SUPPORTED,
                    format!("pgml.{cname} with arguments that read columns is combined with {why} in one SELECT item"),
                )
                .with_hint(hint)
                .at(c_at));
            }
            if grouped {
                return Err(SqlError::new(
                    codes::FEATURE_NOT_SUPPORTED,
                    format!(
                        "with GROUP BY or HAVING, pgml.{cname} with arguments that read columns must be a whole SELECT item"
                    ),
                )
                .with_hint(hint)
                .at(c_at));
            }
        }
        let expr_bytes = match alias {
            None => item_bytes[k].clone(),
            Some(a) => {
                let a_tok =
                    toks.at_loc(cx.p, a.span.start).ok_or_else(|| cannot_locate("an alias"))?;
                let end = if a_tok > 0 && toks.kw(a_tok - 1) == Some(Keyword::AS) {
                    a_tok - 1
                } else {
                    a_tok
                };
                toks.bytes(items[k].start..end).ok_or_else(|| cannot_locate("a SELECT item"))?
            }
        };
        let name = alias.map_or_else(|| figure_colname(expr), ident_name);
        names.insert(name.clone());
        let mut template = Vec::new();
        let mut pos = expr_bytes.start;
        for &ci in cis {
            let r = &calls[ci].site.range;
            template.push(Piece::Text(sql[pos..r.start].to_string()));
            template.push(Piece::Result(ci));
            pos = r.end;
        }
        template.push(Piece::Text(sql[pos..expr_bytes.end].to_string()));
        let mut numbers: Vec<usize> =
            cis.iter().flat_map(|&ci| call_args[ci].iter().copied()).collect();
        numbers.sort_unstable();
        let Some((&first_arg, rest)) = numbers.split_first() else {
            return Err(cannot_locate("an argument"));
        };
        // The item's place keeps one argument so ORDER BY / GROUP BY positions still match.
        edits
            .push((item_bytes[k].clone(), format!("{} AS pgmld_arg_{first_arg}", cast(first_arg))));
        appended.extend(rest.iter().map(|&n| format!("{} AS pgmld_arg_{n}", cast(n))));
        call_items.push(CallItem { first_arg, name, template });
    }
    if let Some(last) = item_bytes.last().filter(|_| !appended.is_empty()) {
        edits.push((last.end..last.end, format!(", {}", appended.join(", "))));
    }

    // ORDER BY / GROUP BY that name a call item (by position or output name) would need the
    // results, which the source query does not have yet.
    let star = s
        .projection
        .iter()
        .position(|i| matches!(i, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)));
    let call_positions: BTreeSet<usize> = item_calls.keys().copied().collect();
    let refers_to_call = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            AstValue::Number(n, _) => {
                n.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).is_some_and(|i| match star {
                    Some(st) if i >= st => call_positions.iter().any(|&k| k >= st),
                    _ => call_positions.contains(&i),
                })
            }
            _ => false,
        },
        Expr::Identifier(i) => names.contains(&ident_name(i)),
        _ => false,
    };
    let order_by: &[Expr] = node.whole.map_or(&[], |q| &cx.col.queries[q].order_by);
    let group_by: &[Expr] = &s.group_by;
    for (clause, exprs) in [("ORDER BY", order_by), ("GROUP BY", group_by)] {
        if exprs.iter().any(refers_to_call) {
            return Err(unsupported(
                format!("{clause} refers to the result of pgml.{fname}, whose arguments read columns"),
                format!("{clause} outside: SELECT * FROM (SELECT ..., pgml.{fname}(...) AS result FROM ...) AS s {clause} s.result"),
            ));
        }
    }

    // The replaced text: the whole query (WITH .. LIMIT) or just the set operand.
    let (range, whole_query, own_with) = match node.whole {
        Some(q) => {
            let with = cx.col.queries[q].with.as_ref();
            let start = match with {
                Some(w) => toks.at_loc(cx.p, w.with_token).ok_or_else(|| cannot_locate("WITH"))?,
                None => sel_tok,
            };
            let end = toks.block_end(start, false);
            (toks.bytes(start..end).ok_or_else(|| cannot_locate("the query"))?, true, with)
        }
        None => (
            toks.bytes(sel_tok..sel_end).ok_or_else(|| cannot_locate("the query block"))?,
            false,
            None,
        ),
    };
    let prefix = enclosing_ctes(cx, select, range.start, &fname, at)?;
    let cte_ranges = prefix.as_ref().map_or_else(Vec::new, |p| p.ranges.clone());
    if let Some(prefix) = prefix {
        match own_with.and_then(|w| w.ctes.first()) {
            Some(first_cte) => {
                let cte_start =
                    cx.p.byte(first_cte.name_loc).ok_or_else(|| cannot_locate("WITH"))?;
                let recursive = prefix.recursive || own_with.is_some_and(|w| w.recursive);
                edits.push((
                    range.start..cte_start,
                    format!("{}{}, ", with_head(recursive), prefix.ctes),
                ));
            }
            None => edits.push((
                range.start..range.start,
                format!("{}{} ", with_head(prefix.recursive), prefix.ctes),
            )),
        }
    }
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let mut source_sql = String::with_capacity(range.len() + 64);
    let mut pos = range.start;
    for (r, text) in &edits {
        source_sql.push_str(&sql[pos..r.start]);
        source_sql.push_str(text);
        pos = r.end;
    }
    source_sql.push_str(&sql[pos..range.end]);
    Ok(RowBlock {
        sql: sql.to_string(),
        range,
        whole_query,
        source_sql,
        calls: row_calls,
        items: call_items,
        arg_count: arg_ranges.len(),
        cte_ranges,
    })
}

fn with_head(recursive: bool) -> &'static str {
    if recursive {
        "WITH RECURSIVE "
    } else {
        "WITH "
    }
}

/// `(pgml.f(...))` or `pgml.f(...)` as a whole item.
fn is_whole_call(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => is_whole_call(inner),
        Expr::Function(f) => pgml_name(&f.name).is_some(),
        _ => false,
    }
}

/// WITH queries of enclosing statements that the block reads, as written.
struct CtePrefix {
    recursive: bool,
    /// `a AS (...), b AS (...)`.
    ctes: String,
    /// Their bytes in the statement.
    ranges: Vec<Range<usize>>,
}

/// The enclosing WITH queries the block reads (directly or through each other), so its
/// source query runs standalone; `None` when it reads none.
fn enclosing_ctes(
    cx: &Ctx<'_>,
    select: usize,
    block_start: usize,
    fname: &str,
    at: usize,
) -> Result<Option<CtePrefix>, SqlError> {
    let node = &cx.col.selects[select];
    // name -> (text range, recursive WITH, data-modifying, relations); inner levels shadow.
    let mut visible = BTreeMap::new();
    for &q in node.ancestors.iter().filter(|&&q| Some(q) != node.whole) {
        let Some(with) = &cx.col.queries[q].with else { continue };
        for cte in &with.ctes {
            let start = cx.p.byte(cte.name_loc).ok_or_else(|| cannot_locate("WITH"))?;
            let end = cx.p.byte(cte.close).ok_or_else(|| cannot_locate("WITH"))? + 1;
            if (start..end).contains(&block_start) {
                // The block's own WITH query; later ones are visible only under RECURSIVE.
                if with.recursive {
                    continue;
                }
                break;
            }
            visible.insert(
                cte.name.clone(),
                (start..end, with.recursive, cte.data_modifying, &cte.relations),
            );
        }
    }
    if let Some(w) = node.whole.and_then(|q| cx.col.queries[q].with.as_ref()) {
        for cte in &w.ctes {
            visible.remove(&cte.name);
        }
    }
    let mut wanted: Vec<&String> = node.relations.iter().collect();
    let mut included: BTreeMap<usize, (Range<usize>, bool)> = BTreeMap::new();
    let mut seen = HashSet::new();
    while let Some(name) = wanted.pop() {
        let Some((r, recursive, modifying, rels)) = visible.get(name) else { continue };
        if !seen.insert(name.clone()) {
            continue;
        }
        if *modifying {
            return Err(SqlError::new(
                codes::FEATURE_NOT_SUPPORTED,
                format!("the query block calling pgml.{fname} per row reads the data-modifying WITH query \"{name}\""),
            )
            .with_hint(format!(
                "Call it in the top-level SELECT that reads it: \
                 WITH {name} AS (... RETURNING *) SELECT {name}.*, pgml.{fname}(...) AS result FROM {name}"
            ))
            .at(at));
        }
        included.insert(r.start, (r.clone(), *recursive));
        wanted.extend(rels.iter());
    }
    if included.is_empty() {
        return Ok(None);
    }
    let recursive = included.values().any(|(_, rec)| *rec);
    let ctes: Vec<&str> = included.values().map(|(r, _)| &cx.p.sql[r.clone()]).collect();
    let ranges = included.values().map(|(r, _)| r.clone()).collect();
    Ok(Some(CtePrefix { recursive, ctes: ctes.join(", "), ranges }))
}

/// Every block left reads a WITH query that still has per-row calls.
pub(crate) fn unordered(block: Option<&RowBlock>) -> SqlError {
    let call = block.and_then(|b| b.calls.first());
    let (name, at) = call.map_or(("f", 1), |c| (c.name(), c.position));
    SqlError::new(
        codes::FEATURE_NOT_SUPPORTED,
        format!(
            "pgmld cannot order the per-row calls of pgml.{name}: its query block reads a WITH query that has per-row calls too"
        ),
    )
    .with_hint(
        "Compute the WITH query's calls into a temporary table first: \
         CREATE TEMP TABLE t AS SELECT ..., pgml.f(...) AS result FROM ...",
    )
    .at(at)
}

/// Internal trouble mapping the AST back to the text.
pub(crate) fn cannot_locate(what: &str) -> SqlError {
    SqlError::new(
        codes::FEATURE_NOT_SUPPORTED,
        format!("pgmld could not locate {what} of a per-row pgml call in the statement text"),
    )
    .with_hint("Rewrite the call as a plain SELECT item: SELECT *, pgml.f(...) AS result FROM ...")
}

fn per_row(name: &str, place: &str) -> String {
    format!("pgml.{name} with arguments that read columns is not supported in {place}")
}

fn subquery_hint(name: &str, tail: &str) -> String {
    format!("Compute it in a subquery's SELECT list: SELECT * FROM (SELECT *, pgml.{name}(...) AS result FROM ...) AS s {tail}")
}

/// A per-row call in a clause of a SELECT block other than its SELECT list.
pub(crate) fn reject_clause(name: &str, clause: Clause) -> SqlError {
    let hint = match clause {
        Clause::From | Clause::SelectList => {
            format!("Call it in the SELECT list instead: SELECT t.*, pgml.{name}(...) AS result FROM t")
        }
        Clause::JoinOn => format!(
            "Compute it in a subquery and join on the result: ... JOIN (SELECT *, pgml.{name}(...) AS result FROM ...) AS s ON s.result ..."
        ),
        Clause::GroupBy => subquery_hint(name, "GROUP BY s.result"),
        Clause::Where | Clause::Having | Clause::Window => subquery_hint(name, "WHERE s.result ..."),
    };
    SqlError::new(codes::FEATURE_NOT_SUPPORTED, per_row(name, clause.describe())).with_hint(hint)
}

/// A per-row call in a query's ORDER BY / LIMIT, or in a VALUES list.
pub(crate) fn reject_query_clause(name: &str, values: bool) -> SqlError {
    if values {
        SqlError::new(codes::FEATURE_NOT_SUPPORTED, per_row(name, "a VALUES list")).with_hint(format!(
            "Call it in a SELECT list over the rows: SELECT v.*, pgml.{name}(...) AS result FROM (VALUES (...)) AS v(col)"
        ))
    } else {
        SqlError::new(
            codes::FEATURE_NOT_SUPPORTED,
            per_row(name, "an ORDER BY, LIMIT or OFFSET clause"),
        )
        .with_hint(subquery_hint(name, "ORDER BY s.result"))
    }
}

/// A per-row call outside any query block.
pub(crate) fn reject_statement(name: &str, kind: StmtKind) -> SqlError {
    let (place, hint) = match kind {
        StmtKind::Update => (
            "an UPDATE statement",
            format!(
                "Compute the values in a subquery and join it: UPDATE t SET col = s.result \
                 FROM (SELECT id, pgml.{name}(...) AS result FROM t) AS s WHERE t.id = s.id"
            ),
        ),
        StmtKind::Delete => (
            "a DELETE statement",
            format!(
                "Compute it in a subquery: DELETE FROM t USING (SELECT id, pgml.{name}(...) AS result FROM t) AS s \
                 WHERE t.id = s.id AND s.result ..."
            ),
        ),
        StmtKind::Insert => (
            "an INSERT's RETURNING or ON CONFLICT clause",
            format!("Call it on the returned rows: WITH ins AS (INSERT ... RETURNING *) SELECT ins.*, pgml.{name}(...) AS result FROM ins"),
        ),
        StmtKind::Merge => (
            "a MERGE statement",
            format!("Compute it in the source subquery: MERGE INTO t USING (SELECT *, pgml.{name}(...) AS result FROM ...) AS s ON ..."),
        ),
        StmtKind::Other => ("this statement", format!("Call it in a SELECT list: SELECT *, pgml.{name}(...) AS result FROM ...")),
    };
    SqlError::new(codes::FEATURE_NOT_SUPPORTED, per_row(name, place)).with_hint(hint)
}

/// A per-row call in a statement that stores or only plans its text.
pub(crate) fn reject_frozen(name: &str, stmt: &str) -> SqlError {
    let hint = match stmt {
        "EXPLAIN" => "EXPLAIN the query without the pgml call, or run it without EXPLAIN.".to_string(),
        "PREPARE" => format!(
            "Prepare it through your driver (extended protocol) instead of SQL PREPARE: SELECT ..., pgml.{name}(...) FROM ... WHERE col = $1"
        ),
        _ => format!(
            "pgmld evaluates pgml calls when a statement runs, so a stored body would not see them; store the results instead: \
             CREATE TABLE name AS SELECT ..., pgml.{name}(...) AS result FROM ..."
        ),
    };
    SqlError::new(codes::FEATURE_NOT_SUPPORTED, per_row(name, &format!("a {stmt} statement")))
        .with_hint(hint)
}
