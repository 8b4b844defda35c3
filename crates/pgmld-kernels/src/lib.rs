//! libtorch kernels that tch does not bind, through a small C++ shim (`src/shim.cpp`,
//! compiled by `build.rs` against the torch wheel's own headers): today the fused AdamW
//! update `torch.optim.AdamW(fused=True)` runs, which the Hugging Face Trainer uses by
//! default (`adamw_torch_fused`). Per parameter it is one pass over the memory instead of
//! the eight tensor operations of an update written with tch's ops. And PyTorch's c10d
//! ([`dist`]: TCPStore and the Gloo process group; [`nccl`]: its NCCL group, from a plugin
//! built on GPU machines) for data-parallel training; CUDA graphs for the training step
//! ([`cuda_graph`], from another plugin), and
//! autocast on the CPU ([`autocast_bf16`]), which tch only has for CUDA; foreach gradient
//! clipping and the TF32 switches ([`precision`]).

#![warn(missing_docs)]

pub mod cuda_graph;
pub mod dist;
pub mod nccl;
mod plugin;
pub mod precision;
pub mod profiler;

pub use precision::{clip_grad_norm_, tf32, tf32_allowed, Tf32Guard};

use std::ffi::{c_char, c_void, CStr};

use tch::Tensor;

extern "C" {
    fn pgmld_fused_adamw(
        params: *const *const c_void,
        grads: *const *const c_void,
        exp_avgs: *const *const c_void,
        exp_avg_sqs: *const *const c_void,
        steps: *const *const c_void,
        n: usize,
        lr: f64,
        lr_tensor: *const c_void,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgmld_clear_grads(
        params: *const *const c_void,
        n: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgmld_set_autocast(device_type: i32, enabled: i32, dtype: i32) -> i32;
    fn pgmld_set_autocast_cache(enabled: i32) -> i32;
}

/// Autocast's cache of weight casts off until the guard is dropped (see
/// [`autocast_cache_off`]).
#[must_use = "the cache comes back when the guard is dropped"]
pub struct AutocastCacheGuard {
    before: bool,
}

impl Drop for AutocastCacheGuard {
    fn drop(&mut self) {
        // SAFETY: a plain integer; restores the setting found when the guard was made.
        unsafe {
            pgmld_set_autocast_cache(self.before as i32);
        }
    }
}

/// Turns off autocast's cache of the casts it makes of weights (torch.autocast's
/// `cache_enabled=False`) while the guard lives: a CUDA graph capture must not keep a cast
/// made during the capture (torch.cuda.graph's documentation asks for this).
pub fn autocast_cache_off() -> AutocastCacheGuard {
    // SAFETY: a plain integer.
    let before = unsafe { pgmld_set_autocast_cache(0) } != 0;
    AutocastCacheGuard { before }
}

/// Autocast to bfloat16 on this thread for as long as the guard lives (see [`autocast_bf16`]).
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    device_type: i32,
    before: bool,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: plain integers; restores the state found when the guard was made.
        unsafe {
            pgmld_set_autocast(self.device_type, self.before as i32, BFLOAT16);
        }
    }
}

/// c10::ScalarType::BFloat16.
const BFLOAT16: i32 = 15;

/// Runs the ops that `torch.autocast(device, dtype=torch.bfloat16)` lists (matmuls, linear,
/// convolutions, attention) in bfloat16 on this thread until the guard is dropped, the
/// precision-sensitive ones (layer norm, softmax, losses) in float32; weights stay as they
/// are. `device` picks CPU or CUDA autocast.
pub fn autocast_bf16(device: tch::Device) -> AutocastGuard {
    let device_type = match device {
        tch::Device::Cuda(_) => 1,
        _ => 0,
    };
    // SAFETY: plain integers; autocast state is thread-local in ATen.
    let before = unsafe { pgmld_set_autocast(device_type, 1, BFLOAT16) } != 0;
    AutocastGuard { device_type, before }
}

