//! The arguments of a text-generation or conversational `pgml.transform` call, checked:
//! which model (and adapter, and whether to quantise it), the sampling arguments in
//! Hugging Face `generate` terms, and the inputs (chat messages or prompts).
//!
//! Defaults follow `transformers`: what the call leaves unset comes from the model's
//! `generation_config.json`, then from `transformers`' own defaults (greedy unless
//! `do_sample` is true; temperature, top_p and top_k then apply; top_k defaults to 50), one
//! sequence per input. The layering happens on the model's worker, which knows the model
//! ([`Sampling::config`]). pgmld's additions:
//! `max_tokens` (OpenAI's name for `max_new_tokens`), `stop` strings, `seed`, and
//! `return_usage`, which wraps the result with token counts (see [`crate::chat`]).

use std::path::PathBuf;

use pgmld_llm::generate::{GenerationConfig, GenerationDefaults};
use pgmld_sql::Value;
use serde_json::{Map, Value as Json};

use crate::error::TransformError;

/// Generation tasks `pgml.transform` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenTask {
    /// `inputs` are the messages of one conversation; the answer is the assistant's reply
    /// (the chat template is applied).
    Conversational,
    /// Each input is a prompt continued as is (no template), as the HF pipeline does.
    TextGeneration,
}

impl GenTask {
    /// The task name as callers write it.
    pub fn name(self) -> &'static str {
        match self {
            GenTask::Conversational => "conversational",
            GenTask::TextGeneration => "text-generation",
        }
    }

    /// The generation task `name` stands for, if any.
    pub fn parse(name: &str) -> Option<GenTask> {
        match name {
            "conversational" | "conversation" | "chat" => Some(GenTask::Conversational),
            "text-generation" => Some(GenTask::TextGeneration),
            _ => None,
        }
    }
}

/// Most new tokens one call may ask for; the model's context length bounds it further.
pub const MAX_NEW_TOKENS_LIMIT: usize = 32_768;
pub use pgmld_llm::generate::DEFAULT_MAX_NEW_TOKENS;
/// Most sequences per input (`num_return_sequences` / `n`).
pub const MAX_SEQUENCES: usize = 16;
/// Most `stop` strings.
const MAX_STOP_STRINGS: usize = 16;

/// Keys of the task object for generation.
const TASK_KEYS: &[&str] = &[
    "task",
    "model",
    "revision",
    "device",
    "device_map",
    "torch_dtype",
    "trust_remote_code",
    "load_in_8bit",
    "adapter",
    "token",
    "use_auth_token",
    "model_type",
];

/// Task-object keys accepted for PostgresML compatibility that change nothing here: the
/// architecture comes from the model's own config, device placement is pgmld's
/// configuration, and no remote code ever runs. Each one given earns the call a NOTICE.
const IGNORED_TASK_KEYS: &[&str] = &["model_type", "trust_remote_code", "device_map", "device"];

/// Keys of `args` for generation.
const ARGS_KEYS: &[&str] = &[
    "max_new_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "do_sample",
    "seed",
    "stop",
    "num_return_sequences",
    "n",
    "chat_template",
    "return_full_text",
    "return_usage",
    "eos_token",
    // Accepted without effect: pgmld pads nothing and always uses the KV cache.
    "pad_token_id",
    "use_cache",
    "batch_size",
];

/// Roles a chat message may have.
pub const ROLES: &[&str] = &["system", "user", "assistant"];

/// How to sample, in `transformers.generate` terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// The settings the call names (`max_new_tokens`, `do_sample`, `temperature`, `top_p`,
    /// `top_k` with 0 for "all", `repetition_penalty`); the unset ones come from the
    /// model's generation_config.json, then `transformers`' defaults.
    pub settings: GenerationDefaults,
    /// Seed of the sampler, for reproducible samples.
    pub seed: Option<u64>,
    /// Strings that end the answer (not included in it).
    pub stop: Vec<String>,
    /// Extra token that ends generation (PostgresML's `eos_token`), by its text.
    pub eos_token: Option<String>,
}

