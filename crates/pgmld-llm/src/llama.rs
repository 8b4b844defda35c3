//! [`Llama`]: the Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2) on libtorch.
//!
//! One implementation covers the family because the architectures differ only in
//! configuration: grouped-query attention (`num_key_value_heads`), RoPE base and scaling,
//! q/k/v biases (Qwen2), tied embeddings. Weights are taken by their Hugging Face names
//! from a [`Weights`] map, whichever file format produced it.
//!
//! The model exposes its steps ([`Llama::embed`], [`Llama::layer`], [`Llama::head`]) as
//! well as [`Llama::forward`], so training can recompute one layer at a time (gradient
//! checkpointing) and generation can skip the vocabulary projection for prompt tokens.

mod layers;
#[cfg(test)]
pub(crate) mod test_model;
#[cfg(test)]
mod tests;

use tch::{Device, Kind, Tensor};

pub use layers::{repeat_kv, Attention, DecoderLayer, Mlp, RmsNorm};

use crate::kv_cache::{KvCache, LayerCache};
use crate::rope::RotaryEmbedding;
use crate::{Error, Linear, LlamaConfig, Result, Weights};

/// A Llama-family causal language model with its weights on one device.
#[derive(Debug)]
pub struct Llama {
    /// The architecture's shape.
    pub config: LlamaConfig,
    /// Token embeddings `[vocab, hidden]` (also the output projection when tied).
    pub embed_tokens: Tensor,
    /// The decoder layers, in order.
    pub layers: Vec<DecoderLayer>,
    /// Final norm before the output projection.
    pub norm: RmsNorm,
    /// Output projection `[vocab, hidden]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    /// The output projection in int8 for CPU inference with `load_in_8bit`
    /// ([`crate::quant::use_cpu_int8_kernels`]); [`Llama::head`] uses it when set. The
    /// vocabulary projection is the largest matrix a token streams (a third of SmolLM2's
    /// f32 bytes), so leaving it in f32 would keep most of the cost.
    pub int8_head: Option<Linear>,
    rope: RotaryEmbedding,
    device: Device,
    kind: Kind,
}

/// Removes `name` from `weights`, checks its shape and moves it to `device` / `kind`.
fn take(
    weights: &mut Weights,
    name: &str,
    expected: &[i64],
    device: Device,
    kind: Kind,
) -> Result<Tensor> {
    let tensor = weights.remove(name).ok_or_else(|| Error::MissingWeight(name.to_string()))?;
    let found = tensor.size();
    if found != expected {
        return Err(Error::Shape { name: name.to_string(), found, expected: expected.to_vec() });
    }
    if !tensor.is_floating_point() {
        return Err(Error::Unsupported(format!(
            "weight {name} has dtype {:?}; dequantise it before loading",
            tensor.kind()
        )));
    }
    // No copy when the tensor already has the right device and dtype.
    Ok(tensor.f_to_device_(device, kind, false, false)?)
}

