//! What a training run reports: progress events while it runs and the summary at its end
//! (HF `Trainer` names, so logs and `pgml.models.metrics` read as transformers' do).

use serde::{Deserialize, Serialize};

/// What the trainer reports while it runs; `M` is the task's evaluation metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TrainEvent<M> {
    /// Every `logging_steps` optimizer steps.
    Log(LogEvent),
    /// After an evaluation during training (`eval_strategy` steps or epoch).
    Eval {
        /// Optimizer steps done.
        step: i64,
        /// Fractional epoch reached.
        epoch: f64,
        /// The metrics.
        metrics: M,
    },
}

/// A training progress report, emitted every `logging_steps` optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// Optimizer steps done.
    pub step: i64,
    /// Total optimizer steps of the run.
    pub max_steps: i64,
    /// Fractional epoch reached.
    pub epoch: f64,
    /// Mean training loss per optimizer step since the previous report.
    pub loss: f64,
    /// Global gradient L2 norm (before clipping) of the latest optimizer step.
    pub grad_norm: f64,
    /// Learning rate used by the latest optimizer step.
    pub learning_rate: f64,
}

/// Summary of the training loop (HF `TrainOutput.metrics` names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainMetrics {
    /// Wall time of the training loop, seconds (of this call only, when resumed).
    pub train_runtime: f64,
    /// Training samples processed per second (by this call).
    pub train_samples_per_second: f64,
    /// Optimizer steps per second (by this call).
    pub train_steps_per_second: f64,
    /// Mean training loss over all optimizer steps of the run (resumed or not).
    pub train_loss: f64,
    /// Epochs done (fractional).
    pub epoch: f64,
    /// Optimizer steps done.
    pub global_step: i64,
}

/// What the generic loop ([`crate::trainer::train`]) returns; each task turns it into its
/// own outcome (the causal LM adds token throughput, for one).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary<M> {
    /// Wall time of the training loop of this call, seconds (not clamped).
    pub runtime: f64,
    /// Training samples processed by this call.
    pub samples: u64,
    /// Optimizer steps taken by this call.
    pub steps: i64,
    /// Mean training loss per optimizer step over the whole run.
    pub train_loss: f64,
    /// Epochs done (fractional).
    pub epoch: f64,
    /// Optimizer steps done over the whole run.
    pub global_step: i64,
    /// Held-out metrics after training; `None` when the task has no eval set.
    pub eval: Option<M>,
    /// Every [`LogEvent`] of the run, in order (when resumed, the checkpoint's first).
    pub log_history: Vec<LogEvent>,
    /// What the `cuda_graphs` path did; `None` when the run did not ask for it.
    pub cuda_graphs: Option<crate::step_graphs::GraphStats>,
}

impl<M> TrainSummary<M> {
    /// The HF summary, throughputs over `runtime` (the task may clamp the raw runtime).
    pub fn metrics(&self, runtime: f64) -> TrainMetrics {
        TrainMetrics {
            train_runtime: runtime,
            train_samples_per_second: self.samples as f64 / runtime,
            train_steps_per_second: self.steps as f64 / runtime,
            train_loss: self.train_loss,
            epoch: self.epoch,
            global_step: self.global_step,
        }
    }
}
