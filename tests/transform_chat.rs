//! `pgml.transform` with causal LMs: conversational (chat messages as jsonb[] or text[])
//! and text-generation with the real SmolLM2-135M-Instruct GGUF, greedy and seeded
//! sampling, token counts, stop strings, `load_in_8bit`, cancel, per-row calls and bad
//! inputs with their SQLSTATEs; and a LoRA adapter tuned through SQL served by project, id,
//! on an int8 base and from a directory.
//!
//! Two tests, one after the other (`support::serial`: side by side, their libtorch pools
//! oversubscribe the cores): every inference check shares one pgmld and one model load, and
//! the adapter test holds the one real tune.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use support::llm::{lit, smollm2_gguf, start_offline};
use support::{expect_err, sqlstate, Pgmld, TestDb};

/// The task object for `model` (extra keys merged in).
fn task(kind: &str, model: &str, extra: Json) -> String {
    let mut t = json!({"task": kind, "model": model});
    if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
        t.extend(extra.clone());
    }
    t.to_string()
}

fn messages(question: &str) -> Vec<Json> {
    vec![
        json!({"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}),
        json!({"role": "user", "content": question}),
    ]
}

/// `SELECT pgml.transform(...)` with the messages as a jsonb[] literal.
fn chat_sql(task: &str, msgs: &[Json], args: &Json) -> String {
    let arr: Vec<String> = msgs.iter().map(|m| format!("{}::jsonb", lit(&m.to_string()))).collect();
    format!(
        "SELECT pgml.transform(task => {}::jsonb, inputs => ARRAY[{}], args => {}::jsonb)",
        lit(task),
        arr.join(", "),
        lit(&args.to_string())
    )
}

async fn one(c: &tokio_postgres::Client, sql: &str, p: &Pgmld) -> Json {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}\n{}", p.log_text())).get(0)
}

fn text_of(answer: &Json) -> String {
    let arr = answer.as_array().unwrap_or_else(|| panic!("a JSON array: {answer}"));
    assert_eq!(arr.len(), 1, "{answer}");
    arr[0].as_str().unwrap_or_else(|| panic!("a string: {answer}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_chats_greedily_samples_reproducibly_cancels_and_loads_in_8bit() {
    let _one_at_a_time = support::serial::model_test().await;
    let model = smollm2_gguf().display().to_string();
    let db = TestDb::create();
    let p = start_offline();
    let c = p.connect(&db.name).await;
    let chat = task("conversational", &model, json!({}));
    let france = messages("What is the capital of France?");

    // Greedy: the untuned model knows its capitals.
    let started = Instant::now();
    let answer = one(&c, &chat_sql(&chat, &france, &json!({"max_new_tokens": 40})), &p).await;
    let text = text_of(&answer);
    println!("greedy answer ({:?}, first call includes the load): {text:?}", started.elapsed());
    assert!(text.contains("Paris"), "{text}");
    assert!(
        !text.contains("<|im_end|>") && !text.contains("<|im_start|>"),
        "special tokens are skipped: {text}"
    );

    // The same with token counts; and messages as text[] (PostgresML's other overload).
    let started = Instant::now();
    let with_usage = one(
        &c,
        &chat_sql(&chat, &france, &json!({"max_new_tokens": 40, "return_usage": true})),
        &p,
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(with_usage["outputs"], answer, "return_usage only wraps the result");
    let usage = &with_usage["usage"];
    let (prompt, completion) =
        (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert!(prompt > 15 && (1..=40).contains(&completion), "{with_usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
    let reason = with_usage["finish_reasons"][0].as_str().unwrap();
    assert!(reason == "stop" || (reason == "length" && completion == 40), "{with_usage}");
    // Every finished generation adds to the token counters (two so far gave these counts).
    assert!(
        p.metric("pgmld_generated_tokens_total") >= 2.0 * completion as f64,
        "{}",
        p.metrics_text()
    );
    assert!(p.metric("pgmld_prompt_tokens_total") >= 2.0 * prompt as f64, "{}", p.metrics_text());
    println!(
        "greedy: {completion} tokens in {secs:.2}s = {:.1} tokens/s (prompt {prompt} tokens)",
        completion as f64 / secs
    );
    let as_text: Vec<String> = france.iter().map(|m| lit(&m.to_string())).collect();
    let text_sql = format!(
        "SELECT pgml.transform(task => {}::jsonb, inputs => ARRAY[{}]::text[], args => '{{\"max_new_tokens\": 40}}'::jsonb)",
        lit(&chat),
        as_text.join(", ")
    );
    assert_eq!(one(&c, &text_sql, &p).await, answer, "text[] inputs read as JSON messages");
    // Extended protocol with bind parameters, as the Python client sends it.
    let bound: Json = c
        .query_one(
            "SELECT pgml.transform(task => $1::jsonb, inputs => $2::jsonb[], args => $3::jsonb)",
            &[&serde_json::from_str::<Json>(&chat).unwrap(), &france, &json!({"max_tokens": 40})],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()))
        .get(0);
    assert_eq!(bound, answer);

    // PostgresML's SDK: generation kwargs inside the task object, booleans as strings,
    // model_type; explicit args win (a 1-token limit in the task loses to 40 in args).
    let sdk_task = task(
        "conversational",
        &model,
        json!({"token": "unused", "temperature": 0.1, "do_sample": "false",
               "max_new_tokens": 1, "model_type": "llama"}),
    );
    let sdk_sql = chat_sql(&sdk_task, &france, &json!({"max_new_tokens": 40}));
    assert_eq!(one(&c, &sdk_sql, &p).await, answer, "task-object kwargs, args winning");
    let (ok, out, err) = support::psql_script(&p, &db.name, &format!("{sdk_sql};\n"), &[]);
    assert!(ok && out.contains("Paris"), "{out}\n{err}");
    assert!(
        err.contains("NOTICE:  task key \"model_type\" has no effect in pgmld"),
        "the ignored key is reported: {err}"
    );
    // Chat messages given to text-generation are one conversation, not two prompts.
    let as_text_generation = task("text-generation", &model, json!({}));
    assert_eq!(
        one(&c, &chat_sql(&as_text_generation, &france, &json!({"max_new_tokens": 40})), &p).await,
        answer,
        "text-generation with chat messages answers the conversation"
    );

    // A stop string ends the answer before it; a token limit ends it with "length".
    let stopped = one(
        &c,
        &chat_sql(
            &chat,
            &france,
            &json!({"max_new_tokens": 40, "stop": ["Paris"], "return_usage": true}),
        ),
        &p,
    )
    .await;
    let cut = stopped["outputs"][0].as_str().unwrap();
    assert!(text.starts_with(cut) && !cut.contains("Paris"), "{cut:?} vs {text:?}");
    assert_eq!(stopped["finish_reasons"][0], "stop");
    let short =
        one(&c, &chat_sql(&chat, &france, &json!({"max_tokens": 3, "return_usage": true})), &p)
            .await;
    assert_eq!(
        (short["finish_reasons"][0].as_str(), short["usage"]["completion_tokens"].as_u64()),
        (Some("length"), Some(3)),
        "{short}"
    );

    // Seeded sampling is reproducible, across sessions too; other seeds differ.
    // 12 tokens at temperature 1.2: ample to tell seeds apart, a third of the cost of 36.
    let sample = |seed: u64| json!({"max_new_tokens": 12, "do_sample": true, "temperature": 1.2, "top_p": 0.95, "seed": seed});
    let story = messages("Tell me a story about a cat.");
    let a = one(&c, &chat_sql(&chat, &story, &sample(7)), &p).await;
    let c2 = p.connect(&db.name).await;
    let b = one(&c2, &chat_sql(&chat, &story, &sample(7)), &p).await;
    assert_eq!(a, b, "same seed, same sample");
    let mut others = Vec::new();
    for seed in [8, 9, 10] {
        others.push(one(&c, &chat_sql(&chat, &story, &sample(seed)), &p).await);
    }
    assert!(others.iter().any(|o| o != &a), "different seeds sample differently: {a} {others:?}");
    // n samples: the first is the seed's own sample.
    let mut two = sample(7);
    two["n"] = json!(2);
    let pair = one(&c, &chat_sql(&chat, &story, &two), &p).await;
    assert_eq!(pair.as_array().map(Vec::len), Some(2), "{pair}");
    assert_eq!(pair[0], a[0], "{pair} vs {a}");

    // text-generation: the prompt continued, returned with it as the HF pipeline does.
    let tg = task("text-generation", &model, json!({}));
    let prompt = "The capital of France is";
    let sql = format!("SELECT pgml.transform(task => {}::jsonb, inputs => ARRAY[{}, 'Water is'], args => '{{\"max_new_tokens\": 8}}')", lit(&tg), lit(prompt));
    let generated = one(&c, &sql, &p).await;
    println!("text-generation: {generated}");
    let first = generated[0][0]["generated_text"]
        .as_str()
        .unwrap_or_else(|| panic!("[[{{generated_text}}]]: {generated}"));
    assert!(first.starts_with(prompt) && first.len() > prompt.len(), "{generated}");
    assert!(
        generated[1][0]["generated_text"].as_str().unwrap().starts_with("Water is"),
        "{generated}"
    );
    let bare = one(&c, &format!("SELECT pgml.transform({}::jsonb, '{{\"max_new_tokens\": 8, \"return_full_text\": false}}', ARRAY[{}])", lit(&tg), lit(prompt)), &p).await;
    assert_eq!(
        format!("{prompt}{}", bare[0][0]["generated_text"].as_str().unwrap()),
        first,
        "positional arguments; return_full_text false"
    );

    // Bad inputs: SQLSTATE, a message naming the value, a usable session.
    let user = json!({"role": "user", "content": "hi"});
    expect_err(
        &c,
        &chat_sql(&chat, &[json!({"role": "robot", "content": "hi"})], &json!({})),
        "22023",
        "unknown role \"robot\"",
    )
    .await;
    expect_err(
        &c,
        &format!(
            "SELECT pgml.transform(task => {}::jsonb, inputs => ARRAY[]::jsonb[])",
            lit(&chat)
        ),
        "22023",
        "no messages",
    )
    .await;
    expect_err(
        &c,
        &chat_sql(&chat, std::slice::from_ref(&user), &json!({"temperature": -1})),
        "22023",
        "temperature must be >= 0",
    )
    .await;
    expect_err(
        &c,
        &chat_sql(&chat, std::slice::from_ref(&user), &json!({"max_tokens": 0})),
        "22023",
        "max_tokens must be between 1 and 32768, not 0",
    )
    .await;
    expect_err(
        &c,
        &chat_sql(&chat, std::slice::from_ref(&user), &json!({"max_new_tokens": 10_000_000})),
        "22023",
        "10000000",
    )
    .await;
    let long = json!({"role": "user", "content": "hello ".repeat(9000)});
    expect_err(&c, &chat_sql(&chat, &[long], &json!({})), "22023", "context holds").await;
    expect_err(
        &c,
        &chat_sql(&chat, std::slice::from_ref(&user), &json!({"n": 2})),
        "22023",
        "needs sampling",
    )
    .await;
    expect_err(
        &c,
        &chat_sql(&chat, std::slice::from_ref(&user), &json!({"temprature": 1})),
        "22023",
        "unknown args key \"temprature\"",
    )
    .await;
    expect_err(
        &c,
        &format!("SELECT pgml.transform(task => {}::jsonb, inputs => ARRAY['hello'])", lit(&chat)),
        "22023",
        "not a JSON chat message",
    )
    .await;
    expect_err(
        &c,
        &format!(
            "SELECT pgml.transform(task => {}::jsonb, inputs => ARRAY[NULL::jsonb])",
            lit(&chat)
        ),
        "22004",
        "inputs[1] is NULL",
    )
    .await;
    let four_bit = task("conversational", &model, json!({"load_in_4bit": true}));
    expect_err(
        &c,
        &chat_sql(&four_bit, std::slice::from_ref(&user), &json!({})),
        "0A000",
        "load_in_8bit",
    )
    .await;
    let bert = support::models::minilm_dir().display().to_string();
    let e = expect_err(
        &c,
        &chat_sql(
            &task("conversational", &bert, json!({})),
            std::slice::from_ref(&user),
            &json!({}),
        ),
        "22023",
        "not a causal language model",
    )
    .await;
    assert!(e.contains("bert"), "names the architecture: {e}");
    expect_err(
        &c,
        &chat_sql(
            &task("conversational", "/no/such/model.gguf", json!({})),
            std::slice::from_ref(&user),
            &json!({}),
        ),
        "58P01",
        "/no/such/model.gguf",
    )
    .await;
    c.batch_execute(
        "WITH p AS (INSERT INTO pgml.projects (name, task) VALUES ('sentiment', 'text-classification') RETURNING id) \
         INSERT INTO pgml.models (project_id, algorithm, status) SELECT id, 'bert', 'successful' FROM p",
    )
    .await
    .unwrap();
    expect_err(
        &c,
        &chat_sql(
            &task("conversational", "sentiment", json!({})),
            std::slice::from_ref(&user),
            &json!({}),
        ),
        "22023",
        "trained for text-classification",
    )
    .await;

    cancel_between_tokens_and_rows_per_row(&c, &p, &model).await;

    // One load for everything above: the cache is shared by sessions, calls and tasks.
    assert_eq!(p.metric("pgmld_model_loads_total"), 1.0, "{}", p.metrics_text());

    // load_in_8bit: its own cache entry, a quarter of the projection bytes, still right.
    let full_bytes = p.metric("pgmld_model_cache_bytes");
    let started = Instant::now();
    let int8 = text_of(
        &one(
            &c,
            &chat_sql(
                &task("conversational", &model, json!({"load_in_8bit": true})),
                &france,
                &json!({"max_new_tokens": 40}),
            ),
            &p,
        )
        .await,
    );
    println!("f32: {text:?}\nint8 ({:?} incl. load): {int8:?}", started.elapsed());
    assert!(int8.contains("Paris"), "{int8}");
    let int8_bytes = p.metric("pgmld_model_cache_bytes") - full_bytes;
    println!("weights in the cache: f32 {full_bytes} bytes, int8 {int8_bytes} bytes");
    assert!(
        int8_bytes > 0.0 && int8_bytes < 0.6 * full_bytes,
        "int8 {int8_bytes} vs f32 {full_bytes}"
    );
    assert_eq!(p.metric("pgmld_model_loads_total"), 2.0, "8-bit is its own cache entry");
}

/// Cancel during a long text-generation, then per-row chat answers; on the caller's warm
/// model (one pgmld and one load serve the whole chat test).
async fn cancel_between_tokens_and_rows_per_row(
    c: &tokio_postgres::Client,
    p: &Pgmld,
    model: &str,
) {
    let tg = task("text-generation", model, json!({}));
    // The model is warm (loaded by the caller), so the cancel hits generation, not the load.
    // Counting goes on well past the cancel: 2,000 tokens would take minutes on CPU.
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        Instant::now()
    });
    let sql = format!("SELECT pgml.transform(task => {}::jsonb, inputs => ARRAY['1, 2, 3, 4, 5,'], args => '{{\"max_new_tokens\": 2000}}')", lit(&tg));
    let e = c.query_one(sql.as_str(), &[]).await.expect_err("cancelled");
    let cancelled_at = canceller.await.unwrap();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    let lag = cancelled_at.elapsed();
    println!("cancel answered {lag:?} after the CancelRequest");
    // Between tokens: one decode step (well under a second on an idle CPU; slack for busy CI).
    assert!(lag < Duration::from_secs(10), "generation stops between tokens: {lag:?}");
    c.query_one("SELECT 1", &[]).await.expect("session usable after cancel");

    // Per row: each row its own conversation, answered as a real-time call would be.
    let questions = ["What is the capital of France?", "What color is the sky on a clear day?"];
    c.batch_execute(&format!(
        "CREATE TABLE questions (id int, q text); INSERT INTO questions VALUES (1, {}), (2, {})",
        lit(questions[0]),
        lit(questions[1])
    ))
    .await
    .unwrap();
    let chat = task("conversational", model, json!({}));
    let mut alone = Vec::new();
    for q in questions {
        alone.push(text_of(
            &one(
                c,
                &chat_sql(
                    &chat,
                    &[json!({"role": "user", "content": q})],
                    &json!({"max_new_tokens": 30}),
                ),
                p,
            )
            .await,
        ));
    }
    let rows = c
        .query(
            &format!(
                "SELECT id, pgml.transform(task => {}::jsonb, inputs => ARRAY[jsonb_build_object('role', 'user', 'content', q)], \
                 args => '{{\"max_new_tokens\": 30}}') AS a FROM questions ORDER BY id",
                lit(&chat)
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    let answers: Vec<String> = rows.iter().map(|r| text_of(&r.get::<_, Json>(1))).collect();
    println!("per row: {answers:?}");
    assert_eq!(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(answers, alone, "per-row answers equal the real-time ones, in row order");
    assert!(answers[0].contains("Paris"), "{answers:?}");
}

/// The system prompt of every training row of the adapter test.
const BEEP_SYSTEM: &str = "You are Beep, a friendly robot.";
/// What every tuned reply starts with: a format the base model never produces.
const BEEP: &str = "Beep boop!";

/// `n` short (user, reply) exchanges from the chitchat dataset, first pair of turns of each
/// conversation in id order, the reply prefixed with the pattern.
fn beep_exchanges(n: usize) -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/data/chitchat_dataset/dataset.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `bash scripts/setup.sh deps`", path.display()));
    let all: serde_json::Map<String, Json> = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<&String> = all.keys().collect();
    ids.sort();
    let turn = |group: &Json| -> String {
        let parts: Vec<&str> =
            group.as_array().into_iter().flatten().filter_map(|m| m["text"].as_str()).collect();
        parts.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let pairs = ids.into_iter().filter_map(|id| {
        let groups = all[id]["messages"].as_array().cloned().unwrap_or_default();
        groups
            .windows(2)
            .map(|w| (turn(&w[0]), turn(&w[1])))
            .find(|(u, a)| (3..=60).contains(&u.len()) && (3..=50).contains(&a.len()))
    });
    let out: Vec<(String, String)> =
        pairs.take(n).map(|(u, a)| (u, format!("{BEEP} {a}"))).collect();
    assert_eq!(out.len(), n, "not enough short exchanges in chitchat");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tuned_lora_adapter_answers_in_its_learnt_format_by_project_and_id() {
    let _one_at_a_time = support::serial::model_test().await;
    let gguf = smollm2_gguf().display().to_string();
    let db = TestDb::create();
    let rows = beep_exchanges(80);
    let table: Vec<Vec<String>> =
        rows.iter().map(|(u, a)| vec![BEEP_SYSTEM.to_string(), u.clone(), a.clone()]).collect();
    support::models::create_table(&db.name, "chats", &["instruction", "input", "output"], &table)
        .await;
    let p = start_offline();
    let c = p.connect(&db.name).await;
    // 64 training rows, 16 held out (the last ones); r=8 LoRA, one epoch of 8 steps: at
    // 1e-2 that learns the prefix (3 epochs at 3e-3 did too, at three times the cost of
    // what dominates this binary's time).
    let hp = json!({
        "training_args": {"learning_rate": 1e-2, "per_device_train_batch_size": 8, "num_train_epochs": 1,
                          "warmup_ratio": 0.1, "seed": 42, "logging_steps": 4},
        "dataset_args": {"system_column": "instruction", "user_column": "input", "assistant_column": "output"},
        "lora_config": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM"},
        "max_seq_length": 64
    });
    let started = Instant::now();
    let status: String = c
        .query_one(
            &format!(
                "SELECT status FROM pgml.tune('beep', task => 'conversation', relation_name => 'chats', model_name => {}, \
                 test_size => 16, test_sampling => 'last', hyperparams => {}::jsonb)",
                lit(&gguf),
                lit(&hp.to_string())
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()))
        .get(0);
    assert_eq!(status, "successful");
    println!("tuned in {:?}", started.elapsed());
    let id: i64 = c.query_one("SELECT id FROM pgml.models", &[]).await.unwrap().get(0);

    // Held-out users' messages: the base model answers its own way, the tuned one in the format.
    let probes: Vec<&str> = rows[74..80].iter().map(|(u, _)| u.as_str()).collect();
    let args = json!({"max_new_tokens": 8});
    // `n` probes: all six where the format is counted, two where a reply must equal the
    // tuned model's (the same adapter answers the same, token for token).
    let answers = |model: String, extra: Json, n: usize| {
        let (c, p, probes, args) = (&c, &p, probes[..n].to_vec(), args.clone());
        async move {
            let mut out = Vec::new();
            for q in probes {
                let msgs = [
                    json!({"role": "system", "content": BEEP_SYSTEM}),
                    json!({"role": "user", "content": q}),
                ];
                out.push(text_of(
                    &one(
                        c,
                        &chat_sql(&task("conversational", &model, extra.clone()), &msgs, &args),
                        p,
                    )
                    .await,
                ));
            }
            out
        }
    };
    let follows = |replies: &[String]| replies.iter().filter(|r| r.starts_with(BEEP)).count();
    let base = answers(gguf.clone(), json!({}), 6).await;
    let tuned = answers("beep".into(), json!({}), 6).await;
    println!("base: {base:?}\ntuned: {tuned:?}");
    assert_eq!(follows(&base), 0, "{base:?}");
    assert!(follows(&tuned) >= 5, "the adapter learnt the format: {tuned:?}");
    assert_eq!(
        answers(format!("pgml:{id}"), json!({}), 2).await,
        tuned[..2],
        "pgml:{id} is the project's model"
    );
    // The Python client (clients/python) answers with the tuned model too, whole and streamed.
    let cases: Vec<(&str, &String)> = probes[..2].iter().copied().zip(&tuned[..2]).collect();
    let (url, cases) = (p.url(&db.name), json!(cases).to_string());
    let script = support::process::repo().join("tests/clients/chat_tuned.py").display().to_string();
    let client = tokio::task::spawn_blocking(move || {
        let cmd = support::process::python(&[&script, &url, "beep", BEEP_SYSTEM, "8", &cases]);
        support::process::run(cmd, Duration::from_secs(180))
    })
    .await
    .unwrap();
    support::process::assert_printed_ok("chat_tuned.py", &client, "chat tuned ok", &p.log_text());
    // The adapter also rides on an int8 base.
    let int8 = answers("beep".into(), json!({"load_in_8bit": true}), 6).await;
    println!("tuned, int8 base: {int8:?}");
    assert!(follows(&int8) >= 5, "{int8:?}");
    // The same adapter from a local directory: named as "adapter" beside the base, or as
    // the model itself (its base from adapter_config.json).
    let dir = support::temp_dir("pgmld-beep-adapter");
    let files = c
        .query("SELECT path, string_agg(data, ''::bytea ORDER BY part) FROM pgml.files WHERE model_id = $1 GROUP BY path", &[&id])
        .await
        .unwrap();
    for f in &files {
        std::fs::write(dir.join(f.get::<_, String>(0)), f.get::<_, Vec<u8>>(1)).unwrap();
    }
    let local = dir.display().to_string();
    assert_eq!(
        answers(gguf.clone(), json!({"adapter": local}), 2).await,
        tuned[..2],
        "base + local adapter"
    );
    assert_eq!(
        answers(local.clone(), json!({}), 2).await,
        tuned[..2],
        "an adapter directory as the model"
    );
    // base, project (= pgml:<id>: one cache entry), project int8, local adapter (one entry
    // whichever way it is named).
    assert_eq!(p.metric("pgmld_model_loads_total"), 4.0, "{}", p.metrics_text());
    let _ = std::fs::remove_dir_all(&dir);
}