/// A checked generation request (everything but the inputs).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Which task.
    pub task: GenTask,
    /// Model name as given: `pgml:<id>`, a project, a directory, a `.gguf` file or a Hub id.
    pub model: String,
    /// Hub revision.
    pub revision: Option<String>,
    /// Quantise the frozen weights to int8 (per-channel scales) at load.
    pub load_in_8bit: bool,
    /// A LoRA adapter directory (peft layout) applied on top of the model.
    pub adapter: Option<PathBuf>,
    /// How to sample.
    pub sampling: Sampling,
    /// Sequences per input.
    pub num_return_sequences: usize,
    /// A Jinja chat template replacing the model's (conversational only).
    pub chat_template: Option<String>,
    /// text-generation: prefix each answer with its prompt (the HF pipeline's default).
    pub return_full_text: bool,
    /// Wrap the result as `{"outputs", "finish_reasons", "usage"}`.
    pub return_usage: bool,
    /// Whether the call set `return_full_text` itself (a chat given to text-generation
    /// cannot honour it).
    pub return_full_text_explicit: bool,
    /// Task-object keys the call gave that pgmld accepts without effect
    /// ([`IGNORED_TASK_KEYS`]), so the caller hears about them in a NOTICE.
    pub ignored_keys: Vec<String>,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// system, user or assistant.
    pub role: String,
    /// The text.
    pub content: String,
}

/// The inputs of a generation call.
#[derive(Debug, Clone, PartialEq)]
pub enum GenInputs {
    /// One conversation, in order.
    Messages(Vec<Message>),
    /// Prompts, each generated from separately.
    Prompts(Vec<String>),
}

/// A whole generation call: what to do and on what. [`crate::Transformer::generate`] and
/// [`crate::Transformer::stream`] take it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateCall {
    /// The request.
    pub request: GenerateRequest,
    /// The inputs.
    pub inputs: GenInputs,
}

impl GenerateCall {
    /// Parses a call from its SQL arguments: the task (jsonb or text), `args` (jsonb or
    /// NULL) and `inputs` (an array of texts or jsonb; a single text may be passed as a
    /// one-element array).
    pub fn parse(
        task: &Value,
        args: &Value,
        inputs: &Value,
    ) -> Result<GenerateCall, TransformError> {
        let task = crate::request::task_object(task)?;
        let mut request = generate_request(&task, args)?;
        if request.task == GenTask::TextGeneration && chat_messages(inputs) {
            // transformers' text-generation pipeline treats a list of chat messages as one
            // conversation (its `Chat` input); so does pgmld, rather than continuing each
            // message as a prompt of its own.
            if request.return_full_text_explicit {
                return Err(TransformError::bad(
                    "return_full_text cannot be used when inputs are chat messages",
                    "Chat messages are answered as a conversation: the result is the assistant's reply.",
                ));
            }
            request.task = GenTask::Conversational;
            request.return_full_text = false;
        }
        let inputs = gen_inputs(request.task, inputs)?;
        Ok(GenerateCall { request, inputs })
    }
}

/// The NOTICE for a task-object key pgmld accepts without effect ([`IGNORED_TASK_KEYS`]).
pub fn ignored_key_notice(key: &str) -> String {
    let why = match key {
        "model_type" => "the architecture is read from the model's own config",
        "trust_remote_code" => {
            "pgmld runs no model code from the Hub; its architectures are built in"
        }
        _ => "device placement is pgmld's transform_device setting",
    };
    format!("task key \"{key}\" has no effect in pgmld: {why}")
}

/// Whether `inputs` are chat messages: jsonb (or JSON text) objects with a `"role"` key,
/// every one of them. A mix of messages and prompts is left to [`gen_inputs`], which then
/// names the element that is not a prompt.
fn chat_messages(inputs: &Value) -> bool {
    let is_message = |v: &Value| match v {
        Value::Json(Json::Object(m)) => m.contains_key("role"),
        Value::Text(t) if t.trim_start().starts_with('{') => {
            matches!(serde_json::from_str::<Json>(t), Ok(Json::Object(m)) if m.contains_key("role"))
        }
        _ => false,
    };
    match inputs {
        Value::Array(items) => !items.is_empty() && items.iter().all(is_message),
        single => is_message(single),
    }
}

