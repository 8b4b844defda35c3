use super::*;
use crate::function::{Args, CallContext, CallFuture, Output, ParamSpec, Signature};
use crate::params::Param;
use crate::value::{SqlType, Value};
use serde_json::json;

/// A scalar test function; its results are made up by the tests.
struct Fake(Signature);

impl PgmlFunction for Fake {
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn call(&self, _ctx: CallContext, _args: Args) -> CallFuture {
        Box::pin(async { Ok(Output::Scalar(Value::Null)) })
    }
}

pub(super) fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register(Arc::new(Fake(Signature {
        name: "transform",
        params: vec![
            ParamSpec::required("task", SqlType::Jsonb),
            ParamSpec::optional("args", SqlType::Jsonb, Value::Json(json!({}))),
            ParamSpec::optional("inputs", SqlType::TextArray, Value::Array(vec![])),
        ],
        returns: Returns::Scalar(SqlType::Jsonb),
    })));
    r.register(Arc::new(Fake(Signature {
        name: "generate",
        params: vec![
            ParamSpec::required("model", SqlType::Text),
            ParamSpec::required("prompt", SqlType::Text),
        ],
        returns: Returns::Scalar(SqlType::Text),
    })));
    r.register(Arc::new(Fake(Signature {
        name: "load_dataset",
        params: vec![ParamSpec::required("source", SqlType::Text)],
        returns: Returns::Table(vec![("table_name", SqlType::Text), ("rows", SqlType::Int8)]),
    })));
    r
}

pub(super) fn block(sql: &str) -> RowBlock {
    match next_row_block(sql, &registry()) {
        Ok(Some(b)) => b,
        Ok(None) => panic!("no per-row call in {sql}"),
        Err(e) => panic!("{e:?}"),
    }
}

fn col(name: &str, oid: u32) -> SourceColumn {
    SourceColumn { name: name.into(), type_oid: oid, type_modifier: -1, type_name: String::new() }
}

fn row(values: &[Option<&str>]) -> SourceRow {
    values.iter().map(|v| v.map(str::to_string)).collect()
}

fn replaced(sql: &str) -> &str {
    &sql[block(sql).replaced_range()]
}

pub(super) const GUIDE: &str = r#"SELECT LEFT(text, 100) AS truncated_text, class,
  predicted_class[0]->>'label' AS predicted_class,
  (predicted_class[0]->>'score')::float AS score
FROM (
  SELECT LEFT(text, 100) AS text, class,
    pgml.transform(task => '{"task": "text-classification", "model": "m"}'::JSONB,
                   inputs => ARRAY[text]) AS predicted_class
  FROM pgml.imdb_test_view
  LIMIT 2
) AS subquery;"#;

