//! The part of a tune that runs on a training worker thread: load the model and tokenizer,
//! train, save the result. It reports through a channel and polls a cancel flag; it never
//! touches the database. The channel's [`Progress`], the [`Outcome`] and the save points
//! ([`save_point`]) are shared by both tasks: classification here, conversations in
//! [`crate::conversation::job`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pgmld_ml::{
    train_classifier, Classifier, Example, HubStrategy, TextTokenizer, TokenizerArgs, TrainEvent,
    TrainMetrics, TrainingArgs,
};
use serde_json::{json, Value as Json};
use tch::Device;
use tokio::sync::mpsc::UnboundedSender;

use crate::conversation::job::ConversationSpec;
use crate::error::{Result, TuneError};

/// Where a run writes, whatever its task.
#[derive(Debug, Clone, Default)]
pub struct RunDirs {
    /// Where the trained model's (or adapter's) files go.
    pub out_dir: PathBuf,
    /// Where checkpoints are written at every `save_steps`, each as `checkpoint-<step>/`
    /// with the files of a trained model, to be pushed to the Hub; `None`: no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Where resumable checkpoints (weights, optimizer and trainer state) are written at
    /// every `save_steps` but the last, each as `step-<step>/`, to be stored in pgml.files
    /// ([`Progress::Checkpoint`]); `None`: none.
    pub resume_dir: Option<PathBuf>,
    /// A checkpoint (as [`pgmld_ml::train_state`] writes it) to go on from.
    pub resume_from: Option<PathBuf>,
}

/// Everything a worker needs for one classification run.
pub struct TrainSpec {
    /// Checkpoint to start from.
    pub model_dir: PathBuf,
    /// Class names by id.
    pub labels: Vec<String>,
    /// Training examples.
    pub train: Arc<Vec<Example>>,
    /// Held-out examples (may be empty).
    pub eval: Arc<Vec<Example>>,
    /// Trainer settings.
    pub training: TrainingArgs,
    /// Tokenizer settings.
    pub tokenizer: TokenizerArgs,
    /// Output, checkpoint and resume directories.
    pub dirs: RunDirs,
}

/// One run of either task, as submitted to the worker pool.
// One value per training job: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Work {
    /// A classifier.
    Classification(TrainSpec),
    /// A LoRA adapter on conversations.
    Conversation(ConversationSpec),
}

impl Work {
    /// Trains and saves; runs on a worker thread.
    pub fn run(
        self,
        device: Device,
        cancel: Arc<AtomicBool>,
        tx: UnboundedSender<Progress>,
    ) -> Result<Outcome> {
        match self {
            Work::Classification(spec) => run(spec, device, cancel, tx),
            Work::Conversation(spec) => crate::conversation::job::run(spec, device, cancel, tx),
        }
    }
}

/// What a worker reports while it runs.
#[derive(Debug)]
pub enum Progress {
    /// The model is loaded and training begins.
    Started {
        /// What the run trains on (device, parameters, lengths, memory options), for the
        /// `"status": "training"` notice.
        info: Json,
        /// Optimizer steps already done (a resumed run's checkpoint step), so progress
        /// rates count only this run's steps.
        start_step: i64,
    },
    /// A training log event, with seconds since training began.
    Log(pgmld_ml::LogEvent, f64),
    /// An evaluation during training.
    Eval {
        /// Optimizer steps done.
        step: i64,
        /// Fractional epoch reached.
        epoch: f64,
        /// The metrics (a JSON object with HF's names).
        metrics: Json,
    },
    /// A checkpoint was written (see [`RunDirs::checkpoint_dir`]); the receiver owns `dir`.
    Saved {
        /// The optimizer step saved.
        step: i64,
        /// The checkpoint's directory.
        dir: PathBuf,
    },
    /// A resumable checkpoint was written (see [`RunDirs::resume_dir`]); the receiver
    /// owns `dir`.
    Checkpoint {
        /// The optimizer step saved.
        step: i64,
        /// The checkpoint's directory.
        dir: PathBuf,
    },
    /// A resumable checkpoint could not be written; training goes on.
    CheckpointFailed {
        /// The optimizer step.
        step: i64,
        /// Why.
        message: String,
    },
    /// A checkpoint could not be written; training goes on.
    SaveFailed {
        /// The optimizer step.
        step: i64,
        /// Why.
        message: String,
    },
}

/// What a finished run returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Training summary (HF names).
    pub train: TrainMetrics,
    /// The final evaluation (a JSON object with HF's names); `None` without test rows.
    pub eval: Option<Json>,
    /// Figures recorded with the metrics besides the summaries (a JSON object; empty for
    /// classification).
    pub stats: Json,
}

/// Tokenizer files copied next to the trained weights when the base model has them.
const TOKENIZER_FILES: &[&str] =
    &["tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"];

/// The device's name as notices show it.
pub(crate) fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The step a run resumed from `resume_from` starts at (0 for a new run).
pub(crate) fn start_step(resume_from: Option<&Path>) -> Result<i64> {
    Ok(match resume_from {
        Some(dir) => pgmld_ml::train_state::load_checkpoint(dir)?.state.global_step,
        None => 0,
    })
}

