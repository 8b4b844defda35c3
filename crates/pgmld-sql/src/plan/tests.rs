use super::*;
use crate::function::{CallFuture, ParamSpec, Signature};
use crate::streaming::StreamForm;

/// Echo-style test function: returns its arguments as a table row or a jsonb scalar.
struct Echo(Signature);

impl PgmlFunction for Echo {
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn call(&self, _ctx: CallContext, args: Args) -> CallFuture {
        let table = matches!(self.0.returns, Returns::Table(_));
        Box::pin(async move {
            if table {
                Ok(Output::Rows(vec![vec![args["source"].clone(), Value::Int(25000)]]))
            } else {
                let j: serde_json::Map<String, serde_json::Value> = args
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            serde_json::Value::String(v.to_pg_text().unwrap_or_default()),
                        )
                    })
                    .collect();
                Ok(Output::Scalar(Value::Json(j.into())))
            }
        })
    }
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register(Arc::new(Echo(Signature {
        name: "load_dataset",
        params: vec![
            ParamSpec::required("source", SqlType::Text),
            ParamSpec::optional("limit", SqlType::Int8, Value::Null),
        ],
        returns: Returns::Table(vec![("table_name", SqlType::Text), ("rows", SqlType::Int8)]),
    })));
    r.register(Arc::new(Echo(Signature {
        name: "transform",
        params: vec![
            ParamSpec::required("task", SqlType::Jsonb),
            ParamSpec::optional("args", SqlType::Jsonb, Value::Json(serde_json::json!({}))),
            ParamSpec::optional("inputs", SqlType::TextArray, Value::Array(vec![])),
        ],
        returns: Returns::Scalar(SqlType::Jsonb),
    })));
    r
}

fn ctx() -> CallContext {
    CallContext::detached("test", "postgres")
}

fn text(s: &str) -> Param {
    Param { type_oid: 0, binary: false, bytes: Some(s.as_bytes().to_vec()) }
}

#[tokio::test]
async fn version_is_spliced_with_its_column_name() {
    let p = Plan::build("SELECT pgml.version();", &registry()).unwrap().unwrap();
    assert_eq!(p.shape_sql(), "SELECT NULL::text AS \"version\";");
    let sql = p.execute(&[], &ctx()).await.unwrap();
    assert!(sql.starts_with("SELECT $pgmld$pgmld "), "{sql}");
    assert!(sql.ends_with("$pgmld$::text AS \"version\";"), "{sql}");
}

