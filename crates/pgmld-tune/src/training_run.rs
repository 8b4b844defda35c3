//! What a training run on a worker thread shares whatever its task (classification in
//! [`crate::job`], conversations in [`crate::conversation::job`]): where it writes
//! ([`RunDirs`]), what it reports ([`Progress`]) and returns ([`Outcome`]), and what its
//! save points do ([`save_point`]).

use std::path::{Path, PathBuf};

use pgmld_train::{HubStrategy, LogEvent, TrainMetrics};
use serde_json::Value as Json;
use tch::Device;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::Result;

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
    /// A checkpoint (as `pgmld_train::SavePoint::write_checkpoint` writes it) to go on from.
    pub resume_from: Option<PathBuf>,
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
    Log(LogEvent, f64),
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
    /// Something the caller should know; training goes on.
    Warning {
        /// What happened.
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
        Some(dir) => pgmld_train::load_checkpoint(dir)?.state.global_step,
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
