//! Wire-protocol behaviour through pgmld with tokio-postgres: extended protocol with typed
//! parameters and binary results, pipelining, transactions with errors, COPY, cancel,
//! notices and notifications, pgml calls over Parse/Bind/Execute, bad bytes.

mod support;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use std::time::{Duration, Instant, SystemTime};
use support::{sqlstate, Pgmld, TestDb};
use tokio_postgres::types::{ToSql, Type};

#[tokio::test]
async fn prepared_statements_with_typed_params_and_binary_results() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    c.batch_execute("CREATE TABLE t (i int, s text, j jsonb, b bytea, ts timestamptz)")
        .await
        .unwrap();
    let ins = c.prepare("INSERT INTO t VALUES ($1, $2, $3, $4, $5)").await.unwrap();
    let ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let j = serde_json::json!({"a": [1, 2, {"b": "é"}]});
    let blob: Vec<u8> = (0..=255u8).collect();
    for i in 0..10i32 {
        let s = format!("row {i} 'quoted'");
        let n = c.execute(&ins, &[&i, &s, &j, &blob, &ts]).await.unwrap();
        assert_eq!(n, 1);
    }
    // tokio-postgres asks for binary results: the values must round-trip exactly.
    let rows =
        c.query("SELECT i, s, j, b, ts FROM t WHERE i >= $1 ORDER BY i", &[&5i32]).await.unwrap();
    assert_eq!(rows.len(), 5);
    let r = &rows[0];
    assert_eq!(r.get::<_, i32>(0), 5);
    assert_eq!(r.get::<_, String>(1), "row 5 'quoted'");
    assert_eq!(r.get::<_, serde_json::Value>(2), j);
    assert_eq!(r.get::<_, Vec<u8>>(3), blob);
    assert_eq!(r.get::<_, SystemTime>(4), ts);
    // Typed statement with explicit parameter types, NULLs included.
    let st = c
        .prepare_typed("SELECT $1::int8 + 1, $2::text IS NULL", &[Type::INT8, Type::TEXT])
        .await
        .unwrap();
    let none: Option<String> = None;
    let row = c.query_one(&st, &[&41i64, &none]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert!(row.get::<_, bool>(1));
}

#[tokio::test]
async fn pipelined_queries_keep_their_order() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    let st = c.prepare("SELECT $1::int * 2, pg_sleep(0.001)::text").await.unwrap();
    // tokio-postgres pipelines concurrent requests on one connection.
    let futures: Vec<_> = (0..200i32)
        .map(|i| {
            let c = &c;
            let st = &st;
            async move { c.query_one(st, &[&i]).await.map(|r| (i, r.get::<_, i32>(0))) }
        })
        .collect();
    let results = futures_util::future::join_all(futures).await;
    for r in results {
        let (i, doubled) = r.unwrap();
        assert_eq!(doubled, i * 2);
    }
}

#[tokio::test]
async fn transaction_with_an_error_then_rollback() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let mut c = p.connect(&db.name).await;
    c.batch_execute("CREATE TABLE t (i int primary key)").await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let e = tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    let e = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    tx.rollback().await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    // A pgml error inside a transaction aborts it exactly like a Postgres error.
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    let e = tx.query("SELECT pgml.nope($1::int)", &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42883");
    let e = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    tx.rollback().await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    // Same through the simple protocol, then the session is fine.
    c.batch_execute("BEGIN").await.unwrap();
    let e = c.batch_execute("SELECT pgml.nope()").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42883");
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0), 7);
}

#[tokio::test]
async fn pgml_calls_over_the_extended_protocol() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    // Parse/Describe/Bind/Execute with a $1 parameter next to the pgml call.
    let st = c.prepare("SELECT pgml.version() AS v, $1::int + 1 AS n").await.unwrap();
    assert_eq!(st.columns()[0].name(), "v");
    assert_eq!(st.columns()[0].type_(), &Type::TEXT);
    assert_eq!(st.params(), &[Type::INT4]);
    for i in 0..3i32 {
        let row = c.query_one(&st, &[&i]).await.unwrap();
        assert!(row.get::<_, String>(0).starts_with("pgmld "));
        assert_eq!(row.get::<_, i32>(1), i + 1);
    }
    // Unnamed statements (query_typed sends Parse+Bind+Execute+Sync at once).
    let rows =
        c.query_typed("SELECT pgml.version(), $1::text", &[(&"x", Type::TEXT)]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(1), "x");
    // An unknown function fails at prepare time with 42883, and the connection goes on.
    let e = c.prepare("SELECT pgml.nope($1)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42883");
    let db_err = e.as_db_error().unwrap();
    assert!(db_err.message().contains("pgml.nope"), "{}", db_err.message());
    assert!(db_err.hint().unwrap_or_default().contains("pgml.version()"));
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    // Arguments a pgml call cannot take are a clear error naming them.
    let e = c.prepare("SELECT pgml.version(1)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42883");
    // Simple protocol too.
    let msgs = c.simple_query("SELECT pgml.version()").await.unwrap();
    let row = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
        _ => None,
    });
    assert!(row.unwrap().starts_with("pgmld "));
    let m = p.metric("pgmld_statements_intercepted_total{function=\"version\"}");
    assert!(m >= 5.0, "intercepted metric {m}");
}

