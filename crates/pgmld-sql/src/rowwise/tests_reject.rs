use super::tests::{block, registry};
use super::*;

/// The 0A000 error for `sql`, checking the message names the function and the hint shows
/// a rewrite.
fn rejected(sql: &str, function: &str) -> SqlError {
    let e = match next_row_block(sql, &registry()) {
        Err(e) => e,
        Ok(b) => panic!("accepted {sql}: {:?}", b.map(|b| b.source_sql().to_string())),
    };
    assert_eq!(e.code, "0A000", "{sql}: {e:?}");
    assert!(e.message.contains(&format!("pgml.{function}")), "{sql}: {}", e.message);
    assert!(
        e.hint.as_deref().is_some_and(|h| h.contains("SELECT") || h.contains("EXPLAIN")),
        "{sql}: {e:?}"
    );
    assert!(e.position.is_some(), "{sql}");
    e
}

#[test]
fn per_row_calls_outside_a_select_list() {
    let cases = [
        (
            "SELECT id FROM docs WHERE pgml.generate('m', body) = 'yes'",
            "a WHERE clause",
            "WHERE s.result",
        ),
        ("SELECT id FROM docs ORDER BY pgml.generate('m', body)", "ORDER BY", "ORDER BY s.result"),
        (
            "SELECT count(*) FROM docs GROUP BY pgml.generate('m', body)",
            "GROUP BY",
            "GROUP BY s.result",
        ),
        (
            "SELECT lang FROM docs GROUP BY lang HAVING max(pgml.generate('m', body)) > 'a'",
            "HAVING",
            "WHERE s.result",
        ),
        (
            "SELECT 1 FROM docs d JOIN t ON pgml.generate('m', d.body) = t.label",
            "JOIN condition",
            "ON s.result",
        ),
        ("SELECT * FROM docs d, LATERAL pgml.generate('m', d.body) AS g", "FROM item", "FROM t"),
        (
            "UPDATE docs SET label = pgml.generate('m', body) WHERE id = 1",
            "UPDATE",
            "UPDATE t SET col = s.result",
        ),
        (
            "DELETE FROM docs WHERE pgml.generate('m', body) = 'spam'",
            "DELETE",
            "DELETE FROM t USING",
        ),
        (
            "INSERT INTO docs (body) VALUES (pgml.generate('m', lower('X')))",
            "VALUES",
            "FROM (VALUES",
        ),
        (
            "INSERT INTO docs (body) VALUES ('x') RETURNING pgml.generate('m', body)",
            "RETURNING",
            "WITH ins AS",
        ),
        (
            "SELECT * FROM docs LIMIT pgml.generate('m', $1 || 'x')::int",
            "LIMIT",
            "ORDER BY s.result",
        ),
    ];
    for (sql, place, hint) in cases {
        let e = rejected(sql, "generate");
        assert!(e.message.contains(place), "{sql}: {}", e.message);
        assert!(e.hint.as_deref().unwrap_or("").contains(hint), "{sql}: {:?}", e.hint);
    }
    let e = rejected("SELECT id FROM docs WHERE pgml.generate('m', body) = 'yes'", "generate");
    assert_eq!(e.position, Some(27));
}

#[test]
fn item_expressions_that_need_more_than_the_result() {
    for (sql, why) in [
        ("SELECT body || pgml.generate('m', body) FROM docs", "column body"),
        ("SELECT count(pgml.generate('m', body)) FROM docs", "aggregate count"),
        ("SELECT pgml.generate('m', body) || string_agg(x, ',') FROM docs", "aggregate string_agg"),
        (
            "SELECT rank() OVER (ORDER BY id) || pgml.generate('m', body) FROM docs",
            "window function rank",
        ),
        ("SELECT CASE WHEN true THEN pgml.generate('m', body) END FROM docs", "CASE"),
        ("SELECT pgml.generate('m', body) || (SELECT 'x') FROM docs", "subquery"),
    ] {
        let e = rejected(sql, "generate");
        assert!(e.message.contains(why), "{sql}: {}", e.message);
        assert!(e.hint.unwrap().contains("AS result"), "{sql}");
    }
    // With GROUP BY the call must be a whole item.
    let e = rejected(
        "SELECT lang, pgml.generate('m', string_agg(body, ' ')) || '!' FROM docs GROUP BY lang",
        "generate",
    );
    assert!(e.message.contains("GROUP BY"), "{}", e.message);
    block("SELECT lang, pgml.generate('m', string_agg(body, ' ')) FROM docs GROUP BY lang HAVING count(*) > 1");
}

