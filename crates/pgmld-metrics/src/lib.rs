//! pgmld's Prometheus metrics and the `/metrics` HTTP endpoint.
//!
//! Counters are plain atomics updated on the proxy's hot paths; the registry renders them
//! in the OpenMetrics text format when scraped.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// Label naming an intercepted pgml function.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    /// Function name without schema (`version`, `tune`).
    pub function: String,
}

/// Label naming a kind of error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `protocol`, `upstream_connect`, `auth`, `pgml`, `io`, `tls`.
    pub kind: String,
}

/// Every metric pgmld exports. One instance per process, shared by all sessions.
pub struct Metrics {
    registry: Registry,
    /// Client sessions accepted since start.
    pub sessions_total: Counter,
    /// Client sessions open now.
    pub sessions_active: Gauge,
    /// Simple queries and Execute messages forwarded unchanged.
    pub statements_proxied: Counter,
    /// Statements that called pgml functions, by function.
    pub statements_intercepted: Family<FunctionLabel, Counter>,
    /// Bytes from clients to the upstream.
    pub bytes_to_upstream: Counter,
    /// Bytes from the upstream (and pgmld) to clients.
    pub bytes_to_client: Counter,
    /// Errors, by kind.
    pub errors: Family<KindLabel, Counter>,
    /// Models loaded into the shared inference cache (a model loads once while cached).
    pub model_loads: Counter,
    /// Models in the inference cache now.
    pub models_cached: Gauge,
    /// Bytes of weights in the inference cache now (bounded by `transform_cache_bytes`).
    pub model_cache_bytes: Gauge,
    /// Forward passes run by inference workers.
    pub inference_batches: Counter,
    /// Inputs scored by inference workers.
    pub inference_inputs: Counter,
}

impl Metrics {
    /// Registers all metrics under the `pgmld_` prefix.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("pgmld");
        let m = Metrics {
            sessions_total: Counter::default(),
            sessions_active: Gauge::default(),
            statements_proxied: Counter::default(),
            statements_intercepted: Family::default(),
            bytes_to_upstream: Counter::default(),
            bytes_to_client: Counter::default(),
            errors: Family::default(),
            model_loads: Counter::default(),
            models_cached: Gauge::default(),
            model_cache_bytes: Gauge::default(),
            inference_batches: Counter::default(),
            inference_inputs: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("sessions", "Client sessions accepted", m.sessions_total.clone());
        registry.register("sessions_active", "Client sessions open now", m.sessions_active.clone());
        registry.register("statements_proxied", "Statements forwarded unchanged to the upstream", m.statements_proxied.clone());
        registry.register("statements_intercepted", "Statements calling pgml functions served by pgmld", m.statements_intercepted.clone());
        registry.register("bytes_to_upstream", "Bytes forwarded from clients to the upstream", m.bytes_to_upstream.clone());
        registry.register("bytes_to_client", "Bytes sent to clients", m.bytes_to_client.clone());
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register("model_loads", "Models loaded into the shared inference cache", m.model_loads.clone());
        registry.register("models_cached", "Models in the inference cache", m.models_cached.clone());
        registry.register("model_cache_bytes", "Bytes of weights in the inference cache", m.model_cache_bytes.clone());
        registry.register("inference_batches", "Forward passes run by inference workers", m.inference_batches.clone());
        registry.register("inference_inputs", "Inputs scored by inference workers", m.inference_inputs.clone());
        Arc::new(Metrics { registry, ..m })
    }

    /// Counts one error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
    }

    /// Counts one intercepted statement calling `function`.
    pub fn intercepted(&self, function: &str) {
        self.statements_intercepted.get_or_create(&FunctionLabel { function: function.to_string() }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Err(e) = encode(&mut s, &self.registry) {
            tracing::error!("rendering metrics failed: {e}");
        }
        s
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    use axum::{http::header, routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("metrics endpoint failed: {e}");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_and_serves() {
        let m = Metrics::new();
        m.sessions_total.inc();
        m.intercepted("version");
        m.error("protocol");
        let text = m.render();
        assert!(text.contains("pgmld_sessions_total 1"), "{text}");
        assert!(text.contains("pgmld_statements_intercepted_total{function=\"version\"} 1"), "{text}");
        let addr = serve("127.0.0.1:0", m.clone(), std::future::pending()).await.unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.contains("pgmld_errors_total{kind=\"protocol\"} 1"), "{body}");
    }
}
