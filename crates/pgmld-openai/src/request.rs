//! `POST /v1/chat/completions` bodies, checked and turned into the arguments of
//! `pgml.transform` / `pgml.transform_stream` (task object, `jsonb[]` messages, `args`).
//!
//! OpenAI's request fields map as follows: `max_completion_tokens` (or the older
//! `max_tokens`) to `max_new_tokens`; `temperature` (default 1, as OpenAI; 0 is greedy) to
//! `temperature` + `do_sample`; `top_p`, `stop`, `seed` as they are; `top_k` is switched
//! off (OpenAI samples from the whole distribution). `top_k`, `repetition_penalty` and
//! `chat_template` are accepted as extensions, as other OpenAI-compatible servers do.
//! Unknown fields are ignored, as OpenAI does; known fields that would change the answer
//! in ways pgmld cannot honour (`n` > 1, `tools`, `logprobs`, penalties, ...) are a 400.

use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// OpenAI's limit on `stop` sequences.
const MAX_STOP: usize = 4;

/// One chat message as `pgml.transform` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant` (OpenAI's `developer` is a system message).
    pub role: String,
    /// The text; content parts are joined.
    pub content: String,
}

/// A checked chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model name passed to `pgml.transform` (project, `pgml:<id>`, `.gguf` path, ...).
    pub model: String,
    /// The conversation, in order.
    pub messages: Vec<Message>,
    /// New tokens at most; pgml.transform's default when unset.
    pub max_tokens: Option<u64>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f64,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Sample among the k most likely tokens (extension; off by default).
    pub top_k: Option<u64>,
    /// CTRL-style repetition penalty (extension).
    pub repetition_penalty: Option<f64>,
    /// Strings that end the answer.
    pub stop: Vec<String>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Answer as server-sent events.
    pub stream: bool,
    /// With `stream`: send a last chunk with the token counts (`stream_options`).
    pub include_usage: bool,
    /// A Jinja chat template replacing the model's (extension).
    pub chat_template: Option<String>,
}

fn number(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(key, format!("{key} must be a number, not {v}"))),
    }
}

fn integer(body: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(key, format!("{key} must be an integer, not {v}"))),
    }
}

fn boolean(body: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ApiError::invalid(key, format!("{key} must be a boolean, not {v}"))),
    }
}

fn unsupported(param: &str, what: &str) -> ApiError {
    ApiError::invalid(param, format!("{what} is not supported by pgmld"))
}

/// A field whose presence with a value other than its neutral one changes the answer.
fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Bool(true)) => true,
    }
}

/// Refuses the OpenAI features pgmld does not implement, rather than answering as if
/// they had been applied.
fn refuse_unsupported(body: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, what) in [
        ("tools", "tool calling (tools)"),
        ("functions", "function calling (functions)"),
        ("logprobs", "logprobs"),
        ("top_logprobs", "top_logprobs"),
        ("logit_bias", "logit_bias"),
        ("frequency_penalty", "frequency_penalty (use the repetition_penalty extension)"),
        ("presence_penalty", "presence_penalty (use the repetition_penalty extension)"),
        ("audio", "audio output"),
        ("prediction", "predicted outputs"),
    ] {
        if is_set(body.get(key)) {
            return Err(unsupported(key, what));
        }
    }
    if let Some(format) = body.get("response_format").filter(|v| !v.is_null()) {
        let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "text" {
            return Err(unsupported("response_format", &format!("response_format {format}")));
        }
    }
    if let Some(Value::Array(m)) = body.get("modalities") {
        if m.iter().any(|v| v.as_str() != Some("text")) {
            return Err(unsupported("modalities", "output modalities other than text"));
        }
    }
    match integer(body, "n")? {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::invalid(
            "n",
            format!("n must be 1 (pgmld returns one choice per request), not {n}"),
        )),
    }
}

/// The text of a message's `content`: a string, or text parts joined.
fn content_text(i: usize, role: &str, content: Option<&Value>) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) if kind != "text" => {
                        return Err(ApiError::invalid(
                            &param,
                            format!("content parts of type {kind} are not supported; only text"),
                        ))
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            &param,
                            format!("a text content part needs a \"text\" string, not {part}"),
                        ))
                    }
                }
            }
            Ok(text)
        }
        None | Some(Value::Null) => {
            Err(ApiError::invalid(&param, format!("the {role} message has no content")))
        }
        Some(other) => Err(ApiError::invalid(
            &param,
            format!("content must be a string or an array of text parts, not {other}"),
        )),
    }
}

