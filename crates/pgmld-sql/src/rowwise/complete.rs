//! Decoding the calls' arguments from source rows, and writing the block's replacement:
//! a SELECT over a VALUES list of the kept columns and the call results.

use super::{Piece, RowBlock, Slot, SourceColumn, SourceRow};
use crate::error::{codes, SqlError};
use crate::function::Args;
use crate::params::Param;
use crate::plan::eval_arg;
use crate::value::{dollar_quote, Value};

/// Type name for builtin type OIDs, usable in `'lit'::name` (no type modifier); `None`
/// for other types (the proxy then asks Postgres' `format_type`).
pub fn builtin_type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "boolean",
        17 => "bytea",
        18 => "\"char\"",
        19 => "name",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 | 705 => "text",
        26 => "oid",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1042 => "bpchar",
        1043 => "character varying",
        1082 => "date",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1186 => "interval",
        1266 => "time with time zone",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        1000 => "boolean[]",
        1001 => "bytea[]",
        1002 => "\"char\"[]",
        1003 => "name[]",
        1016 => "bigint[]",
        1005 => "smallint[]",
        1007 => "integer[]",
        1009 => "text[]",
        1028 => "oid[]",
        199 => "json[]",
        1021 => "real[]",
        1022 => "double precision[]",
        1014 => "bpchar[]",
        1015 => "character varying[]",
        1182 => "date[]",
        1183 => "time without time zone[]",
        1115 => "timestamp without time zone[]",
        1185 => "timestamp with time zone[]",
        1187 => "interval[]",
        1270 => "time with time zone[]",
        1231 => "numeric[]",
        2951 => "uuid[]",
        3807 => "jsonb[]",
        _ => return None,
    })
}

/// `RECORD`: anonymous row types have no text input.
const RECORD_OID: u32 = 2249;

fn internal(message: String) -> SqlError {
    SqlError::new(codes::INTERNAL_ERROR, message)
}

