//! Fine-tuning a [`Classifier`] on labelled texts or text pairs: the classification
//! [`TrainTask`] run by pgmld-train's one training loop ([`pgmld_train::trainer`], HF
//! `transformers.Trainer` semantics), and evaluation (loss, accuracy, macro-F1).

use std::path::Path;
use std::time::Instant;

use pgmld_train::optim::no_decay;
use pgmld_train::train_state::MODEL_FILE;
use pgmld_train::{AdamW, Hooks, TrainTask, TrainingArgs};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::checkpointing::backward_checkpointed;
use crate::classifier::Classifier;
use crate::error::{Error, Result};
use crate::metrics;
use crate::tokenize::{Batch, Encoded, TextTokenizer};

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

/// What the classifier's training reports while it runs.
pub type TrainEvent = pgmld_train::TrainEvent<EvalMetrics>;

/// What `on_save` receives every `save_steps`: `task().model()` is the classifier after
/// that step, `write_checkpoint` writes a checkpoint [`train_classifier`] resumes from.
pub type SavePoint<'s, 'a> = pgmld_train::SavePoint<'s, ClassifierTask<'a>>;

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
    pub train: pgmld_train::TrainMetrics,
    /// Held-out metrics; `None` when the eval set is empty.
    pub eval: Option<EvalMetrics>,
    /// Every [`pgmld_train::LogEvent`] of the run, in order (when resumed, the checkpoint's first).
    pub log_history: Vec<pgmld_train::LogEvent>,
    /// What `training_args.cuda_graphs` did; `None` when not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_graphs: Option<pgmld_train::GraphStats>,
}

fn check_labels(data: &[Example], num_labels: i64, what: &str) -> Result<()> {
    if let Some(e) = data.iter().find(|e| e.label < 0 || e.label >= num_labels) {
        let message = format!("{what} label {} is outside 0..{num_labels}", e.label);
        return Err(pgmld_train::Error::Data(message).into());
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
                return Err(pgmld_train::Error::Data(format!(
                    "example {} is longer than max_length {} tokens and truncation is off",
                    c * 1024 + i,
                    tokenizer.max_length()
                ))
                .into());
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
    (pad_id, pad_to): (u32, usize),
    device: Device,
) -> (Batch, Tensor) {
    let rows: Vec<&Encoded> = idx.iter().map(|&i| &enc[i]).collect();
    let labels: Vec<i64> = idx.iter().map(|&i| data[i].label).collect();
    let batch = Batch::from_encoded_to(&rows, pad_id, pad_to);
    let batch = if device == Device::Cpu { batch } else { batch.to_device(device) };
    (batch, Tensor::from_slice(&labels).to_device(device))
}

/// A stable 64-bit FNV-1a hash of the examples (texts, pairs, labels, in order), as 16
/// hex digits: a resumed run refuses data that changed since the checkpoint.
pub fn data_fingerprint(examples: &[Example]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for e in examples {
        eat(&(e.text.len() as u64).to_le_bytes());
        eat(e.text.as_bytes());
        match &e.text_pair {
            Some(p) => {
                eat(&[1]);
                eat(&(p.len() as u64).to_le_bytes());
                eat(p.as_bytes());
            }
            None => eat(&[0]),
        }
        eat(&e.label.to_le_bytes());
    }
    format!("{h:016x}")
}

/// The classifier, its tokenized training and evaluation data and the arguments the
/// forward pass needs: what the training loop runs.
pub struct ClassifierTask<'a> {
    model: &'a Classifier,
    tokenizer: &'a TextTokenizer,
    train: &'a [Example],
    train_enc: Vec<Encoded>,
    eval: &'a [Example],
    pad_id: u32,
    /// `gradient_accumulation_steps`: every micro-batch loss is divided by it.
    accum: usize,
    gradient_checkpointing: bool,
    eval_batch_size: usize,
}

