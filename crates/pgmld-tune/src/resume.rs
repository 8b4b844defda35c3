//! Resuming interrupted tunes: the training data stored with a checkpoint, and the scan at
//! startup for jobs whose pgmld died.
//!
//! A tune stores a resumable checkpoint at every `save_steps` in `pgml.files` under
//! `checkpoint/` (see [`crate::files::store_checkpoint`]), with the examples it trains and
//! evaluates on, after the split and in order, as `checkpoint/dataset.jsonl`: a resume
//! trains on exactly those rows even when the relation changed or is a view with
//! `ORDER BY RANDOM()`. While it runs, its owner holds the job's advisory lock
//! ([`crate::records::JOB_LOCK_CLASS`]) on pgmld's own connection, so a `running` job whose
//! lock can be taken has no live owner.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use pgmld_ml::Example;
use pgmld_sql::CallContext;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TuneError};
use crate::tuner::Tuner;
use crate::{files, records};

/// The first line of `dataset.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    labels: Vec<String>,
    train: usize,
    eval: usize,
}

/// One example line of `dataset.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    split: String,
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text_pair: Option<String>,
    label: i64,
}

/// The data of a checkpointed run: label names by id, training and evaluation examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Class names by id.
    pub labels: Vec<String>,
    /// Training examples, in training order.
    pub train: Vec<Example>,
    /// Held-out examples.
    pub eval: Vec<Example>,
}

/// `dataset.jsonl`: a header line (`labels`, `train`, `eval` counts), then one line per
/// example (`split`, `text`, `text_pair`, `label`), training examples first.
pub fn encode_dataset(labels: &[String], train: &[Example], eval: &[Example]) -> Vec<u8> {
    let mut out = Vec::new();
    let header = Header { labels: labels.to_vec(), train: train.len(), eval: eval.len() };
    let _ = serde_json::to_writer(&mut out, &header);
    out.push(b'\n');
    for (split, data) in [("train", train), ("eval", eval)] {
        for e in data {
            let line = Line { split: split.into(), text: e.text.clone(), text_pair: e.text_pair.clone(), label: e.label };
            let _ = serde_json::to_writer(&mut out, &line);
            let _ = out.write_all(b"\n");
        }
    }
    out
}

/// Reads a `dataset.jsonl` [`encode_dataset`] wrote.
pub fn read_dataset(path: &Path) -> Result<Dataset> {
    let bad = |m: String| TuneError::Internal(format!("the stored training data {}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut lines = BufReader::new(file).lines();
    let first = lines.next().ok_or_else(|| bad("empty".into()))?.map_err(|e| bad(e.to_string()))?;
    let header: Header = serde_json::from_str(&first).map_err(|e| bad(e.to_string()))?;
    let mut d = Dataset { labels: header.labels, train: Vec::with_capacity(header.train), eval: Vec::with_capacity(header.eval) };
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| bad(e.to_string()))?;
        if line.is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", n + 2)))?;
        let e = Example { text: l.text, text_pair: l.text_pair, label: l.label };
        match l.split.as_str() {
            "train" => d.train.push(e),
            "eval" => d.eval.push(e),
            other => return Err(bad(format!("line {}: unknown split {other:?}", n + 2))),
        }
    }
    if (d.train.len(), d.eval.len()) != (header.train, header.eval) {
        return Err(bad(format!(
            "{} training and {} evaluation examples, the header says {} and {}",
            d.train.len(),
            d.eval.len(),
            header.train,
            header.eval
        )));
    }
    Ok(d)
}

/// At startup: in every database of the upstream whose pgml schema has resumable jobs,
/// finds the tune jobs still `queued` / `running` whose lock is free (their pgmld died),
/// resumes in the background those with a complete checkpoint (progress goes to pgml.logs
/// only; files, metrics and deployment as a normal tune; a Hub push uses pgmld's
/// `hub_token` or `HF_TOKEN`, as tokens are never stored), and marks the others failed
/// with error `interrupted`. Errors are logged, never fatal.
pub async fn resume_orphans(tuner: Arc<Tuner>) {
    let databases = match tuner.databases().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("cannot list databases to resume interrupted pgml.tune jobs: {e}");
            return;
        }
    };
    for db in databases {
        if let Err(e) = scan(&tuner, &db).await {
            tracing::warn!(database = %db, "looking for interrupted pgml.tune jobs: {e}");
        }
    }
}

/// The scan of one database (see [`resume_orphans`]).
async fn scan(tuner: &Arc<Tuner>, db: &str) -> Result<()> {
    let client = tuner.connect(db).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'pgml' \
             AND table_name = 'jobs' AND column_name = 'checkpoint_step')",
            &[],
        )
        .await
        .map_err(|e| TuneError::pg("looking for pgml.jobs", e))?;
    if !row.get::<_, bool>(0) {
        return Ok(());
    }
    for candidate in records::active_jobs(&client).await? {
        // The connection that holds the lock is the one the resumed job runs on.
        let owner = tuner.connect(db).await?;
        if !records::lock_job(&owner, candidate.job_id).await? {
            continue;
        }
        let Some(job) = records::resumable_job(&owner, candidate.job_id).await? else { continue };
        if !matches!(job.status.as_str(), "queued" | "running") {
            continue;
        }
        let ready = job.checkpoint_step.is_some() && job.request.is_some() && files::has_checkpoint(&owner, job.model_id).await?;
        if !ready {
            tracing::info!(database = %db, model_id = job.model_id, job_id = job.job_id, "a pgml.tune job was interrupted before its first checkpoint; marking it failed");
            records::fail(&owner, job.model_id, job.job_id, "interrupted", false).await?;
            continue;
        }
        tracing::info!(database = %db, model_id = job.model_id, job_id = job.job_id, step = job.checkpoint_step, "resuming an interrupted pgml.tune job from its checkpoint");
        let (tuner, db) = (tuner.clone(), db.to_string());
        tokio::spawn(async move {
            let ctx = CallContext::detached(&db, "pgmld");
            let model_id = job.model_id;
            match tuner.resume_job(owner, &ctx, job, None).await {
                Ok(done) => tracing::info!(database = %db, model_id, deployed = done.deployed, "resumed pgml.tune job finished"),
                Err(e) => tracing::warn!(database = %db, model_id, "resumed pgml.tune job failed: {e}"),
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_round_trip_in_order() {
        let labels = vec!["neg".to_string(), "pos".to_string()];
        let train = vec![Example::new("a \"quoted\"\nline", 1), Example::pair("p", "q", 0)];
        let eval = vec![Example::new("é", 0)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dataset.jsonl");
        std::fs::write(&path, encode_dataset(&labels, &train, &eval)).unwrap();
        let d = read_dataset(&path).unwrap();
        assert_eq!(d, Dataset { labels, train, eval });
        std::fs::write(&path, b"{\"labels\": [], \"train\": 2, \"eval\": 0}\n").unwrap();
        assert!(read_dataset(&path).unwrap_err().to_string().contains("header says 2"));
    }
}
