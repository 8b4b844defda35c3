//! The part of a conversation tune that runs on a training worker thread: open the base
//! (safetensors or GGUF), optionally quantise it to int8, wrap it with LoRA adapters, encode
//! the exchanges, train, and save the adapter alone in peft's format. It reports through a
//! channel and polls a cancel flag; it never touches the database.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pgmld_llm::causal_train::{train_causal_lm, CausalSavePoint, CausalTrainEvent};
use pgmld_llm::conversation::{self as encode, ConversationRow, PromptFormat, TokenizedExample};
use pgmld_llm::llama::Llama;
use pgmld_llm::lora::{self, LoraConfig};
use pgmld_ml::{HubStrategy, LogEvent, TrainMetrics, TrainingArgs};
use serde_json::{json, Value as Json};
use tch::{nn, Device, Kind};
use tokio::sync::mpsc::UnboundedSender;

use super::data::ChatRow;
use super::options::ConversationArgs;
use super::rss::PeakRss;
use crate::error::{Result, TuneError};

/// Everything a worker needs for one conversation run.
pub struct ConversationSpec {
    /// The base model: a Hugging Face directory or a `.gguf` file.
    pub base: PathBuf,
    /// What the adapter records as `base_model_name_or_path` (where inference loads the base).
    pub base_name: String,
    /// Training exchanges, in training order.
    pub train: Arc<Vec<ChatRow>>,
    /// Held-out exchanges (may be empty).
    pub eval: Arc<Vec<ChatRow>>,
    /// Trainer settings.
    pub training: TrainingArgs,
    /// LoRA, 8-bit loading, prompt and sequence settings.
    pub options: ConversationArgs,
    /// Where the adapter's files go.
    pub out_dir: PathBuf,
    /// Where the adapter is written at every `save_steps`, as `checkpoint-<step>/`, to be
    /// pushed to the Hub (with the resume state under [`crate::push::STATE_DIR`] for
    /// `hub_strategy` checkpoint / all_checkpoints); `None`: no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
}

/// What a worker reports while it runs.
#[derive(Debug)]
pub enum ConversationProgress {
    /// The model is loaded and adapted and the data encoded: training begins. The JSON
    /// object describes the run (device, parameters, sequences, memory options).
    Started(Json),
    /// A training log event, with seconds since training began.
    Log(LogEvent, f64),
    /// An evaluation during training.
    Eval {
        /// Optimizer steps done.
        step: i64,
        /// Fractional epoch reached.
        epoch: f64,
        /// `eval_loss`, `perplexity` and timings.
        metrics: Json,
    },
    /// The adapter of a step was written (see [`ConversationSpec::checkpoint_dir`]); the
    /// receiver owns `dir`.
    Saved {
        /// The optimizer step saved.
        step: i64,
        /// The checkpoint's directory.
        dir: PathBuf,
    },
    /// A checkpoint could not be written; training goes on.
    SaveFailed {
        /// The optimizer step.
        step: i64,
        /// Why.
        message: String,
    },
}

/// What a finished run returns.
#[derive(Debug, Clone)]
pub struct ConversationOutcome {
    /// Training summary (HF names).
    pub train: TrainMetrics,
    /// The final evaluation (`eval_loss`, `perplexity`, …); `None` without test rows.
    pub eval: Option<Json>,
    /// Figures recorded with the metrics: `adapter_bytes`, `trainable_params`,
    /// `total_params`, `peak_rss_bytes`, sequence and token counts.
    pub stats: Json,
}

