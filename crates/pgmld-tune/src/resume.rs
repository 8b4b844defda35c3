//! Running a claimed job, and resuming interrupted ones: the training data stored with a
//! job, `resume_from_checkpoint`, and the scan at startup for databases with jobs to take.
//!
//! A queued tune stores the examples it trains and evaluates on, after the split and in
//! order, as `checkpoint/dataset.jsonl` in `pgml.files` before any worker may claim it:
//! whichever worker runs it, and any resume, trains on exactly those rows even when the
//! relation changed or is a view with `ORDER BY RANDOM()`. It stores a resumable
//! checkpoint at every `save_steps` under `checkpoint/` (see
//! [`pgmld_models::files::store_checkpoint`]). While it runs, its worker holds the job's
//! advisory lock ([`crate::records::JOB_LOCK_CLASS`]) on its own connection, so a
//! `running` job whose lock can be taken has no live worker.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use pgmld_ml::Example;
use pgmld_sql::{CallContext, Caller};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::Client;

use crate::conversation::data::ChatRow;
use crate::error::{Result, TuneError};
use crate::lifecycle::{Run, RunData};
use crate::options::{Task, TuneRequest};
use crate::push::PushEvent;
use crate::push_relay::relay;
use crate::submit::Submission;
use crate::tuner::{info, Tuned, Tuner};
use pgmld_jobs::{Claimed, DeviceKind};
use pgmld_models::{access, files, resolve};

use crate::{progress, records};

/// The first line of `dataset.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// Class names by id (none for conversations).
    #[serde(default)]
    labels: Vec<String>,
    train: usize,
    eval: usize,
}

/// One line of `dataset.jsonl`: the split, then the row's own fields.
#[derive(Debug, Serialize, Deserialize)]
struct Tagged<L> {
    split: String,
    #[serde(flatten)]
    row: L,
}

/// The fields of a classification example.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text_pair: Option<String>,
    label: i64,
}

/// The data of a checkpointed classification run: label names by id, training and
/// evaluation examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Class names by id.
    pub labels: Vec<String>,
    /// Training examples, in training order.
    pub train: Vec<Example>,
    /// Held-out examples.
    pub eval: Vec<Example>,
}

/// A header line (`labels`, `train`, `eval` counts), then one line per row (`split` and
/// the fields `row` gives), training rows first.
fn encode<T, L: Serialize>(
    labels: &[String],
    (train, eval): (&[T], &[T]),
    row: impl Fn(&T) -> L,
) -> Vec<u8> {
    let mut out = Vec::new();
    let header = Header { labels: labels.to_vec(), train: train.len(), eval: eval.len() };
    let _ = serde_json::to_writer(&mut out, &header);
    out.push(b'\n');
    for (split, data) in [("train", train), ("eval", eval)] {
        for r in data {
            let _ = serde_json::to_writer(&mut out, &Tagged { split: split.into(), row: row(r) });
            let _ = out.write_all(b"\n");
        }
    }
    out
}