/// A [`Linear`] `prefix.weight` `[out, in]` with `prefix.bias` `[out]` when `bias`.
fn take_linear(
    weights: &mut Weights,
    prefix: &str,
    out_in: [i64; 2],
    bias: bool,
    device: Device,
    kind: Kind,
) -> Result<Linear> {
    let weight = take(weights, &format!("{prefix}.weight"), &out_in, device, kind)?;
    let bias = if bias {
        Some(take(weights, &format!("{prefix}.bias"), &out_in[..1], device, kind)?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

impl Llama {
    /// Takes the tensors it needs out of `weights` (HF names), checks their shapes against
    /// `config` and moves them to `device` / `kind`. Unused tensors stay in the map.
    pub fn load(
        config: LlamaConfig,
        weights: &mut Weights,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        config.validate()?;
        if !matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            return Err(Error::Invalid(format!(
                "model dtype {kind:?} is not a floating-point type"
            )));
        }
        let hidden = config.hidden_size;
        let vocab = config.vocab_size;
        let head_dim = config.head_dim();
        let (heads, kv_heads) = (config.num_attention_heads, config.num_kv_heads());
        let inter = config.intermediate_size;
        let embed_tokens =
            take(weights, "model.embed_tokens.weight", &[vocab, hidden], device, kind)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers.max(0) as usize);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |name: &str, out_in: [i64; 2], bias: bool| {
                take_linear(weights, &format!("{p}.{name}"), out_in, bias, device, kind)
            };
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj", [heads * head_dim, hidden], config.qkv_bias())?,
                k_proj: linear(
                    "self_attn.k_proj",
                    [kv_heads * head_dim, hidden],
                    config.qkv_bias(),
                )?,
                v_proj: linear(
                    "self_attn.v_proj",
                    [kv_heads * head_dim, hidden],
                    config.qkv_bias(),
                )?,
                o_proj: linear("self_attn.o_proj", [hidden, heads * head_dim], config.o_bias())?,
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim,
            };
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj", [inter, hidden], config.mlp_bias)?,
                up_proj: linear("mlp.up_proj", [inter, hidden], config.mlp_bias)?,
                down_proj: linear("mlp.down_proj", [hidden, inter], config.mlp_bias)?,
            };
            let mut norm = |name: &str| -> Result<RmsNorm> {
                let weight = take(weights, &format!("{p}.{name}.weight"), &[hidden], device, kind)?;
                Ok(RmsNorm::new(weight, config.rms_norm_eps))
            };
            let input_layernorm = norm("input_layernorm")?;
            let post_attention_layernorm = norm("post_attention_layernorm")?;
            layers.push(DecoderLayer { input_layernorm, self_attn, post_attention_layernorm, mlp });
        }
        let norm = RmsNorm::new(
            take(weights, "model.norm.weight", &[hidden], device, kind)?,
            config.rms_norm_eps,
        );
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(take_linear(weights, "lm_head", [vocab, hidden], false, device, kind)?)
        };
        let rope = RotaryEmbedding::new(&config, device, kind)?;
        Ok(Llama {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            int8_head: None,
            rope,
            device,
            kind,
        })
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Device holding the weights (inputs must live there too).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Dtype of the weights and activations.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Vocabulary size (width of the logits).
    pub fn vocab_size(&self) -> i64 {
        self.config.vocab_size
    }

    /// The model's rotary embedding.
    pub fn rope(&self) -> &RotaryEmbedding {
        &self.rope
    }

    /// Token embeddings: `input_ids` `[batch, seq]` (int64) → `[batch, seq, hidden]`.
    pub fn embed(&self, input_ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false)
    }

    /// One decoder layer. `start_pos` is the position of the first token of `x` (the
    /// cache length when generating); `cache` is that layer's cache (generation) or `None`
    /// (training: causal attention within `x`, which is correct for right-padded batches
    /// because padding keys come after every real token).
    ///
    /// # Panics
    /// If `i` is not below [`Llama::num_layers`].
    pub fn layer(
        &self,
        i: usize,
        x: &Tensor,
        start_pos: i64,
        cache: Option<&mut LayerCache>,
        train: bool,
    ) -> Tensor {
        self.layers[i].forward(x, &self.rope, start_pos, cache, train)
    }

    /// Final norm and output projection: `[…, hidden]` → logits `[…, vocab]` in f32.
    pub fn head(&self, x: &Tensor) -> Tensor {
        let x = self.norm.forward(x);
        let logits = match (&self.int8_head, &self.lm_head) {
            (Some(head), _) | (None, Some(head)) => head.forward(&x, false),
            (None, None) => x.linear(&self.embed_tokens, None::<&Tensor>),
        };
        logits.to_kind(Kind::Float)
    }

    /// Runs embeddings and every layer: hidden states `[batch, seq, hidden]` before the
    /// final norm. With a cache, `input_ids` continue the cached sequence.
    ///
    /// # Panics
    /// If `cache` was built for a different number of layers.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Tensor {
        let mut x = self.embed(input_ids);
        match cache {
            Some(cache) => {
                assert_eq!(
                    cache.num_layers(),
                    self.num_layers(),
                    "KV cache built for another model"
                );
                let start = cache.len();
                for i in 0..self.num_layers() {
                    x = self.layer(i, &x, start, Some(cache.layer_mut(i)), train);
                }
            }
            None => {
                for i in 0..self.num_layers() {
                    x = self.layer(i, &x, 0, None, train);
                }
            }
        }
        x
    }

    /// Logits `[batch, seq, vocab]` (f32) for `input_ids` `[batch, seq]`.
    pub fn forward(&self, input_ids: &Tensor, cache: Option<&mut KvCache>, train: bool) -> Tensor {
        self.head(&self.hidden_states(input_ids, cache, train))
    }

    /// Every projection with its HF module path (`model.layers.3.self_attn.q_proj`,
    /// `model.layers.3.mlp.down_proj`, `lm_head`), so LoRA and int8 can wrap them in place.
    /// `lm_head` is absent when tied to the embeddings.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7 + 1);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let Attention { q_proj, k_proj, v_proj, o_proj, .. } = &mut layer.self_attn;
            out.push((format!("{p}.self_attn.q_proj"), q_proj));
            out.push((format!("{p}.self_attn.k_proj"), k_proj));
            out.push((format!("{p}.self_attn.v_proj"), v_proj));
            out.push((format!("{p}.self_attn.o_proj"), o_proj));
            let Mlp { gate_proj, up_proj, down_proj } = &mut layer.mlp;
            out.push((format!("{p}.mlp.gate_proj"), gate_proj));
            out.push((format!("{p}.mlp.up_proj"), up_proj));
            out.push((format!("{p}.mlp.down_proj"), down_proj));
        }
        if let Some(lm_head) = &mut self.lm_head {
            out.push(("lm_head".to_string(), lm_head));
        }
        out
    }
}
