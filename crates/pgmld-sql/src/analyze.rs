//! Finds the `pgml.*` calls in a statement and where they sit in the client's text.
//!
//! A cheap byte scan ([`mentions_pgml`]) runs on every statement; only those that mention
//! `pgml` are parsed with sqlparser's PostgreSQL dialect. Text that does not parse is not
//! ours to judge: the caller forwards it unchanged. Ranges are byte offsets into the
//! original text, found from token positions, so results are spliced into exactly what
//! the client wrote, never into a re-serialised AST.

use crate::value::{SqlType, Value};
use sqlparser::ast::{
    AccessExpr, CastKind, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    ObjectNamePart, Select, SelectItem, Statement, TableFactor, UnaryOperator, Value as AstValue,
    Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use std::collections::HashSet;
use std::ops::{ControlFlow, Range};

/// True when `sql` contains `pgml` in any case: the only statements worth parsing.
pub fn mentions_pgml(sql: &str) -> bool {
    mentions_pgml_bytes(sql.as_bytes())
}

/// [`mentions_pgml`] on raw bytes (a whole wire frame, before decoding).
pub fn mentions_pgml_bytes(bytes: &[u8]) -> bool {
    // This runs on every statement forwarded, most of which name no pgml: jump from one
    // `p` to the next (memchr's vectorised search) instead of comparing every window.
    let mut from = 0;
    while let Some(i) = memchr::memchr2(b'p', b'P', &bytes[from..]) {
        let at = from + i;
        if bytes.get(at..at + 4).is_some_and(|w| w.eq_ignore_ascii_case(b"pgml")) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Byte ranges of the statements in a query string, split at top-level semicolons
/// (quoted text, dollar-quoted bodies and comments are single tokens, so their semicolons
/// do not split). Empty statements are left out. `None` when the text does not tokenize.
pub fn split_statements(sql: &str) -> Option<Vec<Range<usize>>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().ok()?;
    let offsets = LineOffsets::new(sql);
    let mut out = Vec::new();
    let mut start = 0;
    let push = |from: usize, to: usize, out: &mut Vec<Range<usize>>| {
        if sql[from..to].trim().is_empty() {
            return;
        }
        out.push(from..to);
    };
    for t in &tokens {
        if t.token == Token::SemiColon {
            let at = offsets.byte(sql, t.span.start)?;
            push(start, at, &mut out);
            start = at + 1;
        }
    }
    push(start, sql.len(), &mut out);
    Some(out)
}

/// An argument expression as written, reduced to what a pgml call can evaluate.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgExpr {
    /// A literal.
    Const(Value),
    /// `$n` (1-based).
    Param(usize),
    /// `ARRAY[...]`.
    Array(Vec<ArgExpr>),
    /// `expr::type` or `CAST(expr AS type)`.
    Cast(Box<ArgExpr>, SqlType),
    /// Anything else (column references, subqueries, other functions), described in words.
    Unsupported(String),
}

impl ArgExpr {
    /// True when pgmld can evaluate the argument from the text and the bound parameters
    /// alone; false when it reads columns or calls functions (a per-row argument).
    pub fn is_constant(&self) -> bool {
        match self {
            ArgExpr::Const(_) | ArgExpr::Param(_) => true,
            ArgExpr::Array(items) => items.iter().all(ArgExpr::is_constant),
            ArgExpr::Cast(inner, _) => inner.is_constant(),
            ArgExpr::Unsupported(_) => false,
        }
    }
}

/// One argument of a call: its name when written `name => value`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawArg {
    /// The parameter name for named arguments, lower-cased unless quoted.
    pub name: Option<String>,
    /// The value expression.
    pub expr: ArgExpr,
    /// Bytes of the value expression (after `name =>`) in the original text; `None` when
    /// the argument list could not be matched to its tokens (exotic syntax).
    pub range: Option<Range<usize>>,
}

