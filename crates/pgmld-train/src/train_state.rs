//! Resumable training (HF `resume_from_checkpoint`): the trainer's state, the checkpoint
//! directory that holds it with the weights and the optimizer, and the checks made before
//! a run goes on from one.
//!
//! A checkpoint directory holds, as HF's `checkpoint-<step>/`:
//! - the task's weights file ([`crate::TrainTask::WEIGHTS_FILE`]: `model.safetensors` for
//!   the classifier, `adapter_model.safetensors` for a LoRA adapter), the trained variables
//!   under their `VarStore` names;
//! - `optimizer.safetensors`: the optimizer state ([`crate::optim::AdamW::save`]);
//! - `training_args.json`: the [`TrainingArgs`] (a `hub_token` never serialises);
//! - `trainer_state.json`: the [`TrainState`], written last: a directory without it is
//!   incomplete.
//!
//! Nothing else is needed to go on: the trainer draws the data order of an epoch from the
//! seed and the epoch alone, and the dropout masks from the seed, the optimizer step and
//! the micro-batch alone (see [`crate::trainer`]), so a resumed run recomputes the order of
//! the epoch it stopped in, skips the micro-batches done, and on one device ends with the
//! parameters an uninterrupted run would have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::error::{Error, Result};
use crate::events::LogEvent;
use crate::training_args::TrainingArgs;

/// The weights of a classifier's checkpoint (the whole model).
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer state of a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The trainer state of a checkpoint (HF's name).
pub const STATE_FILE: &str = "trainer_state.json";
/// The training arguments of a checkpoint (HF's name, as JSON).
pub const ARGS_FILE: &str = "training_args.json";

/// Where a run stands after an optimizer step: what `trainer_state.json` holds. The field
/// names HF's `TrainerState` has (`global_step`, `max_steps`, `epoch`, `log_history`,
/// `logging_steps`, `save_steps`, `num_train_epochs`, `train_batch_size`) mean the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub global_step: i64,
    /// Total optimizer steps of the run.
    pub max_steps: i64,
    /// Fractional epoch reached.
    pub epoch: f64,
    /// The epoch in progress, 0-based (the one `micro_batches_done_in_epoch` counts in).
    pub epoch_index: usize,
    /// Micro-batches of that epoch's batch order already trained on.
    pub micro_batches_done_in_epoch: usize,
    /// Sum of the per-step training losses so far (for `train_loss`).
    pub total_loss_sum: f64,
    /// Sum of the per-step training losses since the last log event.
    pub window_loss_sum: f64,
    /// Step of the last log event (0 before the first).
    pub last_logged: i64,
    /// Training samples processed so far.
    pub samples: u64,
    /// Every log event so far.
    pub log_history: Vec<LogEvent>,
    /// `logging_steps` of the run.
    pub logging_steps: i64,
    /// `save_steps` of the run.
    pub save_steps: i64,
    /// `num_train_epochs` of the run (unused when `max_steps` was set).
    pub num_train_epochs: f64,
    /// `per_device_train_batch_size` of the run.
    pub train_batch_size: usize,
    /// `world_size` of the run: a micro-batch has `train_batch_size` × this examples
    /// (1 in checkpoints written before data-parallel runs).
    #[serde(default = "one")]
    pub world_size: usize,
    /// `gradient_accumulation_steps` of the run.
    pub gradient_accumulation_steps: usize,
    /// `seed` of the run.
    pub seed: u64,
    /// Training examples.
    pub num_train_examples: usize,
    /// Fingerprint of the training examples ([`crate::TrainTask::fingerprint`]).
    pub train_data_fingerprint: String,
}

fn one() -> usize {
    1
}

