//! A statement with its pgml calls bound to functions: the text the upstream sees to
//! describe it (`shape_sql`) and the text it runs once the calls are evaluated (`execute`).

use crate::analyze::{ArgExpr, CallSite, Parsed, Position, RawArg};
use crate::error::{codes, SqlError};
use crate::function::{
    Args, CallContext, Output, ParamSpec, PgmlFunction, Registry, Returns, RowStream,
};
use crate::params::Param;
use crate::rowwise::{self, RowBlock};
use crate::streaming::{stream_form_of, StreamForm};
use crate::value::{SqlType, Value};
use std::ops::Range;
use std::sync::Arc;

/// One call bound to its function; arguments matched to parameters (defaults not yet filled).
#[derive(Clone)]
pub(crate) struct BoundCall {
    /// Where the call is and what was written.
    pub site: CallSite,
    /// The function it calls.
    pub function: Arc<dyn PgmlFunction>,
    /// For each declared parameter: the written argument, if any.
    pub args: Vec<Option<RawArg>>,
}

impl BoundCall {
    /// True when an argument reads columns (or anything else pgmld cannot evaluate alone):
    /// the call must be served per row (see [`crate::rowwise`]).
    pub fn is_per_row(&self) -> bool {
        self.site.args.iter().any(|a| !a.expr.is_constant())
    }

    /// 1-based character position of the call in `sql`, for errors.
    pub fn position(&self, sql: &str) -> usize {
        sql.get(..self.site.range.start).map_or(0, |s| s.chars().count()) + 1
    }
}

/// A statement that calls pgml functions, parsed once and ready to describe, serve per
/// row ([`Plan::next_row_block`]) and run.
pub struct Plan {
    /// The client's text, parsed: kept so per-row blocks are found without parsing again.
    parsed: Parsed,
    /// Every call, nested ones (inside another call's arguments) included, by start.
    calls: Vec<BoundCall>,
    /// Set when the statement's rows are exactly one streaming call's values.
    stream: Option<StreamForm>,
}

impl Plan {
    /// `Ok(None)` when `sql` calls no pgml function (forward it unchanged); an error when it
    /// calls one that does not exist or binds arguments wrongly (42883, like Postgres).
    /// Calls whose arguments read columns bind too: the proxy serves them first with
    /// [`crate::rowwise::next_row_block`], and [`Plan::shape_sql`] describes them.
    pub fn build(sql: &str, registry: &Registry) -> Result<Option<Plan>, SqlError> {
        let Some(parsed) = Parsed::new(sql) else { return Ok(None) };
        let Some(sites) = parsed.calls() else { return Ok(None) };
        let calls: Vec<BoundCall> =
            sites.into_iter().map(|site| bind_at(sql, site, registry)).collect::<Result<_, _>>()?;
        let stream = match calls.as_slice() {
            [call]
                if matches!(call.function.signature().returns, Returns::SetOf(_))
                    && !call.is_per_row() =>
            {
                stream_form_of(&parsed.statements)
            }
            _ => None,
        };
        Ok(Some(Plan { parsed, calls, stream }))
    }

    /// Whether a call reads columns, so the statement is served per row first.
    pub fn has_per_row(&self) -> bool {
        self.calls.iter().any(BoundCall::is_per_row)
    }

    /// The next per-row block to serve (see [`crate::rowwise`]), from this parse: `Ok(None)`
    /// when no call reads columns. Errors as [`rowwise::next_row_block`].
    pub fn next_row_block(&self) -> Result<Option<RowBlock>, SqlError> {
        if !self.has_per_row() {
            return Ok(None);
        }
        rowwise::row_block_of(&self.parsed, self.calls.clone())
    }

    /// How the statement streams, when its rows are exactly one streaming call's values
    /// (`SELECT pgml.f(...)`, `SELECT * FROM pgml.f(...)`, a cursor over either).
    pub fn streaming(&self) -> Option<&StreamForm> {
        self.stream.as_ref()
    }

    /// Column types of a streaming statement's rows.
    pub fn stream_types(&self) -> Vec<SqlType> {
        match self.calls.first().map(|c| &c.function.signature().returns) {
            Some(Returns::SetOf(t)) => vec![*t],
            Some(Returns::Table(cols)) => cols.iter().map(|(_, t)| *t).collect(),
            Some(Returns::Scalar(t)) => vec![*t],
            None => vec![],
        }
    }

