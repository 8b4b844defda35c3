//! `llm_check train`: one LoRA fine-tuning run through `causal_train::train_causal_lm`,
//! built as `pgml.tune(task => 'conversation')` builds it (crates/pgmld-tune's
//! conversation job: f32 base model, optional int8 quantisation, LoRA adapter, rows
//! rendered with the chat template, loss on the replies), with one option set per process
//! so the shell runner can read each option's peak GPU memory.

use std::path::Path;
use std::time::Instant;

use pgmld_llm::causal_train::{train_causal_lm, CausalTrainEvent};
use pgmld_llm::conversation::{
    encode_conversations, ConversationArgs, ConversationRow, PromptFormat,
};
use pgmld_llm::llama::Llama;
use pgmld_llm::lora::{apply, LoraConfig};
use pgmld_llm::quant::quantize_int8;
use pgmld_llm::source::{open_with, OpenOptions};
use pgmld_train::training_args::TrainingArgs;
use serde_json::{json, Value};
use tch::{nn, Kind};

use crate::{emit, sync, CheckError, CheckResult, Flags};

/// The option sets compared (`--option`): TrainingArgs overrides and whether the base
/// weights are quantised to int8 (`load_in_8bit`).
pub fn option_settings(option: &str) -> CheckResult<(Value, bool)> {
    Ok(match option {
        "fp32" => (json!({}), false),
        "bf16" => (json!({"bf16": true}), false),
        "load_in_8bit" => (json!({}), true),
        "adamw_bnb_8bit" => (json!({"optim": "adamw_bnb_8bit"}), false),
        "gradient_checkpointing" => (json!({"gradient_checkpointing": true}), false),
        "bf16_gradient_checkpointing" => (json!({"bf16": true, "gradient_checkpointing": true}), false),
        "graphs" => (json!({"cuda_graphs": true}), false),
        "bf16_graphs" => (json!({"bf16": true, "cuda_graphs": true}), false),
        other => {
            return Err(CheckError(format!(
                "--option {other:?}: expected fp32, bf16, load_in_8bit, adamw_bnb_8bit, gradient_checkpointing, \
                 bf16_gradient_checkpointing, graphs or bf16_graphs"
            )))
        }
    })
}

/// pgml.tune's training arguments for this comparison (bench/chat's TRAIN settings), with
/// `extra` on top.
pub fn training_args(steps: i64, logging_steps: i64, extra: &Value) -> CheckResult<TrainingArgs> {
    let mut args = json!({
        "learning_rate": 2e-4, "per_device_train_batch_size": 8, "max_steps": steps,
        "logging_steps": logging_steps, "save_steps": 1_000_000, "seed": 42, "optim": "adamw_torch",
        "max_grad_norm": 1.0, "warmup_steps": 0, "weight_decay": 0.0, "lr_scheduler_type": "linear",
    });
    if let Value::Object(o) = extra {
        for (k, v) in o {
            args[k] = v.clone();
        }
    }
    Ok(TrainingArgs::from_json(&args)?)
}

/// The rows of a JSONL file (`{"system", "user", "assistant"}` per line).
pub fn read_rows(path: &Path, limit: usize) -> CheckResult<Vec<ConversationRow>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CheckError(format!("{}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).take(limit).enumerate() {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| CheckError(format!("{} line {}: {e}", path.display(), i + 1)))?;
        let field = |k: &str| {
            v[k].as_str().map(str::to_string).ok_or_else(|| {
                CheckError(format!("{} line {}: no string {k:?}", path.display(), i + 1))
            })
        };
        rows.push(ConversationRow {
            system: Some(field("system")?),
            user: field("user")?,
            assistant: field("assistant")?,
        });
    }
    if rows.len() < limit {
        return Err(CheckError(format!(
            "{} holds {} rows, {limit} needed",
            path.display(),
            rows.len()
        )));
    }
    Ok(rows)
}