/// Where the call sits, which decides how its result is spliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Inside an expression; `bare_select_item` when it is a whole unaliased SELECT item,
    /// whose column Postgres would name after the function.
    Expr {
        /// The call is a whole `SELECT` list item without alias.
        bare_select_item: bool,
        /// The call names an unaliased SELECT item through parentheses, casts or subscripts
        /// (`pgml.f()::text` is column `f`), so its replacement must carry that name.
        names_item: bool,
    },
    /// A `FROM` item (`SELECT * FROM pgml.f(...)`).
    TableFactor {
        /// The client wrote an alias after the call.
        has_alias: bool,
    },
}

/// A `pgml.<name>(...)` call found in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSite {
    /// Function name, lower-cased, without schema.
    pub name: String,
    /// Bytes of `pgml.name(...)` in the original text.
    pub range: Range<usize>,
    /// Arguments in written order.
    pub args: Vec<RawArg>,
    /// Syntactic position.
    pub position: Position,
}

/// Parses `sql` and returns its pgml calls in text order. `None` when the text does not
/// parse or calls no pgml function: such statements go upstream untouched.
pub fn find_calls(sql: &str) -> Option<Vec<CallSite>> {
    let calls = Parsed::new(sql)?.calls()?;
    // A pgml call nested in another's arguments is reported through the outer call's
    // Unsupported argument; splicing both would overlap.
    let mut kept: Vec<CallSite> = Vec::new();
    for c in calls {
        if kept.last().is_some_and(|k| c.range.start < k.range.end) {
            continue;
        }
        kept.push(c);
    }
    Some(kept)
}

/// Like [`find_calls`], but keeps calls nested in another call's arguments (ordered by
/// start, so an outer call comes before the calls inside it).
pub fn find_all_calls(sql: &str) -> Option<Vec<CallSite>> {
    Parsed::new(sql)?.calls()
}

/// A statement parsed once, with the tokens and line offsets that map AST locations back
/// to bytes of the original text. It owns the text, so a [`crate::Plan`] can keep it and
/// find per-row blocks later without parsing again.
pub(crate) struct Parsed {
    /// The client's text.
    pub sql: String,
    /// sqlparser's statements.
    pub statements: Vec<Statement>,
    /// Every token, whitespace and comments included, with locations.
    pub tokens: Vec<TokenWithSpan>,
    /// Location to byte conversion.
    pub offsets: LineOffsets,
}

impl Parsed {
    /// `None` unless `sql` mentions pgml and parses.
    pub fn new(sql: &str) -> Option<Self> {
        if !mentions_pgml(sql) {
            return None;
        }
        let dialect = PostgreSqlDialect {};
        let statements = Parser::parse_sql(&dialect, sql).ok()?;
        let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().ok()?;
        Some(Parsed { sql: sql.to_string(), statements, tokens, offsets: LineOffsets::new(sql) })
    }

    /// Byte offset of a location.
    pub fn byte(&self, loc: Location) -> Option<usize> {
        self.offsets.byte(&self.sql, loc)
    }

    /// Every pgml call, nested ones included, ordered by start; `None` when there is none
    /// or one cannot be located in the text.
    pub fn calls(&self) -> Option<Vec<CallSite>> {
        let mut finder =
            Finder { found: Vec::new(), bare_items: HashSet::new(), naming_items: HashSet::new() };
        for st in &self.statements {
            let _ = st.visit(&mut finder);
        }
        let mut calls = Vec::new();
        for f in finder.found {
            let start = self.byte(f.start)?;
            let (end, arg_ranges) = call_extent(&self.tokens, f.start, &self.offsets, &self.sql)?;
            let position = match f.kind {
                Kind::Expr => Position::Expr {
                    bare_select_item: finder.bare_items.contains(&loc_key(f.start)),
                    names_item: finder.naming_items.contains(&loc_key(f.start)),
                },
                Kind::Table { has_alias } => Position::TableFactor { has_alias },
            };
            let mut args = f.args;
            if arg_ranges.len() == args.len() {
                for (a, r) in args.iter_mut().zip(arg_ranges) {
                    a.range = r;
                }
            }
            calls.push(CallSite { name: f.name, range: start..end, args, position });
        }
        calls.sort_by_key(|c| c.range.start);
        if calls.is_empty() {
            None
        } else {
            Some(calls)
        }
    }
}

