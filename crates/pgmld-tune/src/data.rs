//! Reading the training relation through pgmld's own connection, and the label mapping.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Client;

use crate::error::{Result, TuneError};
use crate::options::{DatasetArgs, Task};

/// One row of the relation: its inputs and class as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The text (first text of a pair).
    pub text: String,
    /// The second text, for pairs.
    pub text_pair: Option<String>,
    /// The class value as Postgres prints it.
    pub class: String,
}

/// The relation's rows in its own order, with what is known of its columns.
#[derive(Debug, Clone)]
pub struct Relation {
    /// The relation as Postgres names it (`pgml.imdb_train_view`, quoted where needed).
    pub name: String,
    /// Every column and its type, in order.
    pub columns: Vec<(String, String)>,
    /// The rows.
    pub rows: Vec<Row>,
    /// Whether the class column is an integer type (labels then sort numerically).
    pub integer_classes: bool,
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The input columns a task reads, in order.
pub fn input_columns(task: Task, args: &DatasetArgs) -> Vec<&str> {
    match task {
        Task::TextPairClassification => vec![&args.text1_column, &args.text2_column],
        _ => vec![&args.text_column],
    }
}

/// Finds `relation` (as Postgres would resolve it) and lists its columns with their types,
/// in order.
pub async fn lookup(client: &Client, relation: &str) -> Result<(String, Vec<(String, String)>)> {
    let found = client.query_one("SELECT to_regclass($1)::text", &[&relation]).await.map_err(
        |e| match e.code().map(|c| c.code()) {
            // to_regclass raises on syntax it cannot parse, such as unbalanced quotes.
            Some("42601") | Some("42602") | Some("3F000") => {
                TuneError::NoRelation(format!("relation \"{relation}\" does not exist"))
            }
            _ => TuneError::pg(format!("looking up relation {relation}"), e),
        },
    )?;
    let name: Option<String> = found.get(0);
    let name = name
        .ok_or_else(|| TuneError::NoRelation(format!("relation \"{relation}\" does not exist")))?;
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&name],
        )
        .await
        .map_err(|e| TuneError::pg(format!("reading the columns of {name}"), e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok((name, columns))
}

/// The 42703 of a column `relation` lacks: the hint lists its columns and the
/// `dataset_args` keys that name columns (`keys`).
pub fn no_column(
    relation: &str,
    column: &str,
    columns: &[(String, String)],
    keys: &str,
) -> TuneError {
    let have: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    TuneError::NoColumn {
        message: format!("column \"{column}\" does not exist in relation {relation}"),
        hint: format!(
            "{relation} has columns: {}. Name the right ones in hyperparams.dataset_args ({keys}).",
            have.join(", ")
        ),
    }
}

/// Reads `relation` for `task`: checks it and its columns exist, then fetches every row.
/// NULL inputs or classes are errors naming the column and row.
pub async fn read(
    client: &Client,
    relation: &str,
    task: Task,
    args: &DatasetArgs,
) -> Result<Relation> {
    let (name, columns) = lookup(client, relation).await?;
    let mut wanted = input_columns(task, args);
    wanted.push(&args.class_column);
    for col in &wanted {
        if !columns.iter().any(|(c, _)| c == col) {
            return Err(no_column(
                &name,
                col,
                &columns,
                "text_column, class_column; text1_column, text2_column for pairs",
            ));
        }
    }
    let class_type = columns.iter().find(|(c, _)| *c == args.class_column).map(|(_, t)| t.as_str());
    let integer_classes = matches!(class_type, Some("smallint" | "integer" | "bigint"));
    let select: Vec<String> = wanted.iter().map(|c| format!("{}::text", quote_ident(c))).collect();
    let sql = format!("SELECT {} FROM {name}", select.join(", "));
    let rows = client
        .query(sql.as_str(), &[])
        .await
        .map_err(|e| TuneError::pg(format!("reading {name}"), e))?;
    let n_inputs = wanted.len() - 1;
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let mut vals = Vec::with_capacity(wanted.len());
        for (j, col) in wanted.iter().enumerate() {
            let v: Option<String> = r.get(j);
            match v {
                Some(v) => vals.push(v),
                None => {
                    return Err(TuneError::Null(format!(
                        "column \"{col}\" of {name} is NULL in row {} (in the relation's order); pgml.tune needs a value in every row",
                        i + 1
                    )))
                }
            }
        }
        let class = vals.pop().unwrap_or_default();
        let mut inputs = vals.into_iter();
        out.push(Row {
            text: inputs.next().unwrap_or_default(),
            text_pair: if n_inputs > 1 { inputs.next() } else { None },
            class,
        });
    }
    Ok(Relation { name, columns, rows: out, integer_classes })
}

/// The class names of the training rows, sorted (numerically for integer classes), so the
/// same data always gives the same ids.
pub fn label_names<'a>(classes: impl IntoIterator<Item = &'a str>, integer: bool) -> Vec<String> {
    let mut set: Vec<&str> = classes.into_iter().collect();
    set.sort_unstable();
    set.dedup();
    if integer {
        set.sort_by_key(|s| s.parse::<i64>().unwrap_or(i64::MAX));
    }
    set.into_iter().map(str::to_string).collect()
}

/// Class name → id.
pub fn label_ids(labels: &[String]) -> HashMap<&str, i64> {
    labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as i64)).collect()
}

/// Rows per class, for the snapshot's analysis.
pub fn class_counts<'a>(classes: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in classes {
        *m.entry(c.to_string()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_deterministically() {
        assert_eq!(
            label_names(["pos", "neg", "pos", "neutral"], false),
            vec!["neg", "neutral", "pos"]
        );
        assert_eq!(label_names(["10", "2", "-1", "2"], true), vec!["-1", "2", "10"]);
        let l = label_names(["b", "a"], false);
        assert_eq!(label_ids(&l)["b"], 1);
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(class_counts(["a", "b", "a"])["a"], 2);
    }
}
