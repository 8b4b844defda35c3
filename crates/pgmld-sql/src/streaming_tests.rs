use super::*;
use crate::cursor::{Count::*, Direction::*};

fn decl(name: &str, scrollable: bool) -> Option<StreamForm> {
    Some(StreamForm::Declare(CursorDecl { name: name.into(), scrollable }))
}

#[test]
fn bare_calls_stream() {
    for sql in [
        "SELECT pgml.transform_stream('x', input => 'y')",
        "select PGML.transform_stream(task => $1, inputs => $2, args => $3) AS piece;",
        "SELECT * FROM pgml.transform_stream('x')",
        "SELECT * FROM pgml.transform_stream('x') AS t(piece)",
        "SELECT * FROM pgml.transform_stream('x') t",
    ] {
        assert_eq!(stream_form(sql), Some(StreamForm::Select), "{sql}");
    }
}

#[test]
fn anything_around_the_call_needs_postgres() {
    for sql in [
        "SELECT pgml.transform_stream('x'), 1",
        "SELECT pgml.transform_stream('x')->>0",
        "SELECT pgml.transform_stream('x') FROM t",
        "SELECT * FROM pgml.transform_stream('x') WHERE true",
        "SELECT * FROM pgml.transform_stream('x') LIMIT 2",
        "SELECT * FROM pgml.transform_stream('x') ORDER BY 1",
        "SELECT * FROM pgml.transform_stream('x') WITH ORDINALITY",
        "SELECT * FROM pgml.transform_stream('x'), t",
        "SELECT t.* FROM pgml.transform_stream('x') t",
        "SELECT DISTINCT pgml.transform_stream('x')",
        "SELECT count(*) FROM pgml.transform_stream('x')",
        "WITH a AS (SELECT 1) SELECT pgml.transform_stream('x')",
        "SELECT pgml.transform_stream('x') UNION ALL SELECT NULL",
        "SELECT lower('x')",
        "SELECT 1; SELECT pgml.transform_stream('x')",
        "DECLARE c CURSOR WITH HOLD FOR SELECT pgml.transform_stream('x')",
        "DECLARE c BINARY CURSOR FOR SELECT pgml.transform_stream('x')",
        "DECLARE c CURSOR FOR SELECT pgml.transform_stream('x') LIMIT 1",
    ] {
        assert_eq!(stream_form(sql), None, "{sql}");
    }
}

#[test]
fn declares_carry_name_and_scrollability() {
    assert_eq!(stream_form("DECLARE c CURSOR FOR SELECT pgml.transform_stream(task => $1, inputs => $2, args => $3)"), decl("c", false));
    assert_eq!(
        stream_form("declare \"My C\" scroll cursor for select pgml.transform_stream('x')"),
        decl("My C", true)
    );
    assert_eq!(
        stream_form("DECLARE Cur CURSOR WITHOUT HOLD FOR SELECT * FROM pgml.transform_stream('x')"),
        decl("cur", true)
    );
    assert_eq!(
        stream_form("DECLARE c NO SCROLL CURSOR FOR SELECT * FROM pgml.transform_stream('x');"),
        decl("c", false)
    );
}

fn fetch(cursor: &str, direction: Direction, is_move: bool) -> Option<CursorCommand> {
    Some(CursorCommand::Fetch { cursor: cursor.into(), direction, is_move })
}

#[test]
fn fetch_and_move_in_postgres_grammar() {
    let cases = [
        ("FETCH c", Forward(N(1))),
        ("fetch from c;", Forward(N(1))),
        ("FETCH 1 FROM c", Forward(N(1))),
        ("FETCH 0 IN c", Forward(N(0))),
        ("FETCH -2 FROM c", Backward(N(2))),
        ("FETCH NEXT c", Forward(N(1))),
        ("FETCH PRIOR FROM c", Backward(N(1))),
        ("FETCH FIRST FROM c", Absolute(1)),
        ("FETCH LAST c", Absolute(-1)),
        ("FETCH ABSOLUTE -3 FROM c", Absolute(-3)),
        ("FETCH RELATIVE +2 IN c", Relative(2)),
        ("FETCH ALL FROM c", Forward(All)),
        ("FETCH FORWARD c", Forward(N(1))),
        ("FETCH FORWARD 10 FROM c", Forward(N(10))),
        ("FETCH FORWARD -1 FROM c", Backward(N(1))),
        ("FETCH FORWARD ALL FROM c", Forward(All)),
        ("FETCH BACKWARD FROM c", Backward(N(1))),
        ("FETCH BACKWARD 3 c", Backward(N(3))),
        ("FETCH BACKWARD -3 c", Forward(N(3))),
        ("FETCH BACKWARD ALL IN c", Backward(All)),
        ("/* x */ FETCH\n 2 -- y\n FROM c", Forward(N(2))),
    ];
    for (sql, d) in cases {
        assert_eq!(parse_cursor_command(sql), fetch("c", d, false), "{sql}");
    }
    assert_eq!(
        parse_cursor_command("MOVE FORWARD 5 IN \"Big C\""),
        fetch("Big C", Forward(N(5)), true)
    );
    assert_eq!(parse_cursor_command("FETCH next"), fetch("next", Forward(N(1)), false));
    assert_eq!(parse_cursor_command("CLOSE c"), Some(CursorCommand::Close(Some("c".into()))));
    assert_eq!(parse_cursor_command("close ALL;"), Some(CursorCommand::Close(None)));
    assert_eq!(
        parse_cursor_command("CLOSE \"ALL\""),
        Some(CursorCommand::Close(Some("ALL".into())))
    );
    for sql in [
        "FETCH",
        "FETCH 1.5 FROM c",
        "FETCH 1 FROM a.b",
        "FETCH ABSOLUTE FROM c",
        "SELECT 1",
        "FETCH 1 FROM c INTO x",
        "MOVE",
    ] {
        assert_eq!(parse_cursor_command(sql), None, "{sql}");
    }
    assert!(mentions_cursor_command(b"Fetch 1 from c"));
    assert!(!mentions_cursor_command(b"SELECT 1"));
    // Any case, anywhere, up to the last byte; near misses and cut-off words do not count.
    for hit in [&b"MOVE"[..], b"xcLoSe", b"select 1; fetch", b"mOvE c", b"\x00close"] {
        assert!(mentions_cursor_command(hit), "{hit:?}");
    }
    for miss in
        [&b""[..], b"fetc", b"mov", b"clos", b"SELECT abalance FROM a WHERE aid = $1", b"\x0cLOSE"]
    {
        assert!(!mentions_cursor_command(miss), "{miss:?}");
    }
}
