//! The model registry: where a model name points and how a stored model's files are kept.
//! pgml.tune and pgml.transform both use it and neither depends on the other.
//!
//! - [`resolve`]: a model name (`pgml:<id>`, a project's deployed model, a local directory
//!   or `.gguf` file, a Hugging Face Hub id) to a [`resolve::ModelRef`], then to files on
//!   disk ([`resolve::ModelSource`]).
//! - [`files`]: model files and checkpoints in `pgml.files`, in parts of bounded size.
//! - [`access`]: whether the calling role may use a project or model (Postgres decides
//!   role membership), and the 42501s when not.
//! - [`error`]: [`ModelError`], with the SQLSTATE of each failure.
//!
//! Connections come from the one [`pgmld_upstream::Connector`] pgmld builds at startup.

#![warn(missing_docs)]

pub mod access;
pub mod error;
pub mod files;
pub mod resolve;

pub use error::ModelError;
pub use resolve::{ModelRef, ModelSource};
