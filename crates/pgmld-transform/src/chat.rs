//! Conversational and text-generation calls end to end: find the model (and its adapter),
//! get it from the shared cache, generate on its worker thread, shape the JSON.
//!
//! Result shapes, as PostgresML / Hugging Face return them:
//! - conversational: a JSON array with the assistant's reply, one string per returned
//!   sequence (`["Paris is the capital of France."]`);
//! - text-generation: per input, a list of `{"generated_text"}` (prompt included unless
//!   `return_full_text` is false): `[[{"generated_text": "…"}]]`.
//!
//! With `"return_usage": true` in `args` (a pgmld addition), the result is instead
//! `{"outputs": <the above>, "finish_reasons": ["stop" | "length", …],
//! "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}`, so clients can report
//! real token counts. [`Transformer::stream`] yields `["piece"]` rows as PostgresML's
//! `transform_stream` does, plus, with `return_usage`, a last
//! `{"finish_reason", "usage"}` row.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pgmld_llm::chat_model::ChatOutput;
use pgmld_llm::generate::FinishReason;
use pgmld_models::resolve::{self, ModelRef, ModelSource};
use pgmld_models::{access, ModelError};
use pgmld_sql::{CallContext, Caller, SqlError};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::chat_worker::{not_causal_lm, ChatHandle, ChatSource, JobInput, StopFn};
use crate::error::TransformError;
use crate::generation::{GenInputs, GenTask, GenerateCall, GenerateRequest};
use crate::transformer::{cache_key, Transformer};

/// Project tasks whose stored models can generate.
const CHAT_TASKS: &[&str] = &["conversation", "conversational", "text-generation"];

/// Architectures the decoder runs (`model_type` in config.json).
const CAUSAL_LM_TYPES: &[&str] = &["llama", "mistral", "qwen2"];

/// Token counts of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens (each distinct prompt counted once).
    pub prompt_tokens: usize,
    /// Tokens generated, over all sequences.
    pub completion_tokens: usize,
}

impl Usage {
    /// OpenAI's usage object.
    pub fn to_json(self) -> Json {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// One event of a streamed generation ([`Transformer::stream_events`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Text as it is generated (valid UTF-8; never taken back).
    Piece(String),
    /// The end: why it stopped and the token counts.
    Done {
        /// `stop` or `length`.
        finish_reason: String,
        /// Token counts.
        usage: Usage,
    },
}

fn is_cancelled(out: &ChatOutput) -> bool {
    matches!(out.finish_reason, FinishReason::Cancelled)
}

/// The JSON result of a generation call from its outputs, in input order with each
/// input's `num_return_sequences` outputs together.
pub fn shape(req: &GenerateRequest, inputs: &GenInputs, outs: &[ChatOutput]) -> Json {
    let n = req.num_return_sequences.max(1);
    let outputs = match inputs {
        GenInputs::Messages(_) => {
            Json::Array(outs.iter().map(|o| Json::String(o.text.clone())).collect())
        }
        GenInputs::Prompts(prompts) => Json::Array(
            prompts
                .iter()
                .zip(outs.chunks(n))
                .map(|(prompt, seqs)| {
                    let texts = seqs.iter().map(|o| {
                        let text = if req.return_full_text {
                            format!("{prompt}{}", o.text)
                        } else {
                            o.text.clone()
                        };
                        json!({ "generated_text": text })
                    });
                    Json::Array(texts.collect())
                })
                .collect(),
        ),
    };
    if !req.return_usage {
        return outputs;
    }
    // Each input's sequences share one prompt: count it once.
    let usage = Usage {
        prompt_tokens: outs.chunks(n).map(|seqs| seqs.first().map_or(0, |o| o.prompt_tokens)).sum(),
        completion_tokens: outs.iter().map(|o| o.completion_tokens).sum(),
    };
    json!({
        "outputs": outputs,
        "finish_reasons": outs.iter().map(|o| o.finish_reason.as_str()).collect::<Vec<_>>(),
        "usage": usage.to_json(),
    })
}

fn job_inputs(inputs: &GenInputs) -> Vec<JobInput> {
    match inputs {
        GenInputs::Messages(m) => vec![JobInput::Chat(m.clone())],
        GenInputs::Prompts(p) => p.iter().map(|t| JobInput::Complete(t.clone())).collect(),
    }
}

/// A directory holding a peft adapter (adapter_config.json) named as a path.
fn local_adapter_dir(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(name.strip_prefix("file://").unwrap_or(name));
    (dir.join("adapter_config.json").is_file() && !dir.join("config.json").is_file()).then_some(dir)
}

/// `base_model_name_or_path` of the adapter in `dir`.
fn adapter_base(dir: &Path) -> Result<String, TransformError> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| missing(&dir.display().to_string(), format!("{}: {e}", path.display())))?;
    let json: Json = serde_json::from_str(&text).map_err(|e| {
        TransformError::bad(format!("{} is not valid JSON: {e}", path.display()), "")
    })?;
    match json.get("base_model_name_or_path").and_then(Json::as_str).map(str::trim) {
        Some(base) if !base.is_empty() => Ok(base.to_string()),
        _ => Err(TransformError::bad(
            format!("{} names no base_model_name_or_path", path.display()),
            "Set it to the base model the adapter was trained on, or name the base as \"model\" and this directory as \"adapter\".",
        )),
    }
}