fn bad(message: impl Into<String>) -> TransformError {
    TransformError::bad(message, "")
}

fn unknown_key(what: &str, key: &str, allowed: &[&str]) -> TransformError {
    TransformError::bad(
        format!("unknown {what} key \"{key}\""),
        format!("Supported keys: {}.", allowed.join(", ")),
    )
}

/// A boolean option: JSON true/false, or a string Postgres' `boolean` input would read
/// (`"true"`, `"f"`, `"yes"`, `"off"`, `"1"`, ...), since PostgresML's SDK passes its
/// kwargs through as strings (`"load_in_8bit": "true"`).
fn get_bool(m: &Map<String, Json>, key: &str, default: bool) -> Result<bool, TransformError> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(default),
        Some(Json::Bool(b)) => Ok(*b),
        Some(Json::String(s)) => pgmld_sql::parse_bool(s)
            .ok_or_else(|| bad(format!("{key} must be true or false, not \"{s}\""))),
        Some(other) => Err(bad(format!("{key} must be true or false, not {other}"))),
    }
}

fn get_f64(m: &Map<String, Json>, key: &str) -> Result<Option<f64>, TransformError> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| bad(format!("{key} must be a number, not {v}"))),
    }
}

fn get_uint(m: &Map<String, Json>, key: &str) -> Result<Option<u64>, TransformError> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match (v.as_u64(), v.as_f64()) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(f)) if f.fract() == 0.0 && (0.0..1e18).contains(&f) => Ok(Some(f as u64)),
            _ => Err(bad(format!("{key} must be a non-negative integer, not {v}"))),
        },
    }
}

fn get_string(m: &Map<String, Json>, key: &str) -> Result<Option<String>, TransformError> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!("{key} must be a string, not {other}"))),
    }
}

