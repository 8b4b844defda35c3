//! Causal-LM fine-tuning of a LoRA-adapted [`Llama`] on conversation sequences: the causal
//! [`TrainTask`] run by pgmld-train's one training loop ([`pgmld_train::trainer`], HF
//! `Trainer` semantics: [`TrainingArgs`], log events, save points, cancel, seeding, epochs /
//! `max_steps`, schedules, warmup, weight decay, gradient accumulation and clipping,
//! resumable checkpoints).
//!
//! - Only the variables of the adapter's `VarStore` train (LoRA A/B and biases LoRA's
//!   `bias` option names); the base model is frozen.
//! - The loss is the mean cross-entropy over the label tokens of the whole optimizer step
//!   (all its micro-batches; HF's `num_items_in_batch` normalisation), so
//!   `gradient_accumulation_steps` 4 × batch 2 trains as batch 8 does.
//! - Only labelled positions go through the output projection (see `batch::summed_loss`).
//! - `optim` picks f32 AdamW or [`crate::optim8bit::AdamW8bit`].
//! - With `gradient_checkpointing`, or when the model has int8 weights (`load_in_8bit`),
//!   decoder layers are recomputed in backward: an int8 projection's dequantised weight is
//!   a temporary that autograd would otherwise keep for every layer until backward, giving
//!   back the memory int8 saved (peft's `prepare_model_for_kbit_training` turns
//!   checkpointing on for the same reason).
//! - Evaluation reports `eval_loss` (mean token cross-entropy over label tokens) and
//!   `perplexity` = exp(eval_loss).
//!
//! Randomness depends on the seed alone (data order on (seed, epoch), dropout on (seed,
//! step, micro-batch)), so a run resumed from a checkpoint ends as the uninterrupted one.

mod backward;
mod batch;
mod state;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Instant;

use pgmld_train::optim::no_decay;
use pgmld_train::{Hooks, LogEvent, TrainTask, TrainingArgs};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::conversation::TokenizedExample;
use crate::llama::Llama;
use crate::optim8bit::Optimizer;
use crate::{Error, Result};
use backward::{forward_backward, forward_backward_checkpointed};
use batch::{fingerprint, make_batch, make_staged_batch, summed_loss_all_positions};

pub use state::{load_causal_checkpoint, write_adapter_weights, ADAPTER_CHECKPOINT_FILE};

/// What the causal-LM training reports while it runs.
pub type CausalTrainEvent = pgmld_train::TrainEvent<CausalEvalMetrics>;

/// What `on_save` receives every `save_steps`: `task().vs()` holds the adapter after that
/// step, `write_checkpoint` writes a checkpoint [`train_causal_lm`] resumes from.
pub type CausalSavePoint<'s, 'a> = pgmld_train::SavePoint<'s, CausalTask<'a>>;

/// Held-out metrics of a causal LM (HF `evaluate()` names plus perplexity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalEvalMetrics {
    /// Mean cross-entropy per label token.
    pub eval_loss: f64,
    /// `exp(eval_loss)`.
    pub perplexity: f64,
    /// Wall time of the evaluation, seconds.
    pub eval_runtime: f64,
    /// Sequences evaluated per second.
    pub eval_samples_per_second: f64,
    /// Batches evaluated per second.
    pub eval_steps_per_second: f64,
    /// Label tokens the loss averages over.
    pub eval_label_tokens: usize,
}

/// Summary of the training loop (HF `TrainOutput.metrics` names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalTrainMetrics {
    /// Wall time of the training loop, seconds (this call only, when resumed).
    pub train_runtime: f64,
    /// Sequences processed per second (this call).
    pub train_samples_per_second: f64,
    /// Optimizer steps per second (this call).
    pub train_steps_per_second: f64,
    /// Real (non-padding) tokens processed per second (this call).
    pub train_tokens_per_second: f64,
    /// Mean per-step training loss over the run (resumed or not).
    pub train_loss: f64,
    /// Epochs done (fractional).
    pub epoch: f64,
    /// Optimizer steps done.
    pub global_step: i64,
    /// Whether layers were recomputed in backward (`gradient_checkpointing`, or forced by
    /// int8 weights).
    pub gradient_checkpointing: bool,
}

/// What [`train_causal_lm`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalTrainOutcome {
    /// Training summary.
    pub train: CausalTrainMetrics,
    /// Held-out metrics after training; `None` when the eval set is empty.
    pub eval: Option<CausalEvalMetrics>,
    /// Every [`LogEvent`] of the run, in order (when resumed, the checkpoint's first).
    pub log_history: Vec<LogEvent>,
    /// What `training_args.cuda_graphs` did; `None` when not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_graphs: Option<pgmld_train::GraphStats>,
}

/// Whether the model has int8 projections (then layers are recomputed in backward).
fn has_int8(model: &Llama) -> bool {
    model.layers.iter().any(|l| {
        let (a, m) = (&l.self_attn, &l.mlp);
        [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj]
            .iter()
            .any(|p| p.is_int8())
    })
}

