//! `pgml.transform`: inference served by pgmld.
//!
//! - [`function`]: the SQL signature, real-time calls and per-row calls batched across rows.
//! - [`request`]: the task object, `args` and inputs, checked.
//! - [`transformer`]: one call end to end (model lookup, scoring, JSON, truncation notice).
//! - [`cache`]: the model cache shared by all sessions (load once, LRU under a byte budget);
//!   [`worker`]: the thread that owns a model and batches concurrent requests.

#![warn(missing_docs)]

pub mod cache;
pub mod error;
pub mod function;
pub mod request;
pub mod transformer;
pub mod worker;

pub use cache::ModelCache;
pub use error::TransformError;
pub use function::Transform;
pub use transformer::Transformer;
pub use worker::Batching;