fn missing(name: &str, detail: String) -> TransformError {
    TransformError::Model(ModelError::NotFound {
        message: format!("adapter \"{name}\" not found"),
        detail,
    })
}

/// Refuses a checkpoint directory whose config.json names another architecture, before
/// anything loads.
fn check_causal_lm(dir: &Path, model: &str) -> Result<(), TransformError> {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else { return Ok(()) };
    let model_type = serde_json::from_str::<Json>(&text)
        .ok()
        .and_then(|j| j.get("model_type").and_then(Json::as_str).map(str::to_string));
    match model_type {
        Some(t) if !CAUSAL_LM_TYPES.contains(&t.as_str()) => Err(not_causal_lm(
            model,
            format!(
                "{} has model_type \"{t}\" (supported causal LMs: {}).",
                dir.join("config.json").display(),
                CAUSAL_LM_TYPES.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// Modification time of `path` in nanoseconds (0 when unknown), so rewritten files reload.
fn stamp(path: &Path) -> u128 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn chat_key(r: &ModelRef, database: &str, req: &GenerateRequest, adapter: Option<&Path>) -> String {
    let base = match r {
        ModelRef::Gguf(file) => {
            let canon = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
            format!("gguf:{}@{}", canon.display(), stamp(&canon))
        }
        other => cache_key(other, database, req.revision.as_deref()),
    };
    let adapter = adapter.map_or(String::new(), |a| {
        let canon = std::fs::canonicalize(a).unwrap_or_else(|_| a.to_path_buf());
        format!("+adapter:{}@{}", canon.display(), stamp(&canon.join("adapter_model.safetensors")))
    });
    format!("chat:{base}{adapter}|int8={}", req.load_in_8bit)
}

impl Transformer {
    /// The chat model `req` names (with its adapter), loaded once for all sessions:
    /// a project tuned with task => 'conversation' or `pgml:<id>` (its adapter from
    /// pgml.files on the base named by `base_model_name_or_path`), a local directory or
    /// `.gguf` file, a local adapter directory, or a Hub repo (cache first when offline).
    pub async fn chat_model(
        &self,
        ctx: &CallContext,
        req: &GenerateRequest,
    ) -> Result<Arc<ChatHandle>, TransformError> {
        for key in &req.ignored_keys {
            let message = crate::generation::ignored_key_notice(key);
            (ctx.notices)(pgmld_sql::Notice { severity: "NOTICE", message });
        }
        let client = self.client(&ctx.database).await?;
        let caller = &ctx.caller;
        if !caller.read_server_files
            && (req.adapter.is_some() || resolve::looks_like_path(&req.model))
        {
            return Err(TransformError::Model(access::server_files_denied(caller)));
        }
        let local = if caller.read_server_files { local_adapter_dir(&req.model) } else { None };
        let (name, adapter) = match local {
            Some(dir) if req.adapter.is_some() => {
                return Err(TransformError::bad(
                    format!(
                        "model {} is itself a LoRA adapter; \"adapter\" cannot add another",
                        dir.display()
                    ),
                    "",
                ))
            }
            Some(dir) => (adapter_base(&dir)?, Some(dir)),
            None => (req.model.clone(), req.adapter.clone()),
        };
        if let Some(a) = &adapter {
            if !a.join("adapter_config.json").is_file() {
                return Err(missing(
                    &a.display().to_string(),
                    format!("{} is not a directory holding adapter_config.json.", a.display()),
                ));
            }
        }
        let r = resolve::locate(&client, &name, caller).await?;
        if let ModelRef::Stored { id, task, via } = &r {
            if !CHAT_TASKS.contains(&task.as_str()) {
                return Err(TransformError::WrongTask {
                    message: format!("model \"{}\" was trained for {task}, not {}", req.model, req.task.name()),
                    detail: format!("{via} resolves to pgml.models id {id}, whose project's task is {task}."),
                    hint: "Use a project tuned with task => 'conversation', or a causal LM (directory, .gguf file or Hub id).".into(),
                });
            }
        }
        let key = chat_key(&r, &ctx.database, req, adapter.as_deref());
        self.cache
            .get_or_load_chat(&key, &req.model, req.load_in_8bit, || {
                self.chat_source(&client, (&req.model, caller), r, adapter, req.revision.as_deref())
            })
            .await
    }

    async fn fetch_ref(
        &self,
        client: &Client,
        r: &ModelRef,
        revision: Option<&str>,
    ) -> Result<ModelSource, TransformError> {
        let tmp_root = self.work_dir.join("transform");
        Ok(resolve::fetch_at(client, r, revision, &self.hub, &tmp_root).await?)
    }

    /// The files of `r`: a stored adapter brings its base along.
    async fn chat_source(
        &self,
        client: &Client,
        (model, caller): (&str, &Caller),
        r: ModelRef,
        adapter: Option<PathBuf>,
        revision: Option<&str>,
    ) -> Result<ChatSource, TransformError> {
        let src = self.fetch_ref(client, &r, revision).await?;
        if !src.dir.join("adapter_config.json").is_file() {
            check_causal_lm(&src.dir, model)?;
            return Ok(ChatSource {
                base: src.dir.clone(),
                adapter,
                origin: src.origin.clone(),
                keep: vec![src],
            });
        }
        if adapter.is_some() {
            return Err(TransformError::bad(
                format!(
                    "model \"{model}\" is itself a LoRA adapter; \"adapter\" cannot add another"
                ),
                "",
            ));
        }
        let base_name = adapter_base(&src.dir)?;
        // The base a stored adapter was tuned on was its owner's to read then, and only
        // pgmld writes pgml.files; an adapter from elsewhere gets no such trust.
        let base_caller = match &r {
            ModelRef::Stored { .. } => Caller { read_server_files: true, ..caller.clone() },
            _ => caller.clone(),
        };
        let base_ref = resolve::locate(client, &base_name, &base_caller).await?;
        let base = self.fetch_ref(client, &base_ref, None).await?;
        if base.dir.join("adapter_config.json").is_file() {
            return Err(TransformError::Unsupported(format!(
                "model \"{model}\" is an adapter on {base_name}, itself an adapter; stacked adapters are not supported"
            )));
        }
        check_causal_lm(&base.dir, &base_name)?;
        Ok(ChatSource {
            base: base.dir.clone(),
            adapter: Some(src.dir.clone()),
            origin: format!("{} on base {}", src.origin, base.origin),
            keep: vec![src, base],
        })
    }

    /// Runs a conversational or text-generation call and returns its JSON result (see the
    /// module doc for the shapes).
    pub async fn generate(
        &self,
        ctx: &CallContext,
        call: &GenerateCall,
    ) -> Result<Json, TransformError> {
        let req = &call.request;
        let model = self.chat_model(ctx, req).await?;
        crate::generation::check_sequences(
            req.num_return_sequences,
            &req.sampling.config(&model.generation, 0),
        )?;
        let cancelled = ctx.cancelled.clone();
        let stop: StopFn = Arc::new(move || cancelled.load(Ordering::Relaxed));
        let inputs = job_inputs(&call.inputs);
        // All jobs queue at once; the worker runs them in this order.
        let (model, stop) = (&model, &stop);
        let pending = inputs.iter().flat_map(|input| {
            (0..req.num_return_sequences)
                .map(move |seq| model.generate(input.clone(), req, seq as u64, stop.clone(), None))
        });
        let answers = futures_util::future::join_all(pending).await;
        if ctx.is_cancelled() {
            return Err(TransformError::Cancelled);
        }
        let outs: Vec<ChatOutput> = answers.into_iter().collect::<Result<_, _>>()?;
        if outs.iter().any(is_cancelled) {
            return Err(TransformError::Cancelled);
        }
        Ok(shape(req, &call.inputs, &outs))
    }

    /// Streams one generation as PostgresML's `transform_stream` rows: `["piece"]` per
    /// piece of text as it is generated (text-generation first sends the prompt, as its
    /// streamer does, unless `return_full_text` is false), then, with `return_usage`, one
    /// `{"finish_reason", "usage"}` row. Errors arrive as the last item. Dropping the
    /// receiver cancels the generation at the next token, as does the client's cancel.
    pub fn stream(
        self: &Arc<Self>,
        ctx: CallContext,
        call: GenerateCall,
    ) -> mpsc::Receiver<Result<Json, SqlError>> {
        let (tx, rx) = mpsc::channel(32);
        let return_usage = call.request.return_usage;
        let mut events = self.stream_events(ctx, call);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let item = match event {
                    Ok(StreamEvent::Piece(p)) => Ok(json!([p])),
                    Ok(StreamEvent::Done { finish_reason, usage }) if return_usage => {
                        Ok(json!({"finish_reason": finish_reason, "usage": usage.to_json()}))
                    }
                    Ok(StreamEvent::Done { .. }) => continue,
                    Err(e) => Err(SqlError::from(e)),
                };
                if tx.send(item).await.is_err() {
                    break; // dropping `events` stops the generation
                }
            }
        });
        rx
    }

    /// [`Transformer::stream`] as typed events, for callers that build their own rows
    /// (the OpenAI endpoint's chunks, finish reasons, usage). One conversation or one
    /// prompt, one sequence.
    pub fn stream_events(
        self: &Arc<Self>,
        ctx: CallContext,
        call: GenerateCall,
    ) -> mpsc::Receiver<Result<StreamEvent, TransformError>> {
        let (tx, rx) = mpsc::channel(32);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.stream_into(&ctx, &call, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn stream_into(
        &self,
        ctx: &CallContext,
        call: &GenerateCall,
        tx: &mpsc::Sender<Result<StreamEvent, TransformError>>,
    ) -> Result<(), TransformError> {
        let req = &call.request;
        if req.num_return_sequences != 1 {
            return Err(TransformError::bad(
                "streaming returns one sequence: num_return_sequences must be 1",
                "",
            ));
        }
        let input = match &call.inputs {
            GenInputs::Prompts(p) if p.len() != 1 => {
                return Err(TransformError::bad(
                    format!("streaming takes one prompt, not {}", p.len()),
                    "Call it once per prompt.",
                ))
            }
            inputs => job_inputs(inputs).remove(0),
        };
        let model = self.chat_model(ctx, req).await?;
        let cancelled = ctx.cancelled.clone();
        let consumer = tx.clone();
        let stop: StopFn =
            Arc::new(move || cancelled.load(Ordering::Relaxed) || consumer.is_closed());
        if let (JobInput::Complete(prompt), GenTask::TextGeneration, true) =
            (&input, req.task, req.return_full_text)
        {
            if tx.send(Ok(StreamEvent::Piece(prompt.clone()))).await.is_err() {
                return Ok(());
            }
        }
        let (piece_tx, mut pieces) = mpsc::unbounded_channel();
        let generation = model.generate(input, req, 0, stop, Some(piece_tx));
        tokio::pin!(generation);
        let out = loop {
            tokio::select! {
                biased;
                Some(piece) = pieces.recv() => {
                    if tx.send(Ok(StreamEvent::Piece(piece))).await.is_err() {
                        return Ok(()); // the consumer left; the worker stops at the next token
                    }
                }
                out = &mut generation => break out?,
            }
        };
        while let Ok(piece) = pieces.try_recv() {
            if tx.send(Ok(StreamEvent::Piece(piece))).await.is_err() {
                return Ok(());
            }
        }
        if ctx.is_cancelled() || is_cancelled(&out) {
            return Err(TransformError::Cancelled);
        }
        let usage =
            Usage { prompt_tokens: out.prompt_tokens, completion_tokens: out.completion_tokens };
        let _ = tx
            .send(Ok(StreamEvent::Done {
                finish_reason: out.finish_reason.as_str().to_string(),
                usage,
            }))
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::generate_request;
    use pgmld_sql::Value;

    fn out(
        text: &str,
        prompt_tokens: usize,
        completion_tokens: usize,
        finish_reason: FinishReason,
    ) -> ChatOutput {
        ChatOutput { text: text.into(), prompt_tokens, completion_tokens, finish_reason }
    }

    fn request(task: &str, args: Json) -> GenerateRequest {
        generate_request(
            json!({"task": task, "model": "m"}).as_object().unwrap(),
            &Value::Json(args),
        )
        .unwrap()
    }

    #[test]
    fn results_take_the_pipeline_shapes() {
        let chat = request("conversational", json!({}));
        let msgs = GenInputs::Messages(vec![]);
        assert_eq!(
            shape(&chat, &msgs, &[out("Paris.", 20, 3, FinishReason::Stop)]),
            json!(["Paris."])
        );
        let tg = request("text-generation", json!({}));
        let prompts = GenInputs::Prompts(vec!["Once".into(), "Then".into()]);
        let outs =
            [out(" upon", 2, 1, FinishReason::Length), out(" we", 2, 1, FinishReason::Length)];
        assert_eq!(
            shape(&tg, &prompts, &outs),
            json!([[{"generated_text": "Once upon"}], [{"generated_text": "Then we"}]])
        );
        let bare = request("text-generation", json!({"return_full_text": false}));
        assert_eq!(shape(&bare, &prompts, &outs)[1][0]["generated_text"], " we");
    }

    #[test]
    fn usage_counts_each_prompt_once() {
        let req =
            request("conversational", json!({"return_usage": true, "n": 2, "do_sample": true}));
        let outs = [out("a", 10, 4, FinishReason::Stop), out("b", 10, 6, FinishReason::Length)];
        let got = shape(&req, &GenInputs::Messages(vec![]), &outs);
        assert_eq!(
            got,
            json!({"outputs": ["a", "b"], "finish_reasons": ["stop", "length"],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})
        );
        let tg = request("text-generation", json!({"return_usage": true}));
        let outs = [out(" x", 3, 1, FinishReason::Stop), out(" y", 5, 2, FinishReason::Stop)];
        let got = shape(&tg, &GenInputs::Prompts(vec!["a".into(), "b".into()]), &outs);
        assert_eq!(
            got["usage"],
            json!({"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11})
        );
    }

    #[test]
    fn adapters_and_architectures_are_read_from_their_files() {
        let dir = std::env::temp_dir().join(format!("pgmld-chat-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("adapter_config.json"),
            r#"{"base_model_name_or_path": " /models/base.gguf "}"#,
        )
        .unwrap();
        assert_eq!(local_adapter_dir(&dir.display().to_string()), Some(dir.clone()));
        assert_eq!(adapter_base(&dir).unwrap(), "/models/base.gguf");
        std::fs::write(dir.join("adapter_config.json"), r#"{"r": 8}"#).unwrap();
        assert!(adapter_base(&dir)
            .unwrap_err()
            .to_string()
            .contains("names no base_model_name_or_path"));
        std::fs::write(dir.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
        assert_eq!(
            local_adapter_dir(&dir.display().to_string()),
            None,
            "a full checkpoint is no adapter"
        );
        let e = check_causal_lm(&dir, "mini").unwrap_err();
        assert!(
            matches!(&e, TransformError::WrongTask { detail, .. } if detail.contains("\"bert\"")),
            "{e:?}"
        );
        std::fs::write(dir.join("config.json"), r#"{"model_type": "qwen2"}"#).unwrap();
        assert!(check_causal_lm(&dir, "q").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
#[path = "chat_stream_tests.rs"]
mod stream_tests;
