//! The part of a tune that runs on a training worker thread: load the model and tokenizer,
//! train, save the result. It reports through a channel and polls a cancel flag; it never
//! touches the database. The channel's [`Progress`], the [`Outcome`] and the save points
//! are shared with the conversation task ([`crate::conversation::job`]) through
//! [`crate::training_run`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pgmld_ml::{train_classifier_data_parallel, Classifier, Example, TextTokenizer, TrainEvent};
use pgmld_train::{TokenizerArgs, TrainingArgs};
use serde_json::json;
use tch::Device;
use tokio::sync::mpsc::UnboundedSender;

use crate::conversation::job::ConversationSpec;
use crate::data_parallel::{join_group, GroupSpec};
use crate::error::{Result, TuneError};
use crate::training_run::{device_name, save_point, start_step};
pub use crate::training_run::{Outcome, Progress, RunDirs};

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
    /// The data-parallel group this run is a rank of (`None`: one process).
    pub group: Option<GroupSpec>,
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
    /// The ranks the run asks for (`training_args.world_size`).
    pub fn world_size(&self) -> usize {
        match self {
            Work::Classification(s) => s.training.world_size,
            Work::Conversation(s) => s.training.world_size,
        }
    }

    /// The run as a rank of `group`.
    pub fn with_group(self, group: GroupSpec) -> Work {
        match self {
            Work::Classification(s) => Work::Classification(TrainSpec { group: Some(group), ..s }),
            Work::Conversation(s) => {
                Work::Conversation(ConversationSpec { group: Some(group), ..s })
            }
        }
    }

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

/// Tokenizer files copied next to the trained weights when the base model has them.
const TOKENIZER_FILES: &[&str] =
    &["tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"];

/// Trains and saves a classifier; runs on a worker thread. A rank of a data-parallel run
/// other than rank 0 reports nothing, saves nothing and returns an empty outcome.
pub fn run(
    mut spec: TrainSpec,
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
    let rank = spec.group.as_ref().map_or(0, GroupSpec::rank);
    let mut group = join_group(spec.group.take(), device, &tx)?;
    let started = Instant::now();
    let outcome = train_classifier_data_parallel(
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
                &|dir| save(at.task().model(), &tokenizer, &spec, dir),
                &tx,
            )
        },
        || cancel.load(Ordering::Relaxed),
        spec.dirs.resume_from.as_deref(),
        group.as_mut().map(|(_, g)| g),
    )?;
    drop(group);
    if cancel.load(Ordering::Relaxed) {
        return Err(TuneError::Cancelled);
    }
    if rank == 0 {
        save(&model, &tokenizer, &spec, &spec.dirs.out_dir)?;
    }
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
