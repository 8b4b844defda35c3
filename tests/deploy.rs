//! `pgml.deploy` through pgmld: three tiny BERTs tuned into one project with different
//! outcomes, deployed by best_score, most_recent, a pinned model id and repeated rollbacks;
//! each deployment checked in pgml.deployments and by what `pgml.transform` with the
//! project's name serves (compared with `pgml:<id>`); a session running transform in a loop
//! while deploys switch models; bad inputs that change nothing; a role without membership
//! in the project's owner.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::models::{create_table, imdb_balanced, tiny_bert};
use support::roles::{connect_as, Role};
use support::{expect_err, psql_direct, Pgmld, TestDb};

const PROJECT: &str = "deploy_imdb";

fn tune_sql(project: &str, model: &str, training_args: &str) -> String {
    format!(
        "SELECT status FROM pgml.tune('{project}', task => 'text-classification', relation_name => 'reviews', \
         model_name => '{model}', test_size => 0.25, test_sampling => 'last', automatic_deploy => false, \
         hyperparams => '{{\"training_args\": {training_args}, \"dataset_args\": {{\"text_column\": \"text\", \"class_column\": \"class\"}}}}')"
    )
}

const INPUTS: &str = "ARRAY['A wonderful film, I loved every minute of it.', 'Dull, far too long and badly acted.', \
                      'The plot was fine but the ending ruined it.', 'Great cast, great music, see it.']";