/// Reads what [`encode`] wrote: (labels, training rows, evaluation rows).
fn decode<L: DeserializeOwned>(path: &Path) -> Result<(Vec<String>, Vec<L>, Vec<L>)> {
    let bad = |m: String| {
        TuneError::Internal(format!("the stored training data {}: {m}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut lines = BufReader::new(file).lines();
    let first = lines.next().ok_or_else(|| bad("empty".into()))?.map_err(|e| bad(e.to_string()))?;
    let header: Header = serde_json::from_str(&first).map_err(|e| bad(e.to_string()))?;
    let (mut train, mut eval) = (Vec::with_capacity(header.train), Vec::with_capacity(header.eval));
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| bad(e.to_string()))?;
        if line.is_empty() {
            continue;
        }
        let l: Tagged<L> =
            serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", n + 2)))?;
        match l.split.as_str() {
            "train" => train.push(l.row),
            "eval" => eval.push(l.row),
            other => return Err(bad(format!("line {}: unknown split {other:?}", n + 2))),
        }
    }
    if (train.len(), eval.len()) != (header.train, header.eval) {
        return Err(bad(format!(
            "{} training and {} evaluation rows, the header says {} and {}",
            train.len(),
            eval.len(),
            header.train,
            header.eval
        )));
    }
    Ok((header.labels, train, eval))
}

/// `dataset.jsonl` of a classification run: the label names, then one line per example
/// (`split`, `text`, `text_pair`, `label`).
pub fn encode_dataset(labels: &[String], train: &[Example], eval: &[Example]) -> Vec<u8> {
    encode(labels, (train, eval), |e| Line {
        text: e.text.clone(),
        text_pair: e.text_pair.clone(),
        label: e.label,
    })
}

/// Reads a `dataset.jsonl` [`encode_dataset`] wrote.
pub fn read_dataset(path: &Path) -> Result<Dataset> {
    let (labels, train, eval) = decode::<Line>(path)?;
    let example = |l: Line| Example { text: l.text, text_pair: l.text_pair, label: l.label };
    Ok(Dataset {
        labels,
        train: train.into_iter().map(example).collect(),
        eval: eval.into_iter().map(example).collect(),
    })
}

/// `dataset.jsonl` of a conversation run: one line per exchange (`split`, `system`,
/// `user`, `assistant`).
pub fn encode_chat_dataset(train: &[ChatRow], eval: &[ChatRow]) -> Vec<u8> {
    encode(&[], (train, eval), ChatRow::clone)
}

/// Reads a `dataset.jsonl` [`encode_chat_dataset`] wrote: (training, evaluation) exchanges.
pub fn read_chat_dataset(path: &Path) -> Result<(Vec<ChatRow>, Vec<ChatRow>)> {
    let (_, train, eval) = decode::<ChatRow>(path)?;
    Ok((train, eval))
}

/// The 22023 of `resume_from_checkpoint` when there is nothing to resume.
fn nothing_to_resume(project: &str) -> TuneError {
    TuneError::bad(
        format!("project \"{project}\" has no interrupted model with a checkpoint to resume from"),
        "resume_from_checkpoint resumes the project's latest model stopped by a cancel, a dropped connection or a \
         pgmld restart, once it has stored a checkpoint (every save_steps optimizer steps). Lower save_steps to \
         checkpoint more often, or leave resume_from_checkpoint out to train a new model.",
    )
}

/// What a claimed job reads before it changes anything.
pub(crate) struct Prepared {
    /// The call, as stored.
    pub(crate) req: TuneRequest,
    /// The project's task.
    pub(crate) task: Task,
    /// The base model's files.
    pub(crate) source: resolve::ModelSource,
    /// The stored training rows.
    pub(crate) data: RunData,
    /// The checkpoint's step and the run's total (none: the job starts at step 0).
    pub(crate) steps: Option<(i64, i64)>,
}

impl Tuner {
    /// `resume_from_checkpoint`: queues again the project's latest interrupted model that
    /// has a complete checkpoint and no live owner, whatever its task, and waits for it.
    pub(crate) async fn resume_call(
        self: &Arc<Self>,
        req: TuneRequest,
        ctx: &CallContext,
    ) -> Result<Tuned> {
        let client = self.connector.connect(&ctx.database).await?;
        let Some((project_id, owner)) = records::project_id(&client, &req.project_name).await?
        else {
            return Err(nothing_to_resume(&req.project_name));
        };
        access::check(&client, &ctx.caller, &owner, &format!("project \"{}\"", req.project_name))
            .await?;
        for job in records::resumable_jobs(&client, project_id).await? {
            if job.checkpoint_step.is_none()
                || job.request.is_none()
                || !files::has_checkpoint(&client, job.model_id).await?
            {
                continue;
            }
            if !records::lock_job(&client, job.job_id).await? {
                // Its owner is alive: it is not interrupted.
                continue;
            }
            match records::resumable_job(&client, job.job_id).await? {
                Some(job) if job.checkpoint_step.is_some() => {
                    records::requeue(&client, job.model_id, job.job_id).await?;
                    let stored = job.request.as_ref().map(TuneRequest::from_stored).transpose()?;
                    let submission = Submission {
                        job_id: job.job_id,
                        model_id: job.model_id,
                        task: records::project_task(&client, project_id).await?,
                        device: stored.map(|r| r.placement.device).unwrap_or(DeviceKind::Any),
                        wait: req.wait,
                        token: req.training.hub_token.clone(),
                    };
                    return self.submit(client, ctx, submission).await;
                }
                _ => records::unlock_job(&client, job.job_id).await?,
            }
        }
        Err(nothing_to_resume(&req.project_name))
    }

    /// Runs a job this worker claimed on `client` (which holds its lock) on training thread
    /// `slot`: the call stored in the job, the training data stored with it, and its
    /// checkpoint when it has one (a job taken over from a worker that died, or resumed
    /// with `resume_from_checkpoint`: the log rows after the checkpoint's step are dropped
    /// and training goes on from there). `token` is the Hub token of the call that queued
    /// it when it was queued in this process (tokens are never stored). A job that cannot
    /// start is marked failed.
    pub(crate) async fn run_job(
        &self,
        client: Client,
        ctx: &CallContext,
        job: Claimed,
        token: Option<pgmld_train::Secret>,
        slot: usize,
    ) -> Result<Tuned> {
        let model_id = job
            .model_id
            .ok_or_else(|| TuneError::Internal(format!("job {} has no model", job.job_id)))?;
        let (project_id, job_id) = (job.project_id, job.job_id);
        let tag = format!("{}-model-{model_id}", ctx.database.replace('/', "_"));
        let from = self.work_dir.join(format!("resume-{tag}"));
        let Prepared { req, task, source, data, steps } =
            match self.prepare_job(&client, &job, model_id, token, &from, &ctx.caller).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&from);
                    if let Err(rec) =
                        records::fail(&client, model_id, job_id, &e.reason(), false).await
                    {
                        tracing::error!(model_id, "cannot record the failed job: {rec}");
                    }
                    return Err(e);
                }
            };
        records::reopen_model(&client, model_id).await?;
        let resume_from = match steps {
            Some((step, max_steps)) => {
                tracing::info!(database = %ctx.database, model_id, job_id, step, attempts = job.attempts, "resuming an interrupted pgml.tune job from its checkpoint");
                records::drop_logs_after(&client, model_id, step).await?;
                let logs = json!({"status": "resuming", "model_id": model_id, "from_step": step, "max_steps": max_steps});
                info(ctx, progress::notice_text(&logs));
                records::log(&client, model_id, project_id, &logs).await?;
                Some(from)
            }
            None => {
                let _ = std::fs::remove_dir_all(&from);
                None
            }
        };
        let push = match self.push_setup(&req) {
            Ok(p) => p,
            Err(e) => {
                let ev = PushEvent::Failed { step: None, message: e.to_string(), fatal: true };
                relay(&client, ctx, (project_id, model_id), &ev).await;
                None
            }
        };
        let run = Run {
            task,
            model_name: req.model_name.clone().unwrap_or_default(),
            source,
            ids: (project_id, model_id, job_id),
            data,
            relation: req.relation_name.clone().unwrap_or_default(),
            push,
            resume_from,
            dataset_stored: true,
            slot,
            req,
        };
        self.execute(client, run, ctx).await
    }

    /// What a claimed job reads before it changes anything: the request, the project's
    /// task, the base model, the stored files (into `from`: the training data, and the
    /// checkpoint when there is one).
    pub(crate) async fn prepare_job(
        &self,
        client: &Client,
        job: &Claimed,
        model_id: i64,
        token: Option<pgmld_train::Secret>,
        from: &Path,
        caller: &Caller,
    ) -> Result<Prepared> {
        let stored = job.request.as_ref().ok_or_else(|| {
            TuneError::Internal(format!("job {} has no stored request", job.job_id))
        })?;
        let mut req = TuneRequest::from_stored(stored)?;
        if token.is_some() {
            req.training.hub_token = token;
        }
        let task = records::project_task(client, job.project_id).await?;
        let model_name = req
            .model_name
            .clone()
            .ok_or_else(|| TuneError::Internal(format!("job {} has no model_name", job.job_id)))?;
        let _ = std::fs::remove_dir_all(from);
        files::load_checkpoint(client, model_id, from).await?;
        let dataset = from.join(files::DATASET_FILE);
        if !dataset.is_file() {
            // A job an older pgmld started, which stored its data with its first checkpoint.
            return Err(TuneError::Internal(format!(
                "job {} was interrupted before its training data was stored: train it again",
                job.job_id
            )));
        }
        let steps = match from.join(pgmld_train::train_state::STATE_FILE).is_file() {
            true => {
                let ck = pgmld_train::load_checkpoint(from)?;
                Some((ck.state.global_step, ck.state.max_steps))
            }
            false => None,
        };
        let (source, data) = match task {
            Task::Conversation => {
                let (train, eval) = read_chat_dataset(&dataset)?;
                let (source, base_name) =
                    self.conversation_base(client, &req, &model_name, caller).await?;
                (
                    source,
                    RunData::Conversation {
                        base_name,
                        train: Arc::new(train),
                        eval: Arc::new(eval),
                    },
                )
            }
            _ => {
                let d = read_dataset(&dataset)?;
                let source =
                    resolve::resolve(client, &model_name, caller, &self.hub, &self.work_dir)
                        .await?;
                (
                    source,
                    RunData::Classification {
                        labels: d.labels,
                        train: Arc::new(d.train),
                        eval: Arc::new(d.eval),
                    },
                )
            }
        };
        Ok(Prepared { req, task, source, data, steps })
    }
}

