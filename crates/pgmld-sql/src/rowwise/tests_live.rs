//! Runs source queries and completed statements on a real Postgres through `psql`
//! (ignored by default):
//!
//! ```sh
//! PGMLD_ROWWISE_PSQL='host=127.0.0.1 dbname=test' cargo test -p pgmld-sql -- --ignored rowwise_live
//! ```
//!
//! Fixtures live in schema `pgmld_rowwise_live`, created for the run and dropped after.

use super::tests::registry;
use super::*;
use crate::value::Value;
use std::io::Write;
use std::process::{Command, Stdio};

const SCHEMA: &str = "pgmld_rowwise_live";

const FIXTURES: &str = "
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE docs (id int PRIMARY KEY, lang text, title varchar(20), body text, cfg jsonb, m mood);
INSERT INTO docs VALUES
  (1, 'en', 'One', 'I loved it', '{\"k\": 1}', 'happy'),
  (2, 'en', 'Two', 'O''Brien''s \"worst\" \\ film', NULL, 'sad'),
  (3, 'fr', 'Trois', E'multi\\nline é 😀', '[]', NULL),
  (4, 'en', NULL, '', '{}', 'happy'),
  (5, 'de', 'Fünf', NULL, NULL, 'sad');
CREATE TABLE words (doc int, w text);
INSERT INTO words VALUES (1, 'a'), (1, 'b'), (2, 'c');
CREATE TABLE archive (label text);
INSERT INTO archive VALUES ('old');
CREATE TABLE results (id int PRIMARY KEY, label text);
CREATE VIEW imdb_test_view AS SELECT body AS text, lang AS class FROM docs WHERE body <> '' ORDER BY id;
";