/// What `pgml.transform` serves for `model` on [`INPUTS`]: each input's P(positive).
async fn scores(c: &tokio_postgres::Client, model: &str) -> Vec<f64> {
    let sql = format!(
        "SELECT pgml.transform(task => '{{\"task\": \"text-classification\", \"model\": \"{model}\"}}'::jsonb, inputs => {INPUTS})"
    );
    let out: serde_json::Value =
        c.query_one(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0);
    out.as_array()
        .unwrap_or_else(|| panic!("not an array: {out}"))
        .iter()
        .map(|r| {
            let score = r["score"].as_f64().unwrap_or_else(|| panic!("no score in {r}"));
            if r["label"] == "positive" {
                score
            } else {
                1.0 - score
            }
        })
        .collect()
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The newest pgml.deployments row of the project: (row id, model id, strategy), and the
/// number of rows.
async fn latest_deployment(c: &tokio_postgres::Client) -> (i64, i64, String, i64) {
    let count: i64 =
        c.query_one("SELECT count(*) FROM pgml.deployments", &[]).await.unwrap().get(0);
    let r = c
        .query_opt(
            "SELECT d.id, d.model_id, d.strategy FROM pgml.deployments d \
               JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = $1 ORDER BY d.id DESC LIMIT 1",
            &[&PROJECT],
        )
        .await
        .unwrap();
    match r {
        Some(r) => (r.get(0), r.get(1), r.get(2), count),
        None => (0, 0, String::new(), count),
    }
}

/// Deploys with `args` and checks the result row, the new pgml.deployments row and that
/// `pgml.transform` with the project's name now serves `expected` (by its scores).
async fn deploy_and_check(
    c: &tokio_postgres::Client,
    args: &str,
    (strategy, expected): (&str, i64),
    reference: &[(i64, Vec<f64>)],
    algorithm: &str,
) {
    let sql = format!("SELECT * FROM pgml.deploy('{PROJECT}', {args})");
    let (before, ..) = latest_deployment(c).await;
    let row = c.query_one(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    assert_eq!(
        (
            row.get::<_, String>("project"),
            row.get::<_, String>("strategy"),
            row.get::<_, String>("algorithm")
        ),
        (PROJECT.to_string(), strategy.to_string(), algorithm.to_string()),
        "{sql}"
    );
    let (id, model_id, recorded, _) = latest_deployment(c).await;
    assert!(id > before, "{sql}: no new deployment row");
    assert_eq!((model_id, recorded.as_str()), (expected, strategy), "{sql}");
    // PostgresML's views agree: the project's one deployed model is the one just deployed
    let deployed: Vec<i64> = c
        .query("SELECT id FROM pgml.deployed_models WHERE name = $1", &[&PROJECT])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(deployed, [expected], "{sql}: pgml.deployed_models");
    let flagged: Vec<(i64, bool)> = c
        .query(
            "SELECT id, deployed FROM pgml.trained_models WHERE name = $1 ORDER BY id",
            &[&PROJECT],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        flagged.len() >= 3 && flagged.iter().all(|(mid, d)| *d == (*mid == expected)),
        "{sql}: pgml.trained_models {flagged:?}"
    );
    let served = scores(c, PROJECT).await;
    for (mid, s) in reference {
        let d = distance(&served, s);
        if *mid == expected {
            assert!(d < 1e-4, "{sql}: project serves {served:?}, model {mid} gives {s:?}");
        } else {
            assert!(d > 1e-3, "{sql}: project still serves model {mid} ({served:?})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_strategies_rollback_pin_and_privileges() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 320);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let m = model.display().to_string();
    let db = TestDb::create();
    let rows: Vec<Vec<String>> = data.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect();
    create_table(&db.name, "reviews", &["text", "class"], &rows).await;
    let p = Pgmld::start();
    let c = p.connect(&db.name).await;

    // Three models with different training, none deployed automatically.
    for args in [
        r#"{"learning_rate": 1e-3, "num_train_epochs": 5, "per_device_train_batch_size": 16, "seed": 1, "warmup_ratio": 0.1}"#,
        r#"{"learning_rate": 1e-5, "max_steps": 1, "seed": 2}"#,
        r#"{"learning_rate": 1e-3, "num_train_epochs": 2, "per_device_train_batch_size": 16, "seed": 3}"#,
    ] {
        let sql = tune_sql(PROJECT, &m, args);
        let status: String = c
            .query_one(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()))
            .get(0);
        assert_eq!(status, "successful");
    }
    let models: Vec<(i64, f64, f64)> = c
        .query("SELECT id, (metrics->>'eval_f1')::float8, (metrics->>'eval_accuracy')::float8 FROM pgml.models ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(models.len(), 3);
    let ids: Vec<i64> = models.iter().map(|m| m.0).collect();
    let no_deployments: i64 =
        c.query_one("SELECT count(*) FROM pgml.deployments", &[]).await.unwrap().get(0);
    assert_eq!(no_deployments, 0, "automatic_deploy => false");
    // The best by the key metric: highest eval_f1, then eval_accuracy, then the newest.
    let mut ranked = models.clone();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)).then(b.0.cmp(&a.0)));
    let best = ranked[0].0;
    println!("models (id, f1, accuracy): {models:?}; best {best}");

    // What each model serves, by id; the three differ, so the project's can be told apart.
    let mut reference = Vec::new();
    for id in &ids {
        reference.push((*id, scores(&c, &format!("pgml:{id}")).await));
    }
    for (i, (a, sa)) in reference.iter().enumerate() {
        for (b, sb) in &reference[i + 1..] {
            assert!(
                distance(sa, sb) > 1e-3,
                "models {a} and {b} serve the same scores: {sa:?} {sb:?}"
            );
        }
    }

    // Nothing deployed yet: rollback has nothing to go back from, and changes nothing.
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'rollback')"),
        "22023",
        "no deployment to roll back",
    )
    .await;
    let none: i64 = c.query_one("SELECT count(*) FROM pgml.deployments", &[]).await.unwrap().get(0);
    assert_eq!(none, 0);

    // Pin each model, then most_recent; rollbacks walk back: m3 -> m2 -> m1 -> error.
    deploy_and_check(
        &c,
        &format!("'specific', model_id => {}", ids[0]),
        ("specific", ids[0]),
        &reference,
        "transformers",
    )
    .await;
    deploy_and_check(
        &c,
        &format!("strategy => 'specific', model_id => {}", ids[1]),
        ("specific", ids[1]),
        &reference,
        "transformers",
    )
    .await;
    deploy_and_check(&c, "'most_recent'", ("most_recent", ids[2]), &reference, "transformers")
        .await;
    deploy_and_check(&c, "'rollback'", ("rollback", ids[1]), &reference, "transformers").await;
    deploy_and_check(&c, "'rollback'", ("rollback", ids[0]), &reference, "transformers").await;
    let before = latest_deployment(&c).await;
    let err = expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'rollback')"),
        "22023",
        "no earlier deployment",
    )
    .await;
    assert!(err.contains("specific"), "the hint shows the pin form: {err}");
    assert_eq!(latest_deployment(&c).await, before, "a failed rollback changes nothing");
    // best_score, with the default strategy too, in PostgresML's exact call forms.
    deploy_and_check(&c, "'best_score'", ("best_score", best), &reference, "transformers").await;
    let row =
        c.query_one(format!("SELECT * FROM pgml.deploy('{PROJECT}')").as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(1), "best_score");
    assert_eq!(latest_deployment(&c).await.1, best);
    // A task object naming only the project: its task comes from the project.
    let sql = format!(
        "SELECT pgml.transform(task => '{{\"model\": \"{PROJECT}\"}}'::jsonb, inputs => {INPUTS})"
    );
    let by_project: serde_json::Value =
        c.query_one(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0);
    assert_eq!(by_project.as_array().map(Vec::len), Some(4), "{by_project}");
    // algorithm filters candidates: PostgresML's algorithm, or pgmld's base model name.
    for filter in ["transformers", m.as_str()] {
        let sql = format!("SELECT * FROM pgml.deploy('{PROJECT}', 'most_recent', '{filter}')");
        let row = c.query_one(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(row.get::<_, String>("algorithm"), "transformers", "{sql}");
        assert_eq!(latest_deployment(&c).await.1, ids[2], "{sql}");
    }
    let base: String = c
        .query_one("SELECT base_model FROM pgml.models WHERE id = $1", &[&ids[2]])
        .await
        .unwrap()
        .get(0);
    assert_eq!(base, m);
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'most_recent', 'no-such-algorithm')"),
        "22023",
        "no-such-algorithm",
    )
    .await;

    // Bad inputs: their SQLSTATE, and nothing changes.
    let other = "deploy_other";
    let status: String =
        c.query_one(tune_sql(other, &m, r#"{"max_steps": 1}"#).as_str(), &[]).await.unwrap().get(0);
    assert_eq!(status, "successful");
    let other_model: i64 =
        c.query_one("SELECT max(id) FROM pgml.models", &[]).await.unwrap().get(0);
    let before = latest_deployment(&c).await;
    expect_err(
        &c,
        "SELECT * FROM pgml.deploy('no_such_project', 'best_score')",
        "42704",
        "no_such_project",
    )
    .await;
    let err = expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'newest')"),
        "22023",
        "newest",
    )
    .await;
    assert!(
        ["best_score", "most_recent", "rollback", "specific"].iter().all(|s| err.contains(s)),
        "{err}"
    );
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'specific', model_id => {other_model})"),
        "42704",
        "not a model of project",
    )
    .await;
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'specific', model_id => 999999)"),
        "42704",
        "999999",
    )
    .await;
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'specific')"),
        "22023",
        "model_id",
    )
    .await;
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'rollback', model_id => {})", ids[0]),
        "22023",
        "model_id",
    )
    .await;
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{other}', 'rollback')"),
        "22023",
        "no deployment to roll back",
    )
    .await;
    assert_eq!(latest_deployment(&c).await, before, "bad calls change nothing");
    let other_deployments: i64 = c
        .query_one("SELECT count(*) FROM pgml.deployments d JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = $1", &[&other])
        .await
        .unwrap()
        .get(0);
    assert_eq!(other_deployments, 0);
    // A failed model is no candidate.
    psql_direct(
        &db.name,
        &format!("UPDATE pgml.models SET status = 'failed', error = 'test' WHERE id = {}", ids[2]),
    );
    expect_err(
        &c,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'specific', model_id => {})", ids[2]),
        "22023",
        "not successful",
    )
    .await;
    deploy_and_check(&c, "'most_recent'", ("most_recent", ids[1]), &reference, "transformers")
        .await;
    psql_direct(
        &db.name,
        &format!(
            "UPDATE pgml.models SET status = 'successful', error = NULL WHERE id = {}",
            ids[2]
        ),
    );

    // A session running transform in a loop while deploys switch models: no error.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = p.connect(&db.name).await;
    let flag = stop.clone();
    let lookup = format!(
        "SELECT pgml.transform(task => '{{\"task\": \"text-classification\", \"model\": \"{PROJECT}\"}}'::jsonb, inputs => {INPUTS})"
    );
    let loop_task = tokio::spawn(async move {
        let mut calls = 0u32;
        while !flag.load(Ordering::Relaxed) || calls < 3 {
            looper
                .query_one(lookup.as_str(), &[])
                .await
                .map_err(|e| format!("call {calls}: {e:?}"))?;
            calls += 1;
        }
        Ok::<u32, String>(calls)
    });
    for round in 0..3 {
        for id in &ids {
            let sql =
                format!("SELECT * FROM pgml.deploy('{PROJECT}', 'specific', model_id => {id})");
            c.query_one(sql.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("round {round}: {sql}: {e:?}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c.query_one(format!("SELECT * FROM pgml.deploy('{PROJECT}', 'best_score')").as_str(), &[])
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let calls = loop_task
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("transform during deploys failed: {e}\n{}", p.log_text()));
    assert!(calls >= 3, "{calls} transform calls");
    let served = scores(&c, PROJECT).await;
    let best_scores = &reference.iter().find(|(id, _)| *id == best).unwrap().1;
    assert!(distance(&served, best_scores) < 1e-4, "after the loop the best model serves");

    // A role without EXECUTE on the catalog entry gets 42501; with it but without membership
    // in the project's owner, 42501 too, and nothing changes; a member may deploy.
    let app = Role::create(&db, "deployer");
    psql_direct(
        &db.name,
        &format!(
            "GRANT USAGE ON SCHEMA pgml TO {0}; REVOKE EXECUTE ON FUNCTION pgml.deploy FROM PUBLIC",
            app.name
        ),
    );
    let ac = connect_as(&p, &db.name, &app.name).await;
    let before = latest_deployment(&c).await;
    expect_err(
        &ac,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'most_recent')"),
        "42501",
        "permission denied for function deploy",
    )
    .await;
    psql_direct(&db.name, &format!("GRANT EXECUTE ON FUNCTION pgml.deploy TO {}", app.name));
    let err = expect_err(
        &ac,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'most_recent')"),
        "42501",
        "permission denied for project",
    )
    .await;
    assert!(err.contains("GRANT"), "{err}");
    expect_err(
        &ac,
        &format!("SELECT * FROM pgml.deploy('{PROJECT}', 'rollback')"),
        "42501",
        "permission denied for project",
    )
    .await;
    assert_eq!(latest_deployment(&c).await, before, "a refused deploy changes nothing");
    let owner: String = c
        .query_one("SELECT owner::text FROM pgml.projects WHERE name = $1", &[&PROJECT])
        .await
        .unwrap()
        .get(0);
    psql_direct(&db.name, &format!("GRANT \"{owner}\" TO {}", app.name));
    let row = ac
        .query_one(format!("SELECT * FROM pgml.deploy('{PROJECT}', 'most_recent')").as_str(), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(1), "most_recent");
    assert_eq!(latest_deployment(&c).await.1, ids[2]);
    psql_direct(&db.name, &format!("REVOKE \"{owner}\" FROM {}", app.name));

    // The catalog entry has the signature pgmld binds against.
    let args = psql_direct(&db.name, "SELECT pg_get_function_arguments('pgml.deploy'::regproc)");
    assert_eq!(
        args.trim(),
        "project_name text, strategy text DEFAULT 'best_score'::text, algorithm text DEFAULT NULL::text, model_id bigint DEFAULT NULL::bigint"
    );
    let _ = std::fs::remove_dir_all(&model);
}