/// At startup: the databases of the upstream whose queue has jobs to take over (running,
/// with no live worker: their pgmld died) or waiting: the claim loop serves them from now
/// on, so jobs a crashed or killed pgmld left go on from their checkpoints (or from the
/// start, with their stored data). Errors are logged, never fatal.
pub async fn databases_with_jobs(tuner: &Tuner) -> Vec<String> {
    let databases = match tuner.connector.databases().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("cannot list databases to resume interrupted pgml.tune jobs: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for db in databases {
        match has_jobs(tuner, &db).await {
            Ok(true) => out.push(db),
            Ok(false) => {}
            Err(e) => tracing::warn!(database = %db, "looking for interrupted pgml.tune jobs: {e}"),
        }
    }
    out
}

/// Whether `db`'s queue has a job a worker may take (see [`databases_with_jobs`]).
async fn has_jobs(tuner: &Tuner, db: &str) -> Result<bool> {
    let client = tuner.connector.connect(db).await?;
    if !pgmld_jobs::queue::exists(&client).await? {
        return Ok(false);
    }
    for job in records::active_jobs(&client).await? {
        if job.status == "queued" || records::lock_job(&client, job.job_id).await? {
            return Ok(true);
        }
    }
    Ok(false)
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

    #[test]
    fn chat_datasets_round_trip_in_order() {
        let row = |s: Option<&str>, u: &str, a: &str| ChatRow {
            system: s.map(Into::into),
            user: u.into(),
            assistant: a.into(),
        };
        let train = vec![row(Some("sys \"q\""), "hi\nthere", "Beep boop! é"), row(None, "b", "c")];
        let eval = vec![row(None, "x", "y")];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dataset.jsonl");
        std::fs::write(&path, encode_chat_dataset(&train, &eval)).unwrap();
        assert_eq!(read_chat_dataset(&path).unwrap(), (train, eval));
        // A classification run's data is no conversation data.
        std::fs::write(
            &path,
            encode_dataset(&["a".into(), "b".into()], &[Example::new("t", 1)], &[]),
        )
        .unwrap();
        assert!(read_chat_dataset(&path).unwrap_err().to_string().contains("line 2"));
    }
}
