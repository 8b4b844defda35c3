//! [`Linear`]: `y = x Wᵀ + b` with the base weight frozen.
//!
//! Every projection of a decoder layer is one of these, so the memory options and adapters
//! have one place to plug in: LoRA adds a trainable low-rank update next to the frozen
//! weight ([`LoraAdapter`]), and `load_in_8bit` swaps the weight for int8 values with
//! per-output-channel scales ([`Linear::quantize_int8`]).
//!
//! The int8 weight is dequantised on the fly in `forward`, so gradients still flow to the
//! input (and from there to the adapters of earlier layers); the weight itself never gets
//! one. Autograd keeps the dequantised copy until backward, which is why the trainer
//! recomputes layers in backward for an int8 model (see `causal_train`).

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// The trainable low-rank update of a [`Linear`] (peft's `LoraLayer`):
/// `Δy = scaling · B A dropout(x)`.
#[derive(Debug)]
pub struct LoraAdapter {
    /// `lora_A` `[r, in_features]`: kaiming-uniform at creation, as peft.
    pub a: Tensor,
    /// `lora_B` `[out_features, r]`: zeros at creation, so a fresh adapter changes nothing.
    pub b: Tensor,
    /// `lora_alpha / r`.
    pub scaling: f64,
    /// Dropout probability on the adapter's input, in training only (`lora_dropout`).
    pub dropout: f64,
}

impl LoraAdapter {
    /// `scaling · B A dropout(x)` in the adapter's dtype, returned in `x`'s.
    fn delta(&self, x: &Tensor, train: bool) -> Tensor {
        let input = x.to_kind(self.a.kind());
        let input =
            if train && self.dropout > 0.0 { input.dropout(self.dropout, true) } else { input };
        (input.linear::<Tensor>(&self.a, None).linear::<Tensor>(&self.b, None) * self.scaling)
            .to_kind(x.kind())
    }

    /// Rank `r`.
    pub fn rank(&self) -> i64 {
        self.a.size()[0]
    }
}

/// A frozen projection (weight `[out, in]`, HF layout) with an optional bias, an optional
/// int8 form of the weight and an optional LoRA adapter.
#[derive(Debug)]
pub struct Linear {
    /// Weight `[out_features, in_features]`; never trained. Floating point, or int8 values
    /// when [`Linear::int8_scale`] is set (`weight ≈ int8 · scale` per output row).
    pub weight: Tensor,
    /// Bias `[out_features]`, when the checkpoint has one (trainable only with LoRA's
    /// `bias` "all" / "lora_only").
    pub bias: Option<Tensor>,
    /// Per-output-channel scales `[out_features]` (f32) of an int8 weight: `absmax / 127`.
    pub int8_scale: Option<Tensor>,
    /// The LoRA adapter, when this projection is one of the `target_modules`.
    pub lora: Option<LoraAdapter>,
    /// The int8 scales in bfloat16, set by [`Linear::use_cpu_int8_kernel`] for CPU
    /// inference: then `forward` (outside training, input without gradient) runs libtorch's
    /// int8 weight kernel, which reads the int8 values as they are (a quarter of the f32
    /// bytes per token) and takes bfloat16 activations, instead of dequantising the weight
    /// at every call.
    pub int8_kernel_scale: Option<Tensor>,
}

/// Sizes of a weight before and after int8 quantisation, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuantizedBytes {
    /// Bytes of the floating-point weight.
    pub before: u64,
    /// Bytes of the int8 values plus their f32 scales.
    pub after: u64,
}

/// Bytes a tensor's elements take.
pub(crate) fn tensor_bytes(t: &Tensor) -> u64 {
    t.numel() as u64 * t.kind().elt_size_in_bytes() as u64
}

