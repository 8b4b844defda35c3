//! The training relation of a conversation tune: one exchange per row, a system prompt (optional
//! column), the user's message and the assistant's reply.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::data::{lookup, no_column, quote_ident};
use crate::error::{Result, TuneError};
use crate::options::DatasetArgs;

/// One exchange: what the model reads (system, user) and learns to answer (assistant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRow {
    /// The system prompt; `None` when the relation has no system column or the row's is NULL.
    pub system: Option<String>,
    /// The user's message.
    pub user: String,
    /// The reply the model is trained to give.
    pub assistant: String,
}

/// The relation's exchanges in its own order, with what is known of its columns.
#[derive(Debug, Clone)]
pub struct Conversations {
    /// The relation as Postgres names it.
    pub name: String,
    /// Every column and its type, in order (recorded in the snapshot).
    pub columns: Vec<(String, String)>,
    /// The system column read, when the relation has it.
    pub system_column: Option<String>,
    /// The rows.
    pub rows: Vec<ChatRow>,
}

/// The `dataset_args` keys of the conversation task, for hints.
const KEYS_HINT: &str = "system_column, user_column, assistant_column";

/// Which columns to read: the system column only when the relation has it, unless the
/// call named it (then a missing one is an error, as any other named column).
fn pick_columns<'a>(
    name: &str,
    columns: &[(String, String)],
    args: &'a DatasetArgs,
) -> Result<(Option<&'a str>, &'a str, &'a str)> {
    let has = |c: &str| columns.iter().any(|(n, _)| n == c);
    let system = match has(&args.system_column) {
        true => Some(args.system_column.as_str()),
        false if args.is_given("system_column") => {
            return Err(no_column(name, &args.system_column, columns, KEYS_HINT))
        }
        false => None,
    };
    for col in [&args.user_column, &args.assistant_column] {
        if !has(col) {
            return Err(no_column(name, col, columns, KEYS_HINT));
        }
    }
    Ok((system, &args.user_column, &args.assistant_column))
}

/// Reads `relation`: checks it and its columns exist, then fetches every row as text.
/// A NULL user message or reply is an error naming the column and row; a NULL system prompt
/// means that exchange has none.
pub async fn read(client: &Client, relation: &str, args: &DatasetArgs) -> Result<Conversations> {
    let (name, columns) = lookup(client, relation).await?;
    let (system, user, assistant) = pick_columns(&name, &columns, args)?;
    let system_sql =
        system.map_or("NULL::text".to_string(), |c| format!("{}::text", quote_ident(c)));
    let sql = format!(
        "SELECT {system_sql}, {}::text, {}::text FROM {name}",
        quote_ident(user),
        quote_ident(assistant)
    );
    let rows = client
        .query(sql.as_str(), &[])
        .await
        .map_err(|e| TuneError::pg(format!("reading {name}"), e))?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let required = |j: usize, col: &str| -> Result<String> {
            r.get::<_, Option<String>>(j).ok_or_else(|| {
                TuneError::Null(format!(
                    "column \"{col}\" of {name} is NULL in row {} (in the relation's order); pgml.tune needs a value in every row",
                    i + 1
                ))
            })
        };
        out.push(ChatRow {
            system: r.get(0),
            user: required(1, user)?,
            assistant: required(2, assistant)?,
        });
    }
    Ok(Conversations { name, columns, system_column: system.map(str::to_string), rows: out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::TuneRequest;
    use pgmld_sql::{Args, Value};
    use serde_json::json;

    fn dataset_args(v: serde_json::Value) -> DatasetArgs {
        let args: Args = [
            ("project_name", Value::Text("p".into())),
            ("hyperparams", Value::Json(json!({"dataset_args": v}))),
        ]
        .into_iter()
        .collect();
        TuneRequest::from_args(&args).unwrap().dataset
    }

    fn cols(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "text".to_string())).collect()
    }

    #[test]
    fn the_system_column_is_optional_unless_named() {
        let defaults = dataset_args(json!({}));
        let (s, u, a) =
            pick_columns("t", &cols(&["system", "user", "assistant"]), &defaults).unwrap();
        assert_eq!((s, u, a), (Some("system"), "user", "assistant"));
        let (s, _, _) = pick_columns("t", &cols(&["user", "assistant"]), &defaults).unwrap();
        assert_eq!(s, None, "a default system column may be absent");
        let named = dataset_args(
            json!({"system_column": "instruction", "user_column": "input", "assistant_column": "output"}),
        );
        let e = pick_columns("t", &cols(&["input", "output"]), &named).unwrap_err();
        assert!(
            matches!(e, TuneError::NoColumn { .. }) && e.to_string().contains("\"instruction\""),
            "{e}"
        );
        let (s, u, a) =
            pick_columns("t", &cols(&["instruction", "input", "output"]), &named).unwrap();
        assert_eq!((s, u, a), (Some("instruction"), "input", "output"));
        let e = pick_columns("t", &cols(&["system", "user"]), &defaults).unwrap_err();
        let TuneError::NoColumn { message, hint } = e else { panic!("{e:?}") };
        assert!(
            message.contains("\"assistant\"")
                && hint.contains("system, user")
                && hint.contains("assistant_column"),
            "{message} / {hint}"
        );
    }
}
