//! `load_in_8bit`: int8 weight-only quantisation of a [`Llama`]'s decoder projections.
//!
//! Each projection weight becomes int8 values with one f32 scale per output channel
//! (symmetric absmax, as bitsandbytes' row-wise `Int8Params`), a quarter of the f32 bytes;
//! `Linear::forward` dequantises it on the fly. Embeddings, norms and `lm_head` stay in
//! floating point, as `transformers` keeps `lm_head` out of 8-bit conversion. Unlike
//! LLM.int8() the activations are not quantised (no int8 matmul on CPU), so results stay
//! close to the full-precision model; the saving is memory.
//!
//! For inference on the CPU, [`use_cpu_int8_kernels`] adds speed: the projections run
//! libtorch's int8 weight kernel (`_weight_int8pack_mm`, bfloat16 activations) on the int8
//! values as stored, and the vocabulary projection gets an int8 form too, so a generated
//! token streams about a quarter of the f32 bytes. Decoding a token is bound by those
//! bytes, not by arithmetic.

use crate::linear::QuantizedBytes;
use crate::llama::Llama;

/// What [`quantize_int8`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuantReport {
    /// Projections quantised.
    pub linears: usize,
    /// Bytes of their floating-point weights before.
    pub bytes_before: u64,
    /// Bytes of their int8 values and scales after.
    pub bytes_after: u64,
}

/// Quantises every decoder projection (q/k/v/o, gate/up/down) of `model` to int8 with
/// per-channel scales; `lm_head` and the embeddings are left alone. Idempotent.
pub fn quantize_int8(model: &mut Llama) -> QuantReport {
    let mut report = QuantReport::default();
    for (path, lin) in model.linears_mut() {
        if path == "lm_head" {
            continue;
        }
        let QuantizedBytes { before, after } = lin.quantize_int8();
        report.linears += 1;
        report.bytes_before += before;
        report.bytes_after += after;
    }
    release_freed_memory();
    report
}

/// Hands the heap's free pages back to the OS. The f32 weights that quantisation replaced
/// were allocated on the loading threads' malloc arenas, which glibc keeps otherwise, so
/// an int8 model would hold the f32 model's memory as well.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; no pointer is handed over.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Switches an int8 `model` on the CPU to the int8 inference kernels: every int8
/// projection, and an int8 copy of the output projection (the embeddings when tied) that
/// [`Llama::head`] then uses. Returns the bytes the int8 head added; `None`, changing
/// nothing, when the model is not on the CPU or has no int8 projection.
pub fn use_cpu_int8_kernels(model: &mut Llama) -> Option<u64> {
    if model.device() != tch::Device::Cpu {
        return None;
    }
    let mut any = false;
    for (_, lin) in model.linears_mut() {
        any |= lin.use_cpu_int8_kernel();
    }
    if !any {
        return None;
    }
    let dense_head = match &model.lm_head {
        Some(head) if head.is_int8() => None,
        Some(head) => Some(head.weight.shallow_clone()),
        None => Some(model.embed_tokens.shallow_clone()),
    };
    let mut added = 0;
    if let Some(weight) = dense_head {
        let mut head = crate::Linear::new(weight, None);
        let QuantizedBytes { after, .. } = head.quantize_int8();
        head.use_cpu_int8_kernel();
        added = after;
        model.int8_head = Some(head);
        release_freed_memory();
    }
    Some(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::test_model::tiny_model;
    use tch::{Kind, Tensor};

    #[test]
    fn float_models_get_no_int8_kernels() {
        let mut model = tiny_model("llama", 12);
        assert_eq!(use_cpu_int8_kernels(&mut model), None);
        assert!(model.int8_head.is_none());
    }

    #[test]
    fn decoder_projections_become_int8_and_logits_stay_close() {
        let mut model = tiny_model("llama", 11);
        let ids = Tensor::from_slice(&[4i64, 8, 15, 16, 23, 31]).view([1, 6]);
        let dense = model.forward(&ids, None, false);
        let report = quantize_int8(&mut model);
        assert_eq!(report.linears, 14);
        // Per layer: q,o 16·16, k,v 8·16, gate,up,down 24·16 weights (f32), and one f32
        // scale per output row after.
        let weights: u64 = 2 * (2 * 256 + 2 * 128 + 3 * 384);
        let rows: u64 = 2 * (16 + 16 + 8 + 8 + 24 + 24 + 16);
        assert_eq!(report.bytes_before, 4 * weights);
        assert_eq!(report.bytes_after, weights + 4 * rows);
        let lm_head = model.lm_head.as_ref().unwrap();
        assert!(!lm_head.is_int8() && lm_head.weight.kind() == Kind::Float);
        assert_eq!(model.layers[1].mlp.down_proj.weight.kind(), Kind::Int8);
        let q = model.forward(&ids, None, false);
        let rel = (&q - &dense).abs().max().double_value(&[]) / dense.abs().max().double_value(&[]);
        assert!(rel < 0.05, "relative logit error {rel}");
        assert!(rel > 0.0, "quantisation changed nothing");
        // Greedy next tokens agree.
        assert_eq!(
            Vec::<i64>::try_from(q.argmax(-1, false).view([-1])).unwrap(),
            Vec::<i64>::try_from(dense.argmax(-1, false).view([-1])).unwrap()
        );
        // The CPU kernels, with an int8 copy of the f32 lm_head: close to the
        // dequantising forward, same greedy tokens.
        let vocab_hidden = model.embed_tokens.numel() as u64;
        let added = use_cpu_int8_kernels(&mut model).expect("an int8 model on the CPU");
        assert_eq!(added, vocab_hidden + 4 * model.vocab_size() as u64);
        let head = model.int8_head.as_ref().unwrap();
        assert!(head.is_int8() && head.int8_kernel_scale.is_some());
        let k = model.forward(&ids, None, false);
        let rel = (&k - &q).abs().max().double_value(&[]) / q.abs().max().double_value(&[]);
        assert!(rel > 0.0 && rel < 0.05, "kernel vs dequantised: relative logit error {rel}");
        assert_eq!(
            Vec::<i64>::try_from(k.argmax(-1, false).view([-1])).unwrap(),
            Vec::<i64>::try_from(dense.argmax(-1, false).view([-1])).unwrap()
        );
        // Again: nothing left to quantise, sizes unchanged.
        let again = quantize_int8(&mut model);
        assert_eq!(again.bytes_before, again.bytes_after);
    }
}