/// PostgresML's LoRA settings when the call gives no `lora_config`.
pub fn postgresml_default_lora() -> Json {
    json!({"r": 2, "lora_alpha": 4, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM"})
}

/// The LoRA configuration of a call: `lora_config` as given (peft's defaults for missing
/// keys), or PostgresML's defaults (r 2, alpha 4, dropout 0.05) when it gave none.
pub fn lora_config(given: &Json) -> Result<LoraConfig> {
    let value = if given.is_null() { postgresml_default_lora() } else { given.clone() };
    LoraConfig::from_json(&value).map_err(|e| match e {
        pgmld_llm::Error::Invalid(m) | pgmld_llm::Error::Unsupported(m) => TuneError::bad(
            format!("invalid lora_config: {m}"),
            "Example: {\"lora_config\": {\"r\": 8, \"lora_alpha\": 16, \"lora_dropout\": 0.05, \"bias\": \"none\", \
             \"task_type\": \"CAUSAL_LM\"}}; see https://huggingface.co/docs/peft/package_reference/lora.",
        ),
        other => other.into(),
    })
}

/// Checks `lora_config` before anything is recorded (22023 naming the key and value).
pub fn check_lora_config(given: &Json) -> Result<()> {
    lora_config(given).map(|_| ())
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Tokenizer and generation files of a Hugging Face base copied next to the adapter, as
/// peft's examples save the tokenizer with it (a GGUF base carries its tokenizer inside).
const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];

fn rows(data: &[ChatRow]) -> Vec<ConversationRow> {
    data.iter()
        .map(|r| ConversationRow { system: r.system.clone(), user: r.user.clone(), assistant: r.assistant.clone() })
        .collect()
}

fn tokens(examples: &[TokenizedExample]) -> usize {
    examples.iter().map(|e| e.input_ids.len()).sum()
}

/// Trains and saves; runs on a worker thread.
pub fn run(
    spec: ConversationSpec,
    device: Device,
    cancel: Arc<AtomicBool>,
    tx: UnboundedSender<ConversationProgress>,
) -> Result<ConversationOutcome> {
    let peak = PeakRss::start();
    let lora_cfg = lora_config(&spec.options.lora_config)?;
    // Seed before the adapters are drawn, so a run is reproducible end to end.
    tch::manual_seed(spec.training.seed as i64);
    let loaded = pgmld_llm::source::open(&spec.base, device)?;
    let format = match &spec.options.prompt_template {
        Some(t) => PromptFormat::Template(t.clone()),
        None => PromptFormat::ChatTemplate(loaded.template()),
    };
    let pgmld_llm::source::LoadedModel { config, mut weights, tokenizer, .. } = loaded;
    let mut model = Llama::load(config, &mut weights, device, Kind::Float)?;
    drop(weights);
    let quantized = spec.options.load_in_8bit.then(|| pgmld_llm::quant::quantize_int8(&mut model));
    let vs = nn::VarStore::new(device);
    let summary = lora::apply(&mut model, &lora_cfg, &vs)?;
    let encode_args = encode::ConversationArgs {
        max_seq_length: spec.options.max_seq_length,
        train_on_prompt: spec.options.train_on_prompt,
        packing: spec.options.packing,
    };
    let max_positions = model.config.max_position_embeddings;
    let train = encode::encode_conversations(&rows(&spec.train), &tokenizer, &format, &encode_args, max_positions)?;
    let eval = match spec.eval.is_empty() {
        true => None,
        // Evaluation sequences are never packed: each exchange is scored on its own.
        false => Some(encode::encode_conversations(
            &rows(&spec.eval),
            &tokenizer,
            &format,
            &encode::ConversationArgs { packing: false, ..encode_args.clone() },
            max_positions,
        )?),
    };
    let eval_examples: &[TokenizedExample] = eval.as_ref().map_or(&[], |e| &e.examples);
    let mut stats = json!({
        "trainable_params": summary.params.trainable,
        "total_params": summary.params.total,
        "target_modules": summary.target_modules,
        "max_seq_length": train.max_seq_length,
        "train_sequences": train.examples.len(),
        "train_tokens": tokens(&train.examples),
        "eval_sequences": eval_examples.len(),
        "truncated_rows": train.truncated + eval.as_ref().map_or(0, |e| e.truncated),
        "dropped_rows": train.dropped + eval.as_ref().map_or(0, |e| e.dropped),
        "load_in_8bit": spec.options.load_in_8bit,
        "optim": spec.training.optim.name(),
        "gradient_checkpointing": spec.training.gradient_checkpointing,
    });
    if let (Some(q), Json::Object(o)) = (quantized, &mut stats) {
        o.insert("int8_weight_bytes".into(), json!(q.bytes_after));
        o.insert("int8_weight_bytes_before".into(), json!(q.bytes_before));
    }
    let mut started = stats.clone();
    if let Json::Object(o) = &mut started {
        o.insert("device".into(), json!(device_name(device)));
    }
    let _ = tx.send(ConversationProgress::Started(started));
    let pad_id = tokenizer.pad_id().or(tokenizer.eos_token().map(|t| t.id)).unwrap_or(0);
    let save = |sp: &CausalSavePoint<'_>| save_checkpoint(&spec, &lora_cfg, sp, &tx);
    let data = (train.examples.as_slice(), eval_examples);
    let outcome = train_and_report(&model, &vs, data, (&spec.training, pad_id), (&tx, save), &cancel)?;
    if cancel.load(Ordering::Relaxed) {
        return Err(TuneError::Cancelled);
    }
    let adapter_bytes = lora::save_adapter(&spec.out_dir, &lora_cfg, &vs, &spec.base_name)?;
    save_extras(&spec, &spec.out_dir)?;
    if let Json::Object(o) = &mut stats {
        o.insert("adapter_bytes".into(), json!(adapter_bytes));
        o.insert("train_tokens_per_second".into(), json!((outcome.tokens_per_second * 10.0).round() / 10.0));
        o.insert("gradient_checkpointing".into(), json!(outcome.checkpointing));
        if let Some(p) = peak.finish() {
            o.insert("peak_rss_bytes".into(), json!(p));
        }
    }
    Ok(ConversationOutcome { train: outcome.train, eval: outcome.eval, stats })
}

/// Writes the adapter of a save point into `checkpoint-<step>/` of
/// [`ConversationSpec::checkpoint_dir`] for the Hub, with the resume state when the
/// `hub_strategy` pushes it, and tells the async side.
fn save_checkpoint(spec: &ConversationSpec, cfg: &LoraConfig, sp: &CausalSavePoint<'_>, tx: &UnboundedSender<ConversationProgress>) {
    let Some(root) = &spec.checkpoint_dir else { return };
    let step = sp.step();
    let dir = root.join(format!("checkpoint-{step}"));
    let _ = std::fs::remove_dir_all(&dir);
    let with_state = matches!(spec.training.hub_strategy, HubStrategy::Checkpoint | HubStrategy::AllCheckpoints);
    let saved = lora::save_adapter(&dir, cfg, sp.vs(), &spec.base_name)
        .map_err(TuneError::from)
        .and_then(|_| save_extras(spec, &dir))
        .and_then(|()| match with_state {
            true => sp.write_checkpoint(dir.join(crate::push::STATE_DIR)).map_err(TuneError::from),
            false => Ok(()),
        });
    let _ = tx.send(match saved {
        Ok(()) => ConversationProgress::Saved { step, dir },
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            ConversationProgress::SaveFailed { step, message: e.to_string() }
        }
    });
}

/// Writes what goes with the adapter into `out`: the base's tokenizer files (a Hugging
/// Face base) and `training_args.json` (without `hub_token`, which never serialises).
fn save_extras(spec: &ConversationSpec, out: &std::path::Path) -> Result<()> {
    let io = |what: &str, e: &dyn std::fmt::Display| TuneError::Internal(format!("saving {what} in {}: {e}", out.display()));
    if spec.base.is_dir() {
        for name in TOKENIZER_FILES {
            let src = spec.base.join(name);
            if src.is_file() {
                std::fs::copy(&src, out.join(name)).map_err(|e| io(name, &e))?;
            }
        }
    }
    let args = serde_json::to_string_pretty(&spec.training).map_err(|e| io("training_args.json", &e))?;
    std::fs::write(out.join("training_args.json"), args).map_err(|e| io("training_args.json", &e))?;
    Ok(())
}

/// The trainer's summary, as the async side records it.
struct Trained {
    train: TrainMetrics,
    eval: Option<Json>,
    /// Real tokens trained on per second.
    tokens_per_second: f64,
    /// Whether layers were recomputed in backward (asked, or forced by int8 weights).
    checkpointing: bool,
}

/// Runs the causal-LM trainer, relaying its events, calling `on_save` every `save_steps`,
/// polling `cancel`.
fn train_and_report(
    model: &Llama,
    vs: &nn::VarStore,
    (train, eval): (&[TokenizedExample], &[TokenizedExample]),
    (args, pad_id): (&TrainingArgs, i64),
    (tx, on_save): (&UnboundedSender<ConversationProgress>, impl FnMut(&CausalSavePoint<'_>)),
    cancel: &AtomicBool,
) -> Result<Trained> {
    let clock = Instant::now();
    let on_event = |e: CausalTrainEvent| {
        let _ = tx.send(match e {
            CausalTrainEvent::Log(ev) => ConversationProgress::Log(ev, clock.elapsed().as_secs_f64()),
            CausalTrainEvent::Eval { step, epoch, metrics } => {
                ConversationProgress::Eval { step, epoch, metrics: serde_json::to_value(metrics).unwrap_or_default() }
            }
        });
    };
    let outcome = train_causal_lm(model, vs, train, eval, args, pad_id, on_event, on_save, || cancel.load(Ordering::Relaxed), None)?;
    let t = outcome.train;
    Ok(Trained {
        train: TrainMetrics {
            train_runtime: t.train_runtime,
            train_samples_per_second: t.train_samples_per_second,
            train_steps_per_second: t.train_steps_per_second,
            train_loss: t.train_loss,
            epoch: t.epoch,
            global_step: t.global_step,
        },
        eval: outcome.eval.map(|m| serde_json::to_value(m).unwrap_or_default()),
        tokens_per_second: t.train_tokens_per_second,
        checkpointing: t.gradient_checkpointing,
    })
}
