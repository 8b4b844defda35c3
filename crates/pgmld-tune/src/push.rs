//! `push_to_hub`: the token and repo name, checked before training, and the uploader: its own
//! thread with its own event loop, so neither training nor the session threads ever wait on
//! the network (or on hashing a large weights file).
//!
//! The uploader checks the token (`whoami`), names the repo (`hub_model_id`, default
//! `<token owner>/<project name, spaces as "_">`) and creates it, then commits each model it
//! is handed: a checkpoint at every `save_steps` (strategies `every_save`, `checkpoint`,
//! `all_checkpoints`) and the final model. What happens is reported as [`PushEvent`]s; a
//! failure never stops training: a failed setup ends the pushes of that tune, a failed commit
//! only that commit.

use std::path::{Path, PathBuf};

use pgmld_hub::card::ModelCard;
use pgmld_hub::upload::{resolve_repo_id, CommitInfo, UploadClient, UploadError, UploadFile};
use pgmld_hub::HubConfig;
use pgmld_train::{HubStrategy, TrainingArgs};
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, TuneError};

/// The branch pushed to.
const REVISION: &str = "main";

/// What a push needs, checked before training starts. `Debug` hides the token.
pub struct PushSetup {
    endpoint: String,
    token: String,
    /// `hub_model_id` or the project's name; without namespace it goes under the token owner's.
    wanted: String,
    private: bool,
    strategy: HubStrategy,
}

impl std::fmt::Debug for PushSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSetup")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .field("wanted", &self.wanted)
            .field("private", &self.private)
            .field("strategy", &self.strategy)
            .finish()
    }
}

/// The first token set and not blank: `training_args.hub_token`, pgmld's `hub_token` setting,
/// then `HF_TOKEN` (the hub configuration's token).
pub fn choose_token<'a>(
    args: Option<&'a str>,
    config: Option<&'a str>,
    env: Option<&'a str>,
) -> Option<&'a str> {
    [args, config, env].into_iter().flatten().map(str::trim).find(|t| !t.is_empty())
}

/// The repo name a project gets when `hub_model_id` is unset: its name, spaces as `_`.
pub fn default_repo_name(project: &str) -> String {
    project.trim().replace(' ', "_")
}

impl PushSetup {
    /// Checks a `push_to_hub` call: a token must be at hand and the repo name valid (22023
    /// otherwise, with a hint), so a call that cannot push fails before it trains.
    pub fn prepare(
        args: &TrainingArgs,
        project: &str,
        config_token: Option<&str>,
        hub: &HubConfig,
    ) -> Result<Self> {
        let token = choose_token(args.hub_token.as_ref().map(|s| s.0.as_str()), config_token, hub.token.as_deref())
            .ok_or_else(|| {
                TuneError::bad(
                    "push_to_hub is true but pgmld has no Hugging Face token to push with",
                    "Pass training_args.hub_token (a token with write access), or set hub_token in pgmld's \
                     configuration (PGMLD_HUB_TOKEN) or HF_TOKEN in its environment.",
                )
            })?;
        let given = args.hub_model_id.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let wanted = given.map(str::to_string).unwrap_or_else(|| default_repo_name(project));
        if let Err(m) = resolve_repo_id(&wanted, "user") {
            let hint = match given {
                Some(_) => "Pass training_args.hub_model_id as name or namespace/name, with letters, digits, -, _ and .",
                None => "The repo is named after the project; pass training_args.hub_model_id to name it otherwise.",
            };
            return Err(TuneError::bad(format!("push_to_hub: {m}"), hint));
        }
        Ok(PushSetup {
            endpoint: hub.endpoint.clone(),
            token: token.to_string(),
            wanted,
            private: args.hub_private_repo,
            strategy: args.hub_strategy,
        })
    }

    /// When pushes happen.
    pub fn strategy(&self) -> HubStrategy {
        self.strategy
    }
}

/// What the uploader reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PushEvent {
    /// The repo is there (created now, or it existed).
    Ready {
        /// `namespace/name`.
        repo_id: String,
        /// Its page.
        url: String,
        /// Asked for as private.
        private: bool,
        /// Created by this push.
        created: bool,
    },
    /// A commit landed.
    Pushed {
        /// The optimizer step of the model pushed.
        step: i64,
        /// The final model (else a checkpoint).
        last: bool,
        /// `namespace/name`.
        repo_id: String,
        /// The repo's page.
        url: String,
        /// The commit message.
        summary: String,
        /// The commit.
        commit: CommitInfo,
    },
    /// A push failed; `fatal` when no more are tried for this tune.
    Failed {
        /// The step whose push failed; `None` for the setup (token, repo).
        step: Option<i64>,
        /// Why (never the token).
        message: String,
        /// No further pushes.
        fatal: bool,
    },
}

