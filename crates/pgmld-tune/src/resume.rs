//! Resuming interrupted tunes: the training data stored with a checkpoint, and the scan at
//! startup for jobs whose pgmld died.
//!
//! A tune stores a resumable checkpoint at every `save_steps` in `pgml.files` under
//! `checkpoint/` (see [`pgmld_models::files::store_checkpoint`]), with the examples it trains and
//! evaluates on, after the split and in order, as `checkpoint/dataset.jsonl`: a resume
//! trains on exactly those rows even when the relation changed or is a view with
//! `ORDER BY RANDOM()`. While it runs, its owner holds the job's advisory lock
//! ([`crate::records::JOB_LOCK_CLASS`]) on pgmld's own connection, so a `running` job whose
//! lock can be taken has no live owner.

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
use crate::tuner::{info, this_worker, Tuned, Tuner};
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

/// What a resume reads before it changes anything.
struct Resumed {
    req: TuneRequest,
    task: Task,
    source: resolve::ModelSource,
    data: RunData,
    /// The checkpoint's step and the run's total.
    steps: (i64, i64),
}

impl Tuner {
    /// `resume_from_checkpoint`: resumes the project's latest interrupted model that has a
    /// complete checkpoint and no live owner, whatever its task.
    pub(crate) async fn resume_call(&self, req: TuneRequest, ctx: &CallContext) -> Result<Tuned> {
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
                    return self.resume_job(client, ctx, job, req.training.hub_token.clone()).await;
                }
                _ => records::unlock_job(&client, job.job_id).await?,
            }
        }
        Err(nothing_to_resume(&req.project_name))
    }

    /// Resumes `job` from its stored checkpoint, on `client`, which holds the job's lock:
    /// the call stored in the job, the training data stored with the checkpoint, the log
    /// rows after the checkpoint's step dropped, the model and job back in progress.
    /// `token` is the Hub token of the call that asked (tokens are never stored). A job
    /// still marked running that cannot be resumed is marked failed (`interrupted`).
    pub(crate) async fn resume_job(
        &self,
        client: Client,
        ctx: &CallContext,
        job: records::JobRow,
        token: Option<pgmld_train::Secret>,
    ) -> Result<Tuned> {
        let tag = format!("{}-model-{}", ctx.database.replace('/', "_"), job.model_id);
        let from = self.work_dir.join(format!("resume-{tag}"));
        let Resumed { req, task, source, data, steps: (step, max_steps) } = match self
            .prepare_resume(&client, &job, token, &from, &ctx.caller)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&from);
                if matches!(job.status.as_str(), "queued" | "running") {
                    if let Err(rec) =
                        records::fail(&client, job.model_id, job.job_id, "interrupted", false).await
                    {
                        tracing::error!(job.model_id, "cannot record the interrupted tune: {rec}");
                    }
                }
                return Err(e);
            }
        };
        let (project_id, model_id, job_id) = (job.project_id, job.model_id, job.job_id);
        records::drop_logs_after(&client, model_id, step).await?;
        records::reopen(&client, model_id, job_id, &this_worker()).await?;
        let logs = json!({"status": "resuming", "model_id": model_id, "from_step": step, "max_steps": max_steps});
        info(ctx, progress::notice_text(&logs));
        records::log(&client, model_id, project_id, &logs).await?;
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
            resume_from: Some(from),
            dataset_stored: true,
            req,
        };
        self.execute(client, run, ctx).await
    }

    /// What a resume reads before it changes anything: the request, the project's task, the
    /// base model, the checkpoint (into `from`) and its training data.
    async fn prepare_resume(
        &self,
        client: &Client,
        job: &records::JobRow,
        token: Option<pgmld_train::Secret>,
        from: &Path,
        caller: &Caller,
    ) -> Result<Resumed> {
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
        files::load_checkpoint(client, job.model_id, from).await?;
        let ck = pgmld_train::load_checkpoint(from)?;
        let dataset = from.join(files::DATASET_FILE);
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
        Ok(Resumed { req, task, source, data, steps: (ck.state.global_step, ck.state.max_steps) })
    }
}

/// At startup: in every database of the upstream whose pgml schema has resumable jobs,
/// finds the tune jobs still `queued` / `running` whose lock is free (their pgmld died),
/// resumes in the background those with a complete checkpoint (progress goes to pgml.logs
/// only; files, metrics and deployment as a normal tune; a Hub push uses pgmld's
/// `hub_token` or `HF_TOKEN`, as tokens are never stored), and marks the others failed
/// with error `interrupted`. Errors are logged, never fatal.
pub async fn resume_orphans(tuner: Arc<Tuner>) {
    let databases = match tuner.connector.databases().await {
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
    let client = tuner.connector.connect(db).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'pgml' \
             AND table_name = 'jobs' AND column_name = 'owner')",
            &[],
        )
        .await
        .map_err(|e| TuneError::pg("looking for pgml.jobs", e))?;
    if !row.get::<_, bool>(0) {
        return Ok(());
    }
    for candidate in records::active_jobs(&client).await? {
        // The connection that holds the lock is the one the resumed job runs on.
        let owner = tuner.connector.connect(db).await?;
        if !records::lock_job(&owner, candidate.job_id).await? {
            continue;
        }
        let Some(job) = records::resumable_job(&owner, candidate.job_id).await? else { continue };
        if !matches!(job.status.as_str(), "queued" | "running") {
            continue;
        }
        let ready = job.checkpoint_step.is_some()
            && job.request.is_some()
            && files::has_checkpoint(&owner, job.model_id).await?;
        if !ready {
            tracing::info!(database = %db, model_id = job.model_id, job_id = job.job_id, "a pgml.tune job was interrupted before its first checkpoint; marking it failed");
            records::fail(&owner, job.model_id, job.job_id, "interrupted", false).await?;
            continue;
        }
        tracing::info!(database = %db, model_id = job.model_id, job_id = job.job_id, step = job.checkpoint_step, "resuming an interrupted pgml.tune job from its checkpoint");
        let (tuner, db) = (tuner.clone(), db.to_string());
        tokio::spawn(async move {
            // The resume acts as the role that started the job.
            let mut ctx = CallContext::detached(&db, &job.owner);
            match access::caller_of(&owner, &job.owner).await {
                Ok(caller) => ctx.caller = caller,
                Err(e) => {
                    tracing::warn!(database = %db, role = %job.owner, "reading the job owner's privileges: {e}")
                }
            }
            let model_id = job.model_id;
            match tuner.resume_job(owner, &ctx, job, None).await {
                Ok(done) => {
                    tracing::info!(database = %db, model_id, deployed = done.deployed, "resumed pgml.tune job finished")
                }
                Err(e) => {
                    tracing::warn!(database = %db, model_id, "resumed pgml.tune job failed: {e}")
                }
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
