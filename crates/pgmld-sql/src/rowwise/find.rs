//! One walk over the AST that records, for every pgml call, the query block and statement
//! around it, and for every block what the source query and the splice need.

use crate::analyze::{ident_name, pgml_name, Parsed};
use sqlparser::ast::{
    visit_relations, DataType, Distinct, Expr, Function, FunctionArguments, GroupByExpr,
    ObjectName, ObjectNamePart, Query, Select, SelectItem, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};
use sqlparser::tokenizer::Location;
use std::collections::HashSet;
use std::ops::ControlFlow;

/// A query (`[WITH ...] body [ORDER BY ...] [LIMIT ...]`).
pub(crate) struct QueryNode {
    /// Location of the body's `SELECT` when the body is a plain SELECT block.
    pub body_select: Option<Location>,
    /// The body is a VALUES list.
    pub body_values: bool,
    /// Its WITH clause.
    pub with: Option<WithNode>,
    /// Top-level ORDER BY expressions.
    pub order_by: Vec<Expr>,
    /// Unqualified relation names read anywhere inside it (CTE references).
    pub relations: HashSet<String>,
}

/// A WITH clause.
pub(crate) struct WithNode {
    /// `WITH RECURSIVE`.
    pub recursive: bool,
    /// The `WITH` keyword.
    pub with_token: Location,
    /// Its queries in written order.
    pub ctes: Vec<CteNode>,
}

/// One WITH query: `name [(cols)] AS [NOT MATERIALIZED] ( ... )`.
pub(crate) struct CteNode {
    /// The name as Postgres folds it.
    pub name: String,
    /// Start of the name.
    pub name_loc: Location,
    /// The closing parenthesis.
    pub close: Location,
    /// INSERT / UPDATE / DELETE / MERGE body: running it twice would change data twice.
    pub data_modifying: bool,
    /// Unqualified relation names its body reads.
    pub relations: HashSet<String>,
}

/// A SELECT block.
pub(crate) struct SelectNode {
    /// The parts of the block the checks read (not its FROM, which may be large).
    pub select: SelectParts,
    /// The query whose whole body this block is.
    pub whole: Option<usize>,
    /// Enclosing queries, outermost first (the `whole` one included).
    pub ancestors: Vec<usize>,
    /// Relation names read by the text that becomes the source query.
    pub relations: HashSet<String>,
}

/// What the checks read of a SELECT block.
pub(crate) struct SelectParts {
    /// The `SELECT` keyword.
    pub select_token: Location,
    /// DISTINCT or DISTINCT ON.
    pub distinct: bool,
    /// SELECT ... INTO.
    pub into: bool,
    /// The SELECT list.
    pub projection: Vec<SelectItem>,
    /// GROUP BY expressions (`GROUP BY ALL` counts as grouped, with none).
    pub group_by: Vec<Expr>,
    /// GROUP BY or HAVING present.
    pub grouped: bool,
}

/// The innermost construct around a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// A clause of this SELECT block.
    Select(usize),
    /// A clause of this query outside its SELECT blocks (ORDER BY, LIMIT, VALUES).
    Query(usize),
    /// Outside any query.
    Statement(StmtKind),
}

/// Statement kinds that decide messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StmtKind {
    Insert,
    Update,
    Delete,
    Merge,
    Other,
}

/// Where one pgml call sits.
pub(crate) struct CallNode {
    /// Start of `pgml.name`.
    pub start: Location,
    /// The innermost block, query or statement around it.
    pub place: Place,
    /// The outermost statement that stores or only plans its text (view, function, rule,
    /// PREPARE, EXPLAIN), whose calls pgmld cannot serve per row.
    pub frozen: Option<&'static str>,
    /// Inside another pgml call's arguments, in the same block.
    pub nested_in_call: bool,
}

/// What the walk found.
#[derive(Default)]
pub(crate) struct Collected {
    /// Every query, in visiting order (outer before inner).
    pub queries: Vec<QueryNode>,
    /// Every SELECT block, in visiting order.
    pub selects: Vec<SelectNode>,
    /// Every pgml call.
    pub calls: Vec<CallNode>,
}