    /// Starts the streaming call of a [`Plan::streaming`] statement with the bound
    /// parameters; its values come as the stream yields them.
    pub async fn open_stream(
        &self,
        params: &[Param],
        ctx: &CallContext,
    ) -> Result<RowStream, SqlError> {
        let Some(call) = self.calls.first().filter(|_| self.stream.is_some()) else {
            return Err(SqlError::new(codes::INTERNAL_ERROR, "statement does not stream"));
        };
        let args = evaluate_args(call, params).map_err(|e| {
            if e.position.is_some() {
                e
            } else {
                e.at(call.position(&self.parsed.sql))
            }
        })?;
        match call.function.call(ctx.clone(), args).await? {
            Output::Stream(s) => Ok(s),
            Output::Rows(rows) => Ok(crate::cursor::rows_stream(rows)),
            Output::Scalar(_) => Err(SqlError::new(
                codes::INTERNAL_ERROR,
                format!("pgml.{} produced a result of the wrong shape", call.site.name),
            )),
        }
    }

    /// The client's text.
    pub fn sql(&self) -> &str {
        &self.parsed.sql
    }

    /// Names of the called functions, for logs and metrics.
    pub fn function_names(&self) -> Vec<&str> {
        self.top_level().map(|c| c.site.name.as_str()).collect()
    }

    /// The statement with each call replaced by a NULL of its result type that still
    /// references the call's `$n` parameters with their declared types. Postgres describes
    /// it exactly as it will describe the executed text (same columns, same parameters),
    /// without running anything of ours. Per-row calls keep their argument expressions
    /// (cast to the declared types) in the same scope, so column references and the `$n`
    /// inside them stay visible and typed.
    pub fn shape_sql(&self) -> String {
        self.shape_range(0..self.parsed.sql.len())
    }

    /// Evaluates every call in text order with the bound parameters and returns the text to
    /// run upstream: the client's statement with each call replaced by its result literal.
    /// Fails (XX000) while a per-row call is left: those are served by
    /// [`crate::rowwise::next_row_block`] before.
    pub async fn execute(&self, params: &[Param], ctx: &CallContext) -> Result<String, SqlError> {
        if let Some(c) = self.top_level().find(|c| c.is_per_row()) {
            return Err(SqlError::new(
                codes::INTERNAL_ERROR,
                format!(
                    "pgml.{} reads columns and must be served per row before the statement runs",
                    c.site.name
                ),
            )
            .at(c.position(&self.parsed.sql)));
        }
        let mut results = Vec::with_capacity(self.calls.len());
        for call in self.top_level() {
            let args = evaluate_args(call, params)?;
            let out = match call.function.call(ctx.clone(), args).await? {
                // Not a streaming form: the values are spliced in and Postgres runs the rest.
                Output::Stream(s) => Output::Rows(collect(s).await?),
                out => out,
            };
            results.push(rendered_output(call, out)?);
        }
        let mut it = results.into_iter();
        Ok(self.splice(0..self.parsed.sql.len(), |call| {
            let r = it.next().unwrap_or(Rendered::Scalar("NULL".into()));
            render(call, r, &[])
        }))
    }

    /// Calls not nested in another call's arguments.
    fn top_level(&self) -> impl Iterator<Item = &BoundCall> {
        let mut end = 0;
        self.calls.iter().filter(move |c| {
            let top = c.site.range.start >= end;
            if top {
                end = c.site.range.end;
            }
            top
        })
    }

    /// `range` of the text with every outermost call inside it replaced.
    fn splice(
        &self,
        range: Range<usize>,
        mut replacement: impl FnMut(&BoundCall) -> String,
    ) -> String {
        let mut out = String::with_capacity(range.len() + 64);
        let mut at = range.start;
        for call in &self.calls {
            let r = &call.site.range;
            if r.start < at || r.end > range.end {
                continue; // before the range, or inside a call already replaced
            }
            out.push_str(&self.parsed.sql[at..r.start]);
            out.push_str(&replacement(call));
            at = r.end;
        }
        out.push_str(&self.parsed.sql[at..range.end]);
        out
    }