#[test]
fn statements_and_blocks_pgmld_cannot_serve_per_row() {
    for (sql, what) in [
        ("SELECT DISTINCT pgml.generate('m', body) FROM docs", "DISTINCT"),
        ("SELECT DISTINCT ON (lang) lang, pgml.generate('m', body) FROM docs", "DISTINCT"),
        ("SELECT pgml.generate('m', body) INTO out FROM docs", "INTO"),
        ("CREATE VIEW v AS SELECT pgml.generate('m', body) FROM docs", "CREATE VIEW"),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT pgml.generate('m', body) FROM docs",
            "CREATE MATERIALIZED VIEW",
        ),
        (
            "CREATE FUNCTION f(b text) RETURNS text LANGUAGE sql RETURN pgml.generate('m', b)",
            "CREATE FUNCTION",
        ),
        ("EXPLAIN SELECT pgml.generate('m', body) FROM docs", "EXPLAIN"),
        ("PREPARE p AS SELECT pgml.generate('m', body) FROM docs", "PREPARE"),
        (
            "SELECT pgml.generate('m', pgml.generate('m', body)) FROM docs",
            "inside another pgml call",
        ),
        (
            "WITH ins AS (INSERT INTO docs (body) VALUES ('x') RETURNING *) \
             SELECT * FROM (SELECT pgml.generate('m', body) FROM ins) s",
            "data-modifying",
        ),
    ] {
        let e = rejected(sql, "generate");
        assert!(e.message.contains(what), "{sql}: {}", e.message);
    }
    for sql in [
        "CREATE VIEW v AS SELECT pgml.generate('m', body) FROM docs",
        "CREATE RULE r AS ON INSERT TO docs DO ALSO SELECT pgml.generate('m', new.body)",
    ] {
        let e = rejected(sql, "generate");
        assert!(e.hint.unwrap().contains("CREATE TABLE name AS SELECT"), "{sql}");
    }
    // A data-modifying WITH query read by the top-level block itself runs once: fine.
    block("WITH ins AS (INSERT INTO docs (body) VALUES ('x') RETURNING *) SELECT pgml.generate('m', body) FROM ins");
    let e = next_row_block("SELECT pgml.load_dataset(name) FROM sources", &registry()).unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("returns a table"), "{}", e.message);
}

#[test]
fn binding_errors_come_first_and_point_at_the_call() {
    let r = registry();
    let e = next_row_block("SELECT id, pgml.nope(body) FROM docs", &r).unwrap_err();
    assert_eq!((e.code, e.position), ("42883", Some(12)));
    let e =
        next_row_block("SELECT pgml.generate('m', prompt => body, prompt => body) FROM docs", &r)
            .unwrap_err();
    assert_eq!(e.code, "42601");
    let e = next_row_block(
        "SELECT pgml.generate(body) FROM docs WHERE pgml.generate('m', body) > ''",
        &r,
    )
    .unwrap_err();
    assert_eq!(e.code, "42883");
    assert!(e.message.contains("\"prompt\""), "{}", e.message);
}

#[test]
fn with_recursive_forward_references_are_served_in_dependency_order() {
    let sql = "WITH RECURSIVE a AS (SELECT id, pgml.generate('m', g) AS h FROM b), \
               b AS (SELECT id, pgml.generate('m', body) AS g FROM docs) SELECT * FROM a";
    let b = block(sql);
    assert_eq!(b.source_sql(), "SELECT id, (body)::text AS pgmld_arg_1 FROM docs");
    // Two blocks reading each other's WITH queries cannot be ordered.
    let sql = "WITH RECURSIVE a AS (SELECT pgml.generate('m', x) AS y FROM b), \
               b AS (SELECT pgml.generate('m', y) AS x FROM a) SELECT * FROM a";
    let e = rejected(sql, "generate");
    assert!(e.message.contains("cannot order"), "{}", e.message);
}
