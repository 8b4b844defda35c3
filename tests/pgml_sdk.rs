//! PostgresML's own Python SDK (`pgml` 1.1.1 from PyPI, pinned in
//! tests/clients/requirements.txt) through pgmld: `OpenSourceAI.chat_completions_create`
//! as the fine-tuning guide writes it (model dict with `token`, `load_in_8bit`,
//! `temperature`, `repetition_penalty`), `chat_completions_create_stream` (a cursor over
//! `pgml.transform_stream` fetched one row at a time), the async variants side by side,
//! errors and the pool after them (`tests/clients/pgml_sdk.py`), against the real
//! SmolLM2-135M-Instruct GGUF on CPU.
//!
//! The SDK talks sqlx: extended protocol, named prepared statements reused per connection,
//! binary jsonb / jsonb[] parameters and binary results. The connecting role is the
//! superuser `postgres`, since the model is a path on pgmld's machine.
//!
//! Needs `bash scripts/setup.sh deps` (the SDK and psycopg in `.deps/python`, the model in
//! `.deps/data`). Skipped, saying why, only where the SDK is not installed: its wheels
//! exist for CPython 3.8-3.12 on Linux x86_64 / aarch64, and requirements.txt installs it
//! there only. Installed but not importable is a failure.

mod support;

use std::time::Duration;

use support::llm::{smollm2_gguf, start_offline};
use support::process::{assert_printed_ok, python_sdk, repo, require, run};
use support::TestDb;

/// New tokens per answer: enough for the guide's sentiment and "Paris", short on CPU.
const MAX_TOKENS: &str = "16";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(420);

/// Why PostgresML's SDK cannot run here, or None when `import pgml` gives it. Panics when
/// setup installed it and it still does not import.
fn sdk_missing() -> Option<String> {
    let installed = repo().join(".deps/python/pgml-1.1.1.dist-info");
    let probe = run(python_sdk(&["-c", "import pgml; pgml.OpenSourceAI"]), Duration::from_secs(60));
    if probe.ok {
        return None;
    }
    assert!(
        !installed.exists(),
        "pgml 1.1.1 is installed in .deps/python but does not import:\n{}",
        probe.stderr
    );
    Some(format!(
        "PostgresML's `pgml` package is not installed in .deps/python (it has wheels for \
         CPython 3.8-3.12 on Linux x86_64 / aarch64; `bash scripts/setup.sh deps` installs \
         it there): {}",
        probe.stderr.trim().lines().last().unwrap_or("")
    ))
}

#[test]
fn postgresml_python_sdk_chats_and_streams_through_pgmld() {
    let _one_at_a_time = support::serial::model_test_blocking();
    require(&repo().join(".deps/python/psycopg"), "psycopg");
    if let Some(why) = sdk_missing() {
        println!("SKIPPED postgresml_python_sdk_chats_and_streams_through_pgmld: {why}");
        return;
    }
    let model = smollm2_gguf().display().to_string();
    let db = TestDb::create();
    let p = start_offline();
    let script = repo().join("tests/clients/pgml_sdk.py").display().to_string();
    let out = run(python_sdk(&[&script, &p.url(&db.name), &model, MAX_TOKENS]), SCRIPT_TIMEOUT);
    println!("{}", out.stdout);
    assert_printed_ok("pgml_sdk.py", &out, "pgml sdk ok", &p.log_text());

    // pgmld itself served the calls: the SDK's statements were intercepted, the stream went
    // through its streaming cursor, and tokens were generated.
    let log = p.log_text();
    assert!(log.contains("declared a streaming cursor"), "no streaming cursor in the log:\n{log}");
    let intercepted = p.metric("pgmld_statements_intercepted_total{function=\"transform\"}");
    assert!(intercepted >= 6.0, "transform calls intercepted: {intercepted}\n{}", p.metrics_text());
    assert!(p.metric("pgmld_generated_tokens_total") >= 16.0, "{}", p.metrics_text());
    // Two cache entries: the guide's int8 base and the plain model.
    assert_eq!(p.metric("pgmld_model_loads_total"), 2.0, "{}", p.metrics_text());
}
