//! `pgml.tune`: fine-tuning text classifiers, and LoRA adapters of Llama-family causal
//! LMs on conversations ([`conversation`]), on a libtorch worker pool.
//!
//! - [`deploy`]: `pgml.deploy`, which picks the model a project serves.
//! - [`function`]: the SQL signature; [`tuner`]: a call dispatched to a new
//!   [`classification`] or [`conversation`] tune or a [`resume`]; [`lifecycle`]: a recorded
//!   model's training, progress, checkpoints, files and deployment, for both tasks, over
//!   its [`run_data`] (the rows it trains on).
//! - [`options`]: arguments and hyperparameters; [`data`] and [`split`]: the training
//!   relation, labels and the train/test split.
//! - [`submit`]: a tune queued as a `pgml.jobs` row and the calling session waiting for it
//!   (notices relayed over LISTEN/NOTIFY); [`worker`]: the claim loop that runs queued
//!   jobs on this process's training threads; [`placement`]: a job's priority and device;
//!   [`data_parallel`]: a job trained by several workers at once (`world_size`).
//! - [`pool`] and [`job`]: worker threads and what runs on them ([`training_run`]: what
//!   both tasks' runs share); [`progress`]: notice and
//!   log JSON; [`records`]: the pgml schema rows; [`access`]: reading the training
//!   relation as the caller; [`resume`]: a claimed job's run (fresh or from its
//!   checkpoint), `resume_from_checkpoint`, the stored training data and the startup scan
//!   for databases with jobs to take over; [`cancel_job`] and [`wait_job`]: the SQL
//!   functions of a job.
//! - Where `model_name` points, model files in pgml.files and who may use a model are the
//!   model registry's ([`pgmld_models`]), which pgml.transform shares.
//! - [`push`] and [`push_relay`]: `push_to_hub`, the uploader thread and its events relayed
//!   to the client (the Hub protocol and the model card are pgmld-hub's).

#![warn(missing_docs)]

pub mod access;
pub mod cancel_job;
pub mod classification;
pub mod conversation;
pub mod data;
pub mod data_parallel;
pub mod deploy;
pub mod error;
pub mod function;
pub mod job;
pub mod lifecycle;
pub mod options;
pub mod placement;
pub mod pool;
pub mod progress;
pub mod push;
pub mod push_relay;
pub mod records;
pub mod resume;
pub mod run_data;
pub mod split;
pub mod submit;
pub mod training_run;
pub mod tuner;
pub mod wait_job;
pub mod worker;

pub use cancel_job::CancelJob;
pub use data_parallel::DistOptions;
pub use deploy::Deploy;
pub use error::TuneError;
pub use function::Tune;
pub use pool::{DeviceSpec, WorkerPool};
pub use tuner::Tuner;
pub use wait_job::WaitJob;
