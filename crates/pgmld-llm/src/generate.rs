//! Autoregressive generation: prefill the prompt into a [`KvCache`], then decode one token
//! at a time, choosing each by greedy search or by sampling with Hugging Face's logits
//! processors (repetition penalty, temperature, top-k, top-p).
//!
//! Sampling runs on the CPU over the last position's logits with this crate's own seeded
//! generator, so a seeded request is reproducible and never touches libtorch's global RNG
//! (which concurrent requests would share).

mod defaults;
mod sampling;

use std::ops::ControlFlow;

use tch::{Kind, Tensor};

pub use defaults::{GenerationDefaults, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOP_K};
pub use sampling::{LogitsProcessor, SplitMix64};

use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::{Error, Result};

/// New tokens the KV cache reserves room for before generation starts.
const RESERVED_NEW_TOKENS: i64 = 512;

/// Generation options (HF `generate` names and semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens to generate after the prompt (must be ≥ 1).
    pub max_new_tokens: usize,
    /// Divides the logits before sampling; 0 means greedy.
    pub temperature: f64,
    /// Nucleus sampling: smallest set of top tokens whose probability reaches `top_p`
    /// (in (0, 1]; 1 disables it).
    pub top_p: f64,
    /// Keep only the `k` most likely tokens; `None` or `Some(0)` disables it (HF's 0).
    pub top_k: Option<usize>,
    /// HF repetition penalty: logits of tokens already in prompt or output are divided by
    /// it when positive and multiplied when negative; 1 disables it.
    pub repetition_penalty: f64,
    /// Sample from the distribution; `false` picks the most likely token.
    pub do_sample: bool,
    /// Seed of the sampler, for reproducible sampling; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Tokens that end generation (the config's and tokenizer's end-of-sequence ids).
    pub stop_ids: Vec<i64>,
}

impl Default for GenerationConfig {
    /// HF's defaults, with a budget of 256 new tokens and no stop ids.
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            repetition_penalty: 1.0,
            do_sample: false,
            seed: None,
            stop_ids: Vec::new(),
        }
    }
}

impl GenerationConfig {
    /// Rejects options HF would reject, naming the offending value.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(Error::Invalid("max_new_tokens must be at least 1".into()));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!("top_p must be in (0, 1], got {}", self.top_p)));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::Invalid(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            )));
        }
        Ok(())
    }

    /// Whether tokens are drawn at random (sampling requested with a positive temperature).
    pub fn is_sampling(&self) -> bool {
        self.do_sample && self.temperature > 0.0
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop id was produced.
    Stop,
    /// `max_new_tokens` (or the model's context length) was reached.
    Length,
    /// The `on_token` callback asked to stop.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string (`stop`, `length`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// New tokens, without the prompt and without the stop id that ended generation.
    pub tokens: Vec<i64>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt (for usage accounting).
    pub prompt_tokens: usize,
}

/// Longest sequence (prompt + output) the model is meant to see: `max_position_embeddings`,
/// extended by `factor` for dynamic RoPE scaling, whose point is to run past it.
pub fn context_limit(model: &Llama) -> i64 {
    let cfg = &model.config;
    match &cfg.rope_scaling {
        Some(s) if s.rope_type == "dynamic" => {
            (cfg.max_position_embeddings as f64 * s.factor) as i64
        }
        _ => cfg.max_position_embeddings,
    }
}

/// Generates after `prompt`, calling `on_token(id)` for each new token as it is produced;
/// returning `ControlFlow::Break(())` stops generation (finish reason `Cancelled`). Stop ids
/// end generation without being passed to `on_token` or returned.
pub fn generate(
    model: &Llama,
    prompt: &[i64],
    cfg: &GenerationConfig,
    mut on_token: impl FnMut(i64) -> ControlFlow<()>,
) -> Result<Generated> {
    cfg.validate()?;
    let vocab = model.vocab_size();
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    if let Some(bad) = prompt.iter().find(|&&id| id < 0 || id >= vocab) {
        return Err(Error::Invalid(format!(
            "prompt token id {bad} is outside the vocabulary (size {vocab})"
        )));
    }
    let limit = context_limit(model);
    let prompt_len = prompt.len() as i64;
    if prompt_len >= limit {
        return Err(Error::Invalid(format!(
            "the prompt has {prompt_len} tokens; the model's context holds {limit}"
        )));
    }
    let budget = (cfg.max_new_tokens as i64).min(limit - prompt_len);
    let mut processor = LogitsProcessor::new(cfg, vocab as usize, prompt);
    let _no_grad = tch::no_grad_guard();
    let device = model.device();
    // Room for the prompt and a typical answer up front; longer answers grow the cache
    // by doubling instead of reserving a large budget that is rarely used.
    let mut cache =
        KvCache::with_capacity(&model.config, prompt_len + budget.min(RESERVED_NEW_TOKENS));

    // Prefill: every prompt token goes through the layers, only the last reaches the head.
    let input = Tensor::from_slice(prompt).view([1, prompt_len]).to_device(device);
    let hidden = model.hidden_states(&input, Some(&mut cache), false);
    let mut logits = model.head(&hidden.narrow(1, prompt_len - 1, 1));
    let mut tokens = Vec::new();
    loop {
        let row = logits.view([-1]).to_device(tch::Device::Cpu).to_kind(Kind::Float);
        let mut scores = Vec::<f32>::try_from(&row)?;
        let next = processor.next_token(&mut scores);
        if cfg.stop_ids.contains(&next) {
            return Ok(Generated {
                tokens,
                finish_reason: FinishReason::Stop,
                prompt_tokens: prompt.len(),
            });
        }
        tokens.push(next);
        processor.observe(next);
        if on_token(next).is_break() {
            return Ok(Generated {
                tokens,
                finish_reason: FinishReason::Cancelled,
                prompt_tokens: prompt.len(),
            });
        }
        if tokens.len() as i64 >= budget {
            return Ok(Generated {
                tokens,
                finish_reason: FinishReason::Length,
                prompt_tokens: prompt.len(),
            });
        }
        let input = Tensor::from_slice(&[next]).view([1, 1]).to_device(device);
        logits = model.forward(&input, Some(&mut cache), false);
    }
}

#[cfg(test)]
mod tests;