#[test]
fn guide_batch_prediction_query() {
    let b = block(GUIDE);
    assert_eq!(
        b.source_sql(),
        "SELECT LEFT(text, 100) AS text, class,\n    (ARRAY[text])::text[] AS pgmld_arg_1\n  FROM pgml.imdb_test_view\n  LIMIT 2"
    );
    assert_eq!(b.calls().len(), 1);
    assert_eq!(b.calls()[0].name(), "transform");
    let columns = vec![col("text", 25), col("class", 25), col("pgmld_arg_1", 1009)];
    let rows = vec![
        row(&[Some("I loved it"), Some("pos"), Some("{\"I loved it\"}")]),
        row(&[Some("O'Brien's \"worst\""), Some("neg"), Some(r#"{"O'Brien's \"worst\""}"#)]),
    ];
    let args = b.call_args(0, &columns, &rows, &[]).unwrap();
    assert_eq!(args.len(), 2);
    assert_eq!(args[0]["task"], Value::Json(json!({"task": "text-classification", "model": "m"})));
    assert_eq!(args[0]["args"], Value::Json(json!({})));
    assert_eq!(args[0]["inputs"], Value::Array(vec![Value::Text("I loved it".into())]));
    assert_eq!(args[1]["inputs"], Value::Array(vec![Value::Text("O'Brien's \"worst\"".into())]));
    let results = vec![vec![
        Value::Json(json!([{"label": "POSITIVE", "score": 0.99}])),
        Value::Json(json!([{"label": "NEGATIVE", "score": 0.5}])),
    ]];
    let done = b.complete(&columns, &rows, &results).unwrap();
    assert_eq!(
        done,
        r#"SELECT LEFT(text, 100) AS truncated_text, class,
  predicted_class[0]->>'label' AS predicted_class,
  (predicted_class[0]->>'score')::float AS score
FROM (
  SELECT pgmld_rows.c1 AS "text", pgmld_rows.c2 AS "class", pgmld_rows.r1 AS "predicted_class" FROM (VALUES (1, 'I loved it'::text, 'pos'::text, '[{"label":"POSITIVE","score":0.99}]'::jsonb), (2, $pgmld$O'Brien's "worst"$pgmld$::text, 'neg'::text, '[{"label":"NEGATIVE","score":0.5}]'::jsonb)) AS pgmld_rows(pgmld_n, c1, c2, r1) ORDER BY pgmld_rows.pgmld_n
) AS subquery;"#
    );
    assert!(next_row_block(&done, &registry()).unwrap().is_none());
}

#[test]
fn top_level_block_keeps_where_order_and_limit() {
    let sql = "SELECT id, pgml.transform('{\"task\":\"x\"}', inputs => ARRAY[a, b]) FROM t WHERE id > 3 ORDER BY id LIMIT 10";
    let b = block(sql);
    assert_eq!(b.replaced_range(), 0..sql.len());
    assert_eq!(
        b.source_sql(),
        "SELECT id, (ARRAY[a, b])::text[] AS pgmld_arg_1 FROM t WHERE id > 3 ORDER BY id LIMIT 10"
    );
    let columns = vec![col("id", 23), col("pgmld_arg_1", 1009)];
    let rows = vec![row(&[Some("4"), Some("{x,NULL}")]), row(&[Some("5"), None])];
    let args = b.call_args(0, &columns, &rows, &[]).unwrap();
    assert_eq!(args[0]["task"], Value::Json(json!({"task": "x"})));
    assert_eq!(args[0]["inputs"], Value::Array(vec![Value::Text("x".into()), Value::Null]));
    assert_eq!(args[1]["inputs"], Value::Null);
    let done = b.complete(&columns, &rows, &[vec![Value::Json(json!(1)), Value::Null]]).unwrap();
    assert_eq!(
        done,
        "SELECT pgmld_rows.c1 AS \"id\", pgmld_rows.r1 AS \"transform\" FROM (VALUES (1, '4'::integer, '1'::jsonb), \
         (2, '5'::integer, NULL::jsonb)) AS pgmld_rows(pgmld_n, c1, r1) ORDER BY pgmld_rows.pgmld_n"
    );
}

#[test]
fn order_by_position_of_a_kept_item_still_resolves() {
    let sql = "SELECT pgml.transform(task => $1, inputs => ARRAY[body]) AS r, title FROM docs ORDER BY 2 DESC";
    let b = block(sql);
    assert_eq!(
        b.source_sql(),
        "SELECT (ARRAY[body])::text[] AS pgmld_arg_1, title FROM docs ORDER BY 2 DESC"
    );
    let columns = vec![col("pgmld_arg_1", 1009), col("title", 1043)];
    let rows = vec![row(&[Some("{b}"), Some("Zed")]), row(&[Some("{a}"), Some("Ann")])];
    let params = [Param { type_oid: 0, binary: false, bytes: Some(b"{\"task\": \"t\"}".to_vec()) }];
    let args = b.call_args(0, &columns, &rows, &params).unwrap();
    assert_eq!(args[1]["task"], Value::Json(json!({"task": "t"})));
    let done = b
        .complete(&columns, &rows, &[vec![Value::Json(json!("b")), Value::Json(json!("a"))]])
        .unwrap();
    assert_eq!(
        done,
        "SELECT pgmld_rows.r1 AS \"r\", pgmld_rows.c1 AS \"title\" FROM (VALUES (1, 'Zed'::character varying, '\"b\"'::jsonb), \
         (2, 'Ann'::character varying, '\"a\"'::jsonb)) AS pgmld_rows(pgmld_n, c1, r1) ORDER BY pgmld_rows.pgmld_n"
    );
    // Sorting by the call's own column needs the results: rejected with a rewrite.
    for sql in [
        "SELECT pgml.transform('{}', inputs => ARRAY[body]) AS r, * FROM docs ORDER BY 1",
        "SELECT pgml.transform('{}', inputs => ARRAY[body]) AS r, * FROM docs ORDER BY r",
        // Behind a star, position 3 may be the call's column.
        "SELECT *, pgml.transform('{}', inputs => ARRAY[body]) AS r FROM docs ORDER BY 3",
    ] {
        let order = sql;
        let e = next_row_block(sql, &registry()).err().unwrap();
        assert_eq!(e.code, "0A000", "{order}");
        assert!(e.hint.unwrap().contains("ORDER BY s.result"));
    }
    // Positions before the star or of kept items are fine.
    block("SELECT id, pgml.transform('{}', inputs => ARRAY[body]) AS r FROM docs ORDER BY 1, body");
    block("SELECT pgml.transform('{}', inputs => ARRAY[body]) AS r, * FROM docs ORDER BY 3");
}

#[test]
fn call_nested_in_an_item_expression() {
    let sql = "SELECT id,\n  pgml.transform('{}', inputs => ARRAY[body])->0->>'label',\n  (pgml.transform('{}', inputs => ARRAY[title]))[0] AS first\nFROM docs";
    let b = block(sql);
    assert_eq!(
        b.source_sql(),
        "SELECT id,\n  (ARRAY[body])::text[] AS pgmld_arg_1,\n  (ARRAY[title])::text[] AS pgmld_arg_2\nFROM docs"
    );
    let columns = vec![col("id", 20), col("pgmld_arg_1", 1009), col("pgmld_arg_2", 1009)];
    let rows = vec![row(&[Some("7"), Some("{x}"), Some("{y}")])];
    let results = vec![vec![Value::Json(json!([{"label": "A"}]))], vec![Value::Json(json!(["t"]))]];
    assert_eq!(
        b.complete(&columns, &rows, &results).unwrap(),
        "SELECT pgmld_rows.c1 AS \"id\", pgmld_rows.r1->0->>'label' AS \"?column?\", (pgmld_rows.r2)[0] AS \"first\" \
         FROM (VALUES (1, '7'::bigint, '[{\"label\":\"A\"}]'::jsonb, '[\"t\"]'::jsonb)) AS pgmld_rows(pgmld_n, c1, r1, r2) \
         ORDER BY pgmld_rows.pgmld_n"
    );
    // Casts take the function's name, as Postgres names the column.
    let b = block("SELECT pgml.transform('{}', inputs => ARRAY[body])::text, (pgml.generate('m', body) || '!')::varchar FROM docs");
    let names: Vec<&str> = b.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["transform", "varchar"]);
}

#[test]
fn block_in_a_cte_body_and_enclosing_ctes() {
    let sql = "WITH src AS (SELECT id, body FROM docs WHERE lang = 'en'),\n\
               scored AS (SELECT id, pgml.transform('{}', inputs => ARRAY[body]) AS r FROM src),\n\
               unused AS (SELECT 1)\n\
               SELECT * FROM scored JOIN src USING (id)";
    let b = block(sql);
    assert_eq!(
        replaced(sql),
        "SELECT id, pgml.transform('{}', inputs => ARRAY[body]) AS r FROM src"
    );
    assert_eq!(
        b.source_sql(),
        "WITH src AS (SELECT id, body FROM docs WHERE lang = 'en') SELECT id, (ARRAY[body])::text[] AS pgmld_arg_1 FROM src"
    );
    let columns = vec![col("id", 23), col("pgmld_arg_1", 1009)];
    let done = b.complete(&columns, &[], &[vec![]]).unwrap();
    assert_eq!(
        done,
        "WITH src AS (SELECT id, body FROM docs WHERE lang = 'en'),\n\
         scored AS (SELECT pgmld_rows.c1 AS \"id\", pgmld_rows.r1 AS \"r\" FROM (VALUES (NULL::integer, NULL::integer, NULL::jsonb)) \
         AS pgmld_rows(pgmld_n, c1, r1) WHERE false ORDER BY pgmld_rows.pgmld_n),\n\
         unused AS (SELECT 1)\n\
         SELECT * FROM scored JOIN src USING (id)"
    );
    // A block with its own WITH inside an enclosing one: both lists merge.
    let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)\n\
               SELECT * FROM (WITH m AS (SELECT i FROM n) SELECT i, pgml.generate('m', i::text) AS g FROM m ORDER BY i) AS s";
    let b = block(sql);
    assert_eq!(
        replaced(sql),
        "WITH m AS (SELECT i FROM n) SELECT i, pgml.generate('m', i::text) AS g FROM m ORDER BY i"
    );
    assert_eq!(
        b.source_sql(),
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3), m AS (SELECT i FROM n) \
         SELECT i, (i::text)::text AS pgmld_arg_1 FROM m ORDER BY i"
    );
}

