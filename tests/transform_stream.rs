//! `pgml.transform_stream` with the real SmolLM2-135M-Instruct GGUF: pieces arrive while
//! the model generates, concatenate to `pgml.transform`'s greedy answer, and stream through
//! a cursor as PostgresML's SDK and Python client read them (`DECLARE … CURSOR`, `FETCH 1`
//! until no row, `COMMIT`), with tokio-postgres (extended protocol, bind parameters, binary
//! results) and psql (simple protocol).

mod support;

use std::time::{Duration, Instant};

use futures_util::{pin_mut, StreamExt};
use serde_json::{json, Value as Json};
use support::llm::{lit, smollm2_gguf, start_offline};
use support::{expect_err, Pgmld, Start, TestDb};
use tokio_postgres::types::{ToSql, Type};

/// The SDK's statement; sqlx sends its parameters typed jsonb, jsonb[], jsonb.
const DECLARE: &str =
    "DECLARE c CURSOR FOR SELECT pgml.transform_stream(task => $1, inputs => $2, args => $3)";
const TYPES: &[Type] = &[Type::JSONB, Type::JSONB_ARRAY, Type::JSONB];

fn chat_task() -> Json {
    json!({"task": "conversational", "model": smollm2_gguf().display().to_string()})
}

fn france() -> Vec<Json> {
    vec![
        json!({"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}),
        json!({"role": "user", "content": "What is the capital of France?"}),
    ]
}

fn messages_sql(msgs: &[Json]) -> String {
    let items: Vec<String> =
        msgs.iter().map(|m| format!("{}::jsonb", lit(&m.to_string()))).collect();
    format!("ARRAY[{}]", items.join(", "))
}

/// The text of one streamed row: PostgresML's shape, a one-element array of text.
fn piece(row: &Json) -> String {
    let arr = row.as_array().unwrap_or_else(|| panic!("a JSON array: {row}"));
    assert_eq!(arr.len(), 1, "{row}");
    arr[0].as_str().unwrap_or_else(|| panic!("text: {row}")).to_string()
}

/// `pgml.transform`'s greedy answer, the reference the pieces must add up to.
async fn greedy_answer(c: &tokio_postgres::Client, p: &Pgmld, args: &Json) -> String {
    let sql = format!(
        "SELECT pgml.transform(task => {}::jsonb, inputs => {}, args => {}::jsonb)",
        lit(&chat_task().to_string()),
        messages_sql(&france()),
        lit(&args.to_string())
    );
    let answer: Json =
        c.query_one(&sql, &[]).await.unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text())).get(0);
    piece(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_arrive_while_generating_and_add_up_to_the_greedy_answer() {
    let _one_at_a_time = support::serial::model_test().await;
    let db = TestDb::create();
    let p = start_offline();
    let c = p.connect(&db.name).await;
    let args = json!({"max_new_tokens": 40});
    let answer = greedy_answer(&c, &p, &args).await;
    assert!(answer.contains("Paris"), "{answer}");

    // A plain SELECT, extended protocol: rows come one by one as they are generated.
    let st = c
        .prepare_typed("SELECT pgml.transform_stream(task => $1, inputs => $2, args => $3)", TYPES)
        .await
        .unwrap();
    let (task, msgs) = (chat_task(), france());
    let params: [&(dyn ToSql + Sync); 3] = [&task, &msgs, &args];
    let started = Instant::now();
    let rows = c.query_raw(&st, params).await.unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    pin_mut!(rows);
    let mut pieces = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(row) = rows.next().await {
        let row = row.unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
        arrivals.push(started.elapsed());
        pieces.push(piece(&row.get::<_, Json>(0)));
    }
    let total = started.elapsed();
    println!("{} pieces, arriving at {arrivals:?} of {total:?}: {pieces:?}", pieces.len());
    assert!(pieces.len() > 3, "{pieces:?}");
    assert_eq!(pieces.concat(), answer);
    // Rows arrive spread over the generation, not all at its end.
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(spread * 4 > total, "pieces arrived within {spread:?} of a {total:?} call");

    // Simple protocol, the function in FROM.
    let sql = format!(
        "SELECT * FROM pgml.transform_stream({}::jsonb, {}::jsonb, inputs => {})",
        lit(&chat_task().to_string()),
        lit(&args.to_string()),
        messages_sql(&france())
    );
    let mut text = String::new();
    for m in c.simple_query(&sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            text.push_str(&piece(&serde_json::from_str(r.get(0).unwrap()).unwrap()));
        }
    }
    assert_eq!(text, answer);

    // text-generation from one prompt: the prompt comes first, as the HF pipeline returns it.
    let tg = json!({"task": "text-generation", "model": smollm2_gguf().display().to_string()})
        .to_string();
    let prompt = "The capital of France is";
    let whole: Json = c
        .query_one("SELECT pgml.transform(task => $1, inputs => ARRAY[$2], args => '{\"max_new_tokens\": 8}')", &[&tg, &prompt])
        .await
        .unwrap()
        .get(0);
    let streamed: Vec<String> = c
        .query("SELECT pgml.transform_stream(task => $1, input => $2, args => '{\"max_new_tokens\": 8}')", &[&tg, &prompt])
        .await
        .unwrap()
        .iter()
        .map(|r| piece(&r.get::<_, Json>(0)))
        .collect();
    assert_eq!(streamed.first().map(String::as_str), Some(prompt));
    assert_eq!(Some(streamed.concat().as_str()), whole[0][0]["generated_text"].as_str(), "{whole}");

    // Bad calls fail with the same errors as pgml.transform, and the session goes on.
    let one_user = "ARRAY['{\"role\": \"user\", \"content\": \"hi\"}'::jsonb]";
    let chat = lit(&chat_task().to_string());
    expect_err(&c, &format!("SELECT pgml.transform_stream({chat}::jsonb, '{{\"temperature\": -1}}', inputs => {one_user})"), "22023", "temperature").await;
    expect_err(&c, &format!("SELECT pgml.transform_stream({chat}::jsonb)"), "22004", "needs input")
        .await;
    expect_err(&c, &format!("SELECT pgml.transform_stream('{{\"task\": \"text-generation\"}}', inputs => {one_user})"), "22023", "conversational").await;
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_fetch_one_until_empty_as_the_sdk() {
    let _one_at_a_time = support::serial::model_test().await;
    let db = TestDb::create();
    let p = start_offline();
    let c = p.connect(&db.name).await;
    let args = json!({"max_new_tokens": 40});
    let answer = greedy_answer(&c, &p, &args).await;

    // tokio-postgres: the SDK's statements with bind parameters; FETCH prepared once.
    c.batch_execute("BEGIN").await.unwrap();
    let declare = c.prepare_typed(DECLARE, TYPES).await.unwrap();
    c.execute(&declare, &[&chat_task(), &france(), &args])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    let fetch = c.prepare("FETCH 1 FROM c").await.unwrap();
    let mut pieces = Vec::new();
    loop {
        let rows = c.query(&fetch, &[]).await.unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
        match rows.as_slice() {
            [] => break,
            [row] => pieces.push(piece(&row.get::<_, Json>(0))),
            more => panic!("FETCH 1 returned {} rows", more.len()),
        }
    }
    c.batch_execute("COMMIT").await.unwrap();
    assert!(pieces.len() > 3, "{pieces:?}");
    assert_eq!(pieces.concat(), answer);

    // psql, simple protocol: FETCH 1 a few times, then the rest.
    let script = format!(
        "BEGIN;\nDECLARE c CURSOR FOR SELECT pgml.transform_stream(task => {}::jsonb, inputs => {}, args => {}::jsonb);\n\
         FETCH 1 FROM c;\nFETCH 1 FROM c;\nFETCH ALL FROM c;\nFETCH 1 FROM c;\nCOMMIT;\n",
        lit(&chat_task().to_string()),
        messages_sql(&france()),
        lit(&args.to_string())
    );
    let out = psql(&p, &db.name, &script);
    let rows: Vec<Json> = out
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.iter().map(piece).collect::<String>(), answer, "{out}");
    assert!(out.contains("DECLARE CURSOR") && out.trim_end().ends_with("COMMIT"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_close_stop_the_generation() {
    let _one_at_a_time = support::serial::model_test().await;
    let db = TestDb::create();
    let env =
        [("HF_HUB_OFFLINE", "1"), ("RUST_LOG", "info,pgmld_proxy=debug,pgmld_transform=debug")];
    let p = Pgmld::start_with(Start {
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Start::default()
    });
    let c = p.connect(&db.name).await;
    let short = json!({"max_new_tokens": 10});
    greedy_answer(&c, &p, &short).await; // loads the model
    let started = Instant::now();
    greedy_answer(&c, &p, &short).await;
    let baseline = started.elapsed();
    // The model runs one generation at a time: a call right after a stopped stream waits
    // for nothing; after one still running, it would wait for 2,000 tokens.
    let answers_promptly = |what: &str, took: Duration| {
        println!("a 10-token answer after {what}: {took:?} (baseline {baseline:?})");
        assert!(
            took < baseline * 3 + Duration::from_secs(10),
            "{what} left the generation running: {took:?} vs {baseline:?}"
        );
    };
    let long = json!({"max_new_tokens": 2000, "do_sample": true, "seed": 1, "temperature": 1.5});
    let story = vec![json!({"role": "user", "content": "Write a very long story about a cat."})];
    let declare = c.prepare_typed(DECLARE, TYPES).await.unwrap();

    // Cancel during a FETCH: 57014, and the generation stops.
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(&declare, &[&chat_task(), &story, &long]).await.unwrap();
    assert_eq!(c.query("FETCH 1 FROM c", &[]).await.unwrap().len(), 1);
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let started = Instant::now();
    let e = c.query("FETCH ALL FROM c", &[]).await.unwrap_err();
    assert_eq!(support::sqlstate(&e), "57014", "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "cancel took {:?}", started.elapsed());
    canceller.await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    let started = Instant::now();
    greedy_answer(&c, &p, &short).await;
    answers_promptly("a cancelled FETCH", started.elapsed());

    // CLOSE between FETCHes.
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(&declare, &[&chat_task(), &story, &long]).await.unwrap();
    assert_eq!(c.query("FETCH 2 FROM c", &[]).await.unwrap().len(), 2);
    c.batch_execute("CLOSE c; COMMIT").await.unwrap();
    let started = Instant::now();
    greedy_answer(&c, &p, &short).await;
    answers_promptly("CLOSE", started.elapsed());

    // Every generation the model ran stopped early (the log counts their tokens).
    let log = strip_colors(&p.log_text());
    let counts: Vec<u64> = log
        .split("completion_tokens=")
        .skip(1)
        .filter_map(|rest| {
            rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
        })
        .collect();
    println!("completion tokens of each generation: {counts:?}");
    assert!(counts.len() >= 5 && counts.iter().all(|&n| n < 500), "{counts:?}");
}

/// The log without its terminal colour codes (`ESC [ ... m`).
fn strip_colors(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `script` through psql (statements one by one, unaligned tuples only).
fn psql(p: &Pgmld, db: &str, script: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &p.addr.port().to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql on PATH");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.log_text()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
