//! `pgml.transform`: inference served by pgmld.
//!
//! - [`function`]: the SQL signature, real-time calls and per-row calls batched across rows.
//! - [`request`]: the task object, `args` and inputs, checked; [`task_defaults`]: the
//!   model or task a task object leaves out (each task's default model, a model's task).
//! - [`transformer`]: one call end to end (model lookup, scoring, JSON, truncation notice).
//! - [`generation`]: conversational / text-generation arguments and inputs, checked;
//!   [`chat`]: those calls end to end, and streaming ([`Transformer::stream`]).
//! - [`embed`]: `pgml.embed`, sentence embeddings from the same cache.
//! - [`cache`]: the model cache shared by all sessions (load once, LRU under a byte budget);
//!   [`worker`]: the thread that owns a classifier and batches concurrent requests;
//!   [`chat_worker`]: the thread that owns a chat model and runs generations.

#![warn(missing_docs)]

pub mod cache;
pub mod chat;
pub mod chat_worker;
pub mod embed;
pub mod error;
pub mod function;
pub mod generation;
pub mod request;
pub mod stream;
pub mod task_defaults;
pub mod transformer;
pub mod worker;

pub use cache::ModelCache;
pub use chat::{StreamEvent, Usage};
pub use embed::Embed;
pub use error::TransformError;
pub use function::Transform;
pub use generation::GenerateCall;
pub use transformer::Transformer;
pub use worker::Batching;
