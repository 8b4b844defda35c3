//! `pgml.tune(task => 'conversation')`: LoRA fine-tuning of a Llama-family causal LM on a
//! relation of (system, user, assistant) exchanges.
//!
//! - [`options`]: the conversation hyperparameters (`lora_config`, `load_in_8bit`, …).
//! - [`data`]: reading the relation's exchanges.
//! - [`base`]: checking that `model_name` is a causal LM this build trains, and the name the
//!   adapter records as its base.
//! - [`job`]: what runs on the training worker (load, quantise, LoRA, train, save the
//!   adapter); [`tune`]: the call end to end on the async side (records, progress, files,
//!   deployment by `eval_loss`).

pub mod base;
pub mod data;
pub mod job;
pub mod options;
pub mod rss;
pub mod tune;