#[test]
fn insert_select_returning() {
    let sql = "INSERT INTO results (id, label)\nSELECT id, pgml.transform('{}', inputs => ARRAY[body])->>0 FROM docs ORDER BY id LIMIT 5\nRETURNING *";
    let b = block(sql);
    assert_eq!(
        replaced(sql),
        "SELECT id, pgml.transform('{}', inputs => ARRAY[body])->>0 FROM docs ORDER BY id LIMIT 5"
    );
    assert_eq!(
        b.source_sql(),
        "SELECT id, (ARRAY[body])::text[] AS pgmld_arg_1 FROM docs ORDER BY id LIMIT 5"
    );
    let columns = vec![col("id", 23), col("pgmld_arg_1", 1009)];
    let rows = vec![row(&[Some("1"), Some("{a}")])];
    assert_eq!(
        b.complete(&columns, &rows, &[vec![Value::Json(json!(["pos"]))]]).unwrap(),
        "INSERT INTO results (id, label)\nSELECT pgmld_rows.c1 AS \"id\", pgmld_rows.r1->>0 AS \"?column?\" \
         FROM (VALUES (1, '1'::integer, '[\"pos\"]'::jsonb)) AS pgmld_rows(pgmld_n, c1, r1) ORDER BY pgmld_rows.pgmld_n\nRETURNING *"
    );
    let sql = "INSERT INTO results SELECT id, pgml.generate('m', body) FROM docs ON CONFLICT (id) DO NOTHING";
    assert_eq!(replaced(sql), "SELECT id, pgml.generate('m', body) FROM docs");
}