/// Checks the task object and `args` of a generation call.
pub fn generate_request(
    task: &Map<String, Json>,
    args: &Value,
) -> Result<GenerateRequest, TransformError> {
    let name = task.get("task").and_then(Json::as_str).unwrap_or_default();
    let gen_task = GenTask::parse(name)
        .ok_or_else(|| bad(format!("task \"{name}\" is not a generation task")))?;
    if task.contains_key("load_in_4bit") || task.contains_key("quantization_config") {
        return Err(TransformError::Unsupported(
            "4-bit and GPTQ quantisation are not supported for inference; use \"load_in_8bit\": true".into(),
        ));
    }
    if let Some(k) =
        task.keys().find(|k| !TASK_KEYS.contains(&k.as_str()) && !ARGS_KEYS.contains(&k.as_str()))
    {
        let known: Vec<&str> = TASK_KEYS.iter().chain(ARGS_KEYS).copied().collect();
        return Err(unknown_key("task", k, &known));
    }
    if let Some(Json::String(t)) = task.get("model_type") {
        if t.trim().is_empty() {
            return Err(bad("model_type must not be empty"));
        }
    } else if let Some(other) = task.get("model_type").filter(|v| !v.is_null()) {
        return Err(bad(format!("model_type must be a string, not {other}")));
    }
    get_bool(task, "trust_remote_code", false)?;
    let ignored_keys: Vec<String> = IGNORED_TASK_KEYS
        .iter()
        .filter(|k| task.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    let model = match task.get("model") {
        Some(Json::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        Some(other) if !other.is_string() => return Err(bad(format!("\"model\" must be a string, not {other}"))),
        _ => {
            return Err(TransformError::bad(
                "the task object names no model",
                "Add \"model\": a pgml project name, pgml:<model id>, a local directory or .gguf file, or a Hub repo id.",
            ))
        }
    };
    let revision = get_string(task, "revision")?.filter(|r| !r.trim().is_empty());
    let load_in_8bit = get_bool(task, "load_in_8bit", false)?;
    let adapter = get_string(task, "adapter")?
        .map(|a| PathBuf::from(a.strip_prefix("file://").unwrap_or(&a)));
    let mut args = match args {
        Value::Null => Map::new(),
        Value::Json(Json::Object(m)) => m.clone(),
        Value::Json(other) => return Err(bad(format!("args must be a JSON object, not {other}"))),
        Value::Text(t) => match serde_json::from_str::<Json>(t) {
            Ok(Json::Object(m)) => m,
            Ok(other) => return Err(bad(format!("args must be a JSON object, not {other}"))),
            Err(e) => {
                return Err(TransformError::InvalidJson(format!("args is not valid JSON: {e}")))
            }
        },
        other => return Err(bad(format!("args must be jsonb, not {}", other.describe()))),
    };
    if let Some(k) = args.keys().find(|k| !ARGS_KEYS.contains(&k.as_str())) {
        return Err(unknown_key("args", k, ARGS_KEYS));
    }
    // PostgresML's SDK puts generation settings in the task object (its kwargs); the
    // call's explicit `args` win where both name one.
    for key in ARGS_KEYS {
        if let Some(v) = task.get(*key) {
            args.entry(key.to_string()).or_insert_with(|| v.clone());
        }
    }
    let return_full_text_explicit = args.get("return_full_text").is_some_and(|v| !v.is_null());
    let sampling = sampling(&args)?;
    let num_return_sequences =
        match (get_uint(&args, "num_return_sequences")?, get_uint(&args, "n")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(format!("num_return_sequences ({a}) and n ({b}) disagree")))
            }
            (a, b) => a.or(b).unwrap_or(1),
        };
    if num_return_sequences == 0 || num_return_sequences > MAX_SEQUENCES as u64 {
        return Err(bad(format!("num_return_sequences must be between 1 and {MAX_SEQUENCES}, not {num_return_sequences}")));
    }
    // Greedy by the call's own settings: refused before any model loads. With do_sample
    // unset, the model's generation_config.json decides (checked once it is loaded).
    let explicit = GenerationDefaults {
        do_sample: sampling.settings.do_sample.or(Some(false)),
        ..sampling.settings.clone()
    };
    if sampling.settings.do_sample.is_some() || sampling.settings.temperature == Some(0.0) {
        check_sequences(num_return_sequences as usize, &explicit.to_config())?;
    }
    let chat_template = get_string(&args, "chat_template")?;
    if chat_template.is_some() && gen_task != GenTask::Conversational {
        return Err(bad("chat_template applies to the conversational task only"));
    }
    let return_full_text =
        get_bool(&args, "return_full_text", gen_task == GenTask::TextGeneration)?;
    if return_full_text && gen_task == GenTask::Conversational {
        return Err(bad("return_full_text applies to the text-generation task only"));
    }
    Ok(GenerateRequest {
        task: gen_task,
        model,
        revision,
        load_in_8bit,
        adapter,
        sampling,
        num_return_sequences: num_return_sequences as usize,
        chat_template,
        return_full_text,
        return_usage: get_bool(&args, "return_usage", false)?,
        return_full_text_explicit,
        ignored_keys,
    })
}

impl Sampling {
    /// The generation config for a model whose generation_config.json gave `model`: the
    /// call's settings over the model's, the rest `transformers`' defaults; the call's
    /// seed moved along by `seed_offset` (so `n` samples differ, each reproducible). Stop
    /// ids are the model's to add.
    pub fn config(&self, model: &GenerationDefaults, seed_offset: u64) -> GenerationConfig {
        GenerationConfig {
            seed: self.seed.map(|seed| seed.wrapping_add(seed_offset)),
            ..self.settings.over(model).to_config()
        }
    }
}