/// [`autocast_bf16`] for the rest of this thread's life, for a thread that serves one model:
/// autocast keeps the bfloat16 copies of the weights it casts until its region ends, so on a
/// thread that never leaves it each weight is cast once instead of at every forward pass
/// (which would cost a small batch more than bfloat16 saves). Weights that do not require
/// gradients are cast at every call whatever this does.
pub fn autocast_bf16_for_this_thread(device: tch::Device) {
    std::mem::forget(autocast_bf16(device));
}

/// Whether this CPU computes bfloat16 matrix products natively (AVX512-BF16 or AMX-BF16,
/// which oneDNN uses): where it does not, bfloat16 inference is slower than float32.
pub fn cpu_has_bf16() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| {
                info.lines()
                    .filter(|l| l.starts_with("flags"))
                    .any(|l| l.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16"))
            })
            .unwrap_or(false)
    })
}

/// A kernel refused its arguments (libtorch's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct KernelError(pub String);

/// AdamW's hyperparameters for one fused update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate of this update.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// Decoupled weight decay (`p *= 1 - lr·wd` before the update).
    pub weight_decay: f64,
    /// ε.
    pub eps: f64,
}

/// Runs one shim call with an error buffer; its message on failure (the first lines:
/// libtorch and c10d append a C++ stack trace).
pub(crate) fn call(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<(), KernelError> {
    let mut err = [0 as c_char; 2048];
    if f(err.as_mut_ptr(), err.len()) == 0 {
        return Ok(());
    }
    // SAFETY: the shim wrote a NUL-terminated message into `err`.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    let msg = msg.lines().take(3).collect::<Vec<_>>().join(" ");
    Err(KernelError(msg))
}

/// Drops the gradients of `params` (`optimizer.zero_grad(set_to_none=True)`, torch's
/// default): the next backward pass stores fresh gradients instead of adding to zeroed ones,
/// a zeroing and an addition less per parameter, and the gradients' memory is free until
/// then. Code that reads a gradient must then allow it to be undefined.
pub fn clear_grads(params: &[Tensor]) -> Result<(), KernelError> {
    let p = handles(params);
    // SAFETY: `p` holds `params.len()` live tensor handles; `err` is a writable buffer.
    call(|err, len| unsafe { pgmld_clear_grads(p.as_ptr(), p.len(), err, len) })
}

fn handles(ts: &[Tensor]) -> Vec<*const c_void> {
    ts.iter().map(|t| t.as_ptr().cast::<c_void>()).collect()
}

/// `torch._fused_adamw_` (amsgrad off, not maximizing), in place: every `params[i]` takes
/// one AdamW update from `grads[i]`, updating `exp_avgs[i]` and `exp_avg_sqs[i]`;
/// `steps[i]` is the parameter's update count including this one, a float scalar tensor on
/// the parameter's device. All slices must have the same length; tensors of one index
/// share shape, dtype and device. Runs without recording gradients. With `lr_tensor` (a
/// float scalar tensor on the parameters' device) the kernel reads the learning rate from
/// it when it runs, not `hp.lr`: a captured CUDA graph then follows the schedule.
pub fn fused_adamw_(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    steps: &[Tensor],
    lr_tensor: Option<&Tensor>,
    hp: AdamWStep,
) -> Result<(), KernelError> {
    let n = params.len();
    if [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()].iter().any(|&l| l != n) {
        return Err(KernelError(format!(
            "fused AdamW got {n} parameters but {} gradients, {} exp_avgs, {} exp_avg_sqs, {} steps",
            grads.len(),
            exp_avgs.len(),
            exp_avg_sqs.len(),
            steps.len()
        )));
    }
    if n == 0 {
        return Ok(());
    }
    // libtorch's CPU kernel trusts the shapes: check them here, so a mismatch is an error
    // and never a read past a buffer.
    for i in 0..n {
        let p = &params[i];
        for (what, t) in
            [("gradient", &grads[i]), ("exp_avg", &exp_avgs[i]), ("exp_avg_sq", &exp_avg_sqs[i])]
        {
            if t.size() != p.size() || t.kind() != p.kind() || t.device() != p.device() {
                return Err(KernelError(format!(
                    "parameter {i} is {:?} {:?} on {:?} but its {what} is {:?} {:?} on {:?}",
                    p.kind(),
                    p.size(),
                    p.device(),
                    t.kind(),
                    t.size(),
                    t.device()
                )));
            }
        }
        if steps[i].numel() != 1 || steps[i].kind() != tch::Kind::Float {
            return Err(KernelError(format!("step {i} must be a float scalar tensor")));
        }
    }
    if let Some(lr) = lr_tensor {
        if lr.numel() != 1 || lr.kind() != tch::Kind::Float || lr.device() != params[0].device() {
            return Err(KernelError(format!(
                "the learning rate must be a float scalar tensor on {:?}, not {:?} {:?} on {:?}",
                params[0].device(),
                lr.kind(),
                lr.size(),
                lr.device()
            )));
        }
    }
    let lr_ptr = lr_tensor.map_or(std::ptr::null(), |t| t.as_ptr().cast::<c_void>());
    let (p, g, m, v, s) =
        (handles(params), handles(grads), handles(exp_avgs), handles(exp_avg_sqs), handles(steps));
    // SAFETY: every pointer is a live tch tensor handle (an at::Tensor*) borrowed for the
    // call; the shim only copies the handles and never keeps them; `err` is a writable
    // buffer of the length given, which the shim NUL-terminates.
    call(|err, len| unsafe {
        pgmld_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            hp.lr,
            lr_ptr,
            hp.beta1,
            hp.beta2,
            hp.weight_decay,
            hp.eps,
            err,
            len,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The fused update against torch's formula written out (one step from zero moments).
    #[test]
    fn one_fused_step_matches_the_formula() {
        tch::manual_seed(3);
        let p = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
        let g = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
        let (m, v) = (p.zeros_like(), p.zeros_like());
        let before = p.copy();
        let hp = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.999, weight_decay: 0.1, eps: 1e-8 };
        let step = Tensor::from(1.0f32);
        fused_adamw_(
            &[p.shallow_clone()],
            &[g.shallow_clone()],
            &[m.shallow_clone()],
            &[v.shallow_clone()],
            &[step],
            None,
            hp,
        )
        .unwrap();
        let m1 = &g * 0.1;
        let v1 = &g * &g * 0.001;
        let want = &before * (1.0 - hp.lr * hp.weight_decay)
            - (&m1 / 0.1) * hp.lr / ((&v1 / 0.001).sqrt() + hp.eps);
        let d = (&p - &want).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{d}");
        assert!((&m - &m1).abs().max().double_value(&[]) < 1e-7);
        assert!((&v - &v1).abs().max().double_value(&[]) < 1e-9);
    }

    /// Cleared gradients are undefined; the next backward pass stores its gradient as is
    /// (no zeroed buffer to add to), and a second one adds to it.
    #[test]
    fn cleared_gradients_are_undefined_then_stored_afresh() {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&w * 2.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(&w.grad()).unwrap(), [2.0; 3]);
        clear_grads(&[w.shallow_clone()]).unwrap();
        assert!(!w.grad().defined());
        (&w * 3.0).sum(Kind::Float).backward();
        (&w * 1.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(&w.grad()).unwrap(), [4.0; 3]);
        clear_grads(&[]).unwrap();
    }

    #[test]
    fn cpu_autocast_runs_matmuls_in_bf16_until_the_guard_drops() {
        let a = Tensor::randn([4, 8], (tch::Kind::Float, tch::Device::Cpu));
        let b = Tensor::randn([8, 3], (tch::Kind::Float, tch::Device::Cpu));
        {
            let _outer = autocast_bf16(tch::Device::Cpu);
            assert_eq!(a.matmul(&b).kind(), tch::Kind::BFloat16);
            assert_eq!(a.softmax(-1, None).kind(), tch::Kind::Float, "softmax stays f32");
            {
                let _inner = autocast_bf16(tch::Device::Cpu);
            }
            assert_eq!(a.matmul(&b).kind(), tch::Kind::BFloat16, "an inner guard restores it");
        }
        assert_eq!(a.matmul(&b).kind(), tch::Kind::Float);
        let exact = a.matmul(&b);
        let low = {
            let _g = autocast_bf16(tch::Device::Cpu);
            a.matmul(&b).to_kind(tch::Kind::Float)
        };
        assert!((exact - low).abs().max().double_value(&[]) < 0.1);
    }

    #[test]
    fn mismatched_lists_and_bad_tensors_are_errors_not_crashes() {
        let p = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let hp = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, weight_decay: 0.0, eps: 1e-8 };
        let e = fused_adamw_(&[p.shallow_clone()], &[], &[], &[], &[], None, hp).unwrap_err();
        assert!(e.0.contains("1 parameters but 0 gradients"), "{e}");
        // A gradient of another shape: libtorch's own check, as an error.
        let g = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let e = fused_adamw_(
            &[p.shallow_clone()],
            &[g],
            &[p.zeros_like()],
            &[p.zeros_like()],
            &[Tensor::from(1.0f32)],
            None,
            hp,
        )
        .unwrap_err();
        assert!(e.0.contains("its gradient is Float [4]"), "{e}");
        let e = fused_adamw_(
            &[p.shallow_clone()],
            &[p.zeros_like()],
            &[p.zeros_like()],
            &[p.zeros_like()],
            &[Tensor::from(1i64)],
            None,
            hp,
        )
        .unwrap_err();
        assert!(e.0.contains("float scalar"), "{e}");
        let one = || [p.zeros_like()];
        let e = fused_adamw_(
            &one(),
            &one(),
            &one(),
            &one(),
            &[Tensor::from(1.0f32)],
            Some(&Tensor::from(1e-3f64)),
            hp,
        )
        .unwrap_err();
        assert!(e.0.contains("learning rate must be a float scalar tensor"), "{e}");
    }

    /// The learning rate read from a tensor (what a captured CUDA graph uses) gives the
    /// update of the same value passed as a number, for two steps of different rates.
    #[test]
    fn a_learning_rate_tensor_updates_as_the_number() {
        tch::manual_seed(5);
        let start = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
        let grads = [start.randn_like(), start.randn_like()];
        let run = |tensor_lr: bool| {
            let p = start.copy();
            let (m, v) = (p.zeros_like(), p.zeros_like());
            let lr_t = Tensor::from(0.0f32);
            for (i, (g, lr)) in grads.iter().zip([1e-2, 3e-3]).enumerate() {
                let hp = AdamWStep { lr, beta1: 0.9, beta2: 0.999, weight_decay: 0.01, eps: 1e-8 };
                let hp = if tensor_lr {
                    let _ = lr_t.shallow_clone().fill_(lr);
                    AdamWStep { lr: f64::NAN, ..hp }
                } else {
                    hp
                };
                let lists = |t: &Tensor| [t.shallow_clone()];
                fused_adamw_(
                    &lists(&p),
                    &lists(g),
                    &lists(&m),
                    &lists(&v),
                    &[Tensor::from((i + 1) as f32)],
                    tensor_lr.then_some(&lr_t),
                    hp,
                )
                .unwrap();
            }
            p
        };
        let (by_number, by_tensor) = (run(false), run(true));
        assert!(by_number.isfinite().all().int64_value(&[]) == 1);
        let d = (&by_number - &by_tensor).abs().max().double_value(&[]);
        assert!(d < 1e-7, "{d}");
        assert!((&by_number - &start).abs().max().double_value(&[]) > 1e-3, "it moved");
    }

    #[test]
    fn the_autocast_cache_switch_nests_and_restores() {
        let outer = autocast_cache_off();
        assert!(outer.before, "autocast caches casts by default");
        {
            let inner = autocast_cache_off();
            assert!(!inner.before, "off under the outer guard");
        }
        let again = autocast_cache_off();
        assert!(!again.before, "the inner guard restored off");
        drop(again);
        drop(outer);
        let after = autocast_cache_off();
        assert!(after.before, "on again once the guards are gone");
    }
}
