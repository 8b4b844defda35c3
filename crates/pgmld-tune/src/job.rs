//! The part of a tune that runs on a training worker thread: load the model and tokenizer,
//! train, save the result. It reports through a channel and polls a cancel flag; it never
//! touches the database.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pgmld_ml::{HubStrategy, train_classifier, Classifier, Example, TextTokenizer, TokenizerArgs, TrainEvent, TrainOutcome, TrainingArgs};
use tch::Device;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{Result, TuneError};

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
    /// Where the trained model's files go.
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

/// What a worker reports while it runs.
#[derive(Debug)]
pub enum Progress {
    /// The model is loaded and training begins.
    Started {
        /// The device trained on.
        device: String,
        /// Tokens per input after truncation.
        max_length: usize,
        /// Trainable parameters.
        parameters: i64,
        /// Optimizer steps already done (a resumed run's checkpoint step), so progress
        /// rates count only this run's steps.
        start_step: i64,
    },
    /// A trainer event, with seconds since training began.
    Event(TrainEvent, f64),
    /// A checkpoint was written (see [`TrainSpec::checkpoint_dir`]); the receiver owns `dir`.
    Saved {
        /// The optimizer step saved.
        step: i64,
        /// The checkpoint's directory.
        dir: PathBuf,
    },
    /// A resumable checkpoint was written (see [`TrainSpec::resume_dir`]); the receiver
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

/// Tokenizer files copied next to the trained weights when the base model has them.
const TOKENIZER_FILES: &[&str] = &["tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"];

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Trains and saves; runs on a worker thread.
pub fn run(spec: TrainSpec, device: Device, cancel: Arc<AtomicBool>, tx: UnboundedSender<Progress>) -> Result<TrainOutcome> {
    let num_labels = spec.labels.len() as i64;
    // Seed before the fresh head is drawn, so a run is reproducible end to end.
    tch::manual_seed(spec.training.seed as i64);
    let mut model = Classifier::from_pretrained(&spec.model_dir, Some(num_labels), device)?;
    let max_length = spec.tokenizer.max_length_for(model.max_positions());
    let inner = pgmld_ml::vocab::tokenizer_from_dir(&spec.model_dir)?;
    let tokenizer = TextTokenizer::from_tokenizer(inner, max_length)?.with_truncation(spec.tokenizer.truncation);
    let parameters: i64 = model.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let start_step = match spec.resume_from.as_deref() {
        Some(dir) => pgmld_ml::train_state::load_checkpoint(dir)?.state.global_step,
        None => 0,
    };
    let _ = tx.send(Progress::Started { device: device_name(device), max_length, parameters, start_step });
    let started = Instant::now();
    let outcome = train_classifier(
        &mut model,
        &tokenizer,
        &spec.train,
        &spec.eval,
        &spec.training,
        |e| {
            let _ = tx.send(Progress::Event(e, started.elapsed().as_secs_f64()));
        },
        |at| {
            // Local disk only: pgml.files and the Hub get them from the async side.
            if let Some(root) = spec.resume_dir.as_ref().filter(|_| at.step() < at.state().max_steps) {
                let step = at.step();
                let dir = root.join(format!("step-{step}"));
                let _ = std::fs::remove_dir_all(&dir);
                let _ = tx.send(match at.write_checkpoint(&dir) {
                    Ok(()) => Progress::Checkpoint { step, dir },
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        Progress::CheckpointFailed { step, message: e.to_string() }
                    }
                });
            }
            let Some(root) = &spec.checkpoint_dir else { return };
            let step = at.step();
            let dir = root.join(format!("checkpoint-{step}"));
            let _ = std::fs::remove_dir_all(&dir);
            // hub_strategy checkpoint / all_checkpoints push what resuming needs too
            // (optimizer, trainer state), as HF's Trainer does; push.rs puts it under the
            // checkpoint's folder.
            let with_state = matches!(spec.training.hub_strategy, HubStrategy::Checkpoint | HubStrategy::AllCheckpoints);
            let saved = save(at.model(), &tokenizer, &spec, &dir).and_then(|()| {
                if with_state {
                    at.write_checkpoint(dir.join(crate::push::STATE_DIR))?;
                }
                Ok(())
            });
            let _ = tx.send(match saved {
                Ok(()) => Progress::Saved { step, dir },
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    Progress::SaveFailed { step, message: e.to_string() }
                }
            });
        },
        || cancel.load(Ordering::Relaxed),
        spec.resume_from.as_deref(),
    )?;
    if cancel.load(Ordering::Relaxed) {
        return Err(TuneError::Cancelled);
    }
    save(&model, &tokenizer, &spec, &spec.out_dir)?;
    Ok(outcome)
}

/// Writes a trained model's files into `out`: config.json, model.safetensors, the
/// tokenizer files, training_args.json (without `hub_token`, which never serialises).
fn save(model: &Classifier, tokenizer: &TextTokenizer, spec: &TrainSpec, out: &std::path::Path) -> Result<()> {
    let io = |what: &str, e: &dyn std::fmt::Display| TuneError::Internal(format!("saving the model ({what}) in {}: {e}", out.display()));
    model.save(out, &spec.labels)?;
    tokenizer.inner().save(out.join("tokenizer.json"), false).map_err(|e| io("tokenizer.json", &e))?;
    for name in TOKENIZER_FILES {
        let src = spec.model_dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, out.join(name)).map_err(|e| io(name, &e))?;
        }
    }
    let args = serde_json::to_string_pretty(&spec.training).map_err(|e| io("training_args.json", &e))?;
    std::fs::write(out.join("training_args.json"), args).map_err(|e| io("training_args.json", &e))?;
    Ok(())
}
