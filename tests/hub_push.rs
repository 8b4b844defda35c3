//! `pgml.tune(… push_to_hub …)` against the fake hub (tests/support/hub.rs): checkpoints and
//! the final model land in a private repo with a model card, the pushed repo pulls back as a
//! `model_name` and in `pgml.transform`, the token shows up nowhere, and a hub that refuses the
//! token costs a WARNING, not the tune.

mod support;

use std::path::Path;

use support::hub::FakeHub;
use support::models::{connect_with_notices, create_table, imdb_balanced, tiny_bert};
use support::{expect_err, Pgmld, Start, TestDb};

const TOKEN: &str = "hf_PUSH_secret_7f3a9c";
const WRONG: &str = "hf_WRONG_secret_41b2e8";

fn rows2(v: &[(String, &str)]) -> Vec<Vec<String>> {
    v.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect()
}

fn tune_sql(project: &str, model: &str, hyperparams: &str) -> String {
    format!(
        "SELECT status, task, algorithm, deployed FROM pgml.tune('{project}', task => 'text-classification', \
         relation_name => 'reviews', model_name => '{model}', hyperparams => '{hyperparams}', test_size => 0.25)"
    )
}

/// Every file under `dir`, `/`-separated, sorted.
fn files_under(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.path().is_dir() {
            out.extend(files_under(&e.path(), &format!("{name}/")));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// The token is in no pgml table, notice, pgmld log line or file on the hub.
async fn assert_token_nowhere(
    c: &tokio_postgres::Client,
    p: &Pgmld,
    notices: &[String],
    hub_root: &Path,
    token: &str,
) {
    for (what, sql) in [
        ("pgml.models", "SELECT count(*) FROM pgml.models m WHERE strpos(m::text, $1) > 0"),
        ("pgml.logs", "SELECT count(*) FROM pgml.logs l WHERE strpos(l::text, $1) > 0"),
        ("pgml.jobs", "SELECT count(*) FROM pgml.jobs j WHERE strpos(j::text, $1) > 0"),
        ("pgml.projects", "SELECT count(*) FROM pgml.projects p WHERE strpos(p::text, $1) > 0"),
        (
            "pgml.files",
            "SELECT count(*) FROM pgml.files WHERE position(convert_to($1, 'UTF8') in data) > 0",
        ),
    ] {
        let n: i64 = c.query_one(sql, &[&token]).await.unwrap().get(0);
        assert_eq!(n, 0, "the token is in {what}");
    }
    let files: i64 = c.query_one("SELECT count(*) FROM pgml.files", &[]).await.unwrap().get(0);
    assert!(files > 0, "pgml.files was searched");
    assert!(notices.iter().all(|n| !n.contains(token)), "the token is in a notice");
    assert!(!p.log_text().contains(token), "the token is in pgmld's log");
    for f in files_under(hub_root, "") {
        let bytes = std::fs::read(hub_root.join(&f)).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(token), "the token is in {f} on the hub");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_checkpoints_and_the_final_model_which_pull_back() {
    let data = imdb_balanced(0, 120);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let root = support::temp_dir("pgmld-push-hub");
    let hub = FakeHub::start(root.clone()).with_token(TOKEN);
    let cache = support::temp_dir("pgmld-push-cache");
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows2(&data)).await;
    let p = Pgmld::start_with(Start {
        env: vec![
            ("HF_ENDPOINT".into(), hub.url.clone()),
            ("HF_HUB_CACHE".into(), cache.display().to_string()),
            // reads of the private repo; pushes without hub_token use PGMLD_HUB_TOKEN
            ("HF_TOKEN".into(), TOKEN.into()),
            ("PGMLD_HUB_TOKEN".into(), TOKEN.into()),
        ],
        ..Start::default()
    });
    let (c, notices) = connect_with_notices(&p.url(&db.name)).await;

    // checkpoints every 2 steps (with last-checkpoint/), the final model, a private repo
    let hp = format!(
        r#"{{"training_args": {{"max_steps": 6, "save_steps": 2, "logging_steps": 2, "eval_strategy": "steps",
            "eval_steps": 3, "push_to_hub": true, "hub_private_repo": true, "hub_token": "{TOKEN}",
            "hub_strategy": "checkpoint"}}}}"#
    );
    let started = std::time::Instant::now();
    let row = c
        .query_one(tune_sql("hub push", &model.display().to_string(), &hp).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    println!("tune with 4 pushes took {:?}", started.elapsed());
    assert_eq!(row.get::<_, String>(0), "successful");
    let repo = "pgmld-user/hub_push";
    assert_eq!(hub.repo_private(repo), Some(true), "created private under the token owner");
    let commits: Vec<_> = hub.commits().into_iter().filter(|c| c.repo == repo).collect();
    let summaries: Vec<&str> = commits.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [
            "Training in progress, step 2",
            "Training in progress, step 4",
            "Training in progress, step 6",
            "End of training"
        ]
    );
    let top =
        ["README.md", "config.json", "model.safetensors", "tokenizer.json", "training_args.json"];
    for c in &commits {
        assert_eq!(c.revision, "main");
        for f in top {
            assert!(c.files.iter().any(|x| x == f), "{f} missing in {c:?}");
        }
        assert!(c.lfs_files.iter().any(|x| x == "model.safetensors"), "weights go by LFS: {c:?}");
        let last_checkpoint = c.files.iter().any(|x| x == "last-checkpoint/model.safetensors");
        assert_eq!(last_checkpoint, c.summary != "End of training", "{c:?}");
    }
    let dir = FakeHub::model_revision_dir(&root, repo, "main");
    let on_hub = files_under(&dir, "");
    let resume_state = [
        "last-checkpoint/optimizer.safetensors",
        "last-checkpoint/trainer_state.json",
        "last-checkpoint/tokenizer.json",
    ];
    for f in top
        .iter()
        .chain(&["last-checkpoint/config.json", "last-checkpoint/model.safetensors"])
        .chain(&resume_state)
    {
        assert!(on_hub.iter().any(|x| x == f), "{f} not on the hub: {on_hub:?}");
    }
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        card.starts_with("---\n") && card.contains("pipeline_tag: text-classification\n"),
        "{card}"
    );
    assert!(
        card.contains("library_name: transformers") && card.contains("tags:\n- pgmld\n"),
        "{card}"
    );
    for needle in [
        "# hub push",
        "`reviews`",
        "| 0 | negative |",
        "| 1 | positive |",
        "| max_steps | 6 |",
        "eval_f1",
        "eval_accuracy",
        "model=\"pgmld-user/hub_push\"",
    ] {
        assert!(card.contains(needle), "{needle} missing in the card:\n{card}");
    }
    assert!(!card.contains(&model.display().to_string()), "no local path in the card:\n{card}");
    let work: Vec<String> = std::fs::read_dir(p.data_dir.join("work"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(
        work.iter().all(|n| !n.starts_with("ckpt-")),
        "checkpoints are removed once pushed: {work:?}"
    );
    let args: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("training_args.json")).unwrap())
            .unwrap();
    assert_eq!(args["push_to_hub"], true);
    assert!(args.get("hub_token").is_none(), "{args}");

    // the client heard of the repo and of each commit
    let notes = notices.lock().unwrap().clone();
    let pushed: Vec<&String> = notes
        .iter()
        .filter(|n| n.starts_with("INFO") && n.contains("\"hub\": \"pushed\""))
        .collect();
    assert_eq!(pushed.len(), 4, "{notes:#?}");
    let last = pushed[3];
    assert!(
        last.contains("End of training") && last.contains(&format!("{}/{repo}", hub.url)),
        "{last}"
    );
    assert!(last.contains("\"commit\"") && last.contains("/commit/"), "{last}");
    assert!(notes.iter().all(|n| !n.starts_with("WARNING")), "{notes:#?}");
    let logged: Vec<String> = c
        .query(
            "SELECT logs->>'commit' FROM pgml.logs WHERE logs->>'hub' = 'pushed' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged.len(), 4);
    assert!(last.contains(&logged[3]), "the log row names the notice's commit");

    // the pushed repo pulls back as a base model, and serves pgml.transform
    let row = c
        .query_one(tune_sql("pulled", repo, r#"{"training_args": {"max_steps": 2}}"#).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(2)),
        ("successful".into(), "transformers".into())
    );
    let base: String = c
        .query_one("SELECT base_model FROM pgml.models ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(base, repo, "the pulled repo is the new model's base model");
    let sql = format!(
        "SELECT pgml.transform(task => '{{\"task\": \"text-classification\", \"model\": \"{repo}\"}}'::jsonb, inputs => ARRAY['x'])"
    );
    let r: serde_json::Value = c
        .query_one(sql.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()))
        .get(0);
    let label = r[0]["label"].as_str().unwrap_or_default();
    assert!(label == "negative" || label == "positive", "{r}");

    // no hub_token: pgmld's hub_token setting; an organization's repo; only at the end
    let hp = r#"{"training_args": {"max_steps": 4, "save_steps": 2, "push_to_hub": true,
        "hub_model_id": "pgmld-org/custom-name", "hub_strategy": "end"}}"#;
    let row = c
        .query_one(tune_sql("org push", &model.display().to_string(), hp).as_str(), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    assert_eq!(hub.repo_private("pgmld-org/custom-name"), Some(false));
    let org: Vec<String> = hub
        .commits()
        .into_iter()
        .filter(|c| c.repo == "pgmld-org/custom-name")
        .map(|c| c.summary)
        .collect();
    assert_eq!(org, ["End of training"]);

    let notes = notices.lock().unwrap().clone();
    assert_token_nowhere(&c, &p, &notes, &root, TOKEN).await;
    drop(c);
    hub.stop();
    for d in [&root, &cache, &model] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_token_pushes_fail_early_or_warn() {
    let data = imdb_balanced(0, 80);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let root = support::temp_dir("pgmld-push-hub-wrong");
    let hub = FakeHub::start(root.clone()).with_token(TOKEN);
    let db = TestDb::create();
    create_table(&db.name, "reviews", &["text", "class"], &rows2(&data)).await;
    let p = Pgmld::start_with(Start {
        env: vec![
            ("HF_ENDPOINT".into(), hub.url.clone()),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN".into(), "1".into()),
        ],
        ..Start::default()
    });
    let (c, notices) = connect_with_notices(&p.url(&db.name)).await;
    let m = model.display().to_string();

    // no token anywhere: 22023 before anything is recorded or trained
    let hp = r#"{"training_args": {"max_steps": 2, "push_to_hub": true}}"#;
    let err = expect_err(&c, &tune_sql("nothing", &m, hp), "22023", "no Hugging Face token").await;
    assert!(err.contains("hub_token") && err.contains("HF_TOKEN"), "{err}");
    let models: i64 = c.query_one("SELECT count(*) FROM pgml.models", &[]).await.unwrap().get(0);
    assert_eq!(models, 0, "nothing trained");

    // a token the hub refuses: the tune succeeds, a WARNING and a log row say why
    let hp = format!(
        r#"{{"training_args": {{"max_steps": 4, "save_steps": 2, "push_to_hub": true, "hub_token": "{WRONG}"}}}}"#
    );
    let row = c
        .query_one(tune_sql("refused", &m, &hp).as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_text()));
    assert_eq!(row.get::<_, String>(0), "successful");
    let status: String =
        c.query_one("SELECT status::text FROM pgml.models", &[]).await.unwrap().get(0);
    assert_eq!(status, "successful");
    let notes = notices.lock().unwrap().clone();
    let warnings: Vec<&String> = notes.iter().filter(|n| n.starts_with("WARNING")).collect();
    assert_eq!(warnings.len(), 1, "one warning for the refused token: {notes:#?}");
    assert!(warnings[0].contains("401") && warnings[0].contains("whoami"), "{}", warnings[0]);
    let failed: Vec<String> = c
        .query("SELECT logs->>'error' FROM pgml.logs WHERE logs->>'hub' = 'push_failed'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].contains("401"), "{}", failed[0]);
    assert!(hub.commits().is_empty(), "nothing was pushed");
    let files: i64 =
        c.query_one("SELECT count(DISTINCT path) FROM pgml.files", &[]).await.unwrap().get(0);
    assert!(files >= 4, "the model is stored in pgml.files: {files}");
    assert_token_nowhere(&c, &p, &notes, &root, WRONG).await;
    drop(c);

    // offline: trained and stored, not pushed, and said so
    hub.clear_requests();
    let offline = Pgmld::start_with(Start {
        env: vec![("HF_ENDPOINT".into(), hub.url.clone()), ("HF_HUB_OFFLINE".into(), "1".into())],
        ..Start::default()
    });
    let (c, notices) = connect_with_notices(&offline.url(&db.name)).await;
    let hp = format!(
        r#"{{"training_args": {{"max_steps": 2, "push_to_hub": true, "hub_token": "{TOKEN}"}}}}"#
    );
    let row = c.query_one(tune_sql("offline", &m, &hp).as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "successful");
    let notes = notices.lock().unwrap().clone();
    assert!(
        notes.iter().any(|n| n.starts_with("WARNING") && n.contains("HF_HUB_OFFLINE")),
        "{notes:#?}"
    );
    assert!(hub.commits().is_empty() && hub.requests().is_empty(), "{:?}", hub.requests());
    hub.stop();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&model);
}

#[test]
fn print_config_redacts_the_hub_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmld"))
        .arg("--print-config")
        .env("PGMLD_HUB_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("hub_token = \"<redacted>\""), "{text}");
    assert!(!text.contains(TOKEN) && !String::from_utf8_lossy(&out.stderr).contains(TOKEN));
}