enum Kind {
    Expr,
    Table { has_alias: bool },
}

struct Found {
    name: String,
    start: Location,
    args: Vec<RawArg>,
    kind: Kind,
}

struct Finder {
    found: Vec<Found>,
    bare_items: HashSet<(u64, u64)>,
    naming_items: HashSet<(u64, u64)>,
}

fn loc_key(l: Location) -> (u64, u64) {
    (l.line, l.column)
}

/// `Some((name, start))` when `name` is `pgml.<fn>`.
pub(crate) fn pgml_name(name: &ObjectName) -> Option<(String, Location)> {
    let parts: Vec<_> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let [schema, func] = parts.as_slice() else { return None };
    let schema_is_pgml = match schema.quote_style {
        None => schema.value.eq_ignore_ascii_case("pgml"),
        Some(_) => schema.value == "pgml",
    };
    if !schema_is_pgml {
        return None;
    }
    let fname = match func.quote_style {
        None => func.value.to_ascii_lowercase(),
        Some(_) => func.value.clone(),
    };
    Some((fname, schema.span.start))
}

impl Visitor for Finder {
    type Break = ();

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        for item in &select.projection {
            let SelectItem::UnnamedExpr(e) = item else { continue };
            match (e, naming_call(e)) {
                (Expr::Function(_), Some(start)) => self.bare_items.insert(loc_key(start)),
                (_, Some(start)) => self.naming_items.insert(loc_key(start)),
                _ => false,
            };
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            if let Some((name, start)) = pgml_name(&f.name) {
                let args = match &f.args {
                    FunctionArguments::List(list) => list.args.iter().map(raw_arg).collect(),
                    FunctionArguments::None => vec![],
                    FunctionArguments::Subquery(_) => {
                        vec![RawArg {
                            name: None,
                            expr: ArgExpr::Unsupported("a subquery".into()),
                            range: None,
                        }]
                    }
                };
                self.found.push(Found { name, start, args, kind: Kind::Expr });
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        let (name, alias, args) = match tf {
            TableFactor::Table { name, alias, args: Some(args), .. } => (name, alias, &args.args),
            // `LATERAL pgml.f(...)`
            TableFactor::Function { name, alias, args, .. } => (name, alias, args),
            _ => return ControlFlow::Continue(()),
        };
        if let Some((fname, start)) = pgml_name(name) {
            let args = args.iter().map(raw_arg).collect();
            self.found.push(Found {
                name: fname,
                start,
                args,
                kind: Kind::Table { has_alias: alias.is_some() },
            });
        }
        ControlFlow::Continue(())
    }
}

/// The pgml call Postgres would name an unaliased item `e` after (FigureColname looks
/// through parentheses, casts, COLLATE and subscripts).
fn naming_call(e: &Expr) -> Option<Location> {
    match e {
        Expr::Function(f) => pgml_name(&f.name).map(|(_, start)| start),
        Expr::Nested(inner)
        | Expr::Cast { expr: inner, .. }
        | Expr::Collate { expr: inner, .. } => naming_call(inner),
        Expr::CompoundFieldAccess { root, access_chain }
            if !access_chain.iter().any(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_)))) =>
        {
            naming_call(root)
        }
        _ => None,
    }
}

