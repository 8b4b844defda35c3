//! Errors: [`Error`] for starting the endpoint, [`ApiError`] for what one HTTP request is
//! answered with, in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) so
//! OpenAI clients raise their usual exceptions.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("binding the OpenAI endpoint on {addr}: {source}")]
    Bind {
        /// The address from `openai_listen`.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The endpoint was turned on without saying who may use it.
    #[error(
        "openai_listen is set but openai_api_keys is not: set openai_api_keys (PGMLD_OPENAI_API_KEYS, comma-separated), \
         or openai_api_keys = [] to serve without authentication"
    )]
    NoApiKeys,
    /// One of `openai_api_keys` is blank.
    #[error("openai_api_keys holds a blank key; remove it (an empty list, not a blank key, turns authentication off)")]
    BlankApiKey,
    /// The address of pgmld's own Postgres listener the endpoint connects to is unusable.
    #[error("the OpenAI endpoint cannot connect to pgmld: {0}")]
    Target(String),
}

/// OpenAI's error `type` for a request the caller must change.
pub const INVALID_REQUEST: &str = "invalid_request_error";
/// OpenAI's error `type` for a failure on the server's side.
pub const SERVER_ERROR: &str = "server_error";

/// An error answer to one HTTP request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status: 400 bad input, 401 no or wrong key, 404 unknown model, 5xx ours.
    pub status: StatusCode,
    /// OpenAI's `type` ([`INVALID_REQUEST`], [`SERVER_ERROR`], ...).
    pub kind: &'static str,
    /// What went wrong, with Postgres' detail and hint when it came from pgmld.
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code: OpenAI's (`invalid_api_key`, `model_not_found`) or the
    /// SQLSTATE pgmld answered.
    pub code: Option<String>,
}

impl ApiError {
    /// 400 for a request field that is missing, of the wrong type or out of range.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: INVALID_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// 400 for a request that is not JSON at all (no single field to blame).
    pub fn bad_body(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: INVALID_REQUEST,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 401 without a bearer token, as OpenAI words it.
    pub fn missing_key() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: INVALID_REQUEST,
            message: "You didn't provide an API key. You need to provide your API key in an Authorization header \
                      using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .into(),
            param: None,
            code: None,
        }
    }

    /// 401 with a bearer token that is not one of `openai_api_keys`.
    pub fn wrong_key() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: INVALID_REQUEST,
            message: "Incorrect API key provided.".into(),
            param: None,
            code: Some("invalid_api_key".into()),
        }
    }

    /// 404 for a model `GET /v1/models/{id}` does not know.
    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: INVALID_REQUEST,
            message: format!("The model `{model}` does not exist or you do not have access to it."),
            param: Some("model".into()),
            code: Some("model_not_found".into()),
        }
    }

    /// 404 for a path the endpoint does not serve.
    pub fn unknown_route(path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: INVALID_REQUEST,
            message: format!("Unknown request URL: {path}"),
            param: None,
            code: Some("unknown_url".into()),
        }
    }

    /// 503 when pgmld itself cannot be reached or dropped the connection.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: SERVER_ERROR,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The JSON body OpenAI sends with an error.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// SQLSTATEs pgml.transform answers for a model it cannot find: undefined_object (no such
/// project or stored model) and undefined_file (no such directory or `.gguf` file).
const MODEL_NOT_FOUND_A: &str = "42704";
const MODEL_NOT_FOUND_B: &str = "58P01";

/// One line of a Postgres error: message, then its detail and hint when present.
fn postgres_text(db: &tokio_postgres::error::DbError) -> String {
    let mut text = db.message().to_string();
    if let Some(d) = db.detail().filter(|d| !d.is_empty()) {
        text.push_str(&format!(" (DETAIL: {d})"));
    }
    if let Some(h) = db.hint().filter(|h| !h.is_empty()) {
        text.push_str(&format!(" (HINT: {h})"));
    }
    text
}

/// HTTP status and OpenAI type for a SQLSTATE pgmld answered with.
fn classify(sqlstate: &str) -> (StatusCode, &'static str) {
    match sqlstate {
        // Undefined object / file: pgml.transform names the model it could not find.
        MODEL_NOT_FOUND_A | MODEL_NOT_FOUND_B => (StatusCode::NOT_FOUND, INVALID_REQUEST),
        // Bad arguments, bad JSON, unsupported options, wrong kind of model.
        s if s.starts_with("22") || s.starts_with("42") || s == "0A000" || s.starts_with("23") => {
            (StatusCode::BAD_REQUEST, INVALID_REQUEST)
        }
        // Out of memory, too many connections, disk full.
        s if s.starts_with("53") || s.starts_with("08") || s == "57P03" => {
            (StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR),
    }
}

impl From<tokio_postgres::Error> for ApiError {
    /// Postgres errors keep their message (with detail and hint) and SQLSTATE; failures
    /// to reach pgmld at all are 503.
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                let sqlstate = db.code().code();
                let (status, kind) = classify(sqlstate);
                let not_found = matches!(sqlstate, MODEL_NOT_FOUND_A | MODEL_NOT_FOUND_B);
                let code =
                    if not_found { "model_not_found".to_string() } else { sqlstate.to_string() };
                let param = (status == StatusCode::NOT_FOUND).then(|| "model".to_string());
                ApiError { status, kind, message: postgres_text(db), param, code: Some(code) }
            }
            None => ApiError::unavailable(format!("pgmld did not answer: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "application/json")], self.body().to_string())
                .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_openai_statuses() {
        assert_eq!(classify("22023"), (StatusCode::BAD_REQUEST, INVALID_REQUEST));
        assert_eq!(classify("0A000"), (StatusCode::BAD_REQUEST, INVALID_REQUEST));
        assert_eq!(classify("42704"), (StatusCode::NOT_FOUND, INVALID_REQUEST));
        assert_eq!(classify("58P01"), (StatusCode::NOT_FOUND, INVALID_REQUEST));
        assert_eq!(classify("53200"), (StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR));
        assert_eq!(classify("XX000"), (StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR));
        assert_eq!(classify("57014"), (StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR));
    }

    #[test]
    fn bodies_have_openai_shape() {
        let body = ApiError::invalid("temperature", "temperature must be between 0 and 2").body();
        assert_eq!(
            body,
            json!({"error": {"message": "temperature must be between 0 and 2", "type": "invalid_request_error",
                             "param": "temperature", "code": null}})
        );
        assert_eq!(ApiError::wrong_key().body()["error"]["code"], "invalid_api_key");
        assert_eq!(ApiError::missing_key().status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn unauthorized_answers_carry_www_authenticate() {
        let r = ApiError::missing_key().into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