impl ClassifierTask<'_> {
    /// The model being trained.
    pub fn model(&self) -> &Classifier {
        self.model
    }

    /// The loss of `logits` against `labels`, divided by the accumulation steps.
    fn step_loss(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        Classifier::loss(&logits.to_kind(Kind::Float), labels) / self.accum as f64
    }

    /// Forward (under bf16 autocast when `autocast`) and backward of one batch with
    /// the generators already seeded; [`ClassifierTask::step_loss`], detached.
    fn forward_backward_batch(&self, batch: &Batch, labels: &Tensor, autocast: bool) -> Tensor {
        let logits =
            pgmld_train::autocast(autocast, self.device(), || self.model.forward(batch, true));
        let loss = self.step_loss(&logits, labels);
        loss.backward();
        loss.detach()
    }
}

impl TrainTask for ClassifierTask<'_> {
    type Optimizer = AdamW;
    type Metrics = EvalMetrics;
    type Error = Error;
    const WEIGHTS_FILE: &'static str = MODEL_FILE;

    fn device(&self) -> Device {
        self.model.vs.device()
    }

    fn lengths(&self) -> Vec<usize> {
        self.train_enc.iter().map(Encoded::len).collect()
    }

    fn fingerprint(&self) -> String {
        data_fingerprint(self.train)
    }

    fn optimizer(&self, args: &TrainingArgs) -> AdamW {
        AdamW::new(&self.model.vs, args.weight_decay, no_decay)
    }

    fn clipped_parameters(&self, _optimizer: &AdamW) -> Vec<Tensor> {
        self.model.vs.trainable_variables()
    }

    fn trained_vars(&self) -> &nn::VarStore {
        &self.model.vs
    }

    fn write_weights(&self, path: &Path) -> Result<()> {
        Ok(self.model.vs.save(path)?)
    }

    fn forward_backward(&mut self, idx: &[usize], seed: i64, autocast: bool) -> Tensor {
        let device = self.device();
        let pad = (self.pad_id, 0);
        let (batch, labels) = make_batch(&self.train_enc, self.train, idx, pad, device);
        if self.gradient_checkpointing {
            let loss_of = |logits: &Tensor| self.step_loss(logits, &labels);
            backward_checkpointed(self.model, &batch, loss_of, seed, autocast)
        } else {
            tch::manual_seed(seed);
            self.forward_backward_batch(&batch, &labels, autocast)
        }
    }

    /// Pads to the next multiple of `pad_multiple` tokens, within the tokenizer's and the
    /// model's length limits; gradient checkpointing reseeds inside its backward pass, so
    /// it stays eager.
    fn stage(&mut self, idx: &[usize], pad_multiple: usize) -> Option<Vec<Tensor>> {
        if self.gradient_checkpointing {
            return None;
        }
        let longest = idx.iter().map(|&i| self.train_enc[i].len()).max().unwrap_or(0);
        let positions = self.model.max_positions().map_or(usize::MAX, |p| p.max(0) as usize);
        let limit = self.tokenizer.max_length().min(positions);
        let pad_to = longest.next_multiple_of(pad_multiple.max(1)).min(limit.max(longest));
        let pad = (self.pad_id, pad_to);
        let (batch, labels) = make_batch(&self.train_enc, self.train, idx, pad, self.device());
        Some(vec![batch.input_ids, batch.attention_mask, batch.token_type_ids, labels])
    }

    fn forward_backward_staged(&mut self, inputs: &[Tensor], autocast: bool) -> Tensor {
        let [input_ids, attention_mask, token_type_ids, labels] = inputs else {
            unreachable!("stage() makes 4 tensors, got {}", inputs.len())
        };
        let batch = Batch {
            input_ids: input_ids.shallow_clone(),
            attention_mask: attention_mask.shallow_clone(),
            token_type_ids: token_type_ids.shallow_clone(),
        };
        self.forward_backward_batch(&batch, labels, autocast)
    }

    fn evaluate(&self) -> Result<Option<EvalMetrics>> {
        if self.eval.is_empty() {
            return Ok(None);
        }
        evaluate(self.model, self.tokenizer, self.eval, self.eval_batch_size).map(Some)
    }
}