/// Refuses `num_return_sequences` > 1 with greedy decoding (it would return the same
/// sequence `n` times), once the model's defaults are known: `transformers` refuses it too.
pub fn check_sequences(n: usize, cfg: &GenerationConfig) -> Result<(), TransformError> {
    if n > 1 && !cfg.is_sampling() {
        return Err(TransformError::bad(
            format!(
                "num_return_sequences {n} needs sampling: greedy decoding returns one sequence"
            ),
            "Add \"do_sample\": true (with a temperature > 0).",
        ));
    }
    Ok(())
}

fn sampling(args: &Map<String, Json>) -> Result<Sampling, TransformError> {
    // The key the limit came from, for the error: PostgresML's SDK and OpenAI clients
    // send `max_tokens`, transformers callers `max_new_tokens`.
    let (max_key, max_new_tokens) =
        match (get_uint(args, "max_new_tokens"), get_uint(args, "max_tokens")) {
            (Ok(Some(a)), Ok(Some(b))) if a != b => {
                return Err(bad(format!("max_new_tokens ({a}) and max_tokens ({b}) disagree")))
            }
            (Ok(Some(a)), Ok(_)) => ("max_new_tokens", Some(a)),
            (Ok(None), Ok(b)) => ("max_tokens", b),
            (Err(_), _) | (_, Err(_)) => {
                let (key, v) = ["max_new_tokens", "max_tokens"]
                    .iter()
                    .find_map(|k| args.get(*k).map(|v| (*k, v.clone())))
                    .unwrap_or(("max_new_tokens", Json::Null));
                return Err(bad(format!("{key} must be a positive integer, not {v}")));
            }
        };
    if let Some(n) = max_new_tokens.filter(|&n| n == 0 || n > MAX_NEW_TOKENS_LIMIT as u64) {
        return Err(TransformError::bad(
            format!("{max_key} must be between 1 and {MAX_NEW_TOKENS_LIMIT}, not {n}"),
            "The model's context length bounds it further.",
        ));
    }
    let temperature = get_f64(args, "temperature")?;
    if let Some(t) = temperature.filter(|t| *t < 0.0) {
        return Err(bad(format!("temperature must be >= 0, not {t}")));
    }
    let top_p = get_f64(args, "top_p")?;
    if let Some(p) = top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(bad(format!("top_p must be in (0, 1], not {p}")));
    }
    let top_k = match args.get("top_k") {
        // null: every token, as 0 is in transformers.
        Some(Json::Null) => Some(0),
        _ => get_uint(args, "top_k")?.map(|k| k as usize),
    };
    let repetition_penalty = get_f64(args, "repetition_penalty")?;
    if let Some(r) = repetition_penalty.filter(|r| *r <= 0.0) {
        return Err(bad(format!("repetition_penalty must be > 0, not {r}")));
    }
    let do_sample = match args.get("do_sample") {
        None | Some(Json::Null) => None,
        _ => Some(get_bool(args, "do_sample", false)?),
    };
    let stop = match args.get("stop") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("stop must hold strings, not {i}")))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(bad(format!("stop must be a string or an array of strings, not {other}")))
        }
    };
    if stop.iter().any(String::is_empty) || stop.len() > MAX_STOP_STRINGS {
        return Err(bad(format!("stop takes 1 to {MAX_STOP_STRINGS} non-empty strings")));
    }
    Ok(Sampling {
        settings: GenerationDefaults {
            max_new_tokens: max_new_tokens.map(|n| n as usize),
            do_sample,
            temperature,
            top_p,
            top_k,
            repetition_penalty,
        },
        seed: get_uint(args, "seed")?,
        stop,
        eos_token: get_string(args, "eos_token")?,
    })
}

