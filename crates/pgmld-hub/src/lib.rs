//! The Hugging Face Hub for pgmld, in one place:
//!
//! - [`config`]: [`HubConfig`], the endpoint, token, cache and offline mode, built once from
//!   the environment at startup and shared by every caller;
//! - [`repo`]: dataset and model repo ids ([`RepoId`]) and their URLs;
//! - [`cache`]: the one cache/offline resolver: a revision's snapshot in the standard cache,
//!   for datasets and models alike;
//! - [`remote`]: downloads (file lists, files) through hf-hub into that cache;
//! - [`model`]: a model repo resolved to a usable snapshot (config, tokenizer, weights);
//! - [`upload`]: commits with LFS uploads (`pgml.tune` with `push_to_hub`);
//! - [`card`]: the model card (`README.md`) pushed with a model;
//! - [`error`]: [`HubError`], one error type whose [`RepoKind`] says dataset or model, with
//!   the SQLSTATE each reason maps to.
//!
//! Which files of a *dataset* repo hold which split is dataset logic and lives in
//! pgmld-datasets, on top of [`remote`] and [`cache`].
//!
//! The token is only ever sent in `Authorization` headers: no message or log contains it.

#![warn(missing_docs)]

pub mod cache;
pub mod card;
pub mod config;
pub mod error;
pub mod model;
pub mod remote;
pub mod repo;
pub mod upload;

pub use card::ModelCard;
pub use config::{HubConfig, DEFAULT_ENDPOINT};
pub use error::{short_list, HubError, RepoKind};
pub use model::{fetch_model_files, model_cache_dir};
pub use remote::RemoteRepo;
pub use repo::RepoId;