impl PushEvent {
    /// The JSON of its notice (INFO events) and `pgml.logs` row.
    pub fn log_json(&self) -> Json {
        match self {
            PushEvent::Ready { repo_id, url, private, created } => {
                json!({"hub": "repo_ready", "repo": repo_id, "url": url, "private": private, "created": created})
            }
            PushEvent::Pushed { step, last, repo_id, url, summary, commit } => json!({
                "hub": "pushed", "repo": repo_id, "url": url, "commit": commit.oid, "commit_url": commit.url,
                "message": summary, "step": step, "final": last, "files": commit.files,
            }),
            PushEvent::Failed { step, message, fatal } => {
                json!({"hub": "push_failed", "step": step, "error": message, "pushes_stopped": fatal})
            }
        }
    }

    /// The WARNING text of a failure; `None` for the other events (INFO with [`Self::log_json`]).
    pub fn warning(&self) -> Option<String> {
        let PushEvent::Failed { step, message, fatal } = self else { return None };
        let what = match step {
            Some(s) => format!("pushing the model of step {s} to the Hugging Face Hub failed"),
            None => "push_to_hub: the Hugging Face Hub repo cannot be used".to_string(),
        };
        let next = if *fatal {
            "no more pushes are tried for this tune; training goes on and the model is stored in pgml.files"
        } else {
            "training goes on; the next push is tried as planned"
        };
        Some(format!("{what}: {message}; {next}"))
    }
}

/// One model to commit.
struct Job {
    step: i64,
    dir: PathBuf,
    card: ModelCard,
    last: bool,
}

impl Job {
    fn summary(&self) -> String {
        if self.last {
            "End of training".into()
        } else {
            format!("Training in progress, step {}", self.step)
        }
    }

    /// Drops a checkpoint directory once it is pushed or given up on (the final model's
    /// directory belongs to the tune).
    fn done(&self) {
        if !self.last {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The files of a commit: the model's files at the top with the card as `README.md`, plus
/// for a checkpoint the same files under `last-checkpoint/` (`checkpoint`) or
/// `checkpoint-<step>/` (`all_checkpoints`).
fn commit_files(
    dir: &Path,
    card: &str,
    step: i64,
    last: bool,
    strategy: HubStrategy,
) -> Result<Vec<UploadFile>, UploadError> {
    let io = |e: std::io::Error| {
        UploadError::other("listing the model files", dir.display().to_string(), e.to_string())
    };
    let mut local: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(io)?.is_file() && name != "README.md" {
            local.push((name, entry.path()));
        }
    }
    local.sort();
    let mut files: Vec<UploadFile> =
        local.iter().map(|(n, p)| UploadFile::file(n.clone(), p.clone())).collect();
    files.push(UploadFile::bytes("README.md", card.as_bytes().to_vec()));
    let sub = match (strategy, last) {
        (HubStrategy::Checkpoint, false) => Some("last-checkpoint".to_string()),
        (HubStrategy::AllCheckpoints, false) => Some(format!("checkpoint-{step}")),
        _ => None,
    };
    if let Some(sub) = sub {
        // The resume state (optimizer, trainer state, weights) when the job wrote it,
        // then the model files it lacks (config, tokenizer).
        let state = dir.join(STATE_DIR);
        let mut in_state: Vec<(String, PathBuf)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&state) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    in_state.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
                }
            }
        }
        in_state.sort();
        let names: Vec<String> = in_state.iter().map(|(n, _)| n.clone()).collect();
        files.extend(
            in_state.iter().map(|(n, p)| UploadFile::file(format!("{sub}/{n}"), p.clone())),
        );
        files.extend(
            local
                .iter()
                .filter(|(n, _)| !names.contains(n))
                .map(|(n, p)| UploadFile::file(format!("{sub}/{n}"), p.clone())),
        );
    }
    Ok(files)
}

/// Sub-directory of a checkpoint handed to the pusher that holds the resume state
/// (`SavePoint::write_checkpoint`), for `hub_strategy` checkpoint / all_checkpoints.
pub const STATE_DIR: &str = "state";

/// The uploader of one tune: a thread of its own fed with models to commit.
pub struct Pusher {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    events: mpsc::UnboundedReceiver<PushEvent>,
    stop: Option<oneshot::Sender<()>>,
    checkpoints: PathBuf,
    strategy: HubStrategy,
    ended: bool,
}