fn raw_arg(arg: &FunctionArg) -> RawArg {
    let (name, value) = match arg {
        FunctionArg::Unnamed(v) => (None, v),
        FunctionArg::Named { name, arg, .. } => (Some(ident_name(name)), arg),
        FunctionArg::ExprNamed { name, arg, .. } => match name {
            Expr::Identifier(i) => (Some(ident_name(i)), arg),
            other => {
                return RawArg {
                    name: None,
                    expr: ArgExpr::Unsupported(format!("argument name {other}")),
                    range: None,
                }
            }
        },
    };
    let expr = match value {
        FunctionArgExpr::Expr(e) => arg_expr(e),
        other => ArgExpr::Unsupported(other.to_string()),
    };
    RawArg { name, expr, range: None }
}

/// An identifier as Postgres folds it: lower-case unless quoted.
pub(crate) fn ident_name(i: &sqlparser::ast::Ident) -> String {
    match i.quote_style {
        None => i.value.to_ascii_lowercase(),
        Some(_) => i.value.clone(),
    }
}

/// Reduces an argument expression to the constant forms a pgml call accepts.
fn arg_expr(e: &Expr) -> ArgExpr {
    match e {
        Expr::Value(v) => match &v.value {
            AstValue::SingleQuotedString(s)
            | AstValue::EscapedStringLiteral(s)
            | AstValue::UnicodeStringLiteral(s) => ArgExpr::Const(Value::Text(s.clone())),
            AstValue::DollarQuotedString(d) => ArgExpr::Const(Value::Text(d.value.clone())),
            AstValue::Number(n, _) => number(n),
            AstValue::Boolean(b) => ArgExpr::Const(Value::Bool(*b)),
            AstValue::Null => ArgExpr::Const(Value::Null),
            AstValue::Placeholder(p) => {
                match p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n > 0 => ArgExpr::Param(n),
                    _ => ArgExpr::Unsupported(format!("placeholder {p}")),
                }
            }
            other => ArgExpr::Unsupported(other.to_string()),
        },
        Expr::Nested(inner) => arg_expr(inner),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match arg_expr(expr) {
            ArgExpr::Const(Value::Int(i)) => ArgExpr::Const(Value::Int(-i)),
            ArgExpr::Const(Value::Float(f)) => ArgExpr::Const(Value::Float(-f)),
            _ => ArgExpr::Unsupported(e.to_string()),
        },
        Expr::Cast { kind: CastKind::DoubleColon | CastKind::Cast, expr, data_type, .. } => {
            match SqlType::from_sql_name(&data_type.to_string()) {
                Some(t) => ArgExpr::Cast(Box::new(arg_expr(expr)), t),
                None => ArgExpr::Unsupported(format!("a cast to {data_type}")),
            }
        }
        Expr::Array(a) => ArgExpr::Array(a.elem.iter().map(arg_expr).collect()),
        other => ArgExpr::Unsupported(other.to_string()),
    }
}

fn number(n: &str) -> ArgExpr {
    if let Ok(i) = n.parse::<i64>() {
        ArgExpr::Const(Value::Int(i))
    } else if let Ok(f) = n.parse::<f64>() {
        ArgExpr::Const(Value::Float(f))
    } else {
        ArgExpr::Unsupported(n.to_string())
    }
}

/// Converts sqlparser locations (1-based line, 1-based column in characters) to bytes.
pub(crate) struct LineOffsets {
    starts: Vec<usize>,
}

impl LineOffsets {
    /// Indexes the line starts of `sql`.
    pub(crate) fn new(sql: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineOffsets { starts }
    }

