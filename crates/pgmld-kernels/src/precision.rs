//! Gradient clipping with libtorch's foreach kernels, and the TF32 switches: the parts of
//! a training step that PyTorch runs as a few multi-tensor kernels or process settings and
//! tch leaves out (its generator skips ops over lists of tensors updated in place).

use std::ffi::{c_char, c_void};

use tch::Tensor;

use crate::{call, handles, KernelError};

extern "C" {
    fn pgmld_clip_grad_norm(
        grads: *const *const c_void,
        n: usize,
        max_norm: f64,
        total: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgmld_set_tf32(matmul: i32, conv: i32) -> i32;
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)` on the gradients
/// themselves: returns their global L2 norm (a 0-dim float tensor on their device, before
/// clipping) and, when `max_norm` > 0, scales them in place by
/// `min(1, max_norm / (norm + 1e-6))`. One `_foreach_norm` and one `_foreach_mul_` for the
/// whole list (a few kernel launches on CUDA instead of two per tensor); no host sync.
pub fn clip_grad_norm_(grads: &[Tensor], max_norm: f64) -> Result<Tensor, KernelError> {
    if grads.is_empty() {
        return Err(KernelError("clip_grad_norm_ of no gradients".into()));
    }
    let h = handles(grads);
    let mut total = std::ptr::null_mut();
    // SAFETY: live tch tensor handles borrowed for the call; `total` receives a new
    // at::Tensor* on success.
    call(|err, len| unsafe {
        pgmld_clip_grad_norm(h.as_ptr(), h.len(), max_norm, &mut total, err, len)
    })?;
    if total.is_null() {
        return Err(KernelError("clip_grad_norm_: the shim returned no norm".into()));
    }
    // SAFETY: a new at::Tensor* the shim allocated with `new`, as tch's own C API does;
    // the Tensor owns it from here and frees it once.
    Ok(unsafe { Tensor::from_ptr(total.cast()) })
}

/// at::Float32Precision::IEEE and ::TF32.
const IEEE: i32 = 1;
const TF32: i32 = 2;

/// TF32 for float32 matrix products and convolutions on CUDA (HF's `tf32` training
/// argument), process-wide, until the guard is dropped, which restores what it found.
#[must_use = "the setting is restored when the guard is dropped"]
pub struct Tf32Guard {
    /// matmul | conv << 4 as found; `None` when libtorch refused to say.
    before: Option<i32>,
}

/// Allows (`true`) or forbids TensorFloat-32 for CUDA float32 matmuls and convolutions
/// (`torch.backends.cuda.matmul.fp32_precision` and `torch.backends.cudnn.conv.fp32_precision`,
/// formerly `allow_tf32`). No effect on CPU work. The setting is process-wide, as in
/// PyTorch: jobs training at the same time in one process share it.
pub fn tf32(allow: bool) -> Tf32Guard {
    let p = if allow { TF32 } else { IEEE };
    // SAFETY: plain integers; the shim catches libtorch's exceptions.
    let before = unsafe { pgmld_set_tf32(p, p) };
    Tf32Guard { before: (before >= 0).then_some(before) }
}

/// Whether TF32 is set now for CUDA float32 (matmul, convolution).
pub fn tf32_allowed() -> (bool, bool) {
    // SAFETY: -1: reads only.
    let v = unsafe { pgmld_set_tf32(-1, -1) };
    if v < 0 {
        return (false, false);
    }
    (v & 0xf == TF32, (v >> 4) & 0xf == TF32)
}

impl Drop for Tf32Guard {
    fn drop(&mut self) {
        if let Some(v) = self.before {
            // SAFETY: plain integers; restores the settings found.
            unsafe {
                pgmld_set_tf32(v & 0xf, (v >> 4) & 0xf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The per-tensor path the trainer used before (tch ops): norms, stack, norm, scale.
    fn reference(grads: &[Tensor], max_norm: f64) -> f64 {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        if max_norm > 0.0 {
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for g in grads {
                let _ = g.shallow_clone().g_mul_(&coef);
            }
        }
        total.double_value(&[])
    }

    fn grads(seed: i64) -> Vec<Tensor> {
        tch::manual_seed(seed);
        [vec![7, 5], vec![13], vec![3, 4, 2], vec![1]]
            .into_iter()
            .map(|s| Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu)) * 3.0)
            .collect()
    }

    fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
    }

    #[test]
    fn clipping_equals_the_per_tensor_path() {
        for max_norm in [1.0, 1e9, 0.0] {
            let (a, b) = (grads(1), grads(1));
            let want = reference(&b, max_norm);
            let got = clip_grad_norm_(&a, max_norm).unwrap();
            assert_eq!(got.size(), Vec::<i64>::new(), "a 0-dim norm");
            let got = got.double_value(&[]);
            assert!((got - want).abs() <= 1e-5 * want, "norm {got} vs {want}");
            assert!(max_diff(&a, &b) <= 1e-6, "max_norm {max_norm}: gradients differ");
        }
        // Clipped to max_norm: the new global norm is max_norm (within the 1e-6 guard).
        let a = grads(2);
        let _ = clip_grad_norm_(&a, 0.5).unwrap();
        let after = clip_grad_norm_(&a, 0.0).unwrap().double_value(&[]);
        assert!((after - 0.5).abs() < 1e-5, "{after}");
        // Gradients of mixed dtypes (bf16 and f32) clip together.
        let mixed = [
            Tensor::ones([4], (Kind::BFloat16, Device::Cpu)),
            Tensor::ones([5], (Kind::Float, Device::Cpu)),
        ];
        let n = clip_grad_norm_(&mixed, 1.0).unwrap().double_value(&[]);
        assert!((n - 3.0).abs() < 1e-6, "{n}");
        assert!(clip_grad_norm_(&[], 1.0).is_err());
    }

    #[test]
    fn tf32_is_set_and_restored() {
        let found = tf32_allowed();
        {
            let _on = tf32(true);
            assert_eq!(tf32_allowed(), (true, true));
            {
                let _off = tf32(false);
                assert_eq!(tf32_allowed(), (false, false));
            }
            assert_eq!(tf32_allowed(), (true, true));
        }
        assert_eq!(tf32_allowed(), found);
    }
}