/// The LoRA-adapted model, its adapter variables and tokenized conversations: what the
/// training loop runs.
pub struct CausalTask<'a> {
    model: &'a Llama,
    vs: &'a nn::VarStore,
    train: &'a [TokenizedExample],
    eval: &'a [TokenizedExample],
    pad_id: i64,
    eval_batch_size: usize,
    /// Whether decoder layers are recomputed in backward.
    checkpointing: bool,
    /// `1 / label tokens` of the optimizer step in progress.
    scale: f64,
    /// Real (non-padding) tokens trained on by this call.
    tokens_seen: usize,
}

impl CausalTask<'_> {
    /// The adapter's variables (pass to [`crate::lora::save_adapter`]).
    pub fn vs(&self) -> &nn::VarStore {
        self.vs
    }
}

impl TrainTask for CausalTask<'_> {
    type Optimizer = Optimizer;
    type Metrics = CausalEvalMetrics;
    type Error = Error;
    const WEIGHTS_FILE: &'static str = ADAPTER_CHECKPOINT_FILE;

    fn device(&self) -> Device {
        self.model.device()
    }

    fn lengths(&self) -> Vec<usize> {
        self.train.iter().map(|e| e.input_ids.len()).collect()
    }

    fn fingerprint(&self) -> String {
        fingerprint(self.train)
    }

    fn optimizer(&self, args: &TrainingArgs) -> Optimizer {
        Optimizer::new(args.optim, self.vs, args.weight_decay, no_decay)
    }

    fn clipped_parameters(&self, optimizer: &Optimizer) -> Vec<Tensor> {
        optimizer.parameters()
    }

    fn trained_vars(&self) -> &nn::VarStore {
        self.vs
    }

    fn write_weights(&self, path: &Path) -> Result<()> {
        write_adapter_weights(self.vs, path)
    }

    fn begin_step(&mut self, group: &[Vec<usize>]) {
        // Normalise by the label tokens of the whole optimizer step.
        let step_labels: usize =
            group.iter().flatten().map(|&i| self.train[i].num_label_tokens()).sum::<usize>().max(1);
        self.scale = 1.0 / step_labels as f64;
    }

    /// `begin_step` normalises by the label tokens of the whole (global) step already.
    fn shard_weight(&self, _shard: &[usize], _full: &[usize]) -> f64 {
        1.0
    }

    fn forward_backward(&mut self, idx: &[usize], seed: i64, autocast: bool) -> Tensor {
        let batch = make_batch(self.train, idx, self.pad_id, self.device());
        let summed = if self.checkpointing {
            forward_backward_checkpointed(self.model, &batch, self.scale, seed, autocast)
        } else {
            forward_backward(self.model, &batch, self.scale, seed, autocast)
        };
        self.tokens_seen += batch.tokens;
        summed * self.scale
    }

    /// Pads to the next multiple of `pad_multiple` tokens and scores every shifted position
    /// (see [`batch::make_staged_batch`]); the step's `1 / label tokens` goes in as a device
    /// scalar. Gradient checkpointing reseeds inside its backward pass: eager only.
    fn stage(&mut self, idx: &[usize], pad_multiple: usize) -> Option<Vec<Tensor>> {
        if self.checkpointing {
            return None;
        }
        let device = self.device();
        let (ids, targets, tokens) =
            make_staged_batch(self.train, idx, (self.pad_id, pad_multiple), device);
        // Host bookkeeping happens here: a replayed step runs no host code.
        self.tokens_seen += tokens;
        let scale = Tensor::from(self.scale as f32).to_device(device);
        Some(vec![ids, targets, scale])
    }

    fn forward_backward_staged(&mut self, inputs: &[Tensor], autocast: bool) -> Tensor {
        let [ids, targets, scale] = inputs else {
            unreachable!("stage() makes 3 tensors, got {}", inputs.len())
        };
        let summed = pgmld_train::autocast(autocast, self.device(), || {
            let hidden = self.model.hidden_states(ids, None, true);
            summed_loss_all_positions(&hidden, targets, |x| self.model.head(x))
        });
        (&summed * scale).backward();
        summed.detach() * scale
    }

    fn evaluate(&self) -> Result<Option<CausalEvalMetrics>> {
        if self.eval.is_empty() {
            return Ok(None);
        }
        evaluate_causal_lm(self.model, self.eval, self.eval_batch_size, self.pad_id).map(Some)
    }
}

