//! pgmld's web dashboard (`dashboard_listen`, off by default): projects, models with their
//! metrics, training jobs with a live progress bar, ETA and loss curve, and a model's files
//! and lineage, all read from the `pgml` schema of one database.
//!
//! Pages are rendered on the server (minijinja templates and SVG charts compiled into the
//! binary; one small script polls a running model's curve). There is no Node build step.
//!
//! Who sees what follows the caller's-privileges model: a Postgres role logs in with its
//! own password, which the upstream verifies ([`session::verify`]); pages then show only
//! the projects, models, files and jobs that role may use through pgml.tune and
//! pgml.transform (its own, its roles', all for a superuser), and nothing in a database
//! where it lacks USAGE on schema pgml ([`queries`]).
//!
//! - [`session`]: logins, session tokens and the cookie; [`queries`]: the reads;
//!   [`chart`]: SVG curves; `pages`: the routes and templates; [`error`]: the answers.

#![warn(missing_docs)]

pub mod chart;
pub mod error;
mod pages;
pub mod queries;
pub mod session;

pub use error::{Error, StartError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgmld_upstream::Connector;

/// Settings of a running dashboard.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (`dashboard_listen`).
    pub listen: String,
    /// The database the login form proposes (the upstream URL's).
    pub database: String,
    /// How long a login lasts (`dashboard_session_hours`).
    pub session_ttl: Duration,
}

/// Binds the dashboard and serves it in the background until `shutdown` resolves; returns
/// the bound address (useful with port 0).
pub async fn serve(
    options: Options,
    connector: Arc<Connector>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, StartError> {
    let app = Arc::new(pages::Inner {
        connector,
        sessions: session::Sessions::new(options.session_ttl),
        templates: pages::templates(),
        database: options.database,
    });
    let bind = |source| StartError::Bind { addr: options.listen.clone(), source };
    let listener = tokio::net::TcpListener::bind(&options.listen).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    tokio::spawn(async move {
        if let Err(e) =
            axum::serve(listener, pages::router(app)).with_graceful_shutdown(shutdown).await
        {
            tracing::error!("dashboard failed: {e}");
        }
    });
    Ok(local)
}
