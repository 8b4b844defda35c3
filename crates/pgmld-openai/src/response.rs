//! OpenAI response bodies built from what `pgml.transform` answered: `chat.completion`,
//! `chat.completion.chunk` (streaming) and the model list.
//!
//! `pgml.transform` is called with `"return_usage": true`, so it answers
//! `{"outputs": ["text"], "finish_reasons": ["stop"|"length"], "usage": {...}}`; a
//! `pgml.transform_stream` row is `["piece"]`, and its last row
//! `{"finish_reason", "usage"}`.

use serde_json::{json, Value};

use crate::error::ApiError;

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens of the templated prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

impl Usage {
    fn from_json(v: &Value) -> Result<Usage, ApiError> {
        let count = |key: &str| {
            v.get(key).and_then(Value::as_u64).ok_or_else(|| unexpected(&format!("usage.{key}"), v))
        };
        Ok(Usage {
            prompt_tokens: count("prompt_tokens")?,
            completion_tokens: count("completion_tokens")?,
        })
    }

    /// OpenAI's usage object (with the total).
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

fn unexpected(what: &str, got: &Value) -> ApiError {
    let mut shown = got.to_string();
    if shown.len() > 200 {
        let cut = (0..=200).rev().find(|i| shown.is_char_boundary(*i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    ApiError {
        status: axum::http::StatusCode::BAD_GATEWAY,
        kind: crate::error::SERVER_ERROR,
        message: format!("pgml.transform answered without {what}: {shown}"),
        param: None,
        code: None,
    }
}

/// A finished (non-streamed) generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The assistant's reply.
    pub text: String,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Token counts.
    pub usage: Usage,
}

impl Completion {
    /// Reads `pgml.transform`'s `return_usage` answer (one sequence).
    pub fn from_transform(v: &Value) -> Result<Completion, ApiError> {
        let text = v
            .get("outputs")
            .and_then(|o| o.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected("outputs[0]", v))?;
        let finish_reason = v
            .get("finish_reasons")
            .and_then(|f| f.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected("finish_reasons[0]", v))?;
        let usage = Usage::from_json(v.get("usage").ok_or_else(|| unexpected("usage", v))?)?;
        Ok(Completion { text: text.to_string(), finish_reason: finish_reason.to_string(), usage })
    }
}

/// One row of `pgml.transform_stream`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamRow {
    /// Text as it was generated.
    Piece(String),
    /// The last row: why generation stopped, and the token counts.
    Done {
        /// `stop` or `length`.
        finish_reason: String,
        /// Token counts.
        usage: Usage,
    },
}

impl StreamRow {
    /// Reads one row: `["piece"]` or `{"finish_reason", "usage"}`.
    pub fn from_json(v: &Value) -> Result<StreamRow, ApiError> {
        match v {
            Value::Array(items) => items
                .first()
                .and_then(Value::as_str)
                .map(|p| StreamRow::Piece(p.to_string()))
                .ok_or_else(|| unexpected("a text piece", v)),
            Value::Object(o) => {
                let finish_reason = o
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .ok_or_else(|| unexpected("finish_reason", v))?;
                let usage =
                    Usage::from_json(o.get("usage").ok_or_else(|| unexpected("usage", v))?)?;
                Ok(StreamRow::Done { finish_reason: finish_reason.to_string(), usage })
            }
            other => Err(unexpected("a text piece", other)),
        }
    }
}

/// What every response of one request shares.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseMeta {
    /// `chatcmpl-…`, the same in every chunk of a stream.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model as the request named it.
    pub model: String,
}

/// The backend's identity, as OpenAI's `system_fingerprint`.
pub fn system_fingerprint() -> String {
    format!("pgmld-{}", env!("CARGO_PKG_VERSION"))
}

impl ResponseMeta {
    /// A fresh id and the current time for a response about `model`.
    pub fn new(model: &str) -> ResponseMeta {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ResponseMeta {
            id: format!("chatcmpl-{:032x}", rand::random::<u128>()),
            created,
            model: model.to_string(),
        }
    }