    /// Byte offset of `loc` in `sql` (the text this was built from).
    pub(crate) fn byte(&self, sql: &str, loc: Location) -> Option<usize> {
        let line_start = *self.starts.get(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let rest = sql.get(line_start..)?;
        match rest.char_indices().nth(col) {
            Some((i, _)) => Some(line_start + i),
            None if rest.chars().count() == col => Some(sql.len()),
            None => None,
        }
    }
}

/// For the call starting at `start`: the byte just past the `)` closing its argument list,
/// and the bytes of each argument's value expression (after `name =>` / `name :=`), split
/// at the list's top-level commas.
fn call_extent(
    tokens: &[TokenWithSpan],
    start: Location,
    offsets: &LineOffsets,
    sql: &str,
) -> Option<(usize, Vec<Option<Range<usize>>>)> {
    let first = tokens.iter().position(|t| t.span.start == start)?;
    let open = first + tokens[first..].iter().position(|t| t.token == Token::LParen)?;
    let byte = |i: usize| offsets.byte(sql, tokens[i].span.start);
    let mut depth = 0usize;
    let mut args = Vec::new();
    let mut seg_start = open + 1;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RBracket => depth = depth.saturating_sub(1),
            Token::Comma if depth == 1 => {
                args.push(arg_range(tokens, seg_start..i, &byte));
                seg_start = i + 1;
            }
            Token::RParen => {
                // Unbalanced brackets cannot come from text that parsed; refuse, never wrap.
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    let segment = arg_range(tokens, seg_start..i, &byte);
                    if segment.is_some() || !args.is_empty() {
                        args.push(segment);
                    }
                    return Some((byte(i)? + 1, args));
                }
            }
            _ => {}
        }
    }
    None
}