impl Pusher {
    /// Starts the uploader; checkpoints handed to it live under `checkpoints` until pushed.
    pub fn start(setup: PushSetup, checkpoints: PathBuf) -> Pusher {
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let strategy = setup.strategy;
        let on_error = events_tx.clone();
        let spawned = std::thread::Builder::new().name("pgmld-hub-push".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let message = format!("cannot start the uploader's event loop: {e}");
                    let _ = events_tx.send(PushEvent::Failed { step: None, message, fatal: true });
                    return;
                }
            };
            rt.block_on(async move {
                tokio::select! {
                    _ = run(setup, jobs_rx, &events_tx) => {}
                    _ = stop_rx => {}
                }
            });
        });
        if let Err(e) = spawned {
            let message = format!("cannot start the uploader thread: {e}");
            let _ = on_error.send(PushEvent::Failed { step: None, message, fatal: true });
        }
        Pusher {
            jobs: Some(jobs_tx),
            events,
            stop: Some(stop_tx),
            checkpoints,
            strategy,
            ended: false,
        }
    }

    /// Where the training thread writes checkpoints to push, when the strategy pushes them.
    pub fn checkpoint_dir(&self) -> Option<PathBuf> {
        self.strategy.pushes_saves().then(|| self.checkpoints.clone())
    }

    /// Queues the checkpoint of `step` in `dir` (removed once pushed) with its model card.
    pub fn checkpoint(&self, step: i64, dir: PathBuf, card: ModelCard) {
        let job = Job { step, dir, card, last: false };
        match &self.jobs {
            Some(jobs) => {
                if let Err(mpsc::error::SendError(job)) = jobs.send(job) {
                    job.done();
                }
            }
            None => job.done(),
        }
    }

    /// Queues the final model in `dir` (left in place) and closes the queue: the uploader
    /// ends after it, which [`Pusher::next_event`] tells by returning `None`.
    pub fn finish(&mut self, step: i64, dir: PathBuf, card: ModelCard) {
        if let Some(jobs) = self.jobs.take() {
            let _ = jobs.send(Job { step, dir, card, last: true });
        }
    }

    /// The next event; `None` once the uploader has ended (and from then on).
    pub async fn next_event(&mut self) -> Option<PushEvent> {
        if self.ended {
            return None;
        }
        let ev = self.events.recv().await;
        self.ended = ev.is_none();
        ev
    }
}

impl Drop for Pusher {
    /// Stops the uploader (a tune that failed or was cancelled pushes nothing more) and
    /// removes checkpoints not pushed yet.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.checkpoints);
    }
}

