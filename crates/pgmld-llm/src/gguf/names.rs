//! GGUF tensor names → Hugging Face names, and undoing llama.cpp's Q/K row permutation.

use tch::Tensor;

use crate::{Error, Result};

/// The Hugging Face name of a GGUF tensor (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`), or `None` when the tensor has no HF
/// counterpart this crate knows.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let (stem, suffix) = gguf_name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let module = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let hf_part = match part {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf_part}")
        }
    };
    Some(format!("{module}.{suffix}"))
}

/// Which projection's rows llama.cpp permuted, with the head count it used.
pub fn permuted_heads(hf_name: &str, n_head: i64, n_head_kv: i64) -> Option<i64> {
    if hf_name.contains(".self_attn.q_proj.") {
        Some(n_head)
    } else if hf_name.contains(".self_attn.k_proj.") {
        Some(n_head_kv)
    } else {
        None
    }
}

/// Undoes `convert_hf_to_gguf.py`'s `permute` of q_proj/k_proj rows (weights `[out, in]`
/// or biases `[out]`). llama.cpp rotates adjacent pairs (GPT-J style RoPE), so the
/// converter interleaved each head's two halves; HF's `rotate_half` wants them back as
/// `[first half; second half]`: rows `(head, pair, 2)` become `(head, 2, pair)`.
pub fn unpermute_rows(t: &Tensor, n_head: i64) -> Result<Tensor> {
    let shape = t.size();
    let rows = shape.first().copied().unwrap_or(0);
    if n_head <= 0 || rows % (2 * n_head) != 0 {
        return Err(Error::Shape {
            name: "q_proj/k_proj rows".into(),
            found: shape,
            expected: vec![2 * n_head.max(1)],
        });
    }
    let mut split = vec![n_head, rows / n_head / 2, 2];
    split.extend_from_slice(&shape[1..]);
    Ok(t.reshape(&split).transpose(1, 2).contiguous().reshape(&shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_llama_tensor() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
            ("blk.12.attn_k.bias", "model.layers.12.self_attn.k_proj.bias"),
            ("blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight"),
            ("blk.29.attn_output.weight", "model.layers.29.self_attn.o_proj.weight"),
            ("blk.2.ffn_gate.weight", "model.layers.2.mlp.gate_proj.weight"),
            ("blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight"),
            ("blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj.weight"),
            ("blk.7.attn_norm.weight", "model.layers.7.input_layernorm.weight"),
            ("blk.7.ffn_norm.weight", "model.layers.7.post_attention_layernorm.weight"),
        ];
        for (gguf, hf) in cases {
            assert_eq!(hf_name(gguf).as_deref(), Some(hf), "{gguf}");
        }
        for unknown in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.ffn_gate_exps.weight",
            "blk.0.attn_q",
        ] {
            assert_eq!(hf_name(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn permuted_projections() {
        assert_eq!(permuted_heads("model.layers.0.self_attn.q_proj.weight", 9, 3), Some(9));
        assert_eq!(permuted_heads("model.layers.0.self_attn.k_proj.bias", 9, 3), Some(3));
        assert_eq!(permuted_heads("model.layers.0.self_attn.v_proj.weight", 9, 3), None);
    }

    /// `convert_hf_to_gguf.py`'s permute, written out: rows `(head, 2, pair)` →
    /// `(head, pair, 2)`.
    fn permute(t: &Tensor, n_head: i64) -> Tensor {
        let shape = t.size();
        let mut split = vec![n_head, 2, shape[0] / n_head / 2];
        split.extend_from_slice(&shape[1..]);
        t.reshape(&split).transpose(1, 2).contiguous().reshape(&shape)
    }

    #[test]
    fn unpermute_restores_hf_row_order() {
        // One head of width 4: the converter stores HF rows [r0, r1, r2, r3] as
        // [r0, r2, r1, r3]; unpermuting must give them back.
        let gguf = Tensor::from_slice(&[0f32, 2., 1., 3.]).reshape([4, 1]);
        let hf = unpermute_rows(&gguf, 1).unwrap();
        assert_eq!(Vec::<f32>::try_from(hf.flatten(0, -1)).unwrap(), vec![0., 1., 2., 3.]);

        // Several heads, 2-D weight and 1-D bias: inverse of the converter's permute.
        let w = Tensor::arange(6 * 8 * 5, (tch::Kind::Float, tch::Device::Cpu)).reshape([48, 5]);
        let back = unpermute_rows(&permute(&w, 6), 6).unwrap();
        assert!(back.equal(&w));
        let b = Tensor::arange(24, (tch::Kind::Float, tch::Device::Cpu));
        assert!(unpermute_rows(&permute(&b, 3), 3).unwrap().equal(&b));
        assert!(!permute(&b, 3).equal(&b));
    }

    #[test]
    fn unpermute_rejects_rows_not_divisible_by_heads() {
        let t = Tensor::zeros([10, 2], (tch::Kind::Float, tch::Device::Cpu));
        assert!(unpermute_rows(&t, 3).is_err());
    }
}
