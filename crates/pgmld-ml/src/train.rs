//! Fine-tuning a [`Classifier`] on labelled texts or text pairs, following the semantics of
//! Hugging Face `transformers.Trainer` (argument names, defaults, optimizer parameter
//! groups, learning-rate schedules, gradient accumulation and clipping, logging).

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::batching::{length_grouped_batches, Rng};
use crate::checkpointing::backward_checkpointed;
use crate::classifier::Classifier;
use crate::error::{Error, Result};
use crate::metrics;
use crate::tokenize::{Batch, Encoded, TextTokenizer};
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
        Example {
            text: text.into(),
            text_pair: None,
            label,
        }
    }

    /// A text-pair example.
    pub fn pair(text: impl Into<String>, text_pair: impl Into<String>, label: i64) -> Self {
        Example {
            text: text.into(),
            text_pair: Some(text_pair.into()),
            label,
        }
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// Wall time of the training loop, seconds.
    pub train_runtime: f64,
    /// Training samples processed per second.
    pub train_samples_per_second: f64,
    /// Optimizer steps per second.
    pub train_steps_per_second: f64,
    /// Mean training loss over all optimizer steps.
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
    /// Every [`LogEvent`] emitted, in order.
    pub log_history: Vec<LogEvent>,
}


/// True for variables that get no weight decay (biases and LayerNorm weights, as HF).
fn no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name.contains("layer_norm")
}

fn check_labels(data: &[Example], num_labels: i64, what: &str) -> Result<()> {
    if let Some(e) = data.iter().find(|e| e.label < 0 || e.label >= num_labels) {
        return Err(Error::Data(format!(
            "{what} label {} is outside 0..{num_labels}",
            e.label
        )));
    }
    Ok(())
}