    /// The `chat.completion` body.
    pub fn completion(&self, c: &Completion) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": system_fingerprint(),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": c.text, "refusal": null},
                "logprobs": null,
                "finish_reason": c.finish_reason,
            }],
            "usage": c.usage.to_json(),
        })
    }

    /// A `chat.completion.chunk` with `delta` and, on the last one, the finish reason.
    pub fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": system_fingerprint(),
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        })
    }

    /// The first chunk: the role, no text yet (as OpenAI streams).
    pub fn role_chunk(&self) -> Value {
        self.chunk(json!({"role": "assistant", "content": ""}), None)
    }

    /// The extra last chunk `stream_options.include_usage` asks for: no choices, the counts.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": system_fingerprint(),
            "choices": [],
            "usage": usage.to_json(),
        })
    }
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The name to pass as `model`: a project name or `pgml:<id>`.
    pub id: String,
    /// Unix seconds: when it was deployed or trained.
    pub created: i64,
    /// Who it belongs to: the project.
    pub owned_by: String,
}

impl ModelEntry {
    /// OpenAI's model object.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by})
    }
}

/// The `GET /v1/models` body.
pub fn model_list(models: &[ModelEntry]) -> Value {
    json!({"object": "list", "data": models.iter().map(ModelEntry::to_json).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_from_transform_usage_answer() {
        let answer = json!({"outputs": ["Paris."], "finish_reasons": ["stop"],
                            "usage": {"prompt_tokens": 31, "completion_tokens": 3, "total_tokens": 34}});
        let c = Completion::from_transform(&answer).unwrap();
        assert_eq!(
            c,
            Completion {
                text: "Paris.".into(),
                finish_reason: "stop".into(),
                usage: Usage { prompt_tokens: 31, completion_tokens: 3 }
            }
        );
        let meta = ResponseMeta { id: "chatcmpl-1".into(), created: 5, model: "m".into() };
        let body = meta.completion(&c);
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(
            body["choices"][0]["message"],
            json!({"role": "assistant", "content": "Paris.", "refusal": null})
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 31, "completion_tokens": 3, "total_tokens": 34})
        );
        assert_eq!(body["system_fingerprint"], system_fingerprint());
    }

    #[test]
    fn answers_without_usage_are_bad_gateway() {
        // What pgml.transform answers without return_usage: no counts to report.
        let e = Completion::from_transform(&json!(["Paris."])).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_GATEWAY);
        assert!(e.message.contains("outputs[0]"), "{}", e.message);
        let e = Completion::from_transform(
            &json!({"outputs": ["x"], "finish_reasons": ["stop"], "usage": {"prompt_tokens": 1}}),
        );
        assert!(e.unwrap_err().message.contains("usage.completion_tokens"));
    }

    #[test]
    fn stream_rows_and_chunks() {
        assert_eq!(
            StreamRow::from_json(&json!([" Par"])).unwrap(),
            StreamRow::Piece(" Par".into())
        );
        assert_eq!(
            StreamRow::from_json(&json!({"finish_reason": "length", "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}})).unwrap(),
            StreamRow::Done { finish_reason: "length".into(), usage: Usage { prompt_tokens: 2, completion_tokens: 4 } }
        );
        assert!(StreamRow::from_json(&json!("x")).is_err());
        assert!(StreamRow::from_json(&json!([])).is_err());
        let meta = ResponseMeta::new("m");
        assert!(meta.id.starts_with("chatcmpl-") && meta.id.len() == 41, "{}", meta.id);
        assert_ne!(meta.id, ResponseMeta::new("m").id);
        let first = meta.role_chunk();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
        let last = meta.chunk(json!({}), Some("stop"));
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        let usage = meta.usage_chunk(Usage { prompt_tokens: 2, completion_tokens: 4 });
        assert_eq!(
            (usage["choices"].as_array().map(Vec::len), &usage["usage"]["total_tokens"]),
            (Some(0), &json!(6))
        );
    }

    #[test]
    fn model_list_shape() {
        let list = model_list(&[ModelEntry {
            id: "chat-proj".into(),
            created: 10,
            owned_by: "chat-proj".into(),
        }]);
        assert_eq!(
            list,
            json!({"object": "list", "data": [{"id": "chat-proj", "object": "model", "created": 10, "owned_by": "chat-proj"}]})
        );
    }
}
