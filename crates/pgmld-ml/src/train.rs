//! Fine-tuning a [`Classifier`] on labelled texts or text pairs, following the semantics of
//! Hugging Face `transformers.Trainer` (argument names, defaults, optimizer parameter
//! groups, learning-rate schedules, gradient accumulation and clipping, logging), with
//! checkpoints to resume from ([`crate::train_state`]).
//!
//! Randomness is a function of the seed alone: the data order of an epoch depends only on
//! (seed, epoch) (one seeded stream of epoch orders), and libtorch's generators are reseeded before every micro-batch from
//! (seed, optimizer step, micro-batch), so dropout masks do not depend on what ran before
//! (gradient checkpointing derives its per-segment seeds from the same micro-batch seed).
//! Results are therefore reproducible for a fixed seed on one device (same libtorch build
//! and thread count), and a run resumed from a checkpoint ends as the uninterrupted run
//! would. Across devices (CPU vs CUDA) the masks and the arithmetic differ.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::batching::epoch_batches;
use crate::checkpointing::backward_checkpointed;
use crate::classifier::Classifier;
use crate::error::{Error, Result};
use crate::metrics;
use crate::optim::{clip_grad_norm, no_decay, AdamW};
use crate::step_losses::{dropout_seed, StepLosses};
use crate::tokenize::{Batch, Encoded, TextTokenizer};
use crate::train_state::{load_checkpoint, SavePoint, TrainState};
use crate::training_args::TrainingArgs;

/// One labelled training or evaluation example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The text (the first text of a pair).
    pub text: String,
    /// The second text, for text-pair classification.
    pub text_pair: Option<String>,
    /// Class id in `0..num_labels`.
    pub label: i64,
}

impl Example {
    /// A single-text example.
    pub fn new(text: impl Into<String>, label: i64) -> Self {
        Example { text: text.into(), text_pair: None, label }
    }

    /// A text-pair example.
    pub fn pair(text: impl Into<String>, text_pair: impl Into<String>, label: i64) -> Self {
        Example { text: text.into(), text_pair: Some(text_pair.into()), label }
    }
}

/// What the trainer reports while it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TrainEvent {
    /// Every `logging_steps` optimizer steps.
    Log(LogEvent),
    /// After an evaluation during training (`eval_strategy` steps or epoch).
    Eval {
        /// Optimizer steps done.
        step: i64,
        /// Fractional epoch reached.
        epoch: f64,
        /// The metrics.
        metrics: EvalMetrics,
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

/// Evaluation on the held-out set (HF `evaluate()` names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per sample.
    pub eval_loss: f64,
    /// Accuracy.
    pub eval_accuracy: f64,
    /// Macro-averaged F1.
    pub eval_f1: f64,
    /// Wall time of the evaluation, seconds.
    pub eval_runtime: f64,
    /// Samples evaluated per second.
    pub eval_samples_per_second: f64,
    /// Batches evaluated per second.
    pub eval_steps_per_second: f64,
}

/// What [`train_classifier`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainOutcome {
    /// Training summary.
    pub train: TrainMetrics,
    /// Held-out metrics; `None` when the eval set is empty.
    pub eval: Option<EvalMetrics>,
    /// Every [`LogEvent`] of the run, in order (when resumed, the checkpoint's first).
    pub log_history: Vec<LogEvent>,
}

fn check_labels(data: &[Example], num_labels: i64, what: &str) -> Result<()> {
    if let Some(e) = data.iter().find(|e| e.label < 0 || e.label >= num_labels) {
        return Err(Error::Data(format!("{what} label {} is outside 0..{num_labels}", e.label)));
    }
    Ok(())
}

/// Tokenizes every example (unpadded); when the tokenizer's truncation is off, an input
/// longer than its `max_length` is an error naming its (0-based) position.
pub fn encode_examples(tokenizer: &TextTokenizer, data: &[Example]) -> Result<Vec<Encoded>> {
    let truncate = tokenizer.truncation();
    let mut out = Vec::with_capacity(data.len());
    for (c, chunk) in data.chunks(1024).enumerate() {
        let items: Vec<(&str, Option<&str>)> =
            chunk.iter().map(|e| (e.text.as_str(), e.text_pair.as_deref())).collect();
        for (i, (enc, cut)) in tokenizer.encode_items(&items)?.into_iter().enumerate() {
            if cut && !truncate {
                return Err(Error::Data(format!(
                    "example {} is longer than max_length {} tokens and truncation is off",
                    c * 1024 + i,
                    tokenizer.max_length()
                )));
            }
            out.push(enc);
        }
    }
    Ok(out)
}

