//! The part of a conversation tune that runs on a training worker thread: open the base
//! (safetensors or GGUF), optionally quantise it to int8, wrap it with LoRA adapters, encode
//! the exchanges, train, and save the adapter alone in peft's format. It reports through a
//! channel and polls a cancel flag; it never touches the database.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pgmld_llm::causal_train::{train_causal_lm_data_parallel, CausalSavePoint, CausalTrainEvent};
use pgmld_llm::conversation::{self as encode, ConversationRow, PromptFormat, TokenizedExample};
use pgmld_llm::llama::Llama;
use pgmld_llm::lora::{self, LoraConfig};
use pgmld_train::{Hooks, TrainMetrics, TrainingArgs};
use serde_json::{json, Value as Json};
use tch::{nn, Device, Kind};
use tokio::sync::mpsc::UnboundedSender;

use super::data::ChatRow;
use super::options::ConversationArgs;
use super::rss::PeakRss;
use crate::data_parallel::{join_group, GroupSpec};
use crate::error::{Result, TuneError};
use crate::training_run::{device_name, save_point, start_step, Outcome, Progress, RunDirs};

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
    /// Where the adapter goes; the Hub checkpoints (the adapter of a step, with the resume
    /// state for `hub_strategy` checkpoint / all_checkpoints); the resumable checkpoints
    /// (adapter, optimizer state — 8-bit with `adamw_bnb_8bit` —, trainer state, training
    /// arguments); the checkpoint a resume goes on from.
    pub dirs: RunDirs,
    /// The data-parallel group this run is a rank of (`None`: one process).
    pub group: Option<GroupSpec>,
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

/// Tokenizer and generation files of a Hugging Face base copied next to the adapter, as
/// peft's examples save the tokenizer with it (a GGUF base carries its tokenizer inside).
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

fn rows(data: &[ChatRow]) -> Vec<ConversationRow> {
    data.iter()
        .map(|r| ConversationRow {
            system: r.system.clone(),
            user: r.user.clone(),
            assistant: r.assistant.clone(),
        })
        .collect()
}

fn tokens(examples: &[TokenizedExample]) -> usize {
    examples.iter().map(|e| e.input_ids.len()).sum()
}

/// Trains and saves; runs on a worker thread.
pub fn run(
    mut spec: ConversationSpec,
    device: Device,
    cancel: Arc<AtomicBool>,
    tx: UnboundedSender<Progress>,
) -> Result<Outcome> {
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
    let encode_args = spec.options.encoding();
    let max_positions = model.config.max_position_embeddings;
    let train = encode::encode_conversations(
        &rows(&spec.train),
        &tokenizer,
        &format,
        &encode_args,
        max_positions,
    )?;
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
    let _ = tx.send(Progress::Started {
        info: started,
        start_step: start_step(spec.dirs.resume_from.as_deref())?,
    });
    let pad_id = tokenizer.pad_id().or(tokenizer.eos_token().map(|t| t.id)).unwrap_or(0);
    let rank = spec.group.as_ref().map_or(0, GroupSpec::rank);
    let mut group = join_group(spec.group.take(), device, &tx)?;
    let save = |sp: &CausalSavePoint<'_, '_>| {
        save_point(
            &spec.dirs,
            spec.training.hub_strategy,
            (sp.step(), sp.state().max_steps),
            &|dir| Ok(sp.write_checkpoint(dir)?),
            &|dir| {
                lora::save_adapter(dir, &lora_cfg, sp.task().vs(), &spec.base_name)?;
                save_extras(&spec, dir)
            },
            &tx,
        )
    };
    let data = (train.examples.as_slice(), eval_examples);
    let resume_from = spec.dirs.resume_from.as_deref();
    let outcome = train_and_report(
        &model,
        &vs,
        data,
        (&spec.training, pad_id, resume_from),
        (&tx, save),
        (&cancel, group.as_mut().map(|(_, g)| g)),
    )?;
    drop(group);
    if cancel.load(Ordering::Relaxed) {
        return Err(TuneError::Cancelled);
    }
    if rank > 0 {
        // Rank 0 saves and reports the run.
        return Ok(Outcome { train: outcome.train, eval: None, stats: json!({}) });
    }
    let adapter_bytes = lora::save_adapter(&spec.dirs.out_dir, &lora_cfg, &vs, &spec.base_name)?;
    save_extras(&spec, &spec.dirs.out_dir)?;
    if let Json::Object(o) = &mut stats {
        o.insert("adapter_bytes".into(), json!(adapter_bytes));
        o.insert(
            "train_tokens_per_second".into(),
            json!((outcome.tokens_per_second * 10.0).round() / 10.0),
        );
        o.insert("gradient_checkpointing".into(), json!(outcome.checkpointing));
        if let Some(p) = peak.finish() {
            o.insert("peak_rss_bytes".into(), json!(p));
        }
    }
    Ok(Outcome { train: outcome.train, eval: outcome.eval, stats })
}

/// Writes what goes with the adapter into `out`: the base's tokenizer files (a Hugging
/// Face base) and `training_args.json` (without `hub_token`, which never serialises).
fn save_extras(spec: &ConversationSpec, out: &std::path::Path) -> Result<()> {
    let io = |what: &str, e: &dyn std::fmt::Display| {
        TuneError::Internal(format!("saving {what} in {}: {e}", out.display()))
    };
    if spec.base.is_dir() {
        for name in TOKENIZER_FILES {
            let src = spec.base.join(name);
            if src.is_file() {
                std::fs::copy(&src, out.join(name)).map_err(|e| io(name, &e))?;
            }
        }
    }
    let args =
        serde_json::to_string_pretty(&spec.training).map_err(|e| io("training_args.json", &e))?;
    std::fs::write(out.join("training_args.json"), args)
        .map_err(|e| io("training_args.json", &e))?;
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

/// Runs the causal-LM trainer (from the checkpoint `resume_from` when given), relaying its
/// events, calling `on_save` every `save_steps`, polling `cancel`.
fn train_and_report(
    model: &Llama,
    vs: &nn::VarStore,
    (train, eval): (&[TokenizedExample], &[TokenizedExample]),
    (args, pad_id, resume_from): (&TrainingArgs, i64, Option<&std::path::Path>),
    (tx, on_save): (&UnboundedSender<Progress>, impl FnMut(&CausalSavePoint<'_, '_>)),
    (cancel, group): (&AtomicBool, Option<&mut pgmld_train::ProcessGroup>),
) -> Result<Trained> {
    let clock = Instant::now();
    let on_event = |e: CausalTrainEvent| {
        let _ = tx.send(match e {
            CausalTrainEvent::Log(ev) => Progress::Log(ev, clock.elapsed().as_secs_f64()),
            CausalTrainEvent::Eval { step, epoch, metrics } => Progress::Eval {
                step,
                epoch,
                metrics: serde_json::to_value(metrics).unwrap_or_default(),
            },
        });
    };
    let should_stop = || cancel.load(Ordering::Relaxed);
    let outcome = train_causal_lm_data_parallel(
        model,
        vs,
        (train, eval),
        (args, pad_id),
        Hooks { on_event, on_save, should_stop },
        resume_from,
        group,
    )?;
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