impl Linear {
    /// A projection from its HF weight and optional bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias, int8_scale: None, lora: None, int8_kernel_scale: None }
    }

    /// Output features.
    pub fn out_features(&self) -> i64 {
        self.weight.size()[0]
    }

    /// Input features.
    pub fn in_features(&self) -> i64 {
        self.weight.size()[1]
    }

    /// Bytes of the weight as held: floating point, or int8 values plus their f32 scales.
    pub fn weight_bytes(&self) -> u64 {
        tensor_bytes(&self.weight) + self.int8_scale.as_ref().map_or(0, tensor_bytes)
    }

    /// Whether the weight is held as int8 values with per-channel scales.
    pub fn is_int8(&self) -> bool {
        self.int8_scale.is_some()
    }

    /// The weight as floating point of `kind` (dequantised when int8).
    pub fn dense_weight(&self, kind: Kind) -> Tensor {
        match &self.int8_scale {
            Some(scale) => self.weight.to_kind(kind) * scale.to_kind(kind).unsqueeze(1),
            None => self.weight.to_kind(kind),
        }
    }

    /// `x Wᵀ + b (+ LoRA)` over the last dimension of `x`. `train` enables adapter dropout.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        // A trainable bias lives in the (f32) adapter VarStore: cast it to the activations'
        // dtype (a no-op when they match).
        let bias = self.bias.as_ref().map(|b| b.to_kind(x.kind()));
        let base = match (&self.int8_scale, &self.int8_kernel_scale) {
            (None, _) => x.linear(&self.weight, bias.as_ref()),
            (Some(_), Some(kernel_scale)) if !train && !x.requires_grad() => {
                self.int8_kernel(x, kernel_scale, bias.as_ref())
            }
            (Some(_), _) => x.linear(&self.dense_weight(x.kind()), bias.as_ref()),
        };
        match &self.lora {
            Some(lora) => base + lora.delta(x, train),
            None => base,
        }
    }

    /// `x Wᵀ + b` through `_weight_int8pack_mm`: `x` as `[rows, in]` bfloat16, the result
    /// back in `x`'s shape and dtype. The kernel has no backward, hence only for inputs
    /// that need no gradient.
    fn int8_kernel(&self, x: &Tensor, kernel_scale: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let mut shape = x.size();
        let rows = aligned(x.reshape([-1, self.in_features()]).to_kind(Kind::BFloat16));
        let y = rows.internal_weight_int8pack_mm(&self.weight, kernel_scale);
        if let Some(last) = shape.last_mut() {
            *last = self.out_features();
        }
        let y = y.view(shape.as_slice()).to_kind(x.kind());
        match bias {
            Some(b) => y + b,
            None => y,
        }
    }

    /// Makes CPU inference use libtorch's int8 weight kernel (bfloat16 activations) for
    /// this int8 projection; returns false, changing nothing, for a floating-point weight,
    /// one off the CPU (the kernel is CPU-only here), or an input width the kernel cannot
    /// take (see [`INT8_KERNEL_K_MULTIPLE`]).
    pub fn use_cpu_int8_kernel(&mut self) -> bool {
        match &self.int8_scale {
            Some(scale)
                if self.weight.device() == tch::Device::Cpu
                    && self.in_features() % INT8_KERNEL_K_MULTIPLE == 0 =>
            {
                self.weight = aligned(self.weight.shallow_clone());
                self.int8_kernel_scale = Some(scale.to_kind(Kind::BFloat16));
                true
            }
            _ => false,
        }
    }

    /// Replaces the floating-point weight by int8 values `round(W / s)` with one scale
    /// `s = absmax / 127` per output row (weight-only, symmetric, as bitsandbytes'
    /// `Int8Params` row-wise scales). Already int8: nothing changes.
    pub fn quantize_int8(&mut self) -> QuantizedBytes {
        if self.is_int8() {
            let bytes = self.weight_bytes();
            return QuantizedBytes { before: bytes, after: bytes };
        }
        let before = tensor_bytes(&self.weight);
        let (q, scale) = tch::no_grad(|| {
            let w = self.weight.to_kind(Kind::Float);
            // One f32 temporary of the weight's size at a time (row max and min instead of
            // |W|, rounding in place): a vocabulary projection is 100+ MB.
            let rows = [1i64];
            let absmax =
                w.amax(rows.as_slice(), false).maximum(&w.amin(rows.as_slice(), false).neg());
            let scale = (absmax / 127.0).clamp_min(f32::MIN_POSITIVE as f64);
            let mut scaled = w / scale.unsqueeze(1);
            let _ = scaled.round_();
            let _ = scaled.clamp_(-127.0, 127.0);
            (scaled.to_kind(Kind::Int8), scale)
        });
        self.weight = q;
        self.int8_scale = Some(scale);
        self.int8_kernel_scale = None;
        QuantizedBytes { before, after: self.weight_bytes() }
    }

    /// Folds the adapter into the weight (`W += scaling · B A`) and drops it, so inference
    /// costs what the base model costs. An int8 weight cannot absorb it (the sum would need
    /// new scales and lose the adapter's precision): that is an [`Error::Unsupported`].
    pub fn merge_lora(&mut self) -> Result<()> {
        if self.is_int8() {
            return Err(Error::Unsupported("merging a LoRA adapter into an int8 weight".into()));
        }
        if let Some(lora) = self.lora.take() {
            tch::no_grad(|| {
                let delta =
                    lora.b.to_kind(Kind::Float).matmul(&lora.a.to_kind(Kind::Float)) * lora.scaling;
                let merged = self.weight.to_kind(Kind::Float) + delta;
                self.weight = merged.to_kind(self.weight.kind());
            });
        }
        Ok(())
    }
}

