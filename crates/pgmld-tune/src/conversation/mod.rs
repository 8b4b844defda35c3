//! `pgml.tune(task => 'conversation')`: LoRA fine-tuning of a Llama-family causal LM on a
//! relation of (system, user, assistant) exchanges.
//!
//! - [`options`]: the conversation hyperparameters (`lora_config`, `load_in_8bit`, …).
//! - [`data`]: reading the relation's exchanges.
//! - [`base`]: checking that `model_name` is a causal LM this build trains, and the name the
//!   adapter records as its base.
//! - [`job`]: what runs on the training worker (load, quantise, LoRA, train from scratch or
//!   from a resumable checkpoint, save the adapter); [`tune`]: a new call up to its recorded
//!   model; `crate::lifecycle` then runs it as it runs a classifier (progress, checkpoints in
//!   pgml.files, files, deployment by `eval_loss`), and `crate::resume` resumes it.

pub mod base;
pub mod data;
pub mod job;
pub mod options;
pub mod rss;
pub mod tune;