/// Runs one training measurement and prints its JSON line.
pub fn run(model_path: &Path, rows_path: &Path, flags: &Flags) -> CheckResult<()> {
    let device = flags.device()?;
    let option = flags.text("option", "fp32");
    let tag = flags.text("tag", &option);
    let steps: i64 = flags.number("steps", 20)?;
    let logging_steps: i64 = flags.number("logging-steps", 5)?;
    let (extra, int8) = option_settings(&option)?;
    let args = training_args(steps, logging_steps, &extra)?;
    let started = Instant::now();
    let loaded = open_with(model_path, &OpenOptions::new(device))?;
    let (config, tokenizer, template) =
        (loaded.config.clone(), loaded.tokenizer.clone(), loaded.template());
    let mut weights = loaded.weights;
    let mut model = Llama::load(config.clone(), &mut weights, device, Kind::Float)?;
    drop(weights);
    let quant = int8.then(|| quantize_int8(&mut model));
    tch::manual_seed(42);
    let vs = nn::VarStore::new(device);
    let lora = LoraConfig::from_json(
        &json!({"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none",
                                              "task_type": "CAUSAL_LM"}),
    )?;
    let summary = apply(&mut model, &lora, &vs)?;
    sync(device);
    let load_s = started.elapsed().as_secs_f64();

    let rows = read_rows(rows_path, steps as usize * args.per_device_train_batch_size)?;
    let encode_args = ConversationArgs { max_seq_length: 256, ..Default::default() };
    let format = PromptFormat::ChatTemplate(template);
    let encoded = encode_conversations(
        &rows,
        &tokenizer,
        &format,
        &encode_args,
        config.max_position_embeddings,
    )?;
    let train = encoded.examples;
    let pad = tokenizer
        .pad_id()
        .or_else(|| tokenizer.eos_token().map(|t| t.id))
        .ok_or_else(|| CheckError("no pad or EOS token".into()))?;
    let real_tokens: usize = train.iter().map(|e| e.input_ids.len()).sum();
    let label_tokens: usize = train.iter().map(|e| e.num_label_tokens()).sum();

    let mut logs: Vec<(i64, f64, f64)> = Vec::new();
    let t0 = Instant::now();
    let out = train_causal_lm(
        &model,
        &vs,
        &train,
        &[],
        &args,
        pad,
        |e| {
            if let CausalTrainEvent::Log(ev) = e {
                logs.push((ev.step, ev.loss, t0.elapsed().as_secs_f64()));
            }
        },
        |_| {},
        || false,
        None,
    )?;
    sync(device);
    // Steps/s between the first and the last log: leaves out the first steps' one-off
    // costs (cuBLAS handles, allocator growth), as the HF side does with its on_log times.
    let steady = match (logs.first(), logs.last()) {
        (Some(a), Some(b)) if b.0 > a.0 && b.2 > a.2 => Some((b.0 - a.0) as f64 / (b.2 - a.2)),
        _ => None,
    };
    emit(
        "train",
        &tag,
        device,
        json!({
            "option": option, "steps": out.train.global_step, "batch_size": args.per_device_train_batch_size,
            "train_runtime": out.train.train_runtime, "train_tokens_per_second": out.train.train_tokens_per_second,
            "train_samples_per_second": out.train.train_samples_per_second,
            "steady_steps_per_second": steady,
            "tokens_per_step": real_tokens as f64 / train.len().max(1) as f64 * args.per_device_train_batch_size as f64,
            "train_tokens": real_tokens, "label_tokens": label_tokens,
            "loss_first": logs.first().map(|l| l.1), "loss_last": logs.last().map(|l| l.1),
            "loss_log": logs.iter().map(|l| l.1).collect::<Vec<_>>(), "train_loss": out.train.train_loss,
            "gradient_checkpointing": out.train.gradient_checkpointing, "bf16": args.bf16,
            "optim": args.optim.name(), "load_in_8bit": int8, "cuda_graphs": out.cuda_graphs,
            "int8_linears": quant.as_ref().map(|q| q.linears),
            "trainable_params": summary.params.trainable, "load_s": load_s,
        }),
    );
    Ok(())
}