fn messages(body: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let items = match body.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid("messages", "messages must not be empty"))
        }
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("messages", "you must provide a messages parameter"))
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "messages",
                format!("messages must be an array, not {other}"),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("system" | "developer") => "system",
                Some("user") => "user",
                Some("assistant") => "assistant",
                Some(other) => {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role"),
                        format!(
                        "role {other} is not supported; use system, developer, user or assistant"
                    ),
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role"),
                        format!("messages[{i}] needs a role"),
                    ))
                }
            };
            if is_set(m.get("tool_calls")) || is_set(m.get("function_call")) {
                return Err(unsupported(&format!("messages[{i}].tool_calls"), "tool calls"));
            }
            Ok(Message {
                role: role.to_string(),
                content: content_text(i, role, m.get("content"))?,
            })
        })
        .collect()
}

fn stop(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid("stop", format!("stop must hold strings, not {v}"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid(
                "stop",
                format!("stop must be a string or an array of strings, not {other}"),
            ))
        }
    };
    if stops.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            format!("stop takes at most {MAX_STOP} sequences, not {}", stops.len()),
        ));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop sequences must not be empty"));
    }
    Ok(stops)
}

impl ChatRequest {
    /// Checks a request body. Errors are 400s naming the field at fault.
    pub fn from_json(body: &Value) -> Result<ChatRequest, ApiError> {
        let Value::Object(body) = body else {
            return Err(ApiError::bad_body(format!(
                "the request body must be a JSON object, not {body}"
            )));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(ApiError::invalid("model", "you must provide a model parameter"))
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "model",
                    format!("model must be a string, not {other}"),
                ))
            }
        };
        refuse_unsupported(body)?;
        let messages = messages(body)?;
        let max_tokens = match integer(body, "max_completion_tokens")? {
            Some(n) => Some(("max_completion_tokens", n)),
            None => integer(body, "max_tokens")?.map(|n| ("max_tokens", n)),
        };
        let max_tokens = match max_tokens {
            Some((key, n)) if n < 1 => {
                return Err(ApiError::invalid(key, format!("{key} must be at least 1, not {n}")))
            }
            Some((_, n)) => Some(n as u64),
            None => None,
        };
        let temperature = number(body, "temperature")?.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be between 0 and 2, not {temperature}"),
            ));
        }
        let top_p = number(body, "top_p")?;
        if let Some(p) = top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p must be above 0 and at most 1, not {p}"),
            ));
        }
        let top_k = match integer(body, "top_k")? {
            Some(k) if k < 0 => {
                return Err(ApiError::invalid(
                    "top_k",
                    format!("top_k must not be negative, not {k}"),
                ))
            }
            k => k.map(|k| k as u64),
        };
        let seed = match integer(body, "seed")? {
            Some(s) if s < 0 => {
                return Err(ApiError::invalid(
                    "seed",
                    format!("seed must not be negative, not {s}"),
                ))
            }
            s => s.map(|s| s as u64),
        };
        let stream = boolean(body, "stream")?;
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => boolean(o, "include_usage")?,
            Some(other) => {
                return Err(ApiError::invalid(
                    "stream_options",
                    format!("stream_options must be an object, not {other}"),
                ))
            }
        };
        let chat_template = match body.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(other) => {
                return Err(ApiError::invalid(
                    "chat_template",
                    format!("chat_template must be a string, not {other}"),
                ))
            }
        };
        Ok(ChatRequest {
            model,
            messages,
            max_tokens,
            temperature,
            top_p,
            top_k,
            repetition_penalty: number(body, "repetition_penalty")?,
            stop: stop(body)?,
            seed,
            stream,
            include_usage,
            chat_template,
        })
    }

    /// `pgml.transform`'s task argument.
    pub fn task(&self) -> Value {
        json!({"task": "conversational", "model": self.model})
    }

    /// `pgml.transform`'s `inputs`: one jsonb per message.
    pub fn inputs(&self) -> Vec<Value> {
        self.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect()
    }

    /// `pgml.transform`'s `args`, always with `return_usage` so the answer carries real
    /// token counts and finish reasons.
    pub fn args(&self) -> Value {
        let mut args = Map::new();
        args.insert("return_usage".into(), json!(true));
        args.insert("temperature".into(), json!(self.temperature));
        args.insert("do_sample".into(), json!(self.temperature > 0.0));
        args.insert("top_k".into(), json!(self.top_k.unwrap_or(0)));
        if let Some(n) = self.max_tokens {
            args.insert("max_new_tokens".into(), json!(n));
        }
        if let Some(p) = self.top_p {
            args.insert("top_p".into(), json!(p));
        }
        if let Some(r) = self.repetition_penalty {
            args.insert("repetition_penalty".into(), json!(r));
        }
        if !self.stop.is_empty() {
            args.insert("stop".into(), json!(self.stop));
        }
        if let Some(s) = self.seed {
            args.insert("seed".into(), json!(s));
        }
        if let Some(t) = &self.chat_template {
            args.insert("chat_template".into(), json!(t));
        }
        Value::Object(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn parse(body: Value) -> Result<ChatRequest, ApiError> {
        ChatRequest::from_json(&body)
    }

    fn err_param(body: Value) -> (StatusCode, Option<String>, String) {
        let e = parse(body).unwrap_err();
        (e.status, e.param, e.message)
    }

    #[test]
    fn maps_openai_fields_to_transform_arguments() {
        let r = parse(json!({
            "model": "m.gguf",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]},
            ],
            "max_completion_tokens": 12, "max_tokens": 99, "temperature": 0, "top_p": 0.9,
            "stop": "\n", "seed": 7, "user": "ignored", "metadata": {"x": 1}, "frequency_penalty": 0,
        }))
        .unwrap();
        assert_eq!(r.task(), json!({"task": "conversational", "model": "m.gguf"}));
        assert_eq!(
            r.inputs(),
            vec![
                json!({"role": "system", "content": "Be brief."}),
                json!({"role": "user", "content": "Capital of France?"})
            ]
        );
        assert_eq!(
            r.args(),
            json!({"return_usage": true, "temperature": 0.0, "do_sample": false, "top_k": 0, "max_new_tokens": 12,
                   "top_p": 0.9, "stop": ["\n"], "seed": 7})
        );
        assert!(!r.stream);
    }

    #[test]
    fn defaults_sample_as_openai_does() {
        let r = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                             "stream": true, "stream_options": {"include_usage": true}, "top_k": 40,
                             "repetition_penalty": 1.3}),
        )
        .unwrap();
        assert_eq!(
            r.args(),
            json!({"return_usage": true, "temperature": 1.0, "do_sample": true, "top_k": 40, "max_new_tokens": 5,
                   "repetition_penalty": 1.3})
        );
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn bad_fields_are_400s_naming_the_field() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let cases = [
            (json!({"messages": msgs}), "model"),
            (json!({"model": 3, "messages": msgs}), "model"),
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].role",
            ),
            (json!({"model": "m", "messages": [{"role": "user"}]}), "messages[0].content"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                "messages[0].content",
            ),
            (json!({"model": "m", "messages": msgs, "temperature": 2.5}), "temperature"),
            (json!({"model": "m", "messages": msgs, "temperature": "hot"}), "temperature"),
            (json!({"model": "m", "messages": msgs, "top_p": 0}), "top_p"),
            (json!({"model": "m", "messages": msgs, "max_tokens": 0}), "max_tokens"),
            (
                json!({"model": "m", "messages": msgs, "max_completion_tokens": -1}),
                "max_completion_tokens",
            ),
            (json!({"model": "m", "messages": msgs, "n": 2}), "n"),
            (json!({"model": "m", "messages": msgs, "stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"model": "m", "messages": msgs, "stop": [1]}), "stop"),
            (json!({"model": "m", "messages": msgs, "seed": -1}), "seed"),
            (json!({"model": "m", "messages": msgs, "stream": "yes"}), "stream"),
            (json!({"model": "m", "messages": msgs, "tools": [{"type": "function"}]}), "tools"),
            (json!({"model": "m", "messages": msgs, "logprobs": true}), "logprobs"),
            (json!({"model": "m", "messages": msgs, "presence_penalty": 0.5}), "presence_penalty"),
            (
                json!({"model": "m", "messages": msgs, "response_format": {"type": "json_object"}}),
                "response_format",
            ),
        ];
        for (body, param) in cases {
            let (status, got, message) = err_param(body.clone());
            assert_eq!(
                (status, got.as_deref()),
                (StatusCode::BAD_REQUEST, Some(param)),
                "{body}: {message}"
            );
        }
        let e = parse(json!([1, 2])).unwrap_err();
        assert_eq!((e.status, e.param), (StatusCode::BAD_REQUEST, None));
    }

    #[test]
    fn neutral_values_of_unsupported_fields_pass() {
        let r = parse(
            json!({"model": "m", "messages": [{"role": "assistant", "content": "x", "tool_calls": []}],
                             "n": 1, "tools": [], "logprobs": false, "presence_penalty": 0.0,
                             "response_format": {"type": "text"}, "modalities": ["text"], "logit_bias": {}}),
        );
        assert!(r.is_ok(), "{r:?}");
    }
}
