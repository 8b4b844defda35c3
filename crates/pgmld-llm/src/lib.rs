//! Causal language models on libtorch (via `tch`) for pgmld's conversation fine-tuning and
//! chat inference.
//!
//! - [`config`]: [`LlamaConfig`], deserialised from a Hugging Face `config.json` (or built
//!   from GGUF metadata); one config covers Llama 2/3, SmolLM2, Mistral and Qwen2.
//! - [`linear`]: the projection every decoder layer is made of; it is where LoRA adapters
//!   and int8 weight-only quantisation plug in.

#![warn(missing_docs)]

pub mod causal_train;
pub mod chat_model;
pub mod chat_template;
pub mod config;
pub mod conversation;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod lora;
pub mod optim8bit;
pub mod quant;
pub mod rope;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use config::{LlamaConfig, RopeScaling};
pub use error::{Error, Result};
pub use linear::Linear;

/// Tensors by their Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, …): what
/// every weight source (safetensors, GGUF) produces and what the models consume, so a
/// checkpoint loads unchanged whichever file it came from.
pub type Weights = std::collections::HashMap<String, tch::Tensor>;
