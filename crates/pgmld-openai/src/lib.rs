//! An OpenAI-compatible HTTP endpoint for pgmld: `POST /v1/chat/completions` (with
//! `stream: true` as server-sent events), `GET /v1/models` and `GET /v1/models/{model}`,
//! behind bearer-token authentication.
//!
//! It holds no models itself: every request runs `pgml.transform` (or a cursor over
//! `pgml.transform_stream`) through pgmld's own Postgres listener, exactly as the Python
//! client in `clients/python` does, so it shares pgmld's model cache, cancellation and
//! error messages.
//!
//! - [`request`]: OpenAI request bodies, checked and mapped to `pgml.transform` arguments;
//! - [`response`]: `chat.completion`, chunks and model lists from what pgmld answers;
//! - [`backend`]: the SQL client of pgmld; [`auth`]: API keys; [`routes`]: the router.

#![warn(missing_docs)]

pub mod auth;
pub mod backend;
pub mod error;
pub mod request;
pub mod response;
pub mod routes;

pub use auth::ApiKeys;
pub use backend::{pgmld_target, Backend};
pub use error::{ApiError, Error};
pub use routes::{router, AppState};

use std::net::SocketAddr;

/// Settings of a running endpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (`openai_listen`).
    pub listen: String,
    /// Accepted bearer tokens (`openai_api_keys`): `None` is refused (the endpoint must
    /// not open by accident); an empty list serves without authentication.
    pub api_keys: Option<Vec<String>>,
    /// How to reach pgmld's Postgres listener ([`pgmld_target`]).
    pub pgmld: tokio_postgres::Config,
}

/// Binds the endpoint and serves it in the background until `shutdown` resolves; returns
/// the bound address (useful with port 0).
pub async fn serve(
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, Error> {
    let keys = ApiKeys::new(options.api_keys.ok_or(Error::NoApiKeys)?)?;
    if keys.is_open() {
        tracing::warn!("the OpenAI endpoint serves without authentication (openai_api_keys = [])");
    }
    let app = router(AppState { keys, backend: Backend::new(options.pgmld) });
    let bind = |source| Error::Bind { addr: options.listen.clone(), source };
    let listener = tokio::net::TcpListener::bind(&options.listen).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("OpenAI endpoint failed: {e}");
        }
    });
    Ok(local)
}