#[test]
fn union_operand_is_replaced_alone() {
    let sql = "SELECT 'old' AS src, label FROM archive\nUNION ALL\nSELECT 'new', pgml.generate('m', body) FROM docs WHERE id < 3\nORDER BY 1 LIMIT 4";
    let b = block(sql);
    assert_eq!(replaced(sql), "SELECT 'new', pgml.generate('m', body) FROM docs WHERE id < 3");
    assert_eq!(b.source_sql(), "SELECT 'new', (body)::text AS pgmld_arg_1 FROM docs WHERE id < 3");
    let columns = vec![col("?column?", 25), col("pgmld_arg_1", 25)];
    let rows = vec![row(&[Some("new"), Some("b")])];
    assert_eq!(
        b.complete(&columns, &rows, &[vec![Value::Text("multi\nline é".into())]]).unwrap(),
        "SELECT 'old' AS src, label FROM archive\nUNION ALL\nSELECT pgmld_rows.c1 AS \"?column?\", pgmld_rows.r1 AS \"generate\" \
         FROM (VALUES (1, 'new'::text, 'multi\nline é'::text)) AS pgmld_rows(pgmld_n, c1, r1)\nORDER BY 1 LIMIT 4"
    );
    // A parenthesized operand is a whole query.
    let sql = "(SELECT pgml.generate('m', body) FROM docs LIMIT 1) UNION (SELECT 'x')";
    assert_eq!(replaced(sql), "SELECT pgml.generate('m', body) FROM docs LIMIT 1");
}

