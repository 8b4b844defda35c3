//! Fine-tuning a [`BertForSequenceClassification`] on labelled texts, following the
//! semantics of Hugging Face `transformers.Trainer` (argument names, defaults, optimizer
//! parameter groups, learning-rate schedules, gradient accumulation and clipping, logging).

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::bert::BertForSequenceClassification;
use crate::error::{Error, Result};
use crate::load::Pretrained;
use crate::metrics;
use crate::tokenize::{Batch, Encoded, TextTokenizer};

/// Learning-rate schedule (HF `lr_scheduler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedulerType {
    /// Linear warmup from 0, then linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Linear warmup, then half-cosine decay to 0.
    Cosine,
    /// Constant learning rate, no warmup.
    Constant,
    /// Linear warmup, then constant.
    ConstantWithWarmup,
}

/// Training hyperparameters, named and defaulted as HF `TrainingArguments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingArgs {
    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// Training batch size.
    pub per_device_train_batch_size: usize,
    /// Evaluation batch size.
    pub per_device_eval_batch_size: usize,
    /// Number of epochs (may be fractional); ignored when `max_steps > 0`.
    pub num_train_epochs: f64,
    /// Total number of optimizer steps; `-1` (or any value ≤ 0) derives it from epochs.
    pub max_steps: i64,
    /// AdamW decoupled weight decay, not applied to biases and LayerNorm weights.
    pub weight_decay: f64,
    /// Linear warmup steps; when 0, `warmup_ratio` of the total steps is used.
    pub warmup_steps: i64,
    /// Fraction of the total steps used for warmup when `warmup_steps` is 0.
    pub warmup_ratio: f64,
    /// Learning-rate schedule.
    pub lr_scheduler_type: LrSchedulerType,
    /// Micro-batches whose gradients are summed before each optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Maximum global gradient L2 norm (clipping disabled when ≤ 0).
    pub max_grad_norm: f64,
    /// Emit a [`LogEvent`] every this many optimizer steps.
    pub logging_steps: i64,
    /// Seed for libtorch (initialisation, dropout) and data shuffling.
    pub seed: u64,
}

impl Default for TrainingArgs {
    fn default() -> Self {
        Self {
            learning_rate: 5e-5,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            num_train_epochs: 3.0,
            max_steps: -1,
            weight_decay: 0.0,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            lr_scheduler_type: LrSchedulerType::Linear,
            gradient_accumulation_steps: 1,
            max_grad_norm: 1.0,
            logging_steps: 500,
            seed: 42,
        }
    }
}