/// The inputs of a generation call: for conversational, each element one message as JSON
/// (`{"role", "content"}`, from `jsonb[]` or `text[]`); for text-generation, prompts.
pub fn gen_inputs(task: GenTask, inputs: &Value) -> Result<GenInputs, TransformError> {
    let items: Vec<Value> = match inputs {
        Value::Array(items) => items.clone(),
        Value::Null => return Err(TransformError::NullInput("inputs is NULL".into())),
        single @ (Value::Text(_) | Value::Json(_)) => vec![single.clone()],
        other => {
            return Err(bad(format!("inputs must be text[] or jsonb[], not {}", other.describe())))
        }
    };
    if items.is_empty() {
        let (what, example) = match task {
            GenTask::Conversational => (
                "no messages",
                "inputs => ARRAY['{\"role\": \"user\", \"content\": \"Hello\"}'::jsonb]",
            ),
            GenTask::TextGeneration => ("no prompt", "inputs => ARRAY['Once upon a time']"),
        };
        return Err(TransformError::bad(
            format!("inputs is empty: {what}"),
            format!("Pass e.g. {example}."),
        ));
    }
    match task {
        GenTask::TextGeneration => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Null => Err(TransformError::NullInput(format!("inputs[{}] is NULL", i + 1))),
                Value::Text(t) => Ok(t.clone()),
                Value::Json(Json::String(s)) => Ok(s.clone()),
                Value::Json(j) => Ok(j.to_string()),
                other => {
                    Err(bad(format!("inputs[{}] must be text, not {}", i + 1, other.describe())))
                }
            })
            .collect::<Result<_, _>>()
            .map(GenInputs::Prompts),
        GenTask::Conversational => items
            .iter()
            .enumerate()
            .map(|(i, v)| message(i + 1, v))
            .collect::<Result<_, _>>()
            .map(GenInputs::Messages),
    }
}

fn message(position: usize, v: &Value) -> Result<Message, TransformError> {
    let hint = "Each input is one message: '{\"role\": \"user\", \"content\": \"...\"}'::jsonb (role system, user or assistant).";
    let json = match v {
        Value::Null => {
            return Err(TransformError::NullInput(format!("inputs[{position}] is NULL")))
        }
        Value::Json(j) => j.clone(),
        Value::Text(t) => serde_json::from_str(t).map_err(|_| {
            TransformError::bad(
                format!("inputs[{position}] is not a JSON chat message: {}", shorten(t)),
                hint,
            )
        })?,
        other => {
            return Err(TransformError::bad(
                format!("inputs[{position}] must be jsonb, not {}", other.describe()),
                hint,
            ))
        }
    };
    let Json::Object(m) = json else {
        return Err(TransformError::bad(
            format!("inputs[{position}] must be a JSON object, not {json}"),
            hint,
        ));
    };
    let role = match m.get("role") {
        Some(Json::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
        Some(Json::String(r)) => {
            return Err(TransformError::bad(
                format!("inputs[{position}] has unknown role \"{r}\""),
                format!("Roles: {}.", ROLES.join(", ")),
            ))
        }
        Some(other) => {
            return Err(TransformError::bad(
                format!("inputs[{position}]: role must be a string, not {other}"),
                hint,
            ))
        }
        None => {
            return Err(TransformError::bad(format!("inputs[{position}] has no \"role\""), hint))
        }
    };
    let content = match m.get("content") {
        Some(Json::String(c)) => c.clone(),
        // OpenAI's content parts: the text parts joined.
        Some(Json::Array(parts)) => parts
            .iter()
            .map(|p| {
                match (p.get("type").and_then(Json::as_str), p.get("text").and_then(Json::as_str)) {
                    (Some("text"), Some(t)) => Ok(t.to_string()),
                    _ => Err(bad(format!(
                        "inputs[{position}]: only text content parts are supported, not {p}"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(""),
        Some(Json::Null) | None => {
            return Err(TransformError::bad(format!("inputs[{position}] has no \"content\""), hint))
        }
        Some(other) => {
            return Err(TransformError::bad(
                format!("inputs[{position}]: content must be a string, not {other}"),
                hint,
            ))
        }
    };
    Ok(Message { role, content })
}

fn shorten(t: &str) -> String {
    if t.chars().count() > 60 {
        format!("\"{}…\"", t.chars().take(60).collect::<String>())
    } else {
        format!("\"{t}\"")
    }
}

#[cfg(test)]
#[path = "generation_tests.rs"]
mod tests;