    fn shape_range(&self, range: Range<usize>) -> String {
        self.splice(range, |call| self.shape_call(call))
    }

    fn shape_call(&self, call: &BoundCall) -> String {
        let sig = call.function.signature();
        let mut checks = Vec::new();
        for (spec, arg) in sig.params.iter().zip(&call.args) {
            let Some(arg) = arg else { continue };
            if arg.expr.is_constant() {
                param_refs(&arg.expr, spec.ty, &mut checks);
            } else if let Some(r) = &arg.range {
                // Nested pgml calls in the argument get their own shape.
                checks.push(format!("({})::{}", self.shape_range(r.clone()), spec.ty.sql_name()));
            }
        }
        let null = match &sig.returns {
            Returns::Scalar(t) => Rendered::Scalar(format!("NULL::{}", t.sql_name())),
            Returns::SetOf(t) => Rendered::Set(format!("NULL::{}[]", t.sql_name())),
            Returns::Table(cols) => Rendered::Rows(
                cols.iter().map(|(_, t)| format!("NULL::{}", t.sql_name())).collect(),
                0,
            ),
        };
        render(call, null, &checks)
    }
}

/// A call's result as SQL: a scalar expression, or rows of column expressions.
enum Rendered {
    Scalar(String),
    /// Column expressions of each row, flattened, with the row count.
    Rows(Vec<String>, usize),
    /// An array expression holding a set's values (`ARRAY[...]::jsonb[]`), unnested in place
    /// of the call so it stays a set-returning function where it stood.
    Set(String),
}

/// Every row of a stream, in order.
async fn collect(mut s: RowStream) -> Result<Vec<Vec<Value>>, SqlError> {
    let mut rows = Vec::new();
    while let Some(row) = std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await {
        rows.push(row?);
    }
    Ok(rows)
}

fn rendered_output(call: &BoundCall, out: Output) -> Result<Rendered, SqlError> {
    let sig = call.function.signature();
    match (&sig.returns, out) {
        (Returns::Scalar(t), Output::Scalar(v)) => Ok(Rendered::Scalar(v.to_sql_literal(*t))),
        (Returns::SetOf(t), Output::Rows(rows)) => {
            let items: Vec<String> =
                rows.iter().map(|r| r.first().unwrap_or(&Value::Null).to_sql_literal(*t)).collect();
            Ok(Rendered::Set(format!("ARRAY[{}]::{}[]", items.join(", "), t.sql_name())))
        }
        (Returns::Table(cols), Output::Rows(rows)) => {
            let mut exprs = Vec::with_capacity(rows.len() * cols.len());
            for row in &rows {
                for (i, (_, t)) in cols.iter().enumerate() {
                    exprs.push(row.get(i).unwrap_or(&Value::Null).to_sql_literal(*t));
                }
            }
            if rows.len() != 1 && matches!(call.site.position, Position::Expr { .. }) {
                return Err(SqlError::new(
                    codes::FEATURE_NOT_SUPPORTED,
                    format!(
                        "pgml.{} returned {} rows where one value is expected",
                        sig.name,
                        rows.len()
                    ),
                )
                .with_hint(format!("Call it in FROM: SELECT * FROM pgml.{}(...);", sig.name)));
            }
            Ok(Rendered::Rows(exprs, rows.len()))
        }
        _ => Err(SqlError::new(
            codes::INTERNAL_ERROR,
            format!("pgml.{} produced a result of the wrong shape", sig.name),
        )),
    }
}