/// What a save point of either trainer does, on local disk only (pgml.files and the Hub
/// get the files from the async side): at every step but the last, a resumable checkpoint
/// (`write_checkpoint`) into `step-<step>/` of [`RunDirs::resume_dir`]; with a Hub
/// uploader, the model (`save_model`) into `checkpoint-<step>/` of
/// [`RunDirs::checkpoint_dir`], with the resume state under [`crate::push::STATE_DIR`] for
/// `hub_strategy` checkpoint / all_checkpoints (as HF's Trainer pushes it).
pub(crate) fn save_point(
    dirs: &RunDirs,
    hub_strategy: HubStrategy,
    (step, max_steps): (i64, i64),
    write_checkpoint: &dyn Fn(&Path) -> Result<()>,
    save_model: &dyn Fn(&Path) -> Result<()>,
    tx: &UnboundedSender<Progress>,
) {
    if let Some(root) = dirs.resume_dir.as_ref().filter(|_| step < max_steps) {
        let dir = root.join(format!("step-{step}"));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = tx.send(match write_checkpoint(&dir) {
            Ok(()) => Progress::Checkpoint { step, dir },
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Progress::CheckpointFailed { step, message: e.to_string() }
            }
        });
    }
    let Some(root) = &dirs.checkpoint_dir else { return };
    let dir = root.join(format!("checkpoint-{step}"));
    let _ = std::fs::remove_dir_all(&dir);
    let with_state = matches!(hub_strategy, HubStrategy::Checkpoint | HubStrategy::AllCheckpoints);
    let saved = save_model(&dir).and_then(|()| match with_state {
        true => write_checkpoint(&dir.join(crate::push::STATE_DIR)),
        false => Ok(()),
    });
    let _ = tx.send(match saved {
        Ok(()) => Progress::Saved { step, dir },
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Progress::SaveFailed { step, message: e.to_string() }
        }
    });
}

/// Trains and saves a classifier; runs on a worker thread.
pub fn run(
    spec: TrainSpec,
    device: Device,
    cancel: Arc<AtomicBool>,
    tx: UnboundedSender<Progress>,
) -> Result<Outcome> {
    let num_labels = spec.labels.len() as i64;
    // Seed before the fresh head is drawn, so a run is reproducible end to end.
    tch::manual_seed(spec.training.seed as i64);
    let mut model = Classifier::from_pretrained(&spec.model_dir, Some(num_labels), device)?;
    let max_length = spec.tokenizer.max_length_for(model.max_positions());
    let inner = pgmld_ml::vocab::tokenizer_from_dir(&spec.model_dir)?;
    let tokenizer = TextTokenizer::from_tokenizer(inner, max_length)?
        .with_truncation(spec.tokenizer.truncation);
    let parameters: i64 = model.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let start_step = start_step(spec.dirs.resume_from.as_deref())?;
    let info = json!({"device": device_name(device), "max_length": max_length, "trainable_parameters": parameters});
    let _ = tx.send(Progress::Started { info, start_step });
    let started = Instant::now();
    let outcome = train_classifier(
        &mut model,
        &tokenizer,
        &spec.train,
        &spec.eval,
        &spec.training,
        |e| {
            let elapsed = started.elapsed().as_secs_f64();
            let _ = tx.send(match e {
                TrainEvent::Log(ev) => Progress::Log(ev, elapsed),
                TrainEvent::Eval { step, epoch, metrics } => Progress::Eval {
                    step,
                    epoch,
                    metrics: serde_json::to_value(metrics).unwrap_or_default(),
                },
            });
        },
        |at| {
            save_point(
                &spec.dirs,
                spec.training.hub_strategy,
                (at.step(), at.state().max_steps),
                &|dir| Ok(at.write_checkpoint(dir)?),
                &|dir| save(at.model(), &tokenizer, &spec, dir),
                &tx,
            )
        },
        || cancel.load(Ordering::Relaxed),
        spec.dirs.resume_from.as_deref(),
    )?;
    if cancel.load(Ordering::Relaxed) {
        return Err(TuneError::Cancelled);
    }
    save(&model, &tokenizer, &spec, &spec.dirs.out_dir)?;
    let eval = outcome.eval.map(|m| serde_json::to_value(m).unwrap_or_default());
    Ok(Outcome { train: outcome.train, eval, stats: json!({}) })
}

/// Writes a trained model's files into `out`: config.json, model.safetensors, the
/// tokenizer files, training_args.json (without `hub_token`, which never serialises).
fn save(model: &Classifier, tokenizer: &TextTokenizer, spec: &TrainSpec, out: &Path) -> Result<()> {
    let io = |what: &str, e: &dyn std::fmt::Display| {
        TuneError::Internal(format!("saving the model ({what}) in {}: {e}", out.display()))
    };
    model.save(out, &spec.labels)?;
    tokenizer
        .inner()
        .save(out.join("tokenizer.json"), false)
        .map_err(|e| io("tokenizer.json", &e))?;
    for name in TOKENIZER_FILES {
        let src = spec.model_dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, out.join(name)).map_err(|e| io(name, &e))?;
        }
    }
    let args =
        serde_json::to_string_pretty(&spec.training).map_err(|e| io("training_args.json", &e))?;
    std::fs::write(out.join("training_args.json"), args)
        .map_err(|e| io("training_args.json", &e))?;
    Ok(())
}