/// Bytes of one argument's value: the segment's tokens without surrounding whitespace and
/// without a leading `name =>` / `name :=`. `None` for an empty segment.
fn arg_range(
    tokens: &[TokenWithSpan],
    segment: Range<usize>,
    byte: &impl Fn(usize) -> Option<usize>,
) -> Option<Range<usize>> {
    let solid: Vec<usize> =
        segment.filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_))).collect();
    let mut from = 0;
    if solid.len() > 2
        && matches!(tokens[solid[0]].token, Token::Word(_))
        && matches!(tokens[solid[1]].token, Token::RArrow | Token::Assignment)
    {
        from = 2;
    }
    let (&a, &b) = (solid.get(from)?, solid.last()?);
    // The last token ends where the next one (whitespace included) starts.
    let end = match tokens.get(b + 1) {
        Some(_) => byte(b + 1)?,
        None => return None,
    };
    Some(byte(a)?..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(sql: &str) -> Vec<CallSite> {
        find_calls(sql).unwrap_or_default()
    }

    #[test]
    fn the_byte_scan_finds_pgml_in_any_case_anywhere() {
        for yes in ["pgml", "SELECT PGML.transform()", "x pGmL", "ppgml", "pgbench pgml", "Ppgml"] {
            assert!(mentions_pgml_bytes(yes.as_bytes()), "{yes}");
        }
        for no in ["", "p", "pgm", "SELECT aid FROM pgbench_accounts", "pg ml", "pgmX pgm"] {
            assert!(!mentions_pgml_bytes(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn plain_statements_are_not_ours() {
        assert!(find_calls("SELECT 1").is_none());
        assert!(find_calls("SELECT * FROM pgml.logs WHERE model_id = 3").is_none());
        assert!(
            find_calls("CREATE VIEW pgml.v AS SELECT * FROM pgml.imdb ORDER BY RANDOM()").is_none()
        );
        assert!(find_calls("DO $$ BEGIN PERFORM 1; END $$").is_none());
        assert!(find_calls("SELEC pgml.version(").is_none());
    }

    #[test]
    fn ranges_cover_the_whole_call_in_multibyte_text() {
        let sql = "SELECT 'é', PGML.Version( )\n  , pgml.x( 1, (2) ) AS y";
        let c = calls(sql);
        assert_eq!(c.len(), 2);
        assert_eq!(&sql[c[0].range.clone()], "PGML.Version( )");
        assert_eq!(c[0].name, "version");
        assert_eq!(&sql[c[1].range.clone()], "pgml.x( 1, (2) )");
        assert_eq!(c[0].position, Position::Expr { bare_select_item: true, names_item: false });
        assert_eq!(c[1].position, Position::Expr { bare_select_item: false, names_item: false });
        let c = calls("SELECT (pgml.a())::text, pgml.b()->'x', (pgml.c())[1], pgml.d()::text AS d");
        let names: Vec<bool> = c
            .iter()
            .map(|c| matches!(c.position, Position::Expr { names_item: true, .. }))
            .collect();
        assert_eq!(names, vec![true, false, true, false]);
    }

    #[test]
    fn named_params_casts_and_arrays() {
        let sql = "SELECT pgml.transform(task => $1::jsonb, args := '{}', inputs => ARRAY['a', $2], \"Limit\" => -3)";
        let c = calls(sql);
        let a = &c[0].args;
        assert_eq!(a[0].name.as_deref(), Some("task"));
        assert_eq!(a[0].expr, ArgExpr::Cast(Box::new(ArgExpr::Param(1)), SqlType::Jsonb));
        assert_eq!(a[1].name.as_deref(), Some("args"));
        assert_eq!(
            a[2].expr,
            ArgExpr::Array(vec![ArgExpr::Const(Value::Text("a".into())), ArgExpr::Param(2)])
        );
        assert_eq!(a[3].name.as_deref(), Some("Limit"));
        assert_eq!(a[3].expr, ArgExpr::Const(Value::Int(-3)));
        let texts: Vec<&str> = a.iter().map(|a| &sql[a.range.clone().unwrap()]).collect();
        assert_eq!(texts, vec!["$1::jsonb", "'{}'", "ARRAY['a', $2]", "-3"]);
    }

    #[test]
    fn argument_ranges_skip_names_comments_and_nesting() {
        let sql = "SELECT pgml.transform( /* t */ task=>'{\"a\": [1, 2]}'::jsonb ,\n  inputs => ARRAY[lower(t.\"Text\"), 'é,x'] -- c\n ) FROM t";
        let c = calls(sql);
        let texts: Vec<&str> = c[0].args.iter().map(|a| &sql[a.range.clone().unwrap()]).collect();
        assert_eq!(texts, vec!["'{\"a\": [1, 2]}'::jsonb", "ARRAY[lower(t.\"Text\"), 'é,x']"]);
        assert!(!c[0].args[1].expr.is_constant());
        assert!(c[0].args[0].expr.is_constant());
        let c = calls("SELECT pgml.version( )");
        assert!(c[0].args.is_empty());
    }

    #[test]
    fn table_functions_and_column_arguments() {
        let sql = "SELECT * FROM pgml.load_dataset('imdb', \"limit\" => 10) AS d";
        let c = calls(sql);
        assert_eq!(&sql[c[0].range.clone()], "pgml.load_dataset('imdb', \"limit\" => 10)");
        assert_eq!(c[0].position, Position::TableFactor { has_alias: true });
        let sql = "SELECT * FROM t, LATERAL pgml.load_dataset(t.name)";
        let c = calls(sql);
        assert_eq!(&sql[c[0].range.clone()], "pgml.load_dataset(t.name)");
        assert_eq!(c[0].position, Position::TableFactor { has_alias: false });
        let c = calls("SELECT pgml.transform('x', inputs => ARRAY[text]) FROM t");
        assert!(
            matches!(&c[0].args[1].expr, ArgExpr::Array(v) if matches!(v[0], ArgExpr::Unsupported(_)))
        );
    }

    #[test]
    fn statements_split_at_top_level_semicolons() {
        let sql = "SELECT ';'; DO $$ BEGIN PERFORM 1; END $$ ;-- x;\n SELECT pgml.version();  ";
        let parts: Vec<&str> =
            split_statements(sql).unwrap().into_iter().map(|r| &sql[r]).collect();
        assert_eq!(
            parts,
            vec!["SELECT ';'", " DO $$ BEGIN PERFORM 1; END $$ ", "-- x;\n SELECT pgml.version()"]
        );
    }

    #[test]
    fn nested_pgml_calls_keep_the_outer_one() {
        let c = calls("SELECT pgml.a(pgml.b())");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "a");
    }
}