#[test]
fn innermost_block_first() {
    let sql = "SELECT s.id, pgml.generate('m', s.g) AS again\n\
               FROM (SELECT id, pgml.generate('m', body) AS g FROM docs OFFSET 1 FETCH FIRST 2 ROWS ONLY) AS s";
    let b = block(sql);
    assert_eq!(
        replaced(sql),
        "SELECT id, pgml.generate('m', body) AS g FROM docs OFFSET 1 FETCH FIRST 2 ROWS ONLY"
    );
    let columns = vec![col("id", 23), col("pgmld_arg_1", 25)];
    let rows = vec![row(&[Some("1"), Some("x")])];
    let done = b.complete(&columns, &rows, &[vec![Value::Text("y".into())]]).unwrap();
    let outer = block(&done);
    assert_eq!(outer.replaced_range(), 0..done.len());
    assert_eq!(
        outer.source_sql(),
        "SELECT s.id, (s.g)::text AS pgmld_arg_1\nFROM (SELECT pgmld_rows.c1 AS \"id\", pgmld_rows.r1 AS \"g\" \
         FROM (VALUES (1, '1'::integer, 'y'::text)) AS pgmld_rows(pgmld_n, c1, r1) ORDER BY pgmld_rows.pgmld_n) AS s"
    );
    // A block inside another block's call arguments comes first too.
    let sql = "SELECT pgml.generate('m', (SELECT pgml.generate('m', w) FROM words WHERE words.doc = docs.id LIMIT 1)) FROM docs";
    assert_eq!(
        replaced(sql),
        "SELECT pgml.generate('m', w) FROM words WHERE words.doc = docs.id LIMIT 1"
    );
}

#[test]
fn two_calls_in_one_block_and_parameters() {
    let sql = "SELECT pgml.generate($1, prompt => body || $2) AS a, id,\n  pgml.transform(task => $3::jsonb, args => cfg, inputs => ARRAY[body]) AS b\nFROM docs WHERE id > $4";
    let b = block(sql);
    assert_eq!(
        b.source_sql(),
        "SELECT (body || $2)::text AS pgmld_arg_1, id,\n  (cfg)::jsonb AS pgmld_arg_2, (ARRAY[body])::text[] AS pgmld_arg_3\nFROM docs WHERE id > $4"
    );
    assert_eq!(
        b.calls().iter().map(|c| (c.name(), c.position)).collect::<Vec<_>>(),
        vec![("generate", 8), ("transform", 60)]
    );
    let columns = vec![
        col("pgmld_arg_1", 25),
        col("id", 23),
        col("pgmld_arg_2", 3802),
        col("pgmld_arg_3", 1009),
    ];
    let rows = vec![row(&[Some("hi!"), Some("9"), Some("{\"k\": [1]}"), Some("{hi}")])];
    let text = |s: &str| Param { type_oid: 25, binary: false, bytes: Some(s.as_bytes().to_vec()) };
    let params = [text("gpt"), text("!"), text("{\"task\": \"t\"}"), text("3")];
    let a = b.call_args(0, &columns, &rows, &params).unwrap();
    assert_eq!(a[0]["model"], Value::Text("gpt".into()));
    assert_eq!(a[0]["prompt"], Value::Text("hi!".into()));
    let a = b.call_args(1, &columns, &rows, &params).unwrap();
    assert_eq!(a[0]["task"], Value::Json(json!({"task": "t"})));
    assert_eq!(a[0]["args"], Value::Json(json!({"k": [1]})));
    assert_eq!(a[0]["inputs"], Value::Array(vec![Value::Text("hi".into())]));
    let done = b
        .complete(
            &columns,
            &rows,
            &[vec![Value::Text("a\\b$pgmld$".into())], vec![Value::Json(json!({"x": "it's"}))]],
        )
        .unwrap();
    assert_eq!(
        done,
        "SELECT pgmld_rows.r1 AS \"a\", pgmld_rows.c1 AS \"id\", pgmld_rows.r2 AS \"b\" \
         FROM (VALUES (1, '9'::integer, $pgmld1$a\\b$pgmld$$pgmld1$::text, $pgmld${\"x\":\"it's\"}$pgmld$::jsonb)) \
         AS pgmld_rows(pgmld_n, c1, r1, r2) ORDER BY pgmld_rows.pgmld_n"
    );
    // The block's parameters left the statement with it.
    assert!(!done.contains("$2") && !done.contains("$4"));
    // Bad column values name the argument and the row.
    let bad = vec![rows[0].clone(), row(&[Some("x"), Some("1"), Some("{oops"), None])];
    let e = b.call_args(1, &columns, &bad, &params).unwrap_err();
    assert_eq!(e.code, "22P02");
    assert!(e.message.starts_with("argument \"args\" of pgml.transform, row 2: "), "{}", e.message);
    let e = b.call_args(1, &columns, &rows, &params[..2]).unwrap_err();
    assert_eq!((e.code, e.position), ("42P02", None));
}

