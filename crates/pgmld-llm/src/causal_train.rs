//! Causal-LM fine-tuning of a LoRA-adapted [`Llama`] on conversation sequences, following
//! `pgmld_ml::train::train_classifier` (itself HF `Trainer` semantics): the same
//! [`TrainingArgs`], [`LogEvent`]s, save points, cancel, seeding, epochs / `max_steps`,
//! schedules, warmup, weight decay, gradient accumulation and clipping, and resumable
//! checkpoints.
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

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use pgmld_ml::optim::{clip_grad_norm, no_decay};
use pgmld_ml::step_losses::{dropout_seed, StepLosses};
use pgmld_ml::training_args::TrainingArgs;
use pgmld_ml::LogEvent;

use crate::conversation::TokenizedExample;
use crate::llama::Llama;
use crate::optim8bit::Optimizer;
use crate::{Error, Result};
use backward::{forward_backward, forward_backward_checkpointed};
use batch::{epoch_batches, make_batch};

pub use state::{load_causal_checkpoint, CausalSavePoint, ADAPTER_CHECKPOINT_FILE};

/// What the trainer reports while it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CausalTrainEvent {
    /// Every `logging_steps` optimizer steps (the classifier trainer's event).
    Log(LogEvent),
    /// After an evaluation during training (`eval_strategy` steps or epoch).
    Eval {
        /// Optimizer steps done.
        step: i64,
        /// Fractional epoch reached.
        epoch: f64,
        /// The metrics.
        metrics: CausalEvalMetrics,
    },
}

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

/// Fine-tunes the variables of `vs` (the adapter [`crate::lora::apply`] put on `model`) on
/// `train` sequences (right-padded with `pad_id`), then evaluates on `eval`.
///
/// `on_event` receives a [`CausalTrainEvent::Log`] every `args.logging_steps` optimizer
/// steps and a [`CausalTrainEvent::Eval`] after each evaluation `args.eval_strategy` asks
/// for; `on_save` a [`CausalSavePoint`] every `args.save_steps` steps (write the adapter or
/// a resumable checkpoint from it). `should_stop` is polled before every micro-batch; when
/// it returns true training ends with `pgmld_ml::Error::Cancelled` (wrapped in
/// [`Error::Ml`]), as does a NaN/inf loss with `NonFiniteLoss`. With `resume_from` (a
/// directory [`CausalSavePoint::write_checkpoint`] wrote) the run goes on from there: the
/// batch size, accumulation, seed, data and total steps must be the checkpoint's.
#[allow(clippy::too_many_arguments)]
pub fn train_causal_lm(
    model: &Llama,
    vs: &nn::VarStore,
    train: &[TokenizedExample],
    eval: &[TokenizedExample],
    args: &TrainingArgs,
    pad_id: i64,
    mut on_event: impl FnMut(CausalTrainEvent),
    mut on_save: impl FnMut(&CausalSavePoint<'_>),
    should_stop: impl Fn() -> bool,
    resume_from: Option<&Path>,
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
    tch::manual_seed(args.seed as i64);
    let autocast = args.bf16 && device != Device::Cpu && pgmld_ml::device::cuda_autocast_bf16();
    let checkpointing = args.gradient_checkpointing || has_int8(model);

    let lengths: Vec<usize> = train.iter().map(|e| e.input_ids.len()).collect();
    let (bs, accum) = (args.per_device_train_batch_size, args.gradient_accumulation_steps);
    let updates_per_epoch = train.len().div_ceil(bs).div_ceil(accum) as i64;
    let total_steps = if args.max_steps > 0 {
        args.max_steps
    } else {
        ((args.num_train_epochs * updates_per_epoch as f64).ceil() as i64).max(1)
    };

    let mut opt = Optimizer::new(args.optim, vs, args.weight_decay, no_decay);
    let mut st = state::fresh_state(args, total_steps, train);
    if let Some(dir) = resume_from {
        st = state::resume(dir, &st, vs, &mut opt)?;
    }
    let params = opt.parameters();

    let mut losses = StepLosses::new(&st, device);
    let (start_step, start_samples) = (st.global_step, st.samples);
    let mut tokens_seen = 0usize;

    let started = Instant::now();
    'outer: while st.global_step < total_steps {
        let batches = epoch_batches(&lengths, bs, args.seed, st.epoch_index);
        let done_groups = st.micro_batches_done_in_epoch.div_ceil(accum);
        for (group_no, group) in batches.chunks(accum).enumerate().skip(done_groups) {
            if st.global_step >= total_steps {
                break 'outer;
            }
            // Normalise by the label tokens of the whole optimizer step.
            let step_labels: usize =
                group.iter().flatten().map(|&i| train[i].num_label_tokens()).sum::<usize>().max(1);
            let scale = 1.0 / step_labels as f64;
            let mut step_loss = losses.zero();
            for (micro, idx) in group.iter().enumerate() {
                if should_stop() {
                    return Err(Error::Ml(pgmld_ml::Error::Cancelled));
                }
                let batch = make_batch(train, idx, pad_id, device);
                let seed = dropout_seed(args.seed, st.global_step, micro);
                let summed = if checkpointing {
                    forward_backward_checkpointed(model, &batch, scale, seed, autocast)
                } else {
                    forward_backward(model, &batch, scale, seed, autocast)
                };
                step_loss += summed * scale;
                st.samples += idx.len() as u64;
                tokens_seen += batch.tokens;
            }
            let lr = args.learning_rate * args.lr_factor(st.global_step, total_steps);
            let norm = clip_grad_norm(&params, args.max_grad_norm);
            opt.step(lr);
            opt.zero_grad();
            let end = losses.after_update(
                &mut st,
                args,
                (&step_loss, &norm, lr),
                group_no,
                batches.len(),
                updates_per_epoch,
            )?;
            let global_step = st.global_step;
            if let Some(ev) = end.log {
                on_event(CausalTrainEvent::Log(ev));
            }
            if end.eval && !eval.is_empty() {
                let metrics =
                    evaluate_causal_lm(model, eval, args.per_device_eval_batch_size, pad_id)?;
                on_event(CausalTrainEvent::Eval { step: global_step, epoch: st.epoch, metrics });
            }
            if end.save {
                on_save(&CausalSavePoint { vs, optimizer: &opt, state: &st, args });
            }
        }
        st.epoch_index += 1;
        st.micro_batches_done_in_epoch = 0;
    }
    let global_step = st.global_step;
    let train_loss = losses.train_loss(global_step)?;
    let runtime = started.elapsed().as_secs_f64().max(1e-9);
    let train_metrics = CausalTrainMetrics {
        train_runtime: runtime,
        train_samples_per_second: (st.samples - start_samples) as f64 / runtime,
        train_steps_per_second: (global_step - start_step) as f64 / runtime,
        train_tokens_per_second: tokens_seen as f64 / runtime,
        train_loss,
        epoch: global_step as f64 / updates_per_epoch as f64,
        global_step,
        gradient_checkpointing: checkpointing,
    };
    drop(opt);
    let eval = if eval.is_empty() {
        None
    } else {
        Some(evaluate_causal_lm(model, eval, args.per_device_eval_batch_size, pad_id)?)
    };
    Ok(CausalTrainOutcome { train: train_metrics, eval, log_history: st.log_history })
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
