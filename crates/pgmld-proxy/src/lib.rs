//! pgmld's client-facing side: Postgres wire protocol on the front, one upstream
//! connection per client session behind, raw messages forwarded both ways, and
//! statements calling `pgml.*` served through `pgmld-sql`.

mod accept;
mod cancel;
mod doorbell;
mod error;
mod expect;
mod fastpath;
mod frontend;
#[cfg(test)]
mod fuzz_tests;
mod relay;
mod sasl;
mod server;
mod session;
mod startup;
mod threads;
pub mod tls;
mod wire;

pub use error::ProxyError;
pub use server::{Server, ServerOptions};