enum Frame {
    Stmt(StmtKind, Option<&'static str>),
    Query(usize),
    Select(usize),
    Pgml,
}

/// Walks every statement of `p`.
pub(crate) fn collect(p: &Parsed) -> Collected {
    let mut c = Collector { out: Collected::default(), frames: Vec::new() };
    for st in &p.statements {
        let _ = st.visit(&mut c);
    }
    c.out
}

struct Collector {
    out: Collected,
    frames: Vec<Frame>,
}

/// Unqualified relation names read inside `v`.
pub(crate) fn relations<V: Visit>(v: &V) -> HashSet<String> {
    let mut out = HashSet::new();
    let _ = visit_relations(v, |name: &ObjectName| {
        if let [ObjectNamePart::Identifier(i)] = name.0.as_slice() {
            out.insert(ident_name(i));
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

impl Collector {
    fn record_call(&mut self, start: Location) {
        let frozen = self.frames.iter().find_map(|f| match f {
            Frame::Stmt(_, label) => *label,
            _ => None,
        });
        let mut nested_in_call = false;
        let mut place = Place::Statement(StmtKind::Other);
        for f in self.frames.iter().rev() {
            match f {
                Frame::Pgml => nested_in_call = true,
                Frame::Select(id) => {
                    place = Place::Select(*id);
                    break;
                }
                Frame::Query(id) => {
                    place = Place::Query(*id);
                    break;
                }
                Frame::Stmt(kind, _) => {
                    place = Place::Statement(*kind);
                    break;
                }
            }
        }
        self.out.calls.push(CallNode { start, place, frozen, nested_in_call });
    }
}

fn pgml_call(e: &Expr) -> Option<Location> {
    match e {
        Expr::Function(f) => pgml_name(&f.name).map(|(_, start)| start),
        _ => None,
    }
}

fn pgml_table(tf: &TableFactor) -> Option<Location> {
    match tf {
        TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } => {
            pgml_name(name).map(|(_, start)| start)
        }
        _ => None,
    }
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        let (kind, label) = match st {
            Statement::Insert(_) => (StmtKind::Insert, None),
            Statement::Update(_) => (StmtKind::Update, None),
            Statement::Delete(_) => (StmtKind::Delete, None),
            Statement::Merge(_) => (StmtKind::Merge, None),
            Statement::CreateView(v) if v.materialized => {
                (StmtKind::Other, Some("CREATE MATERIALIZED VIEW"))
            }
            Statement::CreateView(_) => (StmtKind::Other, Some("CREATE VIEW")),
            Statement::CreateFunction(_) => (StmtKind::Other, Some("CREATE FUNCTION")),
            Statement::CreateProcedure { .. } => (StmtKind::Other, Some("CREATE PROCEDURE")),
            Statement::CreateRule(_) => (StmtKind::Other, Some("CREATE RULE")),
            Statement::CreateTrigger(_) => (StmtKind::Other, Some("CREATE TRIGGER")),
            Statement::Prepare { .. } => (StmtKind::Other, Some("PREPARE")),
            Statement::Explain { .. } => (StmtKind::Other, Some("EXPLAIN")),
            _ => (StmtKind::Other, None),
        };
        self.frames.push(Frame::Stmt(kind, label));
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let body_select = match q.body.as_ref() {
            SetExpr::Select(s) => Some(s.select_token.0.span.start),
            _ => None,
        };
        let with = q.with.as_ref().map(|w| WithNode {
            recursive: w.recursive,
            with_token: w.with_token.0.span.start,
            ctes: w
                .cte_tables
                .iter()
                .map(|c| CteNode {
                    name: ident_name(&c.alias.name),
                    name_loc: c.alias.name.span.start,
                    close: c.closing_paren_token.0.span.start,
                    data_modifying: matches!(
                        c.query.body.as_ref(),
                        SetExpr::Insert(_)
                            | SetExpr::Update(_)
                            | SetExpr::Delete(_)
                            | SetExpr::Merge(_)
                    ),
                    relations: relations(&c.query),
                })
                .collect(),
        });
        let order_by = match q.order_by.as_ref().map(|o| &o.kind) {
            Some(sqlparser::ast::OrderByKind::Expressions(exprs)) => {
                exprs.iter().map(|e| e.expr.clone()).collect()
            }
            _ => Vec::new(),
        };
        let body_values = matches!(q.body.as_ref(), SetExpr::Values(_));
        self.out.queries.push(QueryNode {
            body_select,
            body_values,
            with,
            order_by,
            relations: relations(q),
        });
        self.frames.push(Frame::Query(self.out.queries.len() - 1));
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        let ancestors: Vec<usize> = self
            .frames
            .iter()
            .filter_map(|f| match f {
                Frame::Query(id) => Some(*id),
                _ => None,
            })
            .collect();
        let whole = match self.frames.last() {
            Some(Frame::Query(q))
                if self.out.queries[*q].body_select == Some(s.select_token.0.span.start) =>
            {
                Some(*q)
            }
            _ => None,
        };
        let relations = match whole {
            Some(q) => self.out.queries[q].relations.clone(),
            None => relations(s),
        };
        let (group_by, grouped) = match &s.group_by {
            GroupByExpr::All(_) => (Vec::new(), true),
            GroupByExpr::Expressions(e, _) => (e.clone(), !e.is_empty() || s.having.is_some()),
        };
        let select = SelectParts {
            select_token: s.select_token.0.span.start,
            distinct: matches!(s.distinct, Some(Distinct::Distinct | Distinct::On(_))),
            into: s.into.is_some(),
            projection: s.projection.clone(),
            group_by,
            grouped,
        };
        self.out.selects.push(SelectNode { select, whole, ancestors, relations });
        self.frames.push(Frame::Select(self.out.selects.len() - 1));
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, _: &Select) -> ControlFlow<()> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Some(start) = pgml_call(e) {
            self.record_call(start);
            self.frames.push(Frame::Pgml);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if pgml_call(e).is_some() {
            self.frames.pop();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let Some(start) = pgml_table(tf) {
            self.record_call(start);
            self.frames.push(Frame::Pgml);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if pgml_table(tf).is_some() {
            self.frames.pop();
        }
        ControlFlow::Continue(())
    }
}

/// Why a SELECT item holding a per-row call cannot be computed from the call's result
/// alone; `None` when it can (its other parts are constants, operators, casts, subscripts
/// and plain functions).
pub(crate) fn item_problem(e: &Expr) -> Option<String> {
    let mut v = ItemCheck { stack: Vec::new(), pgml_depth: 0, problem: None };
    let _ = e.visit(&mut v);
    v.problem
}

struct ItemCheck {
    /// Enclosing expressions that change how often or over what the call would run.
    stack: Vec<Option<&'static str>>,
    pgml_depth: usize,
    problem: Option<String>,
}

/// Aggregates of a stock Postgres, recognised by name (user-defined ones are not known).
const AGGREGATES: &[&str] = &[
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "every",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "max",
    "min",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
    "any_value",
];

fn function_name(f: &Function) -> String {
    match f.name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => ident_name(i),
        _ => f.name.to_string(),
    }
}

impl ItemCheck {
    fn flag(&mut self, why: String) {
        self.problem.get_or_insert(why);
    }
}

impl Visitor for ItemCheck {
    type Break = ();

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        if self.pgml_depth == 0 {
            self.flag("a subquery".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if pgml_call(e).is_some() {
            if self.pgml_depth == 0 {
                if let Some(around) = self.stack.iter().rev().flatten().next() {
                    self.flag(around.to_string());
                }
            }
            self.pgml_depth += 1;
            self.stack.push(None);
            return ControlFlow::Continue(());
        }
        let mut around = None;
        if self.pgml_depth == 0 {
            match e {
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                    self.flag(format!("column {e}"))
                }
                Expr::Function(f) if f.over.is_some() => {
                    self.flag(format!("window function {}", function_name(f)))
                }
                Expr::Function(f)
                    if f.filter.is_some()
                        || !f.within_group.is_empty()
                        || AGGREGATES.contains(&function_name(f).as_str())
                        || matches!(&f.args, FunctionArguments::List(l)
                            if l.duplicate_treatment.is_some() || !l.clauses.is_empty()) =>
                {
                    self.flag(format!("aggregate {}", function_name(f)))
                }
                Expr::Case { .. } => around = Some("a CASE expression"),
                _ => {}
            }
        }
        self.stack.push(around);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        self.stack.pop();
        if pgml_call(e).is_some() {
            self.pgml_depth -= 1;
        }
        ControlFlow::Continue(())
    }
}

/// The column name Postgres gives an unaliased SELECT item (FigureColname): a function's
/// name, a column's name, a cast's inner name (else its type), `?column?` otherwise.
pub(crate) fn figure_colname(e: &Expr) -> String {
    figure(e).map_or_else(|| "?column?".to_string(), |(name, _)| name)
}

/// Name and strength (2: from a name, 1: from a type or keyword).
fn figure(e: &Expr) -> Option<(String, u8)> {
    match e {
        Expr::Identifier(i) => Some((ident_name(i), 2)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| (ident_name(i), 2)),
        Expr::Function(f) => Some((function_name(f), 2)),
        Expr::Nested(inner) => figure(inner),
        Expr::Cast { expr, data_type, .. } => match figure(expr) {
            Some((n, 2)) => Some((n, 2)),
            _ => Some((type_colname(data_type), 1)),
        },
        Expr::CompoundFieldAccess { root, access_chain } => {
            let field = access_chain.iter().rev().find_map(|a| match a {
                sqlparser::ast::AccessExpr::Dot(Expr::Identifier(i)) => Some(ident_name(i)),
                _ => None,
            });
            match field {
                Some(f) => Some((f, 2)),
                None => figure(root),
            }
        }
        Expr::Case { .. } => Some(("case".into(), 1)),
        Expr::Array(_) => Some(("array".into(), 2)),
        _ => None,
    }
}

/// The name Postgres' parser gives a type in a cast (`integer` is `int4`).
fn type_colname(t: &DataType) -> String {
    let written = t.to_string().to_ascii_lowercase();
    let base = written.split('(').next().unwrap_or("").trim_end_matches("[]").trim();
    let name = match base {
        "int" | "integer" | "int4" => "int4",
        "smallint" | "int2" => "int2",
        "bigint" | "int8" => "int8",
        "real" | "float4" => "float4",
        "float" | "double precision" | "float8" => "float8",
        "boolean" | "bool" => "bool",
        "character varying" | "varchar" => "varchar",
        "char" | "character" | "bpchar" => "bpchar",
        "decimal" | "numeric" => "numeric",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "time with time zone" | "timetz" => "timetz",
        "time" | "time without time zone" => "time",
        "bit varying" | "varbit" => "varbit",
        other => other.rsplit('.').next().unwrap_or(other).trim_matches('"'),
    };
    name.to_string()
}
