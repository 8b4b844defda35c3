//! The HTTP routes: `POST /v1/chat/completions` (JSON, or server-sent events with
//! `stream: true`), `GET /v1/models`, `GET /v1/models/{model}`. Every route checks the
//! bearer token first; every error is OpenAI-shaped JSON.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};

use crate::auth::ApiKeys;
use crate::backend::{Backend, CursorStream};
use crate::error::ApiError;
use crate::request::ChatRequest;
use crate::response::{model_list, ResponseMeta, StreamRow};

/// Largest request body accepted (long conversations fit; runaway uploads do not).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Who may call.
    pub keys: ApiKeys,
    /// Where requests run.
    pub backend: Backend,
}

/// The endpoint's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*model}", get(get_model))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(state))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn not_found(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Err(e) = state.keys.check(&headers) {
        return e.into_response();
    }
    ApiError::unknown_route(uri.path()).into_response()
}

async fn list_models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let result = async {
        state.keys.check(&headers)?;
        state.backend.models().await
    }
    .await;
    match result {
        Ok(models) => json_response(StatusCode::OK, &model_list(&models)),
        Err(e) => e.into_response(),
    }
}

async fn get_model(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Response {
    let result = async {
        state.keys.check(&headers)?;
        let models = state.backend.models().await?;
        models.into_iter().find(|m| m.id == model).ok_or_else(|| ApiError::model_not_found(&model))
    }
    .await;
    match result {
        Ok(m) => json_response(StatusCode::OK, &m.to_json()),
        Err(e) => e.into_response(),
    }
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        state.keys.check(&headers)?;
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_body(format!("We could not parse the JSON body of your request ({e}). The body must be a JSON object."))
        })?;
        let req = ChatRequest::from_json(&json)?;
        let meta = ResponseMeta::new(&req.model);
        if req.stream {
            let cursor = state.backend.stream(&req).await?;
            Ok(Sse::new(events(cursor, meta, req.include_usage)).into_response())
        } else {
            let completion = state.backend.complete(&req).await?;
            Ok(json_response(StatusCode::OK, &meta.completion(&completion)))
        }
    }
    .await;
    result.unwrap_or_else(|e: ApiError| {
        if e.status.is_server_error() {
            tracing::warn!("openai endpoint: {e}");
        }
        e.into_response()
    })
}

/// Where a stream of events is.
enum Phase {
    /// Nothing sent yet: the role chunk comes first.
    Start,
    /// Sending text chunks as rows arrive.
    Pieces,
    /// The end: these events, then nothing.
    Closing(std::vec::IntoIter<Event>),
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

/// The events of a streamed completion: a role chunk, a chunk per piece of text, a last
/// chunk with the finish reason, the usage chunk when asked for, then `[DONE]`. An error
/// part-way is sent as an `{"error": …}` event (what OpenAI's clients raise) and ends it.
fn events(
    cursor: CursorStream,
    meta: ResponseMeta,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((cursor, Phase::Start), move |(mut cursor, phase)| {
        let meta = meta.clone();
        async move {
            match phase {
                Phase::Start => Some((Ok(data(&meta.role_chunk())), (cursor, Phase::Pieces))),
                Phase::Closing(mut rest) => {
                    rest.next().map(|e| (Ok(e), (cursor, Phase::Closing(rest))))
                }
                Phase::Pieces => loop {
                    let closing = match cursor.next().await {
                        Some(Ok(StreamRow::Piece(p))) if p.is_empty() => continue,
                        Some(Ok(StreamRow::Piece(p))) => {
                            return Some((
                                Ok(data(&meta.chunk(json!({"content": p}), None))),
                                (cursor, Phase::Pieces),
                            ))
                        }
                        Some(Ok(StreamRow::Done { finish_reason, usage })) => {
                            cursor.finish().await;
                            let mut tail = vec![data(&meta.chunk(json!({}), Some(&finish_reason)))];
                            if include_usage {
                                tail.push(data(&meta.usage_chunk(usage)));
                            }
                            tail.push(Event::default().data("[DONE]"));
                            tail
                        }
                        Some(Err(e)) => {
                            tracing::warn!("openai endpoint stream: {e}");
                            vec![data(&e.body())]
                        }
                        None => {
                            let e = ApiError::unavailable(
                                "pgml.transform_stream ended without its finish_reason row",
                            );
                            vec![data(&e.body())]
                        }
                    };
                    let mut rest = closing.into_iter();
                    let first = rest.next()?;
                    return Some((Ok(first), (cursor, Phase::Closing(rest))));
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A router whose pgmld is a port nothing listens on: requests that get past
    /// authentication and validation fail with 503, which tells them apart.
    fn app(keys: &[&str]) -> Router {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = crate::pgmld_target(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &"postgres://u@h/d".parse().unwrap(),
            None,
            None,
            None,
        );
        router(AppState {
            keys: ApiKeys::new(keys.iter().map(|k| k.to_string())).unwrap(),
            backend: Backend::new(target),
        })
    }

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app.oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    const CHAT: &str = r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#;

    #[tokio::test]
    async fn every_route_needs_the_key() {
        for (method, uri) in [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("GET", "/v1/models/org/m"),
            ("GET", "/nope"),
        ] {
            let (status, body) = call(app(&["sk-test"]), method, uri, None, CHAT).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{method} {uri}: {body}");
            let (status, body) =
                call(app(&["sk-test"]), method, uri, Some("Bearer sk-wrong"), CHAT).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (StatusCode::UNAUTHORIZED, &json!("invalid_api_key")),
                "{method} {uri}"
            );
        }
    }

    #[tokio::test]
    async fn bad_requests_fail_before_pgmld_is_asked() {
        let key = Some("Bearer sk-test");
        let (status, body) =
            call(app(&["sk-test"]), "POST", "/v1/chat/completions", key, "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("could not parse the JSON body"),
            "{body}"
        );
        let (status, body) = call(
            app(&["sk-test"]),
            "POST",
            "/v1/chat/completions",
            key,
            r#"{"model": "m", "messages": [], "n": 1}"#,
        )
        .await;
        assert_eq!(
            (status, &body["error"]["param"]),
            (StatusCode::BAD_REQUEST, &json!("messages"))
        );
        let (status, body) = call(app(&["sk-test"]), "GET", "/v1/nothing", key, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("/v1/nothing"));
    }

    #[tokio::test]
    async fn valid_requests_reach_pgmld() {
        // With the key (or with no keys configured), a valid request goes to pgmld, which
        // is down here: 503 from the backend, not 400 or 401.
        for (keys, auth) in [(&["sk-test"][..], Some("Bearer sk-test")), (&[][..], None)] {
            for (method, uri, body) in
                [("POST", "/v1/chat/completions", CHAT), ("GET", "/v1/models", "")]
            {
                let (status, answer) = call(app(keys), method, uri, auth, body).await;
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}: {answer}");
                assert_eq!(answer["error"]["type"], "server_error");
            }
        }
        let stream =
            r#"{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#;
        let (status, _) = call(app(&[]), "POST", "/v1/chat/completions", None, stream).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a stream that cannot start is a plain HTTP error"
        );
    }
}