/// Tokenizes every example (unpadded); when the tokenizer's truncation is off, an input
/// longer than its `max_length` is an error naming its (0-based) position.
pub fn encode_examples(tokenizer: &TextTokenizer, data: &[Example]) -> Result<Vec<Encoded>> {
    let truncate = tokenizer.truncation();
    let mut out = Vec::with_capacity(data.len());
    for (c, chunk) in data.chunks(1024).enumerate() {
        let items: Vec<(&str, Option<&str>)> = chunk
            .iter()
            .map(|e| (e.text.as_str(), e.text_pair.as_deref()))
            .collect();
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
    let batch = if device == Device::Cpu {
        batch
    } else {
        batch.to_device(device)
    };
    (batch, Tensor::from_slice(&labels).to_device(device))
}

/// Fine-tunes `model` on `train` with AdamW, then evaluates it on `eval`. Labels must lie
/// in `0..num_labels`.
///
/// `on_event` receives a [`TrainEvent::Log`] every `args.logging_steps` optimizer steps
/// (the only points where the loss is copied to the host, besides evaluations and the end
/// of training; on CPU the loss is also checked for NaN/inf every step), and a
/// [`TrainEvent::Eval`] after each evaluation `args.eval_strategy` asks for. `on_save`
/// receives the model and the optimizer step every `args.save_steps` steps (after that
/// step's log and evaluation, as HF's checkpoint saves; the last step included when it is a
/// multiple); it runs on the training thread, so it should only write files and hand them
/// on. `should_stop`
/// is polled before every micro-batch; when it returns true training ends with
/// [`Error::Cancelled`]. A NaN or infinite loss ends it with [`Error::NonFiniteLoss`]
/// naming the first bad step. With `args.bf16` on CUDA the forward pass runs under
/// bfloat16 autocast.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    model: &mut Classifier,
    tokenizer: &TextTokenizer,
    train: &[Example],
    eval: &[Example],
    args: &TrainingArgs,
    mut on_event: impl FnMut(TrainEvent),
    mut on_save: impl FnMut(&Classifier, i64),
    should_stop: impl Fn() -> bool,
) -> Result<TrainOutcome> {
    args.validate()?;
    if train.is_empty() {
        return Err(Error::Data("the training set is empty".into()));
    }
    let num_labels = model.num_labels();
    check_labels(train, num_labels, "training")?;
    check_labels(eval, num_labels, "evaluation")?;
    tch::manual_seed(args.seed as i64);
    let mut rng = Rng(args.seed);
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

    // Parameter groups: 0 = decayed, 1 = no decay (biases, LayerNorm).
    {
        let named = model.vs.variables();
        let nd_ptrs: HashSet<usize> = named
            .iter()
            .filter(|(n, _)| no_decay(n))
            .map(|(_, t)| t.data_ptr() as usize)
            .collect();
        let mut vars = model
            .vs
            .variables_
            .lock()
            .map_err(|_| Error::Unsupported("variable store lock poisoned".into()))?;
        for v in vars.trainable_variables.iter_mut() {
            v.group = usize::from(nd_ptrs.contains(&(v.tensor.data_ptr() as usize)));
        }
    }
    let mut opt = nn::AdamW {
        wd: args.weight_decay,
        ..Default::default()
    }
    .build(&model.vs, args.learning_rate)?;
    opt.set_weight_decay_group(0, args.weight_decay);
    opt.set_weight_decay_group(1, 0.0);
    let params: Vec<Tensor> = model.vs.trainable_variables();

    let zero = || Tensor::zeros([], (Kind::Float, device));
    let mut window_loss = zero(); // summed per-step losses since the last log
    let mut total_loss = zero(); // summed per-step losses over the run
    let mut first_bad = Tensor::full([], -1i64, (Kind::Int64, device));
    let check_every_step = device == Device::Cpu;
    let mut log_history = Vec::new();
    let mut last_logged = 0i64;
    let mut global_step = 0i64;
    let mut samples = 0usize;
    let eval_every = args.eval_every();

    let nonfinite_error = |first_bad: &Tensor, total: &Tensor| -> Option<Error> {
        let step = first_bad.int64_value(&[]);
        (step >= 0).then(|| Error::NonFiniteLoss {
            step,
            loss: total.double_value(&[]),
        })
    };

    let started = Instant::now();
    let mut epoch = 0usize;
    'outer: while global_step < total_steps {
        let batches = length_grouped_batches(&lengths, bs, &mut rng);
        for (group_no, group) in batches.chunks(accum).enumerate() {
            if global_step >= total_steps {
                break 'outer;
            }
            let mut step_loss = zero();
            for idx in group {
                if should_stop() {
                    return Err(Error::Cancelled);
                }
                let (batch, labels) = make_batch(&train_enc, train, idx, pad_id, device);
                let loss_of =
                    |logits: &Tensor| Classifier::loss(&logits.to_kind(Kind::Float), &labels) / accum as f64;
                if args.gradient_checkpointing {
                    let seed = (rng.next_u64() >> 1) as i64;
                    step_loss += backward_checkpointed(model, &batch, loss_of, seed, autocast);
                } else {
                    let logits = tch::autocast(autocast, || model.forward(&batch, true));
                    let loss = loss_of(&logits);
                    loss.backward();
                    step_loss += loss.detach();
                }
                samples += idx.len();
            }
            // Optimizer step `global_step` (0-based) uses the scheduled learning rate.
            let lr = args.learning_rate * args.lr_factor(global_step, total_steps);
            opt.set_lr(lr);
            let norm = clip_grad_norm(&params, args.max_grad_norm);
            opt.step();
            opt.zero_grad();
            global_step += 1;
            let step_t = Tensor::full([], global_step, (Kind::Int64, device));
            first_bad = tch::no_grad(|| {
                let newly_bad = step_loss
                    .isfinite()
                    .logical_not()
                    .logical_and(&first_bad.lt(0));
                step_t.where_self(&newly_bad, &first_bad)
            });
            window_loss += &step_loss;
            total_loss += &step_loss;
            if check_every_step {
                if let Some(e) = nonfinite_error(&first_bad, &step_loss) {
                    return Err(e);
                }
            }
            let epoch_f = epoch as f64 + (group_no + 1) as f64 / updates_per_epoch as f64;
            if global_step % args.logging_steps == 0 {
                if let Some(e) = nonfinite_error(&first_bad, &step_loss) {
                    return Err(e);
                }
                let n = (global_step - last_logged) as f64;
                let ev = LogEvent {
                    step: global_step,
                    max_steps: total_steps,
                    epoch: epoch_f,
                    loss: f64::try_from(&window_loss)? / n,
                    grad_norm: f64::try_from(&norm)?,
                    learning_rate: lr,
                };
                log_history.push(ev.clone());
                on_event(TrainEvent::Log(ev));
                window_loss = zero();
                last_logged = global_step;
            }
            let epoch_end = (group_no + 1) as i64 == updates_per_epoch;
            let eval_now = match (eval_every, args.eval_strategy) {
                (Some(n), _) => global_step % n == 0,
                (None, crate::training_args::EvalStrategy::Epoch) => epoch_end,
                _ => false,
            };
            if eval_now && !eval.is_empty() && global_step < total_steps {
                let metrics = evaluate(model, tokenizer, eval, args.per_device_eval_batch_size)?;
                on_event(TrainEvent::Eval {
                    step: global_step,
                    epoch: epoch_f,
                    metrics,
                });
            }
            if global_step % args.save_steps == 0 {
                on_save(model, global_step);
            }
        }
        epoch += 1;
    }
    if let Some(e) = nonfinite_error(&first_bad, &total_loss) {
        return Err(e);
    }
    let train_loss = f64::try_from(&total_loss)? / global_step.max(1) as f64;
    let runtime = started.elapsed().as_secs_f64();
    let train_metrics = TrainMetrics {
        train_runtime: runtime,
        train_samples_per_second: samples as f64 / runtime,
        train_steps_per_second: global_step as f64 / runtime,
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
    Ok(TrainOutcome {
        train: train_metrics,
        eval,
        log_history,
    })
}

/// Global L2 norm of the gradients of `params` (before clipping); when `max_norm` > 0 the
/// gradients are scaled so the norm is at most `max_norm` (as `clip_grad_norm_`). Stays on
/// the device: no host sync.
fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Tensor {
    tch::no_grad(|| {
        let norms: Vec<Tensor> = params
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .map(|g| g.norm())
            .collect();
        let total = Tensor::stack(&norms, 0).norm();
        if max_norm > 0.0 {
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for p in params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.g_mul_(&coef);
                }
            }
        }
        total
    })
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
            loss_sum += logits.cross_entropy_loss::<Tensor>(
                &labels,
                None,
                tch::Reduction::Sum,
                -100,
                0.0,
            );
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
        return Err(Error::Data(
            "evaluation needs data and a batch size ≥ 1".into(),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_decay_names() {
        assert!(no_decay("bert.encoder.layer.0.output.dense.bias"));
        assert!(no_decay("bert.embeddings.LayerNorm.weight"));
        assert!(!no_decay("bert.encoder.layer.0.output.dense.weight"));
        assert!(!no_decay("classifier.weight"));
    }
}