/// `'text'::type`, dollar-quoted when the text holds a quote or a backslash (so neither
/// `standard_conforming_strings` nor the text can change its meaning).
fn literal(text: Option<&str>, type_name: &str) -> String {
    match text {
        None => format!("NULL::{type_name}"),
        Some(t) if t.contains(['\'', '\\']) => format!("{}::{type_name}", dollar_quote(t)),
        Some(t) => format!("'{t}'::{type_name}"),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A call result as text of the call's declared type.
fn result_text(call: &super::RowCall, v: &Value, row: usize) -> Result<Option<String>, SqlError> {
    let crate::function::Returns::Scalar(ty) = call.function.signature().returns else {
        return Err(internal(format!("pgml.{} returns a table", call.name())));
    };
    let v = v.clone().coerce(ty).map_err(|e| SqlError {
        message: format!("result of pgml.{} for row {}: {}", call.name(), row + 1, e.message),
        ..e
    })?;
    Ok(v.to_pg_text())
}

impl RowBlock {
    /// Index of source column `pgmld_arg_<n>` for every argument column (`[n - 1]`).
    fn arg_columns(&self, columns: &[SourceColumn]) -> Result<Vec<usize>, SqlError> {
        (1..=self.arg_count)
            .map(|n| {
                let name = format!("pgmld_arg_{n}");
                let mut found =
                    columns.iter().enumerate().filter(|(_, c)| c.name == name).map(|(i, _)| i);
                match (found.next(), found.next()) {
                    (Some(i), None) => Ok(i),
                    _ => Err(internal(format!(
                        "the source query of a per-row pgml call has no single column {name}"
                    ))),
                }
            })
            .collect()
    }

    fn check_rows(&self, columns: &[SourceColumn], rows: &[SourceRow]) -> Result<(), SqlError> {
        match rows.iter().position(|r| r.len() != columns.len()) {
            Some(i) => Err(internal(format!(
                "source row {} has {} values for {} columns",
                i + 1,
                rows[i].len(),
                columns.len()
            ))),
            None => Ok(()),
        }
    }

    /// Arguments of call `i` for every source row: constant arguments evaluated from the
    /// text and `params`, column arguments decoded from each row's text value; all coerced
    /// to the declared types, defaults filled. Errors name the argument and the 1-based row.
    pub fn call_args(
        &self,
        i: usize,
        columns: &[SourceColumn],
        rows: &[SourceRow],
        params: &[Param],
    ) -> Result<Vec<Args>, SqlError> {
        let call = self.calls.get(i).ok_or_else(|| internal(format!("no per-row call {i}")))?;
        self.check_rows(columns, rows)?;
        let arg_cols = self.arg_columns(columns)?;
        let sig = call.function.signature();
        // Constant arguments once; column arguments per row.
        let mut fixed = Args::new();
        let mut from_rows = Vec::new();
        for (spec, slot) in sig.params.iter().zip(&call.slots) {
            match slot {
                Slot::Default => {
                    fixed.insert(spec.name, eval_arg(sig.name, spec, None, params)?);
                }
                Slot::Const(e) => {
                    fixed.insert(spec.name, eval_arg(sig.name, spec, Some(e), params)?);
                }
                Slot::Column(n) => {
                    let col = arg_cols
                        .get(n - 1)
                        .copied()
                        .ok_or_else(|| internal(format!("no argument column {n}")))?;
                    from_rows.push((spec, col));
                }
            }
        }
        rows.iter()
            .enumerate()
            .map(|(r, row)| {
                let mut args = fixed.clone();
                for &(spec, col) in &from_rows {
                    let v = match row.get(col).and_then(|v| v.as_deref()) {
                        None => Value::Null,
                        Some(text) => {
                            Value::Text(text.to_string()).coerce(spec.ty).map_err(|e| SqlError {
                                message: format!(
                                    "argument \"{}\" of pgml.{}, row {}: {}",
                                    spec.name,
                                    sig.name,
                                    r + 1,
                                    e.message
                                ),
                                ..e
                            })?
                        }
                    };
                    args.insert(spec.name, v);
                }
                Ok(args)
            })
            .collect()
    }

    /// The client's statement with the block replaced by a SELECT over a VALUES list of the
    /// kept columns and the call results (`results[i][r]`: call `i` on row `r`), keeping
    /// the block's output column names, types and row order.
    pub fn complete(
        &self,
        columns: &[SourceColumn],
        rows: &[SourceRow],
        results: &[Vec<Value>],
    ) -> Result<String, SqlError> {
        self.check_rows(columns, rows)?;
        if results.len() != self.calls.len() || results.iter().any(|r| r.len() != rows.len()) {
            return Err(internal(format!(
                "per-row pgml calls produced results for {} calls, expected {} calls of {} rows",
                results.len(),
                self.calls.len(),
                rows.len()
            )));
        }
        let arg_cols = self.arg_columns(columns)?;
        let mut select_list = Vec::new();
        let mut kept = Vec::new(); // (source column, type name)
        for (i, c) in columns.iter().enumerate() {
            if let Some(item) = self.items.iter().find(|it| arg_cols[it.first_arg - 1] == i) {
                let expr: String = item
                    .template
                    .iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.clone(),
                        Piece::Result(k) => format!("pgmld_rows.r{}", k + 1),
                    })
                    .collect();
                select_list.push(format!("{expr} AS {}", quote_ident(&item.name)));
            } else if !arg_cols.contains(&i) {
                let type_name = match (c.type_name.trim(), builtin_type_name(c.type_oid)) {
                    _ if c.type_oid == RECORD_OID => {
                        return Err(SqlError::new(
                            codes::FEATURE_NOT_SUPPORTED,
                            format!("column \"{}\" next to a per-row pgml call has an anonymous record type", c.name),
                        )
                        .with_hint("Select the record's fields as separate columns, or cast it to a named composite type."))
                    }
                    ("", Some(b)) => b,
                    ("", None) => return Err(internal(format!("no type name for column \"{}\"", c.name))),
                    (t, _) => t,
                };
                kept.push((i, type_name));
                select_list.push(format!("pgmld_rows.c{} AS {}", kept.len(), quote_ident(&c.name)));
            }
        }
        let return_types: Vec<&str> = self
            .calls
            .iter()
            .map(|c| match &c.function.signature().returns {
                crate::function::Returns::Scalar(t) => Ok(t.sql_name()),
                crate::function::Returns::Table(_) | crate::function::Returns::SetOf(_) => {
                    Err(internal(format!("pgml.{} returns a set", c.name())))
                }
            })
            .collect::<Result<_, _>>()?;
        let mut names = vec!["pgmld_n".to_string()];
        names.extend((1..=kept.len()).map(|j| format!("c{j}")));
        names.extend((1..=self.calls.len()).map(|k| format!("r{k}")));

        let row_text = |n: &str, values: Vec<String>| format!("({n}, {})", values.join(", "));
        let (values, filter) = if rows.is_empty() {
            // One typed NULL row, filtered out: same columns and types, no rows.
            let nulls = kept
                .iter()
                .map(|(_, t)| literal(None, t))
                .chain(return_types.iter().map(|t| literal(None, t)));
            (row_text("NULL::integer", nulls.collect()), " WHERE false")
        } else {
            let mut out = Vec::with_capacity(rows.len());
            for (r, row) in rows.iter().enumerate() {
                let mut vals: Vec<String> =
                    kept.iter().map(|&(i, t)| literal(row[i].as_deref(), t)).collect();
                for (k, t) in return_types.iter().enumerate() {
                    vals.push(literal(
                        result_text(&self.calls[k], &results[k][r], r)?.as_deref(),
                        t,
                    ));
                }
                out.push(row_text(&(r + 1).to_string(), vals));
            }
            (out.join(", "), "")
        };
        let order = if self.whole_query { " ORDER BY pgmld_rows.pgmld_n" } else { "" };
        let replacement = format!(
            "SELECT {} FROM (VALUES {values}) AS pgmld_rows({}){filter}{order}",
            select_list.join(", "),
            names.join(", ")
        );
        let mut out = String::with_capacity(self.sql.len() + replacement.len());
        out.push_str(&self.sql[..self.range.start]);
        out.push_str(&replacement);
        out.push_str(&self.sql[self.range.end..]);
        Ok(out)
    }
}