/// Writes the replacement text for one call; `checks` are `($n)::type` references that keep
/// the call's parameters visible to Postgres in the shape text.
fn render(call: &BoundCall, value: Rendered, checks: &[String]) -> String {
    let sig = call.function.signature();
    let guard = |expr: String| {
        if checks.is_empty() {
            expr
        } else {
            let cond: Vec<String> = checks.iter().map(|c| format!("{c} IS NULL")).collect();
            format!("(CASE WHEN {} THEN {expr} END)", cond.join(" OR "))
        }
    };
    let quoted_name = format!("\"{}\"", sig.name.replace('"', "\"\""));
    if let Rendered::Set(array) = value {
        // `unnest` is a set-returning function wherever the call was one: a select item
        // (one row per value) or a FROM item; the alias keeps the function's column name.
        let e = format!("unnest({})", guard(array));
        return match call.site.position {
            Position::Expr { bare_select_item: true, .. }
            | Position::TableFactor { has_alias: false } => {
                format!("{e} AS {quoted_name}")
            }
            _ => e,
        };
    }
    match (call.site.position, value, &sig.returns) {
        (Position::Expr { bare_select_item, names_item }, value, _) => {
            let e = match value {
                Rendered::Scalar(e) | Rendered::Set(e) => guard(e),
                Rendered::Rows(cols, _) => guard(format!("ROW({})", cols.join(", "))),
            };
            if bare_select_item {
                format!("{e} AS {quoted_name}")
            } else if names_item {
                // A scalar subquery is named after its column, as the call after its function.
                format!("(SELECT {e} AS {quoted_name})")
            } else {
                e
            }
        }
        (Position::TableFactor { has_alias }, value, returns) => {
            let names: Vec<String> = match returns {
                Returns::Table(cols) => cols.iter().map(|(n, _)| format!("\"{n}\"")).collect(),
                Returns::Scalar(_) | Returns::SetOf(_) => vec![quoted_name.clone()],
            };
            let (exprs, nrows) = match value {
                Rendered::Scalar(e) | Rendered::Set(e) => (vec![e], 1),
                Rendered::Rows(e, n) => (e, n),
            };
            let width = names.len().max(1);
            let selects: Vec<String> = if nrows == 0 {
                let nulls: Vec<String> = match returns {
                    Returns::Table(cols) => {
                        cols.iter().map(|(_, t)| format!("NULL::{}", t.sql_name())).collect()
                    }
                    Returns::Scalar(t) | Returns::SetOf(t) => {
                        vec![format!("NULL::{}", t.sql_name())]
                    }
                };
                vec![format!("SELECT {} WHERE false", aliased(&nulls, &names))]
            } else {
                exprs.chunks(width).map(|row| format!("SELECT {}", aliased(row, &names))).collect()
            };
            let mut body = selects.join(" UNION ALL ");
            if !checks.is_empty() {
                let cond: Vec<String> = checks.iter().map(|c| format!("{c} IS NULL")).collect();
                body = format!("SELECT * FROM ({body}) AS pgmld_rows WHERE {}", cond.join(" OR "));
            }
            if has_alias {
                format!("({body})")
            } else {
                format!("({body}) AS {quoted_name}")
            }
        }
    }
}

fn aliased(exprs: &[String], names: &[String]) -> String {
    exprs.iter().zip(names).map(|(e, n)| format!("{e} AS {n}")).collect::<Vec<_>>().join(", ")
}

/// Collects `($n)::type` for every parameter inside `arg`, typed by the nearest cast or by
/// the declared type (element type inside arrays).
fn param_refs(arg: &ArgExpr, declared: SqlType, out: &mut Vec<String>) {
    match arg {
        ArgExpr::Param(n) => out.push(format!("(${n})::{}", declared.sql_name())),
        ArgExpr::Cast(inner, t) => param_refs(inner, *t, out),
        ArgExpr::Array(items) => {
            let elem = declared.element().unwrap_or(SqlType::Text);
            for i in items {
                param_refs(i, elem, out);
            }
        }
        ArgExpr::Const(_) | ArgExpr::Unsupported(_) => {}
    }
}

/// [`bind`], with errors pointing at the call when they do not point elsewhere.
pub(crate) fn bind_at(
    sql: &str,
    site: CallSite,
    registry: &Registry,
) -> Result<BoundCall, SqlError> {
    let position = sql.get(..site.range.start).map_or(0, |s| s.chars().count()) + 1;
    bind(site, registry).map_err(|e| if e.position.is_some() { e } else { e.at(position) })
}