/// Fine-tunes the variables of `vs` (the adapter [`crate::lora::apply`] put on `model`) on
/// `train` sequences (right-padded with `pad_id`), then evaluates on `eval`.
///
/// `on_event` receives a [`pgmld_train::TrainEvent::Log`] every `args.logging_steps`
/// optimizer steps and a [`pgmld_train::TrainEvent::Eval`] after each evaluation
/// `args.eval_strategy` asks for; `on_save` a [`CausalSavePoint`] every `args.save_steps`
/// steps (write the adapter or a resumable checkpoint from it). `should_stop` is polled
/// before every micro-batch; when it returns true training ends with
/// `pgmld_train::Error::Cancelled` (wrapped in [`Error::Train`]), as does a NaN/inf loss
/// with `NonFiniteLoss`. With `resume_from` (a directory
/// [`pgmld_train::SavePoint::write_checkpoint`] wrote) the run goes on from there: the
/// batch size, accumulation, seed, data and total steps must be the checkpoint's.
#[allow(clippy::too_many_arguments)]
pub fn train_causal_lm(
    model: &Llama,
    vs: &nn::VarStore,
    train: &[TokenizedExample],
    eval: &[TokenizedExample],
    args: &TrainingArgs,
    pad_id: i64,
    on_event: impl FnMut(CausalTrainEvent),
    on_save: impl FnMut(&CausalSavePoint<'_, '_>),
    should_stop: impl Fn() -> bool,
    resume_from: Option<&Path>,
) -> Result<CausalTrainOutcome> {
    let hooks = Hooks { on_event, on_save, should_stop };
    train_causal_lm_data_parallel(
        model,
        vs,
        (train, eval),
        (args, pad_id),
        hooks,
        resume_from,
        None,
    )
}

/// [`train_causal_lm`] as one rank of a data-parallel run over `group`
/// ([`pgmld_train::train_data_parallel`]; `None`: one process): every rank passes the same
/// data and arguments, the global batch is `per_device_train_batch_size` × `world_size`.
pub fn train_causal_lm_data_parallel(
    model: &Llama,
    vs: &nn::VarStore,
    (train, eval): (&[TokenizedExample], &[TokenizedExample]),
    (args, pad_id): (&TrainingArgs, i64),
    hooks: Hooks<
        impl FnMut(CausalTrainEvent),
        impl FnMut(&CausalSavePoint<'_, '_>),
        impl Fn() -> bool,
    >,
    resume_from: Option<&Path>,
    group: Option<&mut pgmld_train::ProcessGroup>,
) -> Result<CausalTrainOutcome> {
    args.validate()?;
    if train.is_empty() {
        return Err(Error::Invalid("the training set is empty".into()));
    }
    if vs.trainable_variables().is_empty() {
        return Err(Error::Invalid("nothing to train: apply a LoRA adapter first".into()));
    }
    let device = model.device();
    if vs.device() != device {
        return Err(Error::Invalid(format!(
            "the adapter is on {:?} but the model on {device:?}",
            vs.device()
        )));
    }
    let checkpointing = args.gradient_checkpointing || has_int8(model);
    let mut task = CausalTask {
        model,
        vs,
        train,
        eval,
        pad_id,
        eval_batch_size: args.per_device_eval_batch_size,
        checkpointing,
        scale: 1.0,
        tokens_seen: 0,
    };
    let run = match group {
        Some(g) => pgmld_train::train_data_parallel(&mut task, args, hooks, resume_from, g)?,
        None => pgmld_train::train(&mut task, args, hooks, resume_from)?,
    };
    let runtime = run.runtime.max(1e-9);
    let base = run.metrics(runtime);
    let train_metrics = CausalTrainMetrics {
        train_runtime: base.train_runtime,
        train_samples_per_second: base.train_samples_per_second,
        train_steps_per_second: base.train_steps_per_second,
        train_tokens_per_second: task.tokens_seen as f64 / runtime,
        train_loss: base.train_loss,
        epoch: base.epoch,
        global_step: base.global_step,
        gradient_checkpointing: checkpointing,
    };
    Ok(CausalTrainOutcome {
        train: train_metrics,
        eval: run.eval,
        log_history: run.log_history,
        cuda_graphs: run.cuda_graphs,
    })
}

/// Mean cross-entropy per label token of `model` on `data` (no dropout, no gradients),
/// batched by length, and its perplexity.
pub fn evaluate_causal_lm(
    model: &Llama,
    data: &[TokenizedExample],
    batch_size: usize,
    pad_id: i64,
) -> Result<CausalEvalMetrics> {
    if data.is_empty() || batch_size == 0 {
        return Err(Error::Invalid("evaluation needs data and a batch size ≥ 1".into()));
    }
    let started = Instant::now();
    let device = model.device();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(data[i].input_ids.len()));
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let (mut label_tokens, mut steps) = (0usize, 0usize);
    tch::no_grad(|| {
        for idx in order.chunks(batch_size) {
            let batch = make_batch(data, idx, pad_id, device);
            if batch.label_tokens == 0 {
                continue;
            }
            let hidden = model.hidden_states(&batch.input_ids, None, false);
            loss_sum += batch::summed_loss(&hidden, &batch, |x| model.head(x));
            label_tokens += batch.label_tokens;
            steps += 1;
        }
    });
    let runtime = started.elapsed().as_secs_f64().max(1e-9);
    let eval_loss = f64::try_from(&loss_sum)? / label_tokens.max(1) as f64;
    Ok(CausalEvalMetrics {
        eval_loss,
        perplexity: eval_loss.exp(),
        eval_runtime: runtime,
        eval_samples_per_second: data.len() as f64 / runtime,
        eval_steps_per_second: steps as f64 / runtime,
        eval_label_tokens: label_tokens,
    })
}