/// Fine-tunes `model` on `train` with AdamW, then evaluates it on `eval`. Labels must lie
/// in `0..num_labels`.
///
/// `on_event`, `on_save` and `should_stop` are the loop's [`Hooks`]: a
/// [`TrainEvent::Log`] every `args.logging_steps` optimizer steps and a
/// [`TrainEvent::Eval`] after each evaluation `args.eval_strategy` asks for; a
/// [`SavePoint`] every `args.save_steps` steps; the cancel poll before every micro-batch
/// (then [`pgmld_train::Error::Cancelled`]). With `args.bf16` the forward passes
/// (training and evaluation) run under bfloat16 autocast, on the CPU as on CUDA; with
/// `args.gradient_checkpointing` layers are recomputed in backward. `resume_from` goes on
/// from a checkpoint [`SavePoint`] wrote, as [`pgmld_train::train`] describes.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    model: &mut Classifier,
    tokenizer: &TextTokenizer,
    train: &[Example],
    eval: &[Example],
    args: &TrainingArgs,
    on_event: impl FnMut(TrainEvent),
    on_save: impl FnMut(&SavePoint<'_, '_>),
    should_stop: impl Fn() -> bool,
    resume_from: Option<&Path>,
) -> Result<TrainOutcome> {
    let hooks = Hooks { on_event, on_save, should_stop };
    fit(model, tokenizer, (train, eval), args, hooks, resume_from, None)
}

/// [`train_classifier`] as one rank of a data-parallel run over `group`
/// ([`pgmld_train::train_data_parallel`]): every rank passes the same data and arguments;
/// the global batch is `per_device_train_batch_size` × `world_size`, shared by the ranks
/// of `group`. `None`: one process (as [`train_classifier`], which this is then).
#[allow(clippy::too_many_arguments)]
pub fn train_classifier_data_parallel(
    model: &mut Classifier,
    tokenizer: &TextTokenizer,
    train: &[Example],
    eval: &[Example],
    args: &TrainingArgs,
    on_event: impl FnMut(TrainEvent),
    on_save: impl FnMut(&SavePoint<'_, '_>),
    should_stop: impl Fn() -> bool,
    resume_from: Option<&Path>,
    group: Option<&mut pgmld_train::ProcessGroup>,
) -> Result<TrainOutcome> {
    let hooks = Hooks { on_event, on_save, should_stop };
    fit(model, tokenizer, (train, eval), args, hooks, resume_from, group)
}

fn fit(
    model: &mut Classifier,
    tokenizer: &TextTokenizer,
    (train, eval): (&[Example], &[Example]),
    args: &TrainingArgs,
    hooks: Hooks<impl FnMut(TrainEvent), impl FnMut(&SavePoint<'_, '_>), impl Fn() -> bool>,
    resume_from: Option<&Path>,
    group: Option<&mut pgmld_train::ProcessGroup>,
) -> Result<TrainOutcome> {
    args.validate()?;
    if train.is_empty() {
        return Err(pgmld_train::Error::Data("the training set is empty".into()).into());
    }
    let num_labels = model.num_labels();
    check_labels(train, num_labels, "training")?;
    check_labels(eval, num_labels, "evaluation")?;
    let mut task = ClassifierTask {
        model,
        tokenizer,
        train,
        train_enc: encode_examples(tokenizer, train)?,
        eval,
        pad_id: tokenizer.pad_id(),
        accum: args.gradient_accumulation_steps,
        gradient_checkpointing: args.gradient_checkpointing,
        eval_batch_size: args.per_device_eval_batch_size,
    };
    let run = match group {
        Some(g) => pgmld_train::train_data_parallel(&mut task, args, hooks, resume_from, g)?,
        None => pgmld_train::train(&mut task, args, hooks, resume_from)?,
    };
    Ok(TrainOutcome {
        train: run.metrics(run.runtime),
        eval: run.eval,
        log_history: run.log_history,
        cuda_graphs: run.cuda_graphs,
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
            let (batch, labels) = make_batch(&enc, data, idx, (tokenizer.pad_id(), 0), device);
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
        let message = "evaluation needs data and a batch size ≥ 1".into();
        return Err(pgmld_train::Error::Data(message).into());
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