/// Matches the written arguments to the function's parameters (positional, then named),
/// like Postgres resolves a call: unknown function, unknown name, duplicates, missing
/// required arguments and too many arguments are errors.
pub(crate) fn bind(site: CallSite, registry: &Registry) -> Result<BoundCall, SqlError> {
    let Some(function) = registry.get(&site.name).cloned() else {
        return Err(SqlError::new(
            codes::UNDEFINED_FUNCTION,
            format!("function pgml.{} does not exist in pgmld", site.name),
        )
        .with_hint(format!("pgmld serves: {}", registry.supported().join("; "))));
    };
    let sig = function.signature();
    let mut args: Vec<Option<RawArg>> = vec![None; sig.params.len()];
    let mut seen_named = false;
    for (i, raw) in site.args.iter().enumerate() {
        let slot = match &raw.name {
            None if seen_named => {
                return Err(SqlError::new(
                    codes::SYNTAX_ERROR,
                    format!(
                        "positional argument {} of pgml.{} follows a named argument",
                        i + 1,
                        sig.name
                    ),
                ))
            }
            None => {
                if i >= sig.params.len() {
                    return Err(SqlError::new(
                        codes::UNDEFINED_FUNCTION,
                        format!(
                            "pgml.{} takes at most {} arguments, got {}",
                            sig.name,
                            sig.params.len(),
                            site.args.len()
                        ),
                    )
                    .with_hint(format!("Signature: {}", sig.display())));
                }
                i
            }
            Some(name) => {
                seen_named = true;
                sig.params.iter().position(|p| p.name == name).ok_or_else(|| {
                    SqlError::new(
                        codes::UNDEFINED_FUNCTION,
                        format!("pgml.{} has no parameter named \"{name}\"", sig.name),
                    )
                    .with_hint(format!("Signature: {}", sig.display()))
                })?
            }
        };
        if args[slot].is_some() {
            return Err(SqlError::new(
                codes::SYNTAX_ERROR,
                format!(
                    "argument \"{}\" of pgml.{} is given more than once",
                    sig.params[slot].name, sig.name
                ),
            ));
        }
        args[slot] = Some(raw.clone());
    }
    for (spec, arg) in sig.params.iter().zip(&args) {
        if arg.is_none() && spec.default.is_none() {
            return Err(SqlError::new(
                codes::UNDEFINED_FUNCTION,
                format!("pgml.{} needs argument \"{}\"", sig.name, spec.name),
            )
            .with_hint(format!("Signature: {}", sig.display())));
        }
    }
    Ok(BoundCall { site, function, args })
}

fn evaluate_args(call: &BoundCall, params: &[Param]) -> Result<Args, SqlError> {
    let sig = call.function.signature();
    let mut out = Args::new();
    for (spec, arg) in sig.params.iter().zip(&call.args) {
        out.insert(spec.name, eval_arg(sig.name, spec, arg.as_ref().map(|a| &a.expr), params)?);
    }
    Ok(out)
}

/// The value of one constant argument coerced to its declared type (the default when the
/// argument is omitted); errors name the argument.
pub(crate) fn eval_arg(
    function: &str,
    spec: &ParamSpec,
    arg: Option<&ArgExpr>,
    params: &[Param],
) -> Result<Value, SqlError> {
    match arg {
        None => Ok(spec.default.clone().unwrap_or(Value::Null)),
        Some(a) => eval(a, params)?.coerce(spec.ty).map_err(|e| SqlError {
            message: format!("argument \"{}\" of pgml.{function}: {}", spec.name, e.message),
            ..e
        }),
    }
}

fn eval(e: &ArgExpr, params: &[Param]) -> Result<Value, SqlError> {
    match e {
        ArgExpr::Const(v) => Ok(v.clone()),
        ArgExpr::Param(n) => params
            .get(n.wrapping_sub(1))
            .ok_or_else(|| {
                SqlError::new(codes::UNDEFINED_PARAMETER, format!("there is no parameter ${n}"))
            })?
            .decode(*n),
        ArgExpr::Array(items) => {
            Ok(Value::Array(items.iter().map(|i| eval(i, params)).collect::<Result<_, _>>()?))
        }
        ArgExpr::Cast(inner, t) => eval(inner, params)?.coerce(*t),
        ArgExpr::Unsupported(what) => {
            Err(SqlError::new(codes::FEATURE_NOT_SUPPORTED, format!("cannot evaluate {what}")))
        }
    }
}

#[cfg(test)]
mod tests;
