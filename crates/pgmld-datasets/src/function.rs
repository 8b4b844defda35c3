//! `pgml.load_dataset(source text, subset text DEFAULT NULL, "limit" bigint DEFAULT NULL,
//! kwargs jsonb DEFAULT '{}') RETURNS TABLE(table_name text, rows bigint)`.

use crate::load::Loader;
use crate::options::LoadOptions;
use pgmld_sql::function::ParamSpec;
use pgmld_sql::{
    Args, CallContext, Notice, Output, PgmlFunction, Returns, Signature, SqlError, SqlType, Value,
};
use std::sync::Arc;

/// The SQL function, bound to a [`Loader`].
pub struct LoadDataset {
    signature: Signature,
    loader: Arc<Loader>,
}

impl LoadDataset {
    /// The function over `loader`.
    pub fn new(loader: Arc<Loader>) -> Self {
        LoadDataset {
            signature: Signature {
                name: "load_dataset",
                params: vec![
                    ParamSpec::required("source", SqlType::Text),
                    ParamSpec::optional("subset", SqlType::Text, Value::Null),
                    ParamSpec::optional("limit", SqlType::Int8, Value::Null),
                    ParamSpec::optional(
                        "kwargs",
                        SqlType::Jsonb,
                        Value::Json(serde_json::json!({})),
                    ),
                ],
                returns: Returns::Table(vec![
                    ("table_name", SqlType::Text),
                    ("rows", SqlType::Int8),
                ]),
            },
            loader,
        }
    }
}

impl PgmlFunction for LoadDataset {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, args: Args) -> pgmld_sql::function::CallFuture {
        let loader = self.loader.clone();
        Box::pin(async move {
            let source = match args.get("source") {
                Some(Value::Text(s)) => s.clone(),
                _ => {
                    return Err(SqlError::new(
                        pgmld_sql::codes::NULL_VALUE_NOT_ALLOWED,
                        "load_dataset source must not be NULL",
                    )
                    .with_hint("Pass a Hugging Face dataset id such as 'imdb', or a file path."))
                }
            };
            let subset = match args.get("subset") {
                Some(Value::Text(s)) => Some(s.clone()),
                _ => None,
            };
            let limit = match args.get("limit") {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            let kwargs = match args.get("kwargs") {
                Some(Value::Json(j)) => j.clone(),
                _ => serde_json::Value::Null,
            };
            let opts = LoadOptions::new(source, subset, limit, &kwargs).map_err(SqlError::from)?;
            for message in &opts.notices {
                (ctx.notices)(Notice { severity: "NOTICE", message: message.clone() });
            }
            let loaded = loader.load(opts, &ctx).await.map_err(SqlError::from)?;
            Ok(Output::Rows(vec![vec![
                Value::Text(loaded.table_name),
                Value::Int(loaded.rows as i64),
            ]]))
        })
    }
}
