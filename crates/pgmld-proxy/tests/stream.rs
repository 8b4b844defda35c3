//! Streaming pgml calls through pgmld in front of the machine's Postgres
//! (127.0.0.1:5432, trust auth): rows reach the client while the call still runs, in the
//! simple and extended protocols, and cursors over such calls behave as Postgres cursors.

mod stream_support;

use futures_util::{pin_mut, StreamExt, TryStreamExt};
use serde_json::{json, Value as Json};
use std::time::Duration;
use stream_support::{connect, connect_with_handle, psql, simple, start, upstream, Gate};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn rows(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_select_sends_each_row_as_it_is_produced() {
    let c = connect(start().await).await;
    let mut gate = Gate::new("ext-select");
    let st = c.prepare("SELECT pgml.gated($1)").await.unwrap();
    assert_eq!(st.columns()[0].name(), "gated");
    assert_eq!(st.columns()[0].type_(), &tokio_postgres::types::Type::JSONB);
    let rows = c.query_raw(&st, ["ext-select"]).await.unwrap();
    pin_mut!(rows);
    gate.send(json!(["Hel"]));
    // The first row arrives while the call is still waiting for its second value.
    let first =
        timeout(WAIT, rows.next()).await.expect("first row before the end").unwrap().unwrap();
    assert_eq!(first.get::<_, Json>(0), json!(["Hel"]));
    gate.send(json!(["lo"]));
    let second = timeout(WAIT, rows.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.get::<_, Json>(0), json!(["lo"]));
    gate.end();
    assert!(timeout(WAIT, rows.next()).await.unwrap().is_none());
    assert_eq!(rows.rows_affected(), Some(2));
    assert!(gate.wait_dropped().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_select_streams_in_from_too() {
    use tokio_postgres::SimpleQueryMessage as M;
    let c = connect(start().await).await;
    let mut gate = Gate::new("simple-from");
    let messages =
        c.simple_query_raw("SELECT * FROM pgml.gated('simple-from') AS t(piece)").await.unwrap();
    pin_mut!(messages);
    gate.send(json!({"b": 1, "a": [1, "x"]}));
    let columns = timeout(WAIT, messages.next()).await.unwrap().unwrap().unwrap();
    let M::RowDescription(columns) = columns else { panic!("expected a RowDescription") };
    assert_eq!(columns[0].name(), "piece");
    let M::Row(row) =
        timeout(WAIT, messages.next()).await.expect("row before the end").unwrap().unwrap()
    else {
        panic!("expected a row")
    };
    // Text exactly as Postgres prints jsonb.
    assert_eq!(row.get(0), Some(r#"{"a": [1, "x"], "b": 1}"#));
    gate.end();
    let M::CommandComplete(n) = timeout(WAIT, messages.next()).await.unwrap().unwrap().unwrap()
    else {
        panic!("expected CommandComplete")
    };
    assert_eq!(n, 1);
    // Postgres formats the same value the same way.
    let up = connect(upstream()).await;
    let printed =
        up.query_one("SELECT $1::text::jsonb::text", &[&r#"{"b":1,"a":[1,"x"]}"#]).await.unwrap();
    assert_eq!(printed.get::<_, String>(0), r#"{"a": [1, "x"], "b": 1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_fetch_one_until_no_row_then_close() {
    let c = connect(start().await).await;
    let mut gate = Gate::new("cur-simple");
    simple(&c, "BEGIN").await.unwrap();
    let declared =
        c.simple_query("DECLARE c CURSOR FOR SELECT pgml.gated('cur-simple')").await.unwrap();
    assert!(matches!(declared[0], tokio_postgres::SimpleQueryMessage::CommandComplete(0)));
    // FETCH waits for the next piece.
    let fetch = c.simple_query("FETCH 1 FROM c");
    tokio::pin!(fetch);
    assert!(
        timeout(Duration::from_millis(200), &mut fetch).await.is_err(),
        "FETCH returned before there was a row"
    );
    gate.send(json!(["a"]));
    gate.send(json!(["b"]));
    let first = timeout(WAIT, fetch).await.unwrap().unwrap();
    assert!(
        matches!(&first[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("[\"a\"]"))
    );
    assert_eq!(simple(&c, "FETCH NEXT FROM c").await.unwrap(), vec![(rows(&["[\"b\"]"]), 1)]);
    gate.end();
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap(), vec![(vec![], 0)]);
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap(), vec![(vec![], 0)]);
    simple(&c, "CLOSE c").await.unwrap();
    assert!(gate.dropped.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        simple(&c, "FETCH 1 FROM c").await.unwrap_err(),
        "34000: cursor \"c\" does not exist"
    );
    simple(&c, "ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_rollback_drop_the_stream_at_once() {
    let c = connect(start().await).await;
    for end in ["COMMIT", "ROLLBACK"] {
        let name = format!("end-{end}");
        let gate = Gate::new(&name);
        simple(&c, "BEGIN").await.unwrap();
        simple(&c, &format!("DECLARE c CURSOR FOR SELECT * FROM pgml.gated('{name}')"))
            .await
            .unwrap();
        gate.send(json!(1));
        assert_eq!(simple(&c, "FETCH 1 IN c").await.unwrap(), vec![(rows(&["1"]), 1)]);
        assert!(!gate.dropped.load(std::sync::atomic::Ordering::SeqCst));
        simple(&c, end).await.unwrap();
        assert!(gate.wait_dropped().await, "{end} left the stream running");
        assert_eq!(
            simple(&c, "FETCH 1 FROM c").await.unwrap_err(),
            "34000: cursor \"c\" does not exist"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_outside_a_transaction_is_postgres_error() {
    let c = connect(start().await).await;
    let gate = Gate::new("no-block");
    let e = simple(&c, "DECLARE c CURSOR FOR SELECT pgml.gated('no-block')").await.unwrap_err();
    assert_eq!(e, "25P01: DECLARE CURSOR can only be used in transaction blocks");
    assert!(
        !gate.opened.load(std::sync::atomic::Ordering::SeqCst),
        "the call ran for a failed DECLARE"
    );
    // Other cursors and statements still go upstream untouched.
    simple(&c, "BEGIN").await.unwrap();
    simple(&c, "DECLARE d CURSOR FOR SELECT g FROM generate_series(1, 3) g").await.unwrap();
    assert_eq!(simple(&c, "FETCH 2 FROM d").await.unwrap(), vec![(rows(&["1", "2"]), 2)]);
    let e = simple(&c, "DECLARE d CURSOR FOR SELECT pgml.numbers(1)").await.unwrap_err();
    assert_eq!(e, "42P03: cursor \"d\" already exists");
    simple(&c, "ROLLBACK").await.unwrap();
    assert_eq!(simple(&c, "SELECT 1").await.unwrap(), vec![(rows(&["1"]), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_waiting_fetch_and_the_generation() {
    let c = connect(start().await).await;
    let gate = Gate::new("cancel");
    simple(&c, "BEGIN").await.unwrap();
    simple(&c, "DECLARE c CURSOR FOR SELECT pgml.gated('cancel')").await.unwrap();
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let e = timeout(WAIT, simple(&c, "FETCH 1 FROM c")).await.unwrap().unwrap_err();
    assert_eq!(e, "57014: canceling statement due to user request");
    canceller.await.unwrap();
    assert!(gate.wait_dropped().await);
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap_err().split(':').next(), Some("25P02"));
    simple(&c, "ROLLBACK").await.unwrap();
    assert_eq!(simple(&c, "SELECT 2").await.unwrap(), vec![(rows(&["2"]), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_drops_the_stream() {
    let (c, connection) = connect_with_handle(start().await).await;
    let gate = Gate::new("gone");
    simple(&c, "BEGIN").await.unwrap();
    simple(&c, "DECLARE c CURSOR FOR SELECT pgml.gated('gone')").await.unwrap();
    let fetch = c.simple_query("FETCH 1 FROM c");
    tokio::pin!(fetch);
    assert!(timeout(Duration::from_millis(200), &mut fetch).await.is_err());
    assert!(!gate.dropped.load(std::sync::atomic::Ordering::SeqCst));
    connection.abort(); // the socket closes mid-FETCH
    assert!(gate.wait_dropped().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_mid_stream_abort_the_transaction() {
    let c = connect(start().await).await;
    let gate = Gate::new("boom");
    simple(&c, "BEGIN").await.unwrap();
    simple(&c, "DECLARE c CURSOR FOR SELECT pgml.gated('boom')").await.unwrap();
    gate.send(json!(["ok"]));
    gate.fail("the model broke");
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap(), vec![(rows(&["[\"ok\"]"]), 1)]);
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap_err(), "22023: the model broke");
    assert!(gate.wait_dropped().await);
    assert_eq!(simple(&c, "SELECT 1").await.unwrap_err().split(':').next(), Some("25P02"));
    simple(&c, "ROLLBACK").await.unwrap();
    // Outside a cursor, the error ends the statement after the rows sent so far.
    let mut gate = Gate::new("boom2");
    gate.send(json!(1));
    gate.fail("late failure");
    gate.end();
    assert_eq!(simple(&c, "SELECT pgml.gated('boom2')").await.unwrap_err(), "22023: late failure");
    assert_eq!(simple(&c, "SELECT 3").await.unwrap(), vec![(rows(&["3"]), 1)]);
}

/// The same FETCH / MOVE sequence on a pgmld stream cursor and on a Postgres cursor over
/// the same values answer the same rows and counts, errors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_move_as_postgres_cursors() {
    let ours = connect(start().await).await;
    let theirs = connect(upstream()).await;
    let scripts: &[&[&str]] = &[
        &[
            "FETCH 2 FROM c",
            "FETCH 0 FROM c",
            "MOVE 0 FROM c",
            "FETCH BACKWARD ALL FROM c",
            "FETCH c",
            "FETCH ALL FROM c",
            "FETCH 1 FROM c",
        ],
        &[
            "FETCH LAST FROM c",
            "FETCH PRIOR FROM c",
            "FETCH ABSOLUTE 2 FROM c",
            "FETCH RELATIVE -1 FROM c",
            "FETCH -1 FROM c",
            "FETCH FIRST FROM c",
        ],
        &[
            "MOVE FORWARD ALL IN c",
            "FETCH BACKWARD 2 FROM c",
            "MOVE ABSOLUTE -1 IN c",
            "FETCH RELATIVE 0 FROM c",
            "MOVE RELATIVE 9 IN c",
            "FETCH BACKWARD 1 FROM c",
        ],
        &[
            "MOVE 3 IN c",
            "FETCH FORWARD 9 FROM c",
            "FETCH ABSOLUTE 0 FROM c",
            "FETCH NEXT FROM c",
            "MOVE BACKWARD ALL IN c",
            "FETCH FORWARD -1 FROM c",
        ],
        &["FETCH 2 FROM c", "FETCH PRIOR FROM c"],
        &["FETCH 2 FROM c", "FETCH ABSOLUTE 1 FROM c", "FETCH 1 FROM c"],
        &[
            "FETCH 2 FROM c",
            "FETCH ABSOLUTE 4 FROM c",
            "FETCH 1 FROM c",
            "MOVE 0 IN c",
            "FETCH 0 FROM c",
        ],
    ];
    for (n, (form, up_query)) in [
        (
            "SELECT * FROM pgml.numbers(5)",
            "SELECT * FROM unnest(ARRAY['1','2','3','4','5']::jsonb[]) AS numbers",
        ),
        ("SELECT pgml.numbers(5)", "SELECT unnest(ARRAY['1','2','3','4','5']::jsonb[]) AS numbers"),
        (
            "SELECT * FROM pgml.numbers(5)",
            "SELECT * FROM unnest(ARRAY['1','2','3','4','5']::jsonb[]) AS numbers",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let scroll = if n == 2 { "NO SCROLL " } else { "" };
        for script in scripts {
            let mut answers = [Vec::new(), Vec::new()];
            for (i, (client, query)) in [(&ours, form), (&theirs, up_query)].into_iter().enumerate()
            {
                simple(client, "BEGIN").await.unwrap();
                simple(client, &format!("DECLARE c {scroll}CURSOR FOR {query}")).await.unwrap();
                for cmd in *script {
                    answers[i].push(simple(client, cmd).await);
                }
                simple(client, "ROLLBACK").await.unwrap();
            }
            assert_eq!(answers[0], answers[1], "{scroll}{form}: {script:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_fetches_serve_later_cursors_with_binary_results() {
    let c = connect(start().await).await;
    // Prepared once and reused by the next transaction's cursor, as sqlx does.
    let mut fetch = None;
    for round in 0..2 {
        let name = format!("prepared-{round}");
        let mut gate = Gate::new(&name);
        c.batch_execute("BEGIN").await.unwrap();
        let declared = c
            .execute("DECLARE c CURSOR FOR SELECT pgml.gated(name => $1)", &[&name])
            .await
            .unwrap();
        assert_eq!(declared, 0);
        gate.send(json!([format!("piece {round}")]));
        if fetch.is_none() {
            fetch = Some(c.prepare("FETCH 1 FROM c").await.unwrap());
        }
        let fetch = fetch.as_ref().unwrap();
        assert_eq!(fetch.columns()[0].name(), "gated");
        // tokio-postgres asks for binary results: jsonb's version byte and text.
        let got = c.query(fetch, &[]).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].get::<_, Json>(0), json!([format!("piece {round}")]));
        gate.end();
        assert!(c.query(fetch, &[]).await.unwrap().is_empty());
        c.batch_execute("COMMIT").await.unwrap();
        assert!(gate.wait_dropped().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_row_limits_suspend_the_stream() {
    let mut c = connect(start().await).await;
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind("SELECT * FROM pgml.numbers($1)", &[&5i64]).await.unwrap();
    let mut seen = Vec::new();
    for expected in [2, 2, 1, 0] {
        let batch = tx.query_portal(&portal, 2).await.unwrap();
        assert_eq!(batch.len(), expected);
        seen.extend(batch.iter().map(|r| r.get::<_, Json>(0)));
    }
    assert_eq!(seen, vec![json!(1), json!(2), json!(3), json!(4), json!(5)]);
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_around_a_set_run_in_postgres() {
    let c = connect(start().await).await;
    assert_eq!(
        simple(&c, "SELECT count(*) FROM pgml.numbers(4)").await.unwrap(),
        vec![(rows(&["4"]), 1)]
    );
    let got = simple(
        &c,
        "SELECT x::int * 10 FROM pgml.numbers(3) AS t(x) WHERE x::int > 1 ORDER BY 1 DESC",
    )
    .await
    .unwrap();
    assert_eq!(got, vec![(rows(&["30", "20"]), 2)]);
    // One query string: BEGIN, DECLARE, FETCH and COMMIT in order.
    let got = simple(&c, "BEGIN; DECLARE c CURSOR FOR SELECT pgml.numbers(3); FETCH 2 FROM c; MOVE 1 IN c; FETCH 1 FROM c; COMMIT")
        .await
        .unwrap();
    let counts: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, vec![0, 0, 2, 1, 0, 0]);
    assert_eq!(got[2].0, rows(&["1", "2"]));
    let all: Vec<Json> = c
        .query("SELECT * FROM pgml.numbers(3)", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(all, vec![json!(1), json!(2), json!(3)]);
    let rows: Vec<tokio_postgres::Row> =
        c.query_raw("SELECT pgml.numbers($1)", [2i64]).await.unwrap().try_collect().await.unwrap();
    assert_eq!(rows.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_prints_cursors_as_postgres() {
    let port = start().await.port();
    let script = "BEGIN;\nDECLARE c CURSOR FOR SELECT * FROM pgml.numbers(3) AS t(n);\nFETCH 1 FROM c;\nMOVE 1 IN c;\n\
                  FETCH ALL FROM c;\nFETCH 1 FROM c;\nCLOSE c;\nCOMMIT;\n";
    let ours = tokio::task::spawn_blocking(move || psql(port, script)).await.unwrap();
    assert!(ours.contains("MOVE 1\n"), "{ours}");
    assert!(ours.contains(" n \n---\n 1\n(1 row)"), "{ours}");
    let theirs_script = script.replace("pgml.numbers(3)", "unnest(ARRAY['1','2','3']::jsonb[])");
    let theirs = tokio::task::spawn_blocking(move || psql(5432, &theirs_script)).await.unwrap();
    assert_eq!(ours, theirs);
    // psql -c sends one query string; the cursor streams within it too.
    let one = "BEGIN; DECLARE c CURSOR FOR SELECT pgml.numbers(2); FETCH ALL FROM c; COMMIT";
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                one,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// psycopg 3's server-side cursors (`conn.cursor(name=...)`): DECLARE with bound
/// parameters, FETCH FORWARD n / ALL, MOVE for scroll(), CLOSE; text and binary results.
/// Needs psycopg in `.deps/python` (`bash scripts/setup.sh deps`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_server_side_cursors() {
    let addr = start().await;
    let deps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.deps/python");
    assert!(
        deps.join("psycopg").is_dir(),
        "psycopg missing in {}; run `bash scripts/setup.sh deps`",
        deps.display()
    );
    let script = r#"
import sys, psycopg
conn = psycopg.connect(sys.argv[1])
for binary in (False, True):
    with conn.transaction():
        cur = conn.cursor(name="c", binary=binary)
        cur.execute("SELECT pgml.numbers(%s)", (5,))
        print(cur.fetchone()[0], cur.fetchmany(2), cur.fetchall(), cur.fetchone())
        cur.close()
with conn.transaction():
    cur = conn.cursor(name="s", scrollable=True)
    cur.execute("SELECT * FROM pgml.numbers(%s)", (4,))
    cur.scroll(2)
    a = cur.fetchone()[0]
    cur.scroll(-2)
    b = cur.fetchone()[0]
    cur.scroll(0, mode="absolute")
    print(a, b, [r[0] for r in cur])
"#;
    let url = format!("host={} port={} user=postgres dbname=postgres", addr.ip(), addr.port());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .env("PYTHONPATH", deps)
            .args(["-c", script, &url])
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        lines,
        "1 [(2,), (3,)] [(4,), (5,)] None\n1 [(2,), (3,)] [(4,), (5,)] None\n3 2 [1, 2, 3, 4]\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_keep_or_undo_cursors_as_postgres() {
    let c = connect(start().await).await;
    // An error after the DECLARE, rolled back to a savepoint: the cursor goes on.
    simple(&c, "BEGIN").await.unwrap();
    simple(&c, "DECLARE c CURSOR FOR SELECT pgml.numbers(3)").await.unwrap();
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap(), vec![(rows(&["1"]), 1)]);
    simple(&c, "SAVEPOINT s").await.unwrap();
    assert_eq!(simple(&c, "SELECT 1/0").await.unwrap_err(), "22012: division by zero");
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap_err().split(':').next(), Some("25P02"));
    simple(&c, "ROLLBACK TO SAVEPOINT s").await.unwrap();
    assert_eq!(simple(&c, "FETCH 1 FROM c").await.unwrap(), vec![(rows(&["2"]), 1)]);
    simple(&c, "ROLLBACK").await.unwrap();
    // A DECLARE undone by ROLLBACK TO SAVEPOINT: the cursor is gone, and so is the stream.
    let gate = Gate::new("savepoint");
    simple(&c, "BEGIN; SAVEPOINT s").await.unwrap();
    simple(&c, "DECLARE c CURSOR FOR SELECT pgml.gated('savepoint')").await.unwrap();
    simple(&c, "ROLLBACK TO SAVEPOINT s").await.unwrap();
    assert_eq!(
        simple(&c, "FETCH 1 FROM c").await.unwrap_err(),
        "34000: cursor \"c\" does not exist"
    );
    assert!(gate.wait_dropped().await);
    simple(&c, "ROLLBACK").await.unwrap();
}