#[tokio::test]
async fn params_stay_visible_in_the_shape_and_are_evaluated() {
    let p = Plan::build(
        "SELECT pgml.transform($1, inputs => ARRAY[$2]) ->> 'task', $3::int",
        &registry(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        p.shape_sql(),
        "SELECT (CASE WHEN ($1)::jsonb IS NULL OR ($2)::text IS NULL THEN NULL::jsonb END) ->> 'task', $3::int"
    );
    let sql = p.execute(&[text("{\"task\":\"x\"}"), text("hi"), text("7")], &ctx()).await.unwrap();
    assert!(sql.contains("\"inputs\":\"{hi}\""), "{sql}");
    assert!(sql.ends_with("::jsonb ->> 'task', $3::int"), "{sql}");
}

#[tokio::test]
async fn table_functions_in_from_and_select_list() {
    let r = registry();
    let p = Plan::build("SELECT * FROM pgml.load_dataset('imdb')", &r).unwrap().unwrap();
    assert_eq!(
        p.shape_sql(),
        "SELECT * FROM (SELECT NULL::text AS \"table_name\", NULL::bigint AS \"rows\" WHERE false) AS \"load_dataset\""
    );
    let sql = p.execute(&[], &ctx()).await.unwrap();
    assert_eq!(
        sql,
        "SELECT * FROM (SELECT $pgmld$imdb$pgmld$::text AS \"table_name\", $pgmld$25000$pgmld$::bigint AS \"rows\") AS \"load_dataset\""
    );
    let p = Plan::build("SELECT pgml.load_dataset('imdb')", &r).unwrap().unwrap();
    let sql = p.execute(&[], &ctx()).await.unwrap();
    assert_eq!(
        sql,
        "SELECT ROW($pgmld$imdb$pgmld$::text, $pgmld$25000$pgmld$::bigint) AS \"load_dataset\""
    );
}

#[test]
fn binding_errors_name_the_problem() {
    let r = registry();
    let e = Plan::build("SELECT pgml.nope()", &r).err().unwrap();
    assert_eq!(e.code, "42883");
    assert!(e.message.contains("pgml.nope"));
    assert!(e.hint.unwrap().contains("pgml.version()"));
    let e = Plan::build("SELECT pgml.load_dataset(sourc => 'x')", &r).err().unwrap();
    assert!(e.message.contains("\"sourc\""), "{}", e.message);
    let e = Plan::build("SELECT pgml.load_dataset()", &r).err().unwrap();
    assert!(e.message.contains("\"source\""), "{}", e.message);
    let e = Plan::build("SELECT pgml.version(1)", &r).err().unwrap();
    assert_eq!(e.code, "42883");
}

#[tokio::test]
async fn bad_argument_values_name_the_argument() {
    let p = Plan::build("SELECT pgml.transform('{bad')", &registry()).unwrap().unwrap();
    let e = p.execute(&[], &ctx()).await.unwrap_err();
    assert_eq!(e.code, "22P02");
    assert!(e.message.contains("\"task\""), "{}", e.message);
    let p = Plan::build("SELECT pgml.transform($2)", &registry()).unwrap().unwrap();
    let e = p.execute(&[text("{}")], &ctx()).await.unwrap_err();
    assert_eq!(e.code, "42P02");
}

#[tokio::test]
async fn per_row_calls_are_shaped_but_not_executed() {
    let r = registry();
    let sql = "SELECT id, pgml.transform($1, inputs => ARRAY[body || $2]) -> 0 AS r FROM docs WHERE id > $3";
    let p = Plan::build(sql, &r).unwrap().unwrap();
    assert_eq!(
        p.shape_sql(),
        "SELECT id, (CASE WHEN ($1)::jsonb IS NULL OR (ARRAY[body || $2])::text[] IS NULL THEN NULL::jsonb END) -> 0 AS r \
         FROM docs WHERE id > $3"
    );
    let e = p.execute(&[text("{}"), text("x"), text("1")], &ctx()).await.unwrap_err();
    assert_eq!(e.code, "XX000");
    assert_eq!(e.position, Some(12));
    // A call nested in a per-row argument is shaped too, never sent upstream as written.
    let p = Plan::build(
        "SELECT pgml.transform(pgml.transform('{}', inputs => ARRAY[a]) -> 'task') FROM t",
        &r,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        p.shape_sql(),
        "SELECT (CASE WHEN ((CASE WHEN (ARRAY[a])::text[] IS NULL THEN NULL::jsonb END) -> 'task')::jsonb IS NULL \
         THEN NULL::jsonb END) AS \"transform\" FROM t"
    );
    assert_eq!(p.function_names(), vec!["transform"]);
    let e = Plan::build("SELECT pgml.transform(pgml.nope(a)) FROM t", &r).err().unwrap();
    assert_eq!((e.code, e.position), ("42883", Some(23)));
}

#[tokio::test]
async fn calls_that_name_their_item_keep_the_name() {
    let p = Plan::build("SELECT pgml.version()::text, (pgml.version()) || '!' AS v", &registry())
        .unwrap()
        .unwrap();
    assert_eq!(
        p.shape_sql(),
        "SELECT (SELECT NULL::text AS \"version\")::text, (NULL::text) || '!' AS v"
    );
    let sql = p.execute(&[], &ctx()).await.unwrap();
    assert!(sql.starts_with("SELECT (SELECT $pgmld$pgmld "), "{sql}");
}

/// A SETOF jsonb function whose values are `["<input> 1"]`, `["<input> 2"]`, … streamed.
struct Pieces(Signature);

impl PgmlFunction for Pieces {
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn call(&self, _ctx: CallContext, args: Args) -> CallFuture {
        Box::pin(async move {
            let input = args["input"].to_pg_text().unwrap_or_default();
            let n = match args["n"] {
                Value::Int(n) => n,
                _ => 0,
            };
            let rows = (1..=n)
                .map(|i| vec![Value::Json(serde_json::json!([format!("{input} {i}")]))])
                .collect();
            Ok(Output::Stream(crate::cursor::rows_stream(rows)))
        })
    }
}

fn with_pieces() -> Registry {
    let mut r = registry();
    r.register(Arc::new(Pieces(Signature {
        name: "pieces",
        params: vec![
            ParamSpec::required("input", SqlType::Text),
            ParamSpec::optional("n", SqlType::Int8, Value::Int(2)),
        ],
        returns: Returns::SetOf(SqlType::Jsonb),
    })));
    r
}

#[tokio::test]
async fn sets_unnest_where_the_call_stood() {
    let r = with_pieces();
    let p = Plan::build("SELECT pgml.pieces($1)", &r).unwrap().unwrap();
    assert_eq!(p.streaming(), Some(&StreamForm::Select));
    assert_eq!(p.stream_types(), vec![SqlType::Jsonb]);
    assert_eq!(
        p.shape_sql(),
        "SELECT unnest((CASE WHEN ($1)::text IS NULL THEN NULL::jsonb[] END)) AS \"pieces\""
    );
    let p = Plan::build(
        "SELECT count(*) FROM pgml.pieces('a', n => 3) AS t(x) WHERE x->>0 <> 'a 2'",
        &r,
    )
    .unwrap()
    .unwrap();
    assert_eq!(p.streaming(), None);
    assert_eq!(
        p.shape_sql(),
        "SELECT count(*) FROM unnest(NULL::jsonb[]) AS t(x) WHERE x->>0 <> 'a 2'"
    );
    let sql = p.execute(&[], &ctx()).await.unwrap();
    assert_eq!(
        sql,
        "SELECT count(*) FROM unnest(ARRAY[$pgmld$[\"a 1\"]$pgmld$::jsonb, $pgmld$[\"a 2\"]$pgmld$::jsonb, \
         $pgmld$[\"a 3\"]$pgmld$::jsonb]::jsonb[]) AS t(x) WHERE x->>0 <> 'a 2'"
    );
    let p = Plan::build("SELECT * FROM pgml.pieces('a', n => 0)", &r).unwrap().unwrap();
    assert_eq!(
        p.execute(&[], &ctx()).await.unwrap(),
        "SELECT * FROM unnest(ARRAY[]::jsonb[]) AS \"pieces\""
    );
}

#[tokio::test]
async fn streaming_statements_open_their_stream() {
    let r = with_pieces();
    let p = Plan::build("DECLARE c CURSOR FOR SELECT * FROM pgml.pieces(input => $1, n => $2)", &r)
        .unwrap()
        .unwrap();
    assert_eq!(
        p.streaming(),
        Some(&StreamForm::Declare(crate::streaming::CursorDecl {
            name: "c".into(),
            scrollable: true
        }))
    );
    let mut c = crate::cursor::StreamCursor::new(
        p.open_stream(&[text("q"), text("2")], &ctx()).await.unwrap(),
        true,
    );
    let mut rows = Vec::new();
    let all = crate::cursor::Direction::Forward(crate::cursor::Count::All);
    let n = c
        .fetch(all, false, |r| {
            rows.push(r.to_vec());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(rows[1], vec![Value::Json(serde_json::json!(["q 2"]))]);
    let e = p.open_stream(&[text("q"), text("two")], &ctx()).await.err().unwrap();
    assert_eq!(e.code, "22P02");
    assert!(e.message.contains("\"n\""), "{}", e.message);
    // Per-row arguments and other calls beside it do not stream.
    assert_eq!(
        Plan::build("SELECT pgml.pieces(t.a) FROM t", &r).unwrap().unwrap().streaming(),
        None
    );
    assert_eq!(
        Plan::build("SELECT pgml.pieces('a'), pgml.version()", &r).unwrap().unwrap().streaming(),
        None
    );
}