impl TrainState {
    /// The state before the first step of a run of `max_steps` optimizer steps on
    /// `num_train_examples` examples whose fingerprint is `fingerprint` (what a resume
    /// checks to train on the same rows).
    pub fn for_data(
        args: &TrainingArgs,
        max_steps: i64,
        num_train_examples: usize,
        fingerprint: String,
    ) -> Self {
        TrainState {
            global_step: 0,
            max_steps,
            epoch: 0.0,
            epoch_index: 0,
            micro_batches_done_in_epoch: 0,
            total_loss_sum: 0.0,
            window_loss_sum: 0.0,
            last_logged: 0,
            samples: 0,
            log_history: Vec::new(),
            logging_steps: args.logging_steps,
            save_steps: args.save_steps,
            num_train_epochs: args.num_train_epochs,
            train_batch_size: args.per_device_train_batch_size,
            world_size: args.world_size,
            gradient_accumulation_steps: args.gradient_accumulation_steps,
            seed: args.seed,
            num_train_examples,
            train_data_fingerprint: fingerprint,
        }
    }

    /// Optimizer steps since the last log event.
    pub fn steps_since_log(&self) -> i64 {
        self.global_step - self.last_logged
    }

    /// Micro-batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.num_train_examples.div_ceil((self.train_batch_size * self.world_size).max(1))
    }

    /// Optimizer steps per epoch.
    pub fn updates_per_epoch(&self) -> usize {
        self.batches_per_epoch().div_ceil(self.gradient_accumulation_steps.max(1))
    }

    /// Checks that a run planned as `fresh` (its [`TrainState::for_data`]) can go on from this
    /// saved state: same batch size, accumulation, seed, training data and total steps,
    /// else an [`Error::TrainingArgs`] naming what differs; and that the state is
    /// consistent, else an [`Error::Checkpoint`].
    pub fn check_resumable(&self, fresh: &TrainState, dir: &Path) -> Result<()> {
        let differ = |what: &str, here: String, there: String| {
            Err(Error::TrainingArgs(format!(
                "cannot resume from {}: {what} is {here} but the checkpoint's run has {there}",
                dir.display()
            )))
        };
        macro_rules! same {
            ($field:ident, $what:expr) => {
                if self.$field != fresh.$field {
                    return differ($what, fresh.$field.to_string(), self.$field.to_string());
                }
            };
        }
        same!(train_batch_size, "per_device_train_batch_size");
        same!(world_size, "world_size");
        same!(gradient_accumulation_steps, "gradient_accumulation_steps");
        same!(seed, "seed");
        same!(num_train_examples, "the number of training examples");
        same!(
            max_steps,
            "the total number of optimizer steps (from max_steps or num_train_epochs)"
        );
        if self.train_data_fingerprint != fresh.train_data_fingerprint {
            return differ(
                "the training data",
                format!("fingerprint {}", fresh.train_data_fingerprint),
                format!(
                    "fingerprint {} (same size, other examples or order)",
                    self.train_data_fingerprint
                ),
            );
        }
        let (per_epoch, accum) = (self.updates_per_epoch(), self.gradient_accumulation_steps);
        let done = self.micro_batches_done_in_epoch;
        let consistent = self.global_step >= 0
            && self.global_step <= self.max_steps
            && done <= self.batches_per_epoch()
            && (done.is_multiple_of(accum) || done == self.batches_per_epoch())
            && self
                .epoch_index
                .checked_mul(per_epoch)
                .and_then(|s| s.checked_add(done.div_ceil(accum)))
                == Some(self.global_step as usize)
            && (0..=self.global_step).contains(&self.last_logged);
        if !consistent {
            return Err(Error::Checkpoint {
                path: dir.join(STATE_FILE),
                message: format!(
                    "inconsistent position: step {} of {}, epoch {}, {done} micro-batches done",
                    self.global_step, self.max_steps, self.epoch_index
                ),
            });
        }
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    std::fs::write(path, text).map_err(io_err(path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })
}

/// Starts writing a checkpoint into `dir` (created if need be): removes the state file of
/// an older checkpoint there first, so a crash halfway leaves an incomplete directory, never
/// an old state beside new weights. The caller then writes the weights and the optimizer
/// state, and [`finish_checkpoint`] last.
pub fn begin_checkpoint(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let state_path = dir.join(STATE_FILE);
    match std::fs::remove_file(&state_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&state_path)(e)),
        _ => Ok(()),
    }
}

/// Ends a checkpoint [`begin_checkpoint`] started: `args`, then `state` (the file whose
/// presence marks the checkpoint complete).
pub fn finish_checkpoint(dir: &Path, state: &TrainState, args: &TrainingArgs) -> Result<()> {
    write_json(&dir.join(ARGS_FILE), args)?;
    write_json(&dir.join(STATE_FILE), state)
}