/// Runs `script` with psql; CSV output or psql's error.
fn psql(script: &str) -> Result<String, String> {
    let conn =
        std::env::var("PGMLD_ROWWISE_PSQL").map_err(|_| "set PGMLD_ROWWISE_PSQL".to_string())?;
    let mut child = Command::new("psql")
        .args([conn.as_str(), "-X", "-q", "--csv", "-P", "null=\\N", "-v", "ON_ERROR_STOP=1"])
        .env("PGOPTIONS", format!("-c search_path={SCHEMA}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child.stdin.take().ok_or("stdin")?.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{script}\n--> {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Parses psql's CSV; `\N` (unquoted) is NULL.
fn csv(text: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut field = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\n' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        row.push(if !quoted && field == "\\N" { None } else { Some(field) });
        match chars.next() {
            Some(',') => {}
            _ => rows.push(std::mem::take(&mut row)),
        }
    }
    rows
}

/// Serves every per-row block of `sql` with made-up results, then runs the final text
/// (inside `wrap`, `{}` standing for it); returns its CSV output. For plain queries, checks
/// that Postgres describes the final text like the client's statement's shape.
fn serve(client_sql: &str, wrap: &str) -> Result<String, String> {
    let r = registry();
    let mut sql = client_sql.to_string();
    for _ in 0..10 {
        let Some(b) = next_row_block(&sql, &r).map_err(|e| format!("{sql}: {e:?}"))? else {
            let query = wrap == "{}" && !sql.starts_with("COPY");
            if query {
                let shape = crate::Plan::build(client_sql, &r)
                    .map_err(|e| format!("{e:?}"))?
                    .ok_or("no plan")?;
                let want = psql(&format!("{} \\gdesc", shape.shape_sql().trim_end_matches(';')))?;
                let got = psql(&format!("{} \\gdesc", sql.trim_end_matches(';')))?;
                if want != got {
                    return Err(format!(
                        "{client_sql}: shape describes\n{want}final describes\n{got}"
                    ));
                }
            }
            return psql(&wrap.replace("{}", &sql));
        };
        let desc = csv(&psql(&format!("{} \\gdesc", b.source_sql()))?);
        let columns: Vec<SourceColumn> = desc
            .iter()
            .skip(1)
            .map(|d| SourceColumn {
                name: d[0].clone().unwrap_or_default(),
                type_oid: 0,
                type_modifier: -1,
                type_name: d[1].clone().unwrap_or_default(),
            })
            .collect();
        let out = psql(&format!("{};", b.source_sql()))?;
        let rows: Vec<SourceRow> = csv(&out).into_iter().skip(1).collect();
        let mut results = Vec::new();
        for (i, call) in b.calls().iter().enumerate() {
            let args = b.call_args(i, &columns, &rows, &[]).map_err(|e| format!("{e:?}"))?;
            results.push(
                args.iter()
                    .map(|a| {
                        let text: Vec<String> =
                            a.values().map(|v| v.to_pg_text().unwrap_or("NULL".into())).collect();
                        match call.name() {
                            "transform" => Value::Json(
                                serde_json::json!([{"label": text.join("|"), "score": 0.5}]),
                            ),
                            _ => Value::Text(format!("<{}>", text.join("|"))),
                        }
                    })
                    .collect(),
            );
        }
        sql = b.complete(&columns, &rows, &results).map_err(|e| format!("{e:?}"))?;
    }
    Err(format!("too many blocks in {sql}"))
}

#[test]
#[ignore = "needs a Postgres reachable with psql; set PGMLD_ROWWISE_PSQL"]
fn rowwise_live() {
    psql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}; SET search_path = {SCHEMA}; {FIXTURES}"))
        .unwrap();
    let guide = super::tests::GUIDE.replace("pgml.imdb_test_view", "imdb_test_view");
    let out = serve(&guide, "{}").unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "truncated_text,class,predicted_class,score");
    assert!(
        lines[1].starts_with("I loved it,en,\"{}|{\"\"I loved it\"\"}|{\"\"model\"\":"),
        "{out}"
    );
    assert!(lines[1].ends_with(",0.5"), "{out}");
    let cases: &[(&str, &str)] = &[
        ("SELECT id, pgml.transform('{\"task\":\"x\"}', inputs => ARRAY[lang, body]) FROM docs WHERE id > 1 ORDER BY id LIMIT 10", "{}"),
        ("SELECT pgml.transform('{}', inputs => ARRAY[body]) AS r, title FROM docs ORDER BY 2 DESC", "{}"),
        ("SELECT id,\n  pgml.transform('{}', inputs => ARRAY[body])->0->>'label',\n  (pgml.transform('{}', inputs => ARRAY[title]))[0] AS first\nFROM docs", "{}"),
        ("SELECT pgml.transform('{}', inputs => ARRAY[body])::text, (pgml.generate('m', body) || '!')::varchar FROM docs", "{}"),
        ("WITH src AS (SELECT id, body FROM docs WHERE lang = 'en'),\nscored AS (SELECT id, pgml.transform('{}', inputs => ARRAY[body]) AS r FROM src),\nunused AS (SELECT 1)\nSELECT * FROM scored JOIN src USING (id)", "{}"),
        ("WITH src AS (SELECT id FROM docs WHERE lang = 'xx'), scored AS (SELECT id, pgml.generate('m', id::text) AS r FROM src) SELECT * FROM scored", "{}"),
        ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3)\nSELECT * FROM (WITH m AS (SELECT i FROM n) SELECT i, pgml.generate('m', i::text) AS g FROM m ORDER BY i) AS s", "{}"),
        ("INSERT INTO results (id, label)\nSELECT id, pgml.transform('{}', inputs => ARRAY[body])->>0 FROM docs ORDER BY id LIMIT 5\nRETURNING *", "BEGIN; {}; ROLLBACK;"),
        ("INSERT INTO results SELECT id, pgml.generate('m', body) FROM docs ON CONFLICT (id) DO NOTHING", "BEGIN; {}; ROLLBACK;"),
        ("SELECT 'old' AS src, label FROM archive\nUNION ALL\nSELECT 'new', pgml.generate('m', body) FROM docs WHERE id < 3\nORDER BY 1 LIMIT 4", "{}"),
        ("(SELECT pgml.generate('m', body) FROM docs ORDER BY id LIMIT 1) UNION (SELECT 'x')", "{}"),
        ("SELECT s.id, pgml.generate('m', s.g) AS again\nFROM (SELECT id, pgml.generate('m', body) AS g FROM docs OFFSET 1 FETCH FIRST 2 ROWS ONLY) AS s", "{}"),
        ("SELECT pgml.generate('m', body) AS a, id,\n  pgml.transform(task => '{}'::jsonb, args => cfg, inputs => ARRAY[body]) AS b\nFROM docs WHERE id > 1", "{}"),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT pgml.generate('m', body) FROM docs ORDER BY id FOR UPDATE", "BEGIN; {}; FETCH ALL FROM c; ROLLBACK;"),
        ("SELECT * FROM (SELECT pgml.generate('m', body) FROM docs ORDER BY id OFFSET 2 ROWS FETCH NEXT 1 ROW WITH TIES) s", "{}"),
        ("CREATE TABLE out AS SELECT id, pgml.generate('m', body) AS g FROM docs WITH NO DATA", "BEGIN; {}; ROLLBACK;"),
        ("COPY (SELECT pgml.generate('m', body) FROM docs) TO STDOUT", "{}"),
        ("SELECT 'a' UNION SELECT pgml.generate('m', body) FROM docs GROUP BY body HAVING count(*) > 0 INTERSECT SELECT '<m|I loved it>'", "{}"),
        ("SELECT /* é */ id, pgml.generate('m', body) -- why\nFROM docs d JOIN words w ON w.doc = d.id WINDOW x AS (ORDER BY id);", "{}"),
        ("SELECT lang, pgml.generate('m', string_agg(body, ' ' ORDER BY id)) FROM docs GROUP BY lang HAVING count(*) > 1", "{}"),
        ("SELECT d.*, pgml.generate('m', body) FROM docs d WHERE false", "{}"),
        ("SELECT *, pgml.generate('m', title) FROM docs, words WHERE words.doc = docs.id", "{}"),
        ("SELECT pgml.generate('m', (SELECT w FROM words WHERE words.doc = docs.id ORDER BY w LIMIT 1)) FROM docs", "{}"),
        ("WITH ins AS (INSERT INTO results VALUES (9, 'x') RETURNING *) SELECT pgml.generate('m', label) FROM ins", "BEGIN; {}; ROLLBACK;"),
    ];
    let mut failures = Vec::new();
    for (sql, wrap) in cases {
        match serve(sql, wrap) {
            Ok(out) => println!("{sql}\n{out}"),
            Err(e) => failures.push(e),
        }
    }
    psql(&format!("DROP SCHEMA {SCHEMA} CASCADE;")).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
