//! `pgml.cancel_job(job_id)` (#16): a running tune is stopped from another session within
//! seconds (its caller gets 57014, the model and job read cancelled), while pgml.jobs
//! shows where the job runs (worker host and pid, device, attempts, heartbeat, progress,
//! eta); a role that may not use the project cannot cancel it (nor learn that it exists);
//! bad job ids are named.

mod support;

use std::time::{Duration, Instant};

use support::models::{connect_with_notices, create_table, imdb_balanced, tiny_bert};
use support::roles::{connect_as, Role};
use support::{expect_err, psql_direct, sqlstate, Pgmld, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_job_stops_a_running_tune_from_another_session() {
    let _one_at_a_time = support::serial::model_test().await;
    let data = imdb_balanced(0, 200);
    let texts: Vec<String> = data.iter().map(|r| r.0.clone()).collect();
    let model = tiny_bert(&texts);
    let db = TestDb::create();
    let rows: Vec<Vec<String>> = data.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect();
    create_table(&db.name, "reviews", &["text", "class"], &rows).await;
    let p = Pgmld::start();
    let admin = p.connect(&db.name).await;

    let (client, notices) = connect_with_notices(&p.url(&db.name)).await;
    let sql = format!(
        "SELECT * FROM pgml.tune('cancel_me', task => 'text-classification', relation_name => 'reviews', \
         model_name => '{}', hyperparams => '{{\"training_args\": {{\"num_train_epochs\": 200, \"logging_steps\": 2}}}}')",
        model.display()
    );
    let tune = tokio::spawn(async move { client.query(sql.as_str(), &[]).await.map(|_| ()) });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !notices.lock().unwrap().iter().any(|n| n.contains("\"loss\"")) {
        assert!(Instant::now() < deadline && !tune.is_finished(), "no progress: {}", p.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // pgml.jobs shows the running job: this pgmld on this host, on the CPU, first attempt,
    // a fresh heartbeat, progress and an estimate of the time left.
    let job = admin
        .query_one(
            "SELECT id, status, worker_host, worker_pid, worker_device, attempts, \
             heartbeat_at > now() - interval '10 seconds', progress > 0, eta_seconds > 0 FROM pgml.jobs",
            &[],
        )
        .await
        .unwrap();
    let job_id: i64 = job.get(0);
    assert_eq!(job.get::<_, String>(1), "running");
    assert!(!job.get::<_, String>(2).is_empty());
    assert_eq!(job.get::<_, i32>(3) as u32, p.child.id(), "the pgmld that runs it");
    assert_eq!(job.get::<_, String>(4), "cpu");
    assert_eq!(job.get::<_, i32>(5), 1);
    assert!(job.get::<_, bool>(6) && job.get::<_, bool>(7) && job.get::<_, bool>(8));

    // Another role may not cancel it, and cannot tell it from a job that does not exist.
    let bob = Role::create(&db, "bob");
    psql_direct(&db.name, &format!("GRANT USAGE ON SCHEMA pgml TO {}", bob.name));
    let as_bob = connect_as(&p, &db.name, &bob.name).await;
    let theirs = expect_err(
        &as_bob,
        &format!("SELECT pgml.cancel_job({job_id})"),
        "22023",
        "does not exist, or your role may not use it",
    )
    .await;
    let missing =
        expect_err(&as_bob, "SELECT pgml.cancel_job(987654)", "22023", "does not exist").await;
    assert_eq!(theirs.replace(&job_id.to_string(), "N"), missing.replace("987654", "N"));
    assert!(!tune.is_finished(), "bob's attempt cancelled nothing");
    expect_err(&admin, "SELECT pgml.cancel_job(NULL)", "22004", "job_id").await;

    // Its owner's other session stops it.
    let asked = Instant::now();
    let status: String =
        admin.query_one("SELECT pgml.cancel_job($1)", &[&job_id]).await.unwrap().get(0);
    assert_eq!(status, "cancelling");
    let err =
        tokio::time::timeout(Duration::from_secs(30), tune).await.unwrap().unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let took = asked.elapsed();
    println!("cancel_job stopped the tune in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let r = admin
        .query_one(
            "SELECT m.status, m.error, j.status, j.cancel_requested_at IS NOT NULL FROM pgml.models m \
             JOIN pgml.jobs j ON j.model_id = m.id WHERE j.id = $1",
            &[&job_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, bool>(3)),
        ("failed".into(), "cancelled".into(), "cancelled".into(), true)
    );
    // Cancelling an ended job says how it ended.
    let again: String =
        admin.query_one("SELECT pgml.cancel_job($1)", &[&job_id]).await.unwrap().get(0);
    assert_eq!(again, "cancelled");
    let _ = std::fs::remove_dir_all(&model);
}