#[tokio::test]
async fn copy_in_and_out_round_trips_100k_rows() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    c.batch_execute("CREATE TABLE src (i int, s text, f float8); CREATE TABLE dst (LIKE src)")
        .await
        .unwrap();
    let mut data = String::new();
    for i in 0..100_000 {
        data.push_str(&format!("{i}\tline {i} with \\t tab\t{}\n", i as f64 / 7.0));
    }
    let sink = c.copy_in("COPY src FROM STDIN").await.unwrap();
    pin_mut!(sink);
    for chunk in data.as_bytes().chunks(64 * 1024) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 100_000);
    let out = c.copy_out("COPY src TO STDOUT").await.unwrap();
    let chunks: Vec<Bytes> = out.try_collect().await.unwrap();
    let exported: Vec<u8> = chunks.concat();
    assert_eq!(exported.len(), data.len());
    assert_eq!(exported, data.as_bytes());
    let sink = c.copy_in("COPY dst FROM STDIN").await.unwrap();
    pin_mut!(sink);
    sink.send(Bytes::from(exported)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 100_000);
    let diff: i64 = c
        .query_one("SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(diff, 0);
}

#[tokio::test]
async fn cancel_stops_a_running_query_within_a_second() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    let token = c.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let at = Instant::now();
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        at
    });
    let e = c.query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    let cancelled_at = canceller.await.unwrap();
    assert_eq!(sqlstate(&e), "57014");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        cancelled_at.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The session is still usable.
    assert_eq!(c.query_one("SELECT 3", &[]).await.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test]
async fn notices_and_notifications_pass_through() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let (listener, mut conn) =
        tokio_postgres::connect(&p.conn_str(&db.name), tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        pin_mut!(stream);
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    listener.batch_execute("LISTEN chan").await.unwrap();
    listener.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello % world', 42; END $$").await.unwrap();
    let other = p.connect(&db.name).await;
    other.batch_execute("NOTIFY chan, 'payload-1'").await.unwrap();
    let mut notice = None;
    let mut notification = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (notice.is_none() || notification.is_none()) && Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            match m {
                tokio_postgres::AsyncMessage::Notice(n) => notice = Some(n.message().to_string()),
                tokio_postgres::AsyncMessage::Notification(n) => {
                    notification = Some((n.channel().to_string(), n.payload().to_string()))
                }
                _ => {}
            }
        } else {
            // Notifications reach an idle client only when it reads; a query makes it read.
            let _ = listener.batch_execute("SELECT 1").await;
        }
    }
    assert_eq!(notice.as_deref(), Some("hello 42 world"));
    assert_eq!(notification, Some(("chan".to_string(), "payload-1".to_string())));
}

#[tokio::test]
async fn garbage_bytes_close_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let good = p.connect(&db.name).await;
    // Garbage instead of a startup packet.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n =
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "connection should be closed");
    // Garbage after a valid session start: a FATAL protocol error, then close.
    let (raw_client, raw_conn) =
        tokio_postgres::connect(&p.conn_str(&db.name), tokio_postgres::NoTls).await.unwrap();
    drop(raw_client);
    drop(raw_conn);
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut startup = Vec::new();
    let params = format!("user\0postgres\0database\0{}\0\0", db.name);
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&196608u32.to_be_bytes());
    startup.extend_from_slice(params.as_bytes());
    s.write_all(&startup).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    s.write_all(&[b'?', 0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.first() == Some(&b'E'), "expected an ErrorResponse, got {rest:?}");
    assert!(String::from_utf8_lossy(&rest).contains("08P01"));
    // Everyone else is unaffected.
    assert_eq!(good.query_one("SELECT 5", &[]).await.unwrap().get::<_, i32>(0), 5);
    let again = p.connect(&db.name).await;
    assert_eq!(again.query_one("SELECT 6", &[]).await.unwrap().get::<_, i32>(0), 6);
}

#[tokio::test]
async fn large_results_stream_with_flat_memory() {
    let p = Pgmld::start_plain();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    let before = p.peak_rss_kib();
    // ~1 GiB of rows, consumed as a stream.
    let params: Vec<&(dyn ToSql + Sync)> = vec![];
    let rows = c
        .query_raw("SELECT repeat('x', 1024) FROM generate_series(1, 1100000)", params)
        .await
        .unwrap();
    pin_mut!(rows);
    let mut n = 0u64;
    let mut bytes = 0u64;
    while let Some(r) = rows.next().await {
        let r = r.unwrap();
        bytes += r.get::<_, &str>(0).len() as u64;
        n += 1;
    }
    assert_eq!(n, 1_100_000);
    assert!(bytes >= 1 << 30);
    let after = p.peak_rss_kib();
    assert!(
        after < before + 64 * 1024,
        "pgmld peak RSS grew from {before} KiB to {after} KiB on a 1 GiB result"
    );
}
