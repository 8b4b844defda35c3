//! The pieces of a Llama decoder layer: RMSNorm, grouped-query self-attention with RoPE,
//! and the SwiGLU MLP.

use tch::{Kind, Tensor};

use crate::kv_cache::LayerCache;
use crate::rope::RotaryEmbedding;
use crate::Linear;

/// Root-mean-square layer norm with HF's semantics: statistics in f32, the normalised
/// activations cast back to the input dtype before the weight multiplies them.
#[derive(Debug)]
pub struct RmsNorm {
    /// Per-channel gain `[hidden]`.
    pub weight: Tensor,
    /// Added to the mean square before the square root (config `rms_norm_eps`).
    pub eps: f64,
}

impl RmsNorm {
    /// A norm from its gain and epsilon.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps }
    }

    /// Normalises over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if x.kind() == Kind::Float && self.weight.kind() == Kind::Float {
            // Same math as below, one fused ATen kernel.
            let hidden = self.weight.size();
            return x.rms_norm(hidden.as_slice(), Some(&self.weight), self.eps);
        }
        let input_kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let mean_square = x32.square().mean_dim(-1, true, Kind::Float);
        let normed = x32 * (mean_square + self.eps).rsqrt();
        &self.weight * normed.to_kind(input_kind)
    }
}

/// Multi-head self-attention with grouped key/value heads (HF `self_attn`).
#[derive(Debug)]
pub struct Attention {
    /// Query projection `[heads·head_dim, hidden]`.
    pub q_proj: Linear,
    /// Key projection `[kv_heads·head_dim, hidden]`.
    pub k_proj: Linear,
    /// Value projection `[kv_heads·head_dim, hidden]`.
    pub v_proj: Linear,
    /// Output projection `[hidden, heads·head_dim]`.
    pub o_proj: Linear,
    /// Query heads.
    pub num_heads: i64,
    /// Key/value heads; each serves `num_heads / num_kv_heads` query heads.
    pub num_kv_heads: i64,
    /// Width of one head.
    pub head_dim: i64,
}

impl Attention {
    /// `x` `[batch, seq, hidden]` at positions `start_pos..`; with a cache the new keys and
    /// values are appended and attention covers the whole history.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        start_pos: i64,
        cache: Option<&mut LayerCache>,
        train: bool,
    ) -> Tensor {
        let size = x.size();
        let (batch, seq) = (size[0], size[1]);
        let heads = |proj: &Linear, n: i64| {
            proj.forward(x, train).view([batch, seq, n, self.head_dim]).transpose(1, 2)
        };
        let q = heads(&self.q_proj, self.num_heads);
        let k = heads(&self.k_proj, self.num_kv_heads);
        let v = heads(&self.v_proj, self.num_kv_heads);
        let (q, k) = rope.apply(&q, &k, start_pos);
        let (k, v, past) = match cache {
            Some(cache) => {
                let past = cache.len();
                let (k, v) = cache.append(&k, &v);
                (k, v, past)
            }
            None => (k, v, 0),
        };
        let context = self.attend(&q, &k, &v, past);
        let context = context.transpose(1, 2).reshape([batch, seq, self.num_heads * self.head_dim]);
        self.o_proj.forward(&context, train)
    }

    /// Scaled dot-product attention of `q` `[b, heads, t, d]` over `k`/`v`
    /// `[b, kv_heads, past + t, d]`, query `i` seeing keys up to `past + i`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, past: i64) -> Tensor {
        let q_size = q.size();
        let (batch, seq) = (q_size[0], q_size[2]);
        let group = self.num_heads / self.num_kv_heads;
        if seq == 1 {
            // One new token sees every cached key: fold each group of query heads into
            // the sequence axis so all of them share their key/value head without copying
            // the cache (HF's repeat_kv order: head h uses kv head h / group).
            let grouped = q.reshape([batch, self.num_kv_heads, group, self.head_dim]);
            let out = Tensor::scaled_dot_product_attention(
                &grouped,
                k,
                v,
                None::<&Tensor>,
                0.0,
                false,
                None::<f64>,
                false,
            );
            return out.reshape([batch, self.num_heads, 1, self.head_dim]);
        }
        let (k, v) = if group > 1 {
            (repeat_kv(k, group), repeat_kv(v, group))
        } else {
            (k.shallow_clone(), v.shallow_clone())
        };
        if past == 0 {
            return Tensor::scaled_dot_product_attention(
                q,
                &k,
                &v,
                None::<&Tensor>,
                0.0,
                true,
                None::<f64>,
                false,
            );
        }
        // Chunked prefill after a cache: SDPA's `is_causal` aligns the mask top-left, but
        // the new queries sit at the bottom-right of the key range.
        let total = past + seq;
        let device = q.device();
        let query_pos = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
        let key_pos = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
        let mask = key_pos.le_tensor(&query_pos);
        Tensor::scaled_dot_product_attention(q, &k, &v, Some(&mask), 0.0, false, None::<f64>, false)
    }
}

