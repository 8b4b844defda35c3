//! Save points and resumable checkpoints of [`super::train_causal_lm`].
//!
//! A checkpoint directory holds, as HF's `checkpoint-<step>/`:
//! - `adapter_model.safetensors`: the adapter's variables under peft's names (writing
//!   [`crate::lora::save_adapter`] into the same directory adds `adapter_config.json` and
//!   makes it a peft adapter directory too);
//! - `optimizer.safetensors`: the optimizer state (f32 or 8-bit);
//! - `training_args.json` and `trainer_state.json` (`pgmld_ml::TrainState`), the latter
//!   written last: a directory without it is incomplete.

use std::path::Path;

use tch::nn;

use pgmld_ml::train_state::{load_checkpoint, load_weights, ARGS_FILE, OPTIMIZER_FILE, STATE_FILE};
use pgmld_ml::training_args::TrainingArgs;
use pgmld_ml::{Checkpoint, TrainState};

use super::batch::fingerprint;
use crate::conversation::TokenizedExample;
use crate::lora::ADAPTER_WEIGHTS_FILE;
use crate::optim8bit::Optimizer;
use crate::{Error, Result};

/// The adapter weights of a checkpoint (peft's file name).
pub const ADAPTER_CHECKPOINT_FILE: &str = ADAPTER_WEIGHTS_FILE;

/// What `on_save` receives every `save_steps`: the step, the adapter and what a resumable
/// checkpoint needs.
pub struct CausalSavePoint<'a> {
    pub(crate) vs: &'a nn::VarStore,
    pub(crate) optimizer: &'a Optimizer,
    pub(crate) state: &'a TrainState,
    pub(crate) args: &'a TrainingArgs,
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| Error::Json { what: path.display().to_string(), source })?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

impl CausalSavePoint<'_> {
    /// The optimizer step just done.
    pub fn step(&self) -> i64 {
        self.state.global_step
    }

    /// The adapter's variables after that step (pass to [`crate::lora::save_adapter`]).
    pub fn vs(&self) -> &nn::VarStore {
        self.vs
    }

    /// The trainer state after that step.
    pub fn state(&self) -> &TrainState {
        self.state
    }

    /// Writes a resumable checkpoint into `dir` (created if need be; an older checkpoint
    /// there is replaced): pass `dir` as `resume_from` to go on from this step.
    pub fn write_checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let state_path = dir.join(STATE_FILE);
        match std::fs::remove_file(&state_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&state_path, e))
            }
            _ => {}
        }
        let mut vars: Vec<(String, tch::Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let vars: Vec<(String, tch::Tensor)> = vars
            .into_iter()
            .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu).contiguous()))
            .collect();
        tch::Tensor::write_safetensors(&vars, dir.join(ADAPTER_CHECKPOINT_FILE))?;
        self.optimizer.save(&dir.join(OPTIMIZER_FILE))?;
        write_json(&dir.join(ARGS_FILE), self.args)?;
        write_json(&state_path, self.state)
    }
}

/// The state before the first step of a run of `max_steps` optimizer steps on `train`.
pub(crate) fn fresh_state(
    args: &TrainingArgs,
    max_steps: i64,
    train: &[TokenizedExample],
) -> TrainState {
    TrainState::for_data(args, max_steps, train.len(), fingerprint(train))
}

/// Reads the trainer state and arguments of the checkpoint in `dir`.
pub fn load_causal_checkpoint(dir: &Path) -> Result<Checkpoint> {
    Ok(load_checkpoint(dir)?)
}

/// Checks that the run planned as `fresh` can go on from the checkpoint in `dir`, fills
/// `vs` and `optimizer` from it and returns its state.
pub(crate) fn resume(
    dir: &Path,
    fresh: &TrainState,
    vs: &nn::VarStore,
    optimizer: &mut Optimizer,
) -> Result<TrainState> {
    let ck = load_checkpoint(dir)?;
    ck.state.check_resumable(fresh, dir)?;
    load_weights(vs, dir.join(ADAPTER_CHECKPOINT_FILE))?;
    optimizer.load(&dir.join(OPTIMIZER_FILE))?;
    Ok(ck.state)
}