/// `_weight_int8pack_mm`'s CPU kernel walks the input width in steps of 16 (AVX-512; 8 on
/// AVX2) with aligned vector loads and no remainder loop: any other width reads past the
/// rows (a crash seen on AVX-512 machines), so such projections keep the dequantising path.
pub const INT8_KERNEL_K_MULTIPLE: i64 = 16;

/// `t` itself when contiguous and 64-byte aligned, else a fresh contiguous copy (libtorch's
/// allocator aligns to 64): the int8 kernel's aligned 32-byte loads need aligned rows,
/// which a view at an odd offset does not have.
fn aligned(t: Tensor) -> Tensor {
    if t.is_contiguous() && (t.data_ptr() as usize).is_multiple_of(64) {
        return t;
    }
    let mut out = Tensor::empty(t.size(), (t.kind(), t.device()));
    out.copy_(&t);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn randn(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }

    #[test]
    fn dense_forward_is_x_wt_plus_b() {
        tch::manual_seed(0);
        let (w, b, x) = (randn(&[3, 4]), randn(&[3]), randn(&[2, 5, 4]));
        let lin = Linear::new(w.shallow_clone(), Some(b.shallow_clone()));
        assert_eq!((lin.in_features(), lin.out_features()), (4, 3));
        let want = x.matmul(&w.tr()) + &b;
        assert!(max_abs(&(lin.forward(&x, false) - want)) < 1e-6);
    }

    #[test]
    fn int8_is_close_to_dense_and_quarter_size() {
        tch::manual_seed(1);
        let (w, b, x) = (randn(&[64, 128]), randn(&[64]), randn(&[3, 128]));
        let dense = Linear::new(w.copy(), Some(b.copy()));
        let mut q = Linear::new(w.copy(), Some(b.copy()));
        let bytes = q.quantize_int8();
        assert!(q.is_int8() && q.weight.kind() == Kind::Int8);
        assert_eq!(bytes.before, 64 * 128 * 4);
        assert_eq!(bytes.after, 64 * 128 + 64 * 4);
        // Per-row error of round-to-nearest is at most half a step.
        let step = w.abs().amax([1i64].as_slice(), true) / 127.0;
        let err = (q.dense_weight(Kind::Float) - &w).abs() - step * 0.5 - 1e-6;
        assert!(err.max().double_value(&[]) <= 0.0);
        let (yd, yq) = (dense.forward(&x, false), q.forward(&x, false));
        let rel = max_abs(&(&yq - &yd)) / max_abs(&yd);
        assert!(rel < 0.02, "relative error {rel}");
        // Quantising twice changes nothing.
        assert_eq!(q.quantize_int8().before, bytes.after);
    }

    #[test]
    fn cpu_int8_kernel_matches_dequantised_forward_in_inference_only() {
        tch::manual_seed(6);
        let (w, b, x) = (randn(&[48, 64]), randn(&[48]), randn(&[2, 3, 64]));
        let mut q = Linear::new(w.copy(), Some(b.copy()));
        assert!(!q.use_cpu_int8_kernel(), "a float weight has no int8 kernel");
        q.quantize_int8();
        let dequantised = q.forward(&x, false);
        assert!(q.use_cpu_int8_kernel());
        let kernel = q.forward(&x, false);
        assert_eq!(kernel.size(), vec![2, 3, 48]);
        assert_eq!(kernel.kind(), Kind::Float);
        // Only bfloat16 rounding of the activations and scales separates the two.
        let rel = max_abs(&(&kernel - &dequantised)) / max_abs(&dequantised);
        assert!(rel > 0.0 && rel < 0.02, "relative difference {rel}");
        // Training, or an input that needs a gradient, takes the dequantising path.
        assert!(max_abs(&(q.forward(&x, true) - &dequantised)) < 1e-5);
        let xg = x.copy().set_requires_grad(true);
        let y = q.forward(&xg, false);
        assert!(max_abs(&(&y - &dequantised)) < 1e-5);
        y.sum(Kind::Float).backward();
        assert!(xg.grad().defined());
        // Quantising again (a no-op) keeps the kernel.
        q.quantize_int8();
        assert!(q.int8_kernel_scale.is_some());
        // An input width the kernel cannot walk (24) keeps the dequantising path.
        let (w24, x24) = (randn(&[8, 24]), randn(&[3, 24]));
        let mut odd = Linear::new(w24, None);
        odd.quantize_int8();
        let want = odd.forward(&x24, false);
        assert!(!odd.use_cpu_int8_kernel() && odd.int8_kernel_scale.is_none());
        assert!(max_abs(&(odd.forward(&x24, false) - want)) < 1e-6);
        // Activations at an unaligned offset (a view one bfloat16 into a buffer) are copied
        // before the kernel reads them, and give the same result.
        let buf = Tensor::zeros([2 * 3 * 64 + 1], (Kind::Float, tch::Device::Cpu));
        let view = buf.narrow(0, 1, 2 * 3 * 64).view([2, 3, 64]);
        let mut v = view.shallow_clone();
        v.copy_(&x);
        assert!(max_abs(&(q.forward(&view, false) - &kernel)) < 1e-6);
        let offset = aligned(view.to_kind(Kind::BFloat16).narrow(2, 1, 32));
        assert!(offset.is_contiguous() && (offset.data_ptr() as usize).is_multiple_of(64));
    }

    #[test]
    fn int8_passes_gradients_to_the_input_only() {
        tch::manual_seed(2);
        let w = randn(&[8, 6]);
        let mut q = Linear::new(w.copy(), None);
        q.quantize_int8();
        let x = randn(&[4, 6]).set_requires_grad(true);
        q.forward(&x, true).sum(Kind::Float).backward();
        // d/dx sum(x Wᵀ) = column sums of the dequantised W, for every row of x.
        let want = q.dense_weight(Kind::Float).sum_dim_intlist([0i64].as_slice(), false, None);
        assert!(max_abs(&(x.grad() - want.unsqueeze(0))) < 1e-5);
        assert!(!q.weight.grad().defined());
    }

    fn adapter(out: i64, inp: i64, r: i64, dropout: f64) -> LoraAdapter {
        LoraAdapter {
            a: randn(&[r, inp]).set_requires_grad(true),
            b: randn(&[out, r]).set_requires_grad(true),
            scaling: 2.0,
            dropout,
        }
    }

    #[test]
    fn lora_adds_scaled_low_rank_update_and_trains_a_b_only() {
        tch::manual_seed(3);
        let w = randn(&[5, 7]);
        let x = randn(&[2, 7]);
        let mut lin = Linear::new(w.copy(), None);
        lin.lora = Some(adapter(5, 7, 2, 0.0));
        let lora = lin.lora.as_ref().unwrap();
        let want = x.matmul(&w.tr()) + x.matmul(&lora.a.tr()).matmul(&lora.b.tr()) * 2.0;
        let y = lin.forward(&x, true);
        assert!(max_abs(&(&y - want)) < 1e-5);
        y.sum(Kind::Float).backward();
        assert!(lora.a.grad().defined() && lora.b.grad().defined());
        assert!(!lin.weight.grad().defined());
    }

    #[test]
    fn lora_dropout_only_in_training() {
        tch::manual_seed(4);
        let mut lin = Linear::new(Tensor::zeros([4, 64], (Kind::Float, Device::Cpu)), None);
        lin.lora = Some(adapter(4, 64, 2, 0.5));
        let x = randn(&[3, 64]);
        let eval_a = lin.forward(&x, false);
        assert!(max_abs(&(lin.forward(&x, false) - &eval_a)) == 0.0);
        assert!(max_abs(&(lin.forward(&x, true) - &eval_a)) > 1e-3);
    }

    #[test]
    fn merge_folds_the_adapter_into_a_dense_weight_only() {
        tch::manual_seed(5);
        let x = randn(&[3, 7]);
        let mut lin = Linear::new(randn(&[5, 7]), Some(randn(&[5])));
        lin.lora = Some(adapter(5, 7, 3, 0.1));
        let before = lin.forward(&x, false);
        lin.merge_lora().unwrap();
        assert!(lin.lora.is_none());
        assert!(max_abs(&(lin.forward(&x, false) - before)) < 1e-5);
        let mut q = Linear::new(randn(&[5, 7]), None);
        q.quantize_int8();
        q.lora = Some(adapter(5, 7, 3, 0.0));
        assert!(matches!(q.merge_lora(), Err(Error::Unsupported(_))));
        assert!(q.lora.is_some());
    }
}