/// Copies the variables saved in `path` (a checkpoint's `model.safetensors`) into `vs`:
/// every variable must be there with its shape, and nothing else.
pub fn load_weights(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let missing: Vec<String> = vars
        .iter()
        .filter(|(n, _)| !saved.contains_key(n))
        .map(|(n, _)| n.clone())
        .take(5)
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingWeights { path: path.to_path_buf(), names: missing });
    }
    let pairs: Vec<(String, Tensor, Tensor)> =
        vars.into_iter().filter_map(|(n, v)| saved.remove(&n).map(|s| (n, v, s))).collect();
    if !saved.is_empty() {
        let mut extra: Vec<String> = saved.into_keys().collect();
        extra.sort_unstable();
        extra.truncate(5);
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("weights the model lacks (another architecture?): {extra:?}"),
        });
    }
    if let Some((name, v, s)) = pairs.iter().find(|(_, v, s)| v.size() != s.size()) {
        return Err(Error::ShapeMismatch {
            name: name.clone(),
            found: s.size(),
            expected: v.size(),
        });
    }
    tch::no_grad(|| -> Result<()> {
        for (_, mut v, s) in pairs {
            v.f_copy_(&s)?;
        }
        Ok(())
    })
}

/// A checkpoint's state and arguments, read by [`load_checkpoint`].
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `trainer_state.json`.
    pub state: TrainState,
    /// Its `training_args.json`.
    pub args: TrainingArgs,
}

/// Reads the state and arguments of the checkpoint in `dir`; the trainer reads the weights
/// and the optimizer state when it resumes.
pub fn load_checkpoint(dir: impl AsRef<Path>) -> Result<Checkpoint> {
    let dir = dir.as_ref();
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state: read_json(&dir.join(STATE_FILE))?,
        args: read_json(&dir.join(ARGS_FILE))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inconsistent_states_and_other_runs_are_refused() {
        let args = TrainingArgs {
            per_device_train_batch_size: 4,
            gradient_accumulation_steps: 2,
            ..Default::default()
        };
        let fp = |rows: &str| format!("{:016x}", rows.len());
        let data = fp("twenty rows");
        // 5 micro-batches, 3 steps per epoch.
        let fresh = TrainState::for_data(&args, 9, 20, data.clone());
        let dir = Path::new("ck");
        let at = |step: i64, epoch: usize, done: usize| TrainState {
            global_step: step,
            epoch_index: epoch,
            micro_batches_done_in_epoch: done,
            ..fresh.clone()
        };
        for ok in [at(0, 0, 0), at(2, 0, 4), at(3, 0, 5), at(4, 1, 2), at(9, 2, 5)] {
            ok.check_resumable(&fresh, dir).unwrap();
        }
        for bad in [at(2, 0, 3), at(3, 1, 2), at(10, 3, 2), at(2, 0, 6)] {
            let e = bad.check_resumable(&fresh, dir).unwrap_err();
            assert!(matches!(e, Error::Checkpoint { .. }), "{bad:?}: {e}");
        }
        let other =
            TrainState::for_data(&TrainingArgs { seed: 7, ..args.clone() }, 9, 20, data.clone());
        let e = at(2, 0, 4).check_resumable(&other, dir).unwrap_err().to_string();
        assert!(e.contains("seed is 7 but the checkpoint's run has 42"), "{e}");
        let other = TrainState::for_data(&args, 9, 19, data.clone());
        let e = at(2, 0, 4).check_resumable(&other, dir).unwrap_err().to_string();
        assert!(e.contains("number of training examples is 19"), "{e}");
        let other = TrainState::for_data(&args, 9, 20, fp("other twenty rows"));
        let e = at(2, 0, 4).check_resumable(&other, dir).unwrap_err().to_string();
        assert!(e.contains("the training data is fingerprint"), "{e}");
        let other = TrainState::for_data(&args, 12, 20, data.clone());
        let e = at(2, 0, 4).check_resumable(&other, dir).unwrap_err().to_string();
        assert!(e.contains("total number of optimizer steps") && e.contains("is 12"), "{e}");
    }
}