#[test]
fn replaced_ranges_cover_exactly_the_block() {
    let cases = [
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT pgml.generate('m', body) FROM docs ORDER BY id FOR UPDATE",
            "SELECT pgml.generate('m', body) FROM docs ORDER BY id FOR UPDATE",
        ),
        (
            "SELECT * FROM (SELECT pgml.generate('m', body) FROM docs ORDER BY id OFFSET 2 ROWS FETCH NEXT 1 ROW WITH TIES) s",
            "SELECT pgml.generate('m', body) FROM docs ORDER BY id OFFSET 2 ROWS FETCH NEXT 1 ROW WITH TIES",
        ),
        (
            "CREATE TABLE out AS SELECT id, pgml.generate('m', body) AS g FROM docs WITH NO DATA",
            "SELECT id, pgml.generate('m', body) AS g FROM docs",
        ),
        (
            "COPY (SELECT pgml.generate('m', body) FROM docs) TO STDOUT",
            "SELECT pgml.generate('m', body) FROM docs",
        ),
        (
            "SELECT d.id, x.n FROM docs d CROSS JOIN LATERAL (SELECT pgml.generate('m', d.body) AS n) x WHERE d.id = 1",
            "SELECT pgml.generate('m', d.body) AS n",
        ),
        (
            "SELECT id FROM docs WHERE id IN (SELECT id FROM (SELECT id, pgml.generate('m', body) AS g FROM docs) s WHERE g = 'y')",
            "SELECT id, pgml.generate('m', body) AS g FROM docs",
        ),
        (
            "SELECT 'a' UNION SELECT pgml.generate('m', body) FROM docs GROUP BY body HAVING count(*) > 1 INTERSECT SELECT 'b'",
            "SELECT pgml.generate('m', body) FROM docs GROUP BY body HAVING count(*) > 1",
        ),
        (
            "SELECT /* é */ id, pgml.generate('m', body) -- why\nFROM docs d JOIN t USING (id) WINDOW w AS (ORDER BY id);",
            "SELECT /* é */ id, pgml.generate('m', body) -- why\nFROM docs d JOIN t USING (id) WINDOW w AS (ORDER BY id)",
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(replaced(sql), want, "{sql}");
    }
}