fn make_batch(
    enc: &[Encoded],
    data: &[Example],
    idx: &[usize],
    pad_id: u32,
    device: Device,
) -> (Batch, Tensor) {
    let rows: Vec<&Encoded> = idx.iter().map(|&i| &enc[i]).collect();
    let labels: Vec<i64> = idx.iter().map(|&i| data[i].label).collect();
    let batch = Batch::from_encoded(&rows, pad_id);
    let batch = if device == Device::Cpu { batch } else { batch.to_device(device) };
    (batch, Tensor::from_slice(&labels).to_device(device))
}

/// Fine-tunes `model` on `train` with AdamW, then evaluates it on `eval`. Labels must lie
/// in `0..num_labels`.
///
/// `on_event` receives a [`TrainEvent::Log`] every `args.logging_steps` optimizer steps
/// (the only points where the loss is copied to the host, besides evaluations, saves and
/// the end of training; on CPU the loss is also checked for NaN/inf every step), and a
/// [`TrainEvent::Eval`] after each evaluation `args.eval_strategy` asks for. `on_save`
/// receives a [`SavePoint`] every `args.save_steps` steps (after that step's log and
/// evaluation, as HF's checkpoint saves; the last step included when it is a multiple):
/// the model and the step, and [`SavePoint::write_checkpoint`] to write a checkpoint this
/// function can resume from; it runs on the training thread, so it should only write files
/// and hand them on. `should_stop` is polled before every micro-batch; when it returns true
/// training ends with [`Error::Cancelled`]. A NaN or infinite loss ends it with
/// [`Error::NonFiniteLoss`] naming the first bad step. With `args.bf16` on CUDA the forward
/// pass runs under bfloat16 autocast.
///
/// With `resume_from` (a directory [`SavePoint::write_checkpoint`] wrote) the run goes on
/// from that checkpoint: `model` (freshly built, same architecture and labels) and the
/// optimizer take its weights and state, the data order skips what was trained on, and the
/// run ends at the checkpoint's total step count with the parameters an uninterrupted run
/// would have (on the same device). The batch size, gradient accumulation, seed, training
/// data and total steps must be those of the checkpoint's run, else
/// [`Error::TrainingArgs`] names what differs. Events continue from the saved step; the
/// outcome's `log_history`, `train_loss`, `epoch` and `global_step` cover the whole run,
/// its runtime and throughputs this call only.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    model: &mut Classifier,
    tokenizer: &TextTokenizer,
    train: &[Example],
    eval: &[Example],
    args: &TrainingArgs,
    mut on_event: impl FnMut(TrainEvent),
    mut on_save: impl FnMut(&SavePoint<'_>),
    should_stop: impl Fn() -> bool,
    resume_from: Option<&Path>,
) -> Result<TrainOutcome> {
    args.validate()?;
    if train.is_empty() {
        return Err(Error::Data("the training set is empty".into()));
    }
    let num_labels = model.num_labels();
    check_labels(train, num_labels, "training")?;
    check_labels(eval, num_labels, "evaluation")?;
    tch::manual_seed(args.seed as i64);
    let device = model.vs.device();
    let pad_id = tokenizer.pad_id();
    let autocast = args.bf16 && device != Device::Cpu && crate::device::cuda_autocast_bf16();

    let train_enc = encode_examples(tokenizer, train)?;
    let lengths: Vec<usize> = train_enc.iter().map(Encoded::len).collect();
    let bs = args.per_device_train_batch_size;
    let accum = args.gradient_accumulation_steps;
    let batches_per_epoch = train.len().div_ceil(bs);
    let updates_per_epoch = batches_per_epoch.div_ceil(accum) as i64;
    let total_steps = if args.max_steps > 0 {
        args.max_steps
    } else {
        ((args.num_train_epochs * updates_per_epoch as f64).ceil() as i64).max(1)
    };

    let mut opt = AdamW::new(&model.vs, args.weight_decay, no_decay);
    let mut st = TrainState::new(args, total_steps, train);
    if let Some(dir) = resume_from {
        let ck = load_checkpoint(dir)?;
        ck.state.check_resumable(&st, dir)?;
        ck.apply(model, &mut opt)?;
        st = ck.state;
    }
    let params: Vec<Tensor> = model.vs.trainable_variables();

    let mut losses = StepLosses::new(&st, device);
    let (start_step, start_samples) = (st.global_step, st.samples);

    let started = Instant::now();
    'outer: while st.global_step < total_steps {
        let batches = epoch_batches(&lengths, bs, args.seed, st.epoch_index);
        let done_groups = st.micro_batches_done_in_epoch.div_ceil(accum);
        for (group_no, group) in batches.chunks(accum).enumerate().skip(done_groups) {
            if st.global_step >= total_steps {
                break 'outer;
            }
            let mut step_loss = losses.zero();
            for (micro, idx) in group.iter().enumerate() {
                if should_stop() {
                    return Err(Error::Cancelled);
                }
                let (batch, labels) = make_batch(&train_enc, train, idx, pad_id, device);
                let loss_of = |logits: &Tensor| {
                    Classifier::loss(&logits.to_kind(Kind::Float), &labels) / accum as f64
                };
                let seed = dropout_seed(args.seed, st.global_step, micro);
                if args.gradient_checkpointing {
                    step_loss += backward_checkpointed(model, &batch, loss_of, seed, autocast);
                } else {
                    tch::manual_seed(seed);
                    let logits = tch::autocast(autocast, || model.forward(&batch, true));
                    let loss = loss_of(&logits);
                    loss.backward();
                    step_loss += loss.detach();
                }
                st.samples += idx.len() as u64;
            }
            // Optimizer step `global_step` (0-based) uses the scheduled learning rate.
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
                on_event(TrainEvent::Log(ev));
            }
            if end.eval && !eval.is_empty() {
                let metrics = evaluate(model, tokenizer, eval, args.per_device_eval_batch_size)?;
                on_event(TrainEvent::Eval { step: global_step, epoch: st.epoch, metrics });
            }
            if end.save {
                on_save(&SavePoint { model, optimizer: &opt, state: &st, args });
            }
        }
        st.epoch_index += 1;
        st.micro_batches_done_in_epoch = 0;
    }
    let global_step = st.global_step;
    let train_loss = losses.train_loss(global_step)?;
    let runtime = started.elapsed().as_secs_f64();
    let train_metrics = TrainMetrics {
        train_runtime: runtime,
        train_samples_per_second: (st.samples - start_samples) as f64 / runtime,
        train_steps_per_second: (global_step - start_step) as f64 / runtime,
        train_loss,
        epoch: global_step as f64 / updates_per_epoch as f64,
        global_step,
    };
    drop(opt);
    let eval = if eval.is_empty() {
        None
    } else {
        Some(evaluate(model, tokenizer, eval, args.per_device_eval_batch_size)?)
    };
    Ok(TrainOutcome { train: train_metrics, eval, log_history: st.log_history })
}

