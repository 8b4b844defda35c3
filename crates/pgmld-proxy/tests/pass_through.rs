//! The pass-through loop (`src/fastpath.rs`) in front of the machine's Postgres
//! (127.0.0.1:5432, trust auth): sessions that call no pgml relay on it, the first pgml
//! call hands the session to tokio without losing a byte or an answer, large results and
//! COPY move under backpressure, cancel and shutdown reach sessions on it.

mod stream_support;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, StreamExt};
use std::time::Duration;
use stream_support::{connect, connect_with_handle, simple, start_server, wait_for};
use tokio_util::sync::CancellationToken;

/// A server with one loop thread and a plain-TCP upstream, and its metrics.
async fn server() -> (std::net::SocketAddr, std::sync::Arc<pgmld_metrics::Metrics>) {
    start_server("disable", 1, CancellationToken::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_relays_on_the_loop_until_its_first_pgml_call() {
    let (addr, metrics) = server().await;
    let on_loop = || metrics.sessions_pass_through.get();
    let c = connect(addr).await;
    // Prepared, in a transaction, on the loop.
    let st = c.prepare("SELECT $1::int + 1").await.unwrap();
    simple(&c, "BEGIN; CREATE TEMP TABLE t (v int); INSERT INTO t VALUES (1), (2)").await.unwrap();
    assert_eq!(on_loop(), 1, "a session that called no pgml is on the loop");
    // The pgml call goes to tokio, inside the open transaction.
    let r = simple(&c, "SELECT * FROM pgml.numbers(3)").await.unwrap();
    assert_eq!(r[0].0, vec![Some("1".into()), Some("2".into()), Some("3".into())]);
    assert!(wait_for(|| on_loop() == 0).await, "the pgml call moved the session to tokio");
    // The transaction, the temp table and the statement prepared on the loop are still there.
    let r = simple(&c, "INSERT INTO t VALUES (3); SELECT sum(v) FROM t; COMMIT").await.unwrap();
    assert_eq!(r[1].0, vec![Some("6".into())]);
    let row = c.query_one(&st, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // A second session is on the loop while the first is not.
    let c2 = connect(addr).await;
    c2.simple_query("SELECT 1").await.unwrap();
    assert_eq!(on_loop(), 1);
    drop(c2);
    assert!(wait_for(|| on_loop() == 0).await, "a closed session leaves the loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pipelined_behind_the_first_pgml_call_are_answered_in_order() {
    let (addr, metrics) = server().await;
    let c = connect(addr).await;
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(metrics.sessions_pass_through.get(), 1);
    // tokio-postgres writes these in one batch: the loop reads the plain ones before and
    // after the pgml call together, hands the rest over with the session.
    let a = c.query_one("SELECT 'before'::text", &[]);
    let b = c.query("SELECT * FROM pgml.numbers(2)", &[]);
    let d = c.query_one("SELECT 'after'::text", &[]);
    let e = c.query_one("SELECT $1::text", &[&"bound"]);
    let (a, b, d, e) = tokio::join!(a, b, d, e);
    assert_eq!(a.unwrap().get::<_, String>(0), "before");
    assert_eq!(b.unwrap().len(), 2);
    assert_eq!(d.unwrap().get::<_, String>(0), "after");
    assert_eq!(e.unwrap().get::<_, String>(0), "bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_the_loop_skip_to_sync_as_with_postgres_before_and_after_the_switch() {
    let (addr, metrics) = server().await;
    let c = connect(addr).await;
    for round in ["on the loop", "on tokio"] {
        // Failing Parse, failing Execute, each followed by good statements in the same
        // batch: the upstream skips to each Sync, the queue must skip the same answers.
        let bad_parse = c.prepare("SELEC 1");
        let div = c.query("SELECT 1/0", &[]);
        let good = c.query_one("SELECT $1::int", &[&5i32]);
        let (bad_parse, div, good) = tokio::join!(bad_parse, div, good);
        let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_string());
        assert_eq!(bad_parse.map(drop).map_err(code), Err(Some("42601".into())), "{round}");
        assert_eq!(div.map(drop).map_err(code), Err(Some("22012".into())), "{round}");
        assert_eq!(good.unwrap().get::<_, i32>(0), 5, "{round}");
        if round == "on the loop" {
            assert_eq!(metrics.sessions_pass_through.get(), 1);
            let r = simple(&c, "SELECT * FROM pgml.numbers(1)").await.unwrap();
            assert_eq!(r[0].0, vec![Some("1".into())]);
            assert!(wait_for(|| metrics.sessions_pass_through.get() == 0).await);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_and_copy_move_through_the_loop_under_backpressure() {
    let (addr, metrics) = server().await;
    let c = connect(addr).await;
    // 48 MiB of rows, read slowly at first: the client's socket fills, the loop must stop
    // reading the upstream and go on when the client reads again.
    let rows = c
        .query_raw("SELECT repeat('x', 1048576) FROM generate_series(1, 48)", Vec::<i32>::new())
        .await
        .unwrap();
    pin_mut!(rows);
    let (mut n, mut bytes) = (0, 0);
    while let Some(row) = rows.next().await {
        let v: String = row.unwrap().get(0);
        bytes += v.len();
        n += 1;
        if n < 4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!((n, bytes), (48, 48 << 20));
    // 24 MB the other way, in one COPY.
    c.simple_query("CREATE TEMP TABLE big (v text)").await.unwrap();
    let sink = c.copy_in("COPY big FROM STDIN").await.unwrap();
    pin_mut!(sink);
    let line = Bytes::from(format!("{}\n", "y".repeat(99)));
    for _ in 0..240_000 {
        sink.feed(line.clone()).await.unwrap();
    }
    assert_eq!(sink.as_mut().finish().await.unwrap(), 240_000);
    let r = c.query_one("SELECT count(*), sum(length(v)) FROM big", &[]).await.unwrap();
    assert_eq!(r.get::<_, i64>(0), 240_000);
    assert_eq!(r.get::<_, i64>(1), 240_000 * 99);
    assert_eq!(metrics.sessions_pass_through.get(), 1, "all of it stayed on the loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_a_query_on_the_loop() {
    let (addr, metrics) = server().await;
    let c = connect(addr).await;
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (r.map(drop).map_err(|e| e.code().map(|c| c.code().to_string())), c)
    });
    assert!(wait_for(|| metrics.sessions_pass_through.get() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (r, c) = tokio::time::timeout(Duration::from_secs(10), sleeper).await.unwrap().unwrap();
    assert_eq!(r, Err(Some("57014".into())), "canceled by the user");
    assert_eq!(c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_left_on_the_loop() {
    let stop = CancellationToken::new();
    let (addr, metrics) = start_server("disable", 1, stop.clone()).await;
    let (c, conn) = connect_with_handle(addr).await;
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(metrics.sessions_pass_through.get(), 1);
    stop.cancel();
    // The drain time (1 s) passes with the session idle; then it is closed.
    tokio::time::timeout(Duration::from_secs(10), conn).await.expect("connection closed").ok();
    assert!(c.is_closed());
    assert!(wait_for(|| metrics.sessions_pass_through.get() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_a_tls_upstream_or_with_the_loop_off_stay_on_tokio() {
    for (sslmode, threads) in [("require", 1), ("disable", 0)] {
        let (addr, metrics) = start_server(sslmode, threads, CancellationToken::new()).await;
        let c = connect(addr).await;
        let r = simple(&c, "SELECT 'x'; SELECT * FROM pgml.numbers(1)").await.unwrap();
        assert_eq!(r[0].0, vec![Some("x".into())]);
        assert_eq!((metrics.sessions_active.get(), metrics.sessions_pass_through.get()), (1, 0));
    }
}