#[test]
fn statements_without_per_row_calls_are_not_ours() {
    let r = registry();
    for sql in [
        "SELECT 1",
        "SELECT pgml.version()",
        "SELECT pgml.transform('{}', inputs => ARRAY['a', $1::text]) FROM docs WHERE body = $2",
        "SELECT * FROM pgml.load_dataset('imdb')",
        "SELEC pgml.generate('m', body) FROM docs",
        "SELECT * FROM pgml.imdb WHERE text LIKE 'x%'",
    ] {
        assert!(next_row_block(sql, &r).unwrap().is_none(), "{sql}");
    }
}

#[test]
fn kept_pgml_calls_and_quoting_of_kept_values() {
    // A constant call in a kept item stays in the source query for Plan to serve.
    let b = block("SELECT pgml.version() AS v, body, pgml.generate('m', body) FROM docs");
    assert_eq!(
        b.source_sql(),
        "SELECT pgml.version() AS v, body, (body)::text AS pgmld_arg_1 FROM docs"
    );
    let columns = vec![col("v", 25), col("body", 25), col("pgmld_arg_1", 25)];
    let mut custom = col("mood", 16_384);
    custom.type_name = "public.mood".into();
    let mut columns = columns;
    columns.insert(2, custom);
    let rows = vec![
        row(&[Some("pgmld 1"), Some("O'Brien\\ \u{1F600}\nline"), Some("happy"), Some("x")]),
        row(&[None, Some(""), None, None]),
    ];
    let done =
        b.complete(&columns, &rows, &[vec![Value::Null, Value::Text(String::new())]]).unwrap();
    assert_eq!(
        done,
        "SELECT pgmld_rows.c1 AS \"v\", pgmld_rows.c2 AS \"body\", pgmld_rows.c3 AS \"mood\", pgmld_rows.r1 AS \"generate\" \
         FROM (VALUES (1, 'pgmld 1'::text, $pgmld$O'Brien\\ \u{1F600}\nline$pgmld$::text, 'happy'::public.mood, NULL::text), \
         (2, NULL::text, ''::text, NULL::public.mood, ''::text)) AS pgmld_rows(pgmld_n, c1, c2, c3, r1) ORDER BY pgmld_rows.pgmld_n"
    );
    // Result and column counts are checked.
    assert_eq!(b.complete(&columns, &rows, &[vec![Value::Null]]).unwrap_err().code, "XX000");
    assert_eq!(
        b.complete(&columns[..3], &rows, &[vec![Value::Null, Value::Null]]).unwrap_err().code,
        "XX000"
    );
    let mut unnamed = columns.clone();
    unnamed[2].type_name.clear();
    assert_eq!(
        b.complete(&unnamed, &rows, &[vec![Value::Null, Value::Null]]).unwrap_err().code,
        "XX000"
    );
}

#[test]
fn builtin_type_names() {
    assert_eq!(builtin_type_name(25), Some("text"));
    assert_eq!(builtin_type_name(1043), Some("character varying"));
    assert_eq!(builtin_type_name(3807), Some("jsonb[]"));
    assert_eq!(builtin_type_name(16_384), None);
}

#[test]
fn completed_blocks_with_many_rows_are_read_back_quickly() {
    let sql =
        "SELECT pgml.generate('m', s.g) FROM (SELECT pgml.generate('m', body) AS g FROM docs) AS s";
    let b = block(sql);
    let columns = vec![col("pgmld_arg_1", 25)];
    let n = 20_000;
    let rows: Vec<SourceRow> = (0..n).map(|i| row(&[Some(&format!("text {i}"))])).collect();
    let results = vec![(0..n).map(|i| Value::Text(format!("out {i}"))).collect()];
    let done = b.complete(&columns, &rows, &results).unwrap();
    let started = std::time::Instant::now();
    let outer = block(&done);
    assert_eq!(outer.replaced_range(), 0..done.len());
    assert!(outer.source_sql().starts_with("SELECT (s.g)::text AS pgmld_arg_1 FROM (SELECT pgmld_rows.r1 AS \"g\" FROM (VALUES (1, 'out 0'::text), "));
    eprintln!("read back {} bytes in {:?}", done.len(), started.elapsed());
}
