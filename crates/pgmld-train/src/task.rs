//! What a model must provide to be trained by [`crate::trainer::train`]: the small surface
//! between the one training loop and a model family (the classifier in pgmld-ml, the
//! causal LM in pgmld-llm).

use std::path::Path;

use tch::{nn, Device, Tensor};

use crate::error::Error;
use crate::optim::AdamW;
use crate::training_args::TrainingArgs;

/// An optimizer the loop steps and a checkpoint saves and restores.
pub trait StepOptimizer {
    /// What saving or loading its state fails with.
    type Error;

    /// One update with learning rate `lr`.
    fn step(&mut self, lr: f64);

    /// Zeroes the parameters' gradients.
    fn zero_grad(&mut self);

    /// Writes the state to `path` (a checkpoint's `optimizer.safetensors`).
    fn save(&self, path: &Path) -> Result<(), Self::Error>;

    /// Restores a state [`StepOptimizer::save`] wrote.
    fn load(&mut self, path: &Path) -> Result<(), Self::Error>;

    /// The AdamW whose update the trainer's `cuda_graphs` path can stage into a CUDA graph
    /// ([`AdamW::stage_step`]); `None` (the default): this optimizer's steps run eagerly.
    fn staged(&mut self) -> Option<&mut AdamW> {
        None
    }
}

impl StepOptimizer for AdamW {
    type Error = Error;

    fn step(&mut self, lr: f64) {
        AdamW::step(self, lr)
    }

    fn zero_grad(&mut self) {
        AdamW::zero_grad(self)
    }

    fn save(&self, path: &Path) -> Result<(), Error> {
        AdamW::save(self, path)
    }

    fn load(&mut self, path: &Path) -> Result<(), Error> {
        AdamW::load(self, path)
    }

    fn staged(&mut self) -> Option<&mut AdamW> {
        Some(self)
    }
}

/// A model and its data, as the training loop sees them. Examples are addressed by their
/// index in the training set; the loop owns the order, the steps and the bookkeeping, the
/// task the forward and backward passes, evaluation and the weights.
pub trait TrainTask {
    /// The optimizer the task trains with.
    type Optimizer: StepOptimizer;
    /// The task's held-out metrics.
    type Metrics;
    /// The task's error: the loop's own errors and the optimizer's convert into it.
    type Error: From<Error> + From<<Self::Optimizer as StepOptimizer>::Error>;

    /// File name of the trained weights inside a checkpoint directory.
    const WEIGHTS_FILE: &'static str;

    /// The device the model runs on.
    fn device(&self) -> Device;

    /// The length (tokens) of every training example: the loop batches by length.
    fn lengths(&self) -> Vec<usize>;

    /// A stable fingerprint of the training examples: a resume refuses changed data.
    fn fingerprint(&self) -> String;

    /// A fresh optimizer over the trained variables.
    fn optimizer(&self, args: &TrainingArgs) -> Self::Optimizer;

    /// The parameters whose gradients are clipped, in the order their norms are summed;
    /// every parameter that gets a gradient, since the loop also drops their gradients
    /// after each update.
    fn clipped_parameters(&self, optimizer: &Self::Optimizer) -> Vec<Tensor>;

    /// The variables a checkpoint saves and a resume fills.
    fn trained_vars(&self) -> &nn::VarStore;

    /// Writes the trained variables to `path` ([`TrainTask::WEIGHTS_FILE`] in a checkpoint).
    fn write_weights(&self, path: &Path) -> Result<(), Self::Error>;

    /// Called before the micro-batches `group` of one optimizer step run (e.g. to count
    /// the step's label tokens).
    fn begin_step(&mut self, _group: &[Vec<usize>]) {}

    /// Runs the micro-batch of training examples `idx` forward and backward, with
    /// libtorch's generators seeded from `seed` (dropout), under bf16 autocast when
    /// `autocast`; returns its contribution to the step's loss, detached.
    fn forward_backward(&mut self, idx: &[usize], seed: i64, autocast: bool) -> Tensor;

    /// The micro-batch `idx` as device tensors whose shapes depend only on the number of
    /// examples and the longest one's length rounded up to a multiple of `pad_multiple`
    /// tokens, for the trainer's `cuda_graphs` path (one captured step serves every batch of
    /// the same shapes; see [`crate::step_graphs`]). `None` (the default): this task's steps
    /// run eagerly.
    fn stage(&mut self, _idx: &[usize], _pad_multiple: usize) -> Option<Vec<Tensor>> {
        None
    }

    /// [`TrainTask::forward_backward`] over tensors [`TrainTask::stage`] made (or others of
    /// their shapes), without seeding, host-to-device copies or reading a device value on
    /// the host, so that a CUDA graph can capture it; the trainer seeds before. Called only
    /// with what `stage` returned, so a task that stages nothing never sees it.
    fn forward_backward_staged(&mut self, _inputs: &[Tensor], _autocast: bool) -> Tensor {
        unreachable!(
            "forward_backward_staged without a staged batch: this task's stage() returns None"
        )
    }

    /// In data-parallel training, the weight of this rank's part `shard` of the global
    /// micro-batch `full` once its [`TrainTask::forward_backward`] contribution is summed
    /// over the ranks: its share of the examples for a loss averaged per micro-batch (the
    /// default), 1 for a loss [`TrainTask::begin_step`] already normalises over the whole
    /// step (it is given the global micro-batches).
    fn shard_weight(&self, shard: &[usize], full: &[usize]) -> f64 {
        shard.len() as f64 / full.len().max(1) as f64
    }

    /// Evaluates on the held-out set (no dropout, no gradients); `None` when there is none.
    fn evaluate(&self) -> Result<Option<Self::Metrics>, Self::Error>;
}
