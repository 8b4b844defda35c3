//! What the tests of resumed and taken-over tunes share: the review table's rows, the
//! tune call, a connection that outlives pgmld, the checkpointing hyperparams and the
//! logged losses.

use super::UPSTREAM;

/// (text, class) pairs as table rows.
pub fn rows(v: &[(String, &str)]) -> Vec<Vec<String>> {
    v.iter().map(|(t, c)| vec![t.clone(), c.to_string()]).collect()
}

/// A text-classification tune of table `reviews`.
pub fn tune_sql(project: &str, model: &str, hyperparams: &str) -> String {
    format!(
        "SELECT status, task, algorithm, deployed FROM pgml.tune('{project}', task => 'text-classification', \
         relation_name => 'reviews', model_name => '{model}', hyperparams => '{hyperparams}')"
    )
}

/// A connection straight to the upstream (it outlives the pgmld under test).
pub async fn direct(db: &str) -> tokio_postgres::Client {
    let url = format!("{}/{db}", UPSTREAM.rsplit_once('/').unwrap().0);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// 60 optimizer steps (batch 8 over 180 training rows, 64 tokens), a log row every 2 and
/// a checkpoint every 10 steps: about 2 s of training on two idle cores.
pub const CHECKPOINTED: &str = r#"{"training_args": {"learning_rate": 1e-3, "max_steps": 60, "per_device_train_batch_size": 8,
    "logging_steps": 2, "save_steps": 10, "seed": 11, "warmup_ratio": 0.1}, "tokenizer_args": {"max_length": 64}}"#;

/// (step, loss) of the model's training log rows, in order.
pub async fn loss_rows(c: &tokio_postgres::Client, model_id: i64) -> Vec<(i64, f64)> {
    c.query(
        "SELECT (logs->>'step')::int8, (logs->>'loss')::float8 FROM pgml.logs WHERE model_id = $1 AND logs ? 'loss' ORDER BY id",
        &[&model_id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The checkpoint step the model's `resuming` log row names (one resume).
pub async fn resumed_from(c: &tokio_postgres::Client, model_id: i64) -> i64 {
    c.query_one(
        "SELECT (logs->>'from_step')::int8 FROM pgml.logs WHERE model_id = $1 AND logs->>'status' = 'resuming'",
        &[&model_id],
    )
    .await
    .unwrap()
    .get(0)
}