/// The uploader's work: set the repo up, then commit each job in turn.
async fn run(
    setup: PushSetup,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    events: &mpsc::UnboundedSender<PushEvent>,
) {
    let ready = async {
        let client = UploadClient::new(&setup.endpoint, &setup.token)?;
        let user = client.whoami().await?;
        let repo_id = resolve_repo_id(&setup.wanted, &user)
            .map_err(|m| UploadError::other("naming the repo", client.endpoint(), m))?;
        let repo = client.create_repo(&repo_id, setup.private, &user).await?;
        Ok::<_, UploadError>((client, repo))
    }
    .await;
    let (client, repo) = match ready {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "push_to_hub: the Hub repo cannot be used; no pushes for this tune");
            let _ =
                events.send(PushEvent::Failed { step: None, message: e.to_string(), fatal: true });
            while let Some(job) = jobs.recv().await {
                job.done();
            }
            return;
        }
    };
    tracing::info!(repo = %repo.repo_id, created = repo.created, "push_to_hub: repo ready");
    let _ = events.send(PushEvent::Ready {
        repo_id: repo.repo_id.clone(),
        url: repo.url.clone(),
        private: setup.private,
        created: repo.created,
    });
    while let Some(mut job) = jobs.recv().await {
        let summary = job.summary();
        job.card.repo_id = Some(repo.repo_id.clone());
        let card = job.card.render();
        let result = match commit_files(&job.dir, &card, job.step, job.last, setup.strategy) {
            Ok(files) => client.upload_files(&repo.repo_id, REVISION, files, &summary).await,
            Err(e) => Err(e),
        };
        job.done();
        let ev = match result {
            Ok(commit) => {
                tracing::info!(repo = %repo.repo_id, commit = %commit.oid, step = job.step, "push_to_hub: pushed");
                PushEvent::Pushed {
                    step: job.step,
                    last: job.last,
                    repo_id: repo.repo_id.clone(),
                    url: repo.url.clone(),
                    summary,
                    commit,
                }
            }
            Err(e) => {
                tracing::warn!(repo = %repo.repo_id, step = job.step, error = %e, "push_to_hub: push failed");
                PushEvent::Failed { step: Some(job.step), message: e.to_string(), fatal: false }
            }
        };
        let _ = events.send(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmld_train::Secret;

    fn hub(token: Option<&str>) -> HubConfig {
        HubConfig {
            endpoint: "http://hub".into(),
            token: token.map(str::to_string),
            cache_dir: "/c".into(),
            offline: false,
        }
    }

    fn push_args(token: Option<&str>, model_id: Option<&str>) -> TrainingArgs {
        TrainingArgs {
            push_to_hub: true,
            hub_token: token.map(|t| Secret(t.into())),
            hub_model_id: model_id.map(str::to_string),
            ..TrainingArgs::default()
        }
    }

    #[test]
    fn tokens_in_order_of_precedence() {
        assert_eq!(choose_token(Some("a"), Some("c"), Some("e")), Some("a"));
        assert_eq!(choose_token(Some(" "), Some("c"), Some("e")), Some("c"));
        assert_eq!(choose_token(None, None, Some("e")), Some("e"));
        assert_eq!(choose_token(None, Some(""), None), None);
        let s = PushSetup::prepare(
            &push_args(None, None),
            "p",
            Some("hf_config"),
            &hub(Some("hf_env")),
        )
        .unwrap();
        assert_eq!(s.token, "hf_config");
        let s = PushSetup::prepare(
            &push_args(Some("hf_arg"), None),
            "p",
            Some("hf_config"),
            &hub(None),
        )
        .unwrap();
        assert_eq!(s.token, "hf_arg");
        assert!(!format!("{s:?}").contains("hf_arg"));
    }

    #[test]
    fn no_token_or_a_bad_name_fails_before_training() {
        let e = PushSetup::prepare(&push_args(None, None), "p", None, &hub(None)).unwrap_err();
        let sql: pgmld_sql::SqlError = e.into();
        assert_eq!(sql.code, "22023");
        assert!(
            sql.message.contains("no Hugging Face token")
                && sql.hint.as_deref().unwrap_or("").contains("hub_token")
        );
        let e = PushSetup::prepare(&push_args(Some("t"), Some("a/b/c")), "p", None, &hub(None))
            .unwrap_err();
        assert!(e.to_string().contains("a/b/c"), "{e}");
        let e =
            PushSetup::prepare(&push_args(Some("t"), None), "what?", None, &hub(None)).unwrap_err();
        let TuneError::BadArgument { hint, .. } = e else { panic!() };
        assert!(hint.unwrap_or_default().contains("hub_model_id"));
    }

    #[test]
    fn repo_names_default_to_the_project() {
        assert_eq!(default_repo_name(" imdb review sentiment "), "imdb_review_sentiment");
        let s = PushSetup::prepare(&push_args(Some("t"), None), "my project", None, &hub(None))
            .unwrap();
        assert_eq!(resolve_repo_id(&s.wanted, "alice").unwrap(), "alice/my_project");
        let s = PushSetup::prepare(
            &push_args(Some("t"), Some("custom")),
            "my project",
            None,
            &hub(None),
        )
        .unwrap();
        assert_eq!(resolve_repo_id(&s.wanted, "alice").unwrap(), "alice/custom");
        let s =
            PushSetup::prepare(&push_args(Some("t"), Some("acme/custom")), "p", None, &hub(None))
                .unwrap();
        assert_eq!(resolve_repo_id(&s.wanted, "alice").unwrap(), "acme/custom");
    }

    #[test]
    fn commits_lay_checkpoints_out_by_strategy() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let paths = |step, last, s| -> Vec<String> {
            commit_files(dir.path(), "card", step, last, s)
                .unwrap()
                .into_iter()
                .map(|f| f.path_in_repo)
                .collect()
        };
        let top = ["config.json", "model.safetensors", "README.md"];
        assert_eq!(paths(4, false, HubStrategy::EverySave), top);
        assert_eq!(paths(4, true, HubStrategy::Checkpoint), top);
        assert_eq!(
            paths(4, false, HubStrategy::Checkpoint)[3..],
            ["last-checkpoint/config.json", "last-checkpoint/model.safetensors"]
        );
        assert_eq!(
            paths(4, false, HubStrategy::AllCheckpoints)[3..],
            ["checkpoint-4/config.json", "checkpoint-4/model.safetensors"]
        );
        assert!(commit_files(&dir.path().join("gone"), "", 1, true, HubStrategy::End).is_err());
    }

    #[test]
    fn failures_read_as_warnings() {
        let fatal = PushEvent::Failed { step: None, message: "HTTP 401".into(), fatal: true };
        let w = fatal.warning().unwrap();
        assert!(
            w.contains("HTTP 401") && w.contains("no more pushes") && w.contains("pgml.files"),
            "{w}"
        );
        assert_eq!(fatal.log_json()["hub"], "push_failed");
        let one = PushEvent::Failed { step: Some(4), message: "timeout".into(), fatal: false };
        assert!(one.warning().unwrap().contains("step 4"));
        let ready = PushEvent::Ready {
            repo_id: "a/b".into(),
            url: "http://hub/a/b".into(),
            private: true,
            created: true,
        };
        assert!(ready.warning().is_none());
        assert_eq!(ready.log_json()["url"], "http://hub/a/b");
    }
}