impl TrainingArgs {
    /// The keys accepted in a `training_args` JSON object.
    pub const SUPPORTED_KEYS: &'static [&'static str] = &[
        "learning_rate",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "num_train_epochs",
        "max_steps",
        "weight_decay",
        "warmup_steps",
        "warmup_ratio",
        "lr_scheduler_type",
        "gradient_accumulation_steps",
        "max_grad_norm",
        "logging_steps",
        "seed",
    ];

    /// Parses a JSON object (missing keys take their defaults) and validates it. Unknown
    /// keys are rejected with an error listing the supported ones.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let obj = match value {
            serde_json::Value::Null => return Ok(Self::default()),
            serde_json::Value::Object(o) => o,
            other => {
                return Err(Error::TrainingArgs(format!(
                    "expected a JSON object, got {other}"
                )))
            }
        };
        let mut unknown: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !Self::SUPPORTED_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(Error::TrainingArgs(format!(
                "unsupported key(s) {}; supported keys: {}",
                unknown.join(", "),
                Self::SUPPORTED_KEYS.join(", ")
            )));
        }
        let args: Self = serde_json::from_value(value.clone())
            .map_err(|e| Error::TrainingArgs(e.to_string()))?;
        args.validate()?;
        Ok(args)
    }

    /// Parses a JSON text, as [`TrainingArgs::from_json`].
    pub fn from_json_str(s: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| Error::TrainingArgs(e.to_string()))?;
        Self::from_json(&v)
    }

    /// Checks the ranges of the arguments.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::TrainingArgs(m));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate must be > 0, got {}",
                self.learning_rate
            ));
        }
        if self.per_device_train_batch_size == 0 || self.per_device_eval_batch_size == 0 {
            return bad("batch sizes must be ≥ 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps must be ≥ 1".into());
        }
        if self.max_steps <= 0
            && !(self.num_train_epochs.is_finite() && self.num_train_epochs > 0.0)
        {
            return bad(format!(
                "num_train_epochs must be > 0 when max_steps is not set, got {}",
                self.num_train_epochs
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if self.warmup_steps < 0 {
            return bad(format!(
                "warmup_steps must be ≥ 0, got {}",
                self.warmup_steps
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "warmup_ratio must be in [0, 1), got {}",
                self.warmup_ratio
            ));
        }
        if !self.max_grad_norm.is_finite() {
            return bad(format!(
                "max_grad_norm must be finite, got {}",
                self.max_grad_norm
            ));
        }
        if self.logging_steps < 1 {
            return bad(format!(
                "logging_steps must be ≥ 1, got {}",
                self.logging_steps
            ));
        }
        Ok(())
    }

    /// Warmup steps for a run of `total_steps` optimizer steps.
    pub fn num_warmup_steps(&self, total_steps: i64) -> i64 {
        if self.warmup_steps > 0 {
            self.warmup_steps
        } else {
            (self.warmup_ratio * total_steps as f64).ceil() as i64
        }
    }

    /// Learning-rate multiplier for optimizer step `step` (0-based) of `total_steps`, as
    /// the `transformers.get_scheduler` lambdas.
    pub fn lr_factor(&self, step: i64, total_steps: i64) -> f64 {
        let warmup = self.num_warmup_steps(total_steps);
        let (s, w, t) = (step as f64, warmup as f64, total_steps as f64);
        let warm = || s / w.max(1.0);
        match self.lr_scheduler_type {
            LrSchedulerType::Constant => 1.0,
            LrSchedulerType::ConstantWithWarmup => {
                if step < warmup {
                    warm()
                } else {
                    1.0
                }
            }
            LrSchedulerType::Linear => {
                if step < warmup {
                    warm()
                } else {
                    ((t - s) / (t - w).max(1.0)).max(0.0)
                }
            }
            LrSchedulerType::Cosine => {
                if step < warmup {
                    warm()
                } else {
                    let progress = (s - w) / (t - w).max(1.0);
                    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
                }
            }
        }
    }
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

/// SplitMix64: small seeded generator for data shuffling (independent of libtorch).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Length-grouped batches (as HF `group_by_length`): shuffle the indices, cut them into
/// chunks of 50 batches, sort each chunk by length (longest first), cut into batches, then
/// shuffle the batch order. Batches of similar lengths waste little padding.
fn length_grouped_batches(lengths: &[usize], batch_size: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut idx);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for chunk in idx.chunks_mut(50 * batch_size) {
        chunk.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

/// True for variables that get no weight decay (biases and LayerNorm weights, as HF).
fn no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name.contains("layer_norm")
}

fn check_labels(data: &[(String, i64)], num_labels: i64, what: &str) -> Result<()> {
    if let Some((_, l)) = data.iter().find(|(_, l)| *l < 0 || *l >= num_labels) {
        return Err(Error::Data(format!(
            "{what} label {l} is outside 0..{num_labels}"
        )));
    }
    Ok(())
}

fn encode(tokenizer: &TextTokenizer, data: &[(String, i64)]) -> Result<Vec<Encoded>> {
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(1024) {
        let texts: Vec<&str> = chunk.iter().map(|(t, _)| t.as_str()).collect();
        out.extend(tokenizer.encode_unpadded(&texts)?);
    }
    Ok(out)
}

fn make_batch(
    enc: &[Encoded],
    data: &[(String, i64)],
    idx: &[usize],
    pad_id: u32,
    device: Device,
) -> (Batch, Tensor) {
    let rows: Vec<&Encoded> = idx.iter().map(|&i| &enc[i]).collect();
    let labels: Vec<i64> = idx.iter().map(|&i| data[i].1).collect();
    let batch = Batch::from_encoded(&rows, pad_id);
    let batch = if device == Device::Cpu {
        batch
    } else {
        batch.to_device(device)
    };
    (batch, Tensor::from_slice(&labels).to_device(device))
}

/// Fine-tunes `model` on `train` (text, label) pairs with AdamW, then evaluates it on
/// `eval`. Labels must lie in `0..num_labels`.
///
/// `on_log` receives a [`LogEvent`] every `args.logging_steps` optimizer steps (the only
/// points where the loss is copied to the host, besides the end of training; on CPU the
/// loss is also checked for NaN/inf every step). `should_stop` is polled before every
/// micro-batch; when it returns true training ends with [`Error::Cancelled`]. A NaN or
/// infinite loss ends it with [`Error::NonFiniteLoss`] naming the first bad step.
pub fn train_classifier(
    model: &mut Pretrained<BertForSequenceClassification>,
    tokenizer: &TextTokenizer,
    train: &[(String, i64)],
    eval: &[(String, i64)],
    args: &TrainingArgs,
    mut on_log: impl FnMut(LogEvent),
    should_stop: impl Fn() -> bool,
) -> Result<TrainOutcome> {
    args.validate()?;
    if train.is_empty() {
        return Err(Error::Data("the training set is empty".into()));
    }
    let num_labels = model.model.num_labels();
    check_labels(train, num_labels, "training")?;
    check_labels(eval, num_labels, "evaluation")?;
    tch::manual_seed(args.seed as i64);
    let mut rng = Rng(args.seed);
    let device = model.vs.device();
    let pad_id = tokenizer.pad_id();

    let train_enc = encode(tokenizer, train)?;
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
        let mut vars = model.vs.variables_.lock().unwrap();
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
                let logits = model.model.forward(
                    &batch.input_ids,
                    Some(&batch.attention_mask),
                    Some(&batch.token_type_ids),
                    true,
                );
                let loss = BertForSequenceClassification::loss(&logits, &labels) / accum as f64;
                loss.backward();
                step_loss += loss.detach();
                samples += idx.len();
            }
            // Optimizer step `global_step` (0-based) uses the scheduled learning rate.
            let lr = args.learning_rate * args.lr_factor(global_step, total_steps);
            opt.set_lr(lr);
            let norm = tch::no_grad(|| {
                let norms: Vec<Tensor> = params
                    .iter()
                    .map(Tensor::grad)
                    .filter(Tensor::defined)
                    .map(|g| g.norm())
                    .collect();
                let total = Tensor::stack(&norms, 0).norm();
                if args.max_grad_norm > 0.0 {
                    let coef = (args.max_grad_norm / (&total + 1e-6)).clamp_max(1.0);
                    for p in &params {
                        let mut g = p.grad();
                        if g.defined() {
                            let _ = g.g_mul_(&coef);
                        }
                    }
                }
                total
            });
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
            if global_step % args.logging_steps == 0 {
                if let Some(e) = nonfinite_error(&first_bad, &step_loss) {
                    return Err(e);
                }
                let n = (global_step - last_logged) as f64;
                let ev = LogEvent {
                    step: global_step,
                    max_steps: total_steps,
                    epoch: epoch as f64 + (group_no + 1) as f64 / updates_per_epoch as f64,
                    loss: f64::try_from(&window_loss)? / n,
                    grad_norm: f64::try_from(&norm)?,
                    learning_rate: lr,
                };
                log_history.push(ev.clone());
                on_log(ev);
                window_loss = zero();
                last_logged = global_step;
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
        Some(evaluate(
            model,
            tokenizer,
            eval,
            args.per_device_eval_batch_size,
        )?)
    };
    Ok(TrainOutcome {
        train: train_metrics,
        eval,
        log_history,
    })
}

/// Evaluates `model` (dropout off, no gradients) on labelled texts: mean cross-entropy,
/// accuracy and macro-F1. Texts are batched by length to limit padding.
pub fn evaluate(
    model: &Pretrained<BertForSequenceClassification>,
    tokenizer: &TextTokenizer,
    data: &[(String, i64)],
    batch_size: usize,
) -> Result<EvalMetrics> {
    if data.is_empty() || batch_size == 0 {
        return Err(Error::Data(
            "evaluation needs data and a batch size ≥ 1".into(),
        ));
    }
    check_labels(data, model.model.num_labels(), "evaluation")?;
    let started = Instant::now();
    let device = model.vs.device();
    let enc = encode(tokenizer, data)?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(enc[i].len()));
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut preds = Vec::with_capacity(data.len());
    let mut truth = Vec::with_capacity(data.len());
    let mut steps = 0usize;
    tch::no_grad(|| {
        for idx in order.chunks(batch_size) {
            let (batch, labels) = make_batch(&enc, data, idx, tokenizer.pad_id(), device);
            let logits = model.model.forward(
                &batch.input_ids,
                Some(&batch.attention_mask),
                Some(&batch.token_type_ids),
                false,
            );
            loss_sum += logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
                &labels,
                None,
                tch::Reduction::Sum,
                -100,
                0.0,
            );
            preds.push(logits.argmax(-1, false));
            truth.extend(idx.iter().map(|&i| data[i].1));
            steps += 1;
        }
    });
    let preds: Vec<i64> = Vec::<i64>::try_from(Tensor::cat(&preds, 0).to_device(Device::Cpu))?;
    let eval_loss = f64::try_from(&loss_sum)? / data.len() as f64;
    let runtime = started.elapsed().as_secs_f64();
    Ok(EvalMetrics {
        eval_loss,
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
    fn schedules_match_transformers() {
        let mut a = TrainingArgs {
            warmup_steps: 2,
            ..Default::default()
        };
        // linear: warmup 0, .5, then (10-s)/8
        let f: Vec<f64> = (0..10).map(|s| a.lr_factor(s, 10)).collect();
        assert_eq!(f[0], 0.0);
        assert_eq!(f[1], 0.5);
        assert_eq!(f[2], 1.0);
        assert!((f[6] - 0.5).abs() < 1e-12);
        a.lr_scheduler_type = LrSchedulerType::Cosine;
        assert!((a.lr_factor(6, 10) - 0.5).abs() < 1e-12);
        assert!((a.lr_factor(2, 10) - 1.0).abs() < 1e-12);
        a.lr_scheduler_type = LrSchedulerType::ConstantWithWarmup;
        assert_eq!(a.lr_factor(1, 10), 0.5);
        assert_eq!(a.lr_factor(9, 10), 1.0);
        a.lr_scheduler_type = LrSchedulerType::Constant;
        assert_eq!(a.lr_factor(0, 10), 1.0);
        // warmup_ratio rounds up
        let r = TrainingArgs {
            warmup_ratio: 0.1,
            ..Default::default()
        };
        assert_eq!(r.num_warmup_steps(25), 3);
    }

    #[test]
    fn length_grouping_covers_every_index_once() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 128).collect();
        let b = length_grouped_batches(&lengths, 8, &mut Rng(7));
        assert_eq!(b.len(), 125);
        let mut all: Vec<usize> = b.concat();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // Within a batch the lengths are sorted (longest first) and close together.
        let spread: usize = b
            .iter()
            .map(|x| lengths[x[0]] - lengths[*x.last().unwrap()])
            .sum();
        assert!(spread / b.len() < 16, "mean spread {}", spread / b.len());
        // Seeded: same seed, same batches; other seed, other batches.
        assert_eq!(b, length_grouped_batches(&lengths, 8, &mut Rng(7)));
        assert_ne!(b, length_grouped_batches(&lengths, 8, &mut Rng(8)));
    }

    #[test]
    fn no_decay_names() {
        assert!(no_decay("bert.encoder.layer.0.output.dense.bias"));
        assert!(no_decay("bert.embeddings.LayerNorm.weight"));
        assert!(!no_decay("bert.encoder.layer.0.output.dense.weight"));
        assert!(!no_decay("classifier.weight"));
    }
}
