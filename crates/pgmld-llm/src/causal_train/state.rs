//! The adapter's part of a resumable checkpoint of [`super::train_causal_lm`].
//!
//! A checkpoint directory holds, as HF's `checkpoint-<step>/` (written by
//! `pgmld_train::SavePoint::write_checkpoint`):
//! - `adapter_model.safetensors`: the adapter's variables under peft's names (writing
//!   [`crate::lora::save_adapter`] into the same directory adds `adapter_config.json` and
//!   makes it a peft adapter directory too);
//! - `optimizer.safetensors`: the optimizer state (f32 or 8-bit);
//! - `training_args.json` and `trainer_state.json` (`pgmld_train::TrainState`), the latter
//!   written last: a directory without it is incomplete.

use std::path::Path;

use pgmld_train::train_state::load_checkpoint;
use pgmld_train::Checkpoint;
use tch::nn;

use crate::lora::ADAPTER_WEIGHTS_FILE;
use crate::Result;

/// The adapter weights of a checkpoint (peft's file name).
pub const ADAPTER_CHECKPOINT_FILE: &str = ADAPTER_WEIGHTS_FILE;

/// Writes the variables of `vs` to `path` (safetensors, sorted by name, on the CPU).
pub fn write_adapter_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let mut vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let vars: Vec<(String, tch::Tensor)> = vars
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Ok(tch::Tensor::write_safetensors(&vars, path)?)
}

/// Reads the trainer state and arguments of the checkpoint in `dir`.
pub fn load_causal_checkpoint(dir: &Path) -> Result<Checkpoint> {
    Ok(load_checkpoint(dir)?)
}