/// Predicted class ids for `data` (dropout off, no gradients), in input order, and the
/// summed cross-entropy against the examples' labels.
fn predict(
    model: &Classifier,
    tokenizer: &TextTokenizer,
    data: &[Example],
    batch_size: usize,
) -> Result<(Vec<i64>, f64, usize)> {
    let device = model.vs.device();
    let enc = encode_examples(tokenizer, data)?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(enc[i].len()));
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut preds = Vec::with_capacity(data.len());
    let mut steps = 0usize;
    tch::no_grad(|| {
        for idx in order.chunks(batch_size) {
            let (batch, labels) = make_batch(&enc, data, idx, tokenizer.pad_id(), device);
            let logits = model.forward(&batch, false).to_kind(Kind::Float);
            loss_sum +=
                logits.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Sum, -100, 0.0);
            preds.push(logits.argmax(-1, false));
            steps += 1;
        }
    });
    let sorted: Vec<i64> = Vec::<i64>::try_from(Tensor::cat(&preds, 0).to_device(Device::Cpu))?;
    let mut out = vec![0i64; data.len()];
    for (p, &i) in sorted.into_iter().zip(&order) {
        out[i] = p;
    }
    Ok((out, f64::try_from(&loss_sum)?, steps))
}

/// Evaluates `model` (dropout off, no gradients) on labelled examples: mean cross-entropy,
/// accuracy and macro-F1. Inputs are batched by length to limit padding.
pub fn evaluate(
    model: &Classifier,
    tokenizer: &TextTokenizer,
    data: &[Example],
    batch_size: usize,
) -> Result<EvalMetrics> {
    if data.is_empty() || batch_size == 0 {
        return Err(Error::Data("evaluation needs data and a batch size ≥ 1".into()));
    }
    check_labels(data, model.num_labels(), "evaluation")?;
    let started = Instant::now();
    let (preds, loss_sum, steps) = predict(model, tokenizer, data, batch_size)?;
    let truth: Vec<i64> = data.iter().map(|e| e.label).collect();
    let runtime = started.elapsed().as_secs_f64();
    Ok(EvalMetrics {
        eval_loss: loss_sum / data.len() as f64,
        eval_accuracy: metrics::accuracy(&truth, &preds),
        eval_f1: metrics::f1_macro(&truth, &preds),
        eval_runtime: runtime,
        eval_samples_per_second: data.len() as f64 / runtime,
        eval_steps_per_second: steps as f64 / runtime,
    })
}