/// HF's `repeat_kv`: `[b, kv_heads, s, d]` → `[b, kv_heads·group, s, d]`, each kv head
/// repeated for the `group` query heads that share it.
pub fn repeat_kv(x: &Tensor, group: i64) -> Tensor {
    let size = x.size();
    x.unsqueeze(2).expand([size[0], size[1], group, size[2], size[3]], false).reshape([
        size[0],
        size[1] * group,
        size[2],
        size[3],
    ])
}

/// SwiGLU feed-forward (HF `mlp`): `down(silu(gate(x)) · up(x))`.
#[derive(Debug)]
pub struct Mlp {
    /// Gate projection `[intermediate, hidden]`.
    pub gate_proj: Linear,
    /// Up projection `[intermediate, hidden]`.
    pub up_proj: Linear,
    /// Down projection `[hidden, intermediate]`.
    pub down_proj: Linear,
}

impl Mlp {
    /// Applies the MLP over the last dimension.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let gated = self.gate_proj.forward(x, train).silu() * self.up_proj.forward(x, train);
        self.down_proj.forward(&gated, train)
    }
}

/// One pre-norm decoder layer (HF `model.layers.{i}`).
#[derive(Debug)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Self-attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// Feed-forward block.
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// `x + attn(norm(x))`, then `+ mlp(norm(·))`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        start_pos: i64,
        cache: Option<&mut LayerCache>,
        train: bool,
    ) -> Tensor {
        let attn =
            self.self_attn.forward(&self.input_layernorm.forward(x), rope, start_pos, cache, train);
        let x = x + attn;
        let mlp = self.mlp.forward(&self.post_attention_layernorm.forward(&x), train);
        x + mlp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn rms_norm_fused_and_explicit_paths_agree_with_formula() {
        tch::manual_seed(1);
        let x = Tensor::randn([2, 3, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([8], (Kind::Float, Device::Cpu));
        let norm = RmsNorm::new(w.shallow_clone(), 1e-5);
        let want = &x * (x.square().mean_dim(-1, true, Kind::Float) + 1e-5).rsqrt() * &w;
        assert!(norm.forward(&x).allclose(&want, 1e-5, 1e-6, false));
        // The non-f32 path (f64 here) follows the same formula.
        let norm64 = RmsNorm::new(w.to_kind(Kind::Double), 1e-5);
        let got = norm64.forward(&x.to_kind(Kind::Double)).to_kind(Kind::Float);
        assert!(got.allclose(&want, 1e-5, 1e-6, false));
    }

    #[test]
    fn repeat_kv_matches_hf_order() {
        let x = Tensor::arange(2, (Kind::Float, Device::Cpu)).view([1, 2, 1, 1]);
        let r: Vec<f32> = Vec::try_from(&repeat_kv(&x, 3).view([-1])).unwrap();
        assert_eq!(r, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }
}
