//! AdamW with its state in the open, so a training run can save and restore it.
//!
//! tch's `nn::Optimizer` keeps libtorch's optimizer state out of reach, so a checkpoint
//! could not hold it. [`AdamW`] does the update of `torch.optim.AdamW` (not amsgrad) with
//! libtorch's fused kernel (through `pgmld-kernels`), as the HF Trainer's default
//! `adamw_torch_fused` does, keeps `exp_avg`, `exp_avg_sq` and the step count of each
//! parameter as torch does, and saves them as safetensors.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};

mod staged;

/// Adam's β₁ (HF `adam_beta1`).
pub const DEFAULT_BETA1: f64 = 0.9;
/// Adam's β₂ (HF `adam_beta2`).
pub const DEFAULT_BETA2: f64 = 0.999;
/// Adam's ε (HF `adam_epsilon`).
pub const DEFAULT_EPS: f64 = 1e-8;

/// True for variables that get no weight decay (biases and LayerNorm weights, as HF's
/// `Trainer` groups them).
pub fn no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name.contains("layer_norm")
}

/// The trainable variables of `vs` sorted by name (the update order), each with its weight
/// decay: `weight_decay`, or 0 for the variables `no_decay` picks. What every AdamW variant
/// updates.
pub fn decay_groups(
    vs: &nn::VarStore,
    weight_decay: f64,
    no_decay: impl Fn(&str) -> bool,
) -> Vec<(String, Tensor, f64)> {
    let mut params: Vec<(String, Tensor, f64)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, tensor)| {
            let wd = if no_decay(&name) { 0.0 } else { weight_decay };
            (name, tensor, wd)
        })
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// torch's AdamW moment update for a parameter's `step`-th update (1-based): `exp_avg ←
/// lerp(exp_avg, g, 1-β₁)`, `exp_avg_sq ← β₂·exp_avg_sq + (1-β₂)·g²`, in place. Returns the
/// step size `lr / (1-β₁ᵗ)` and the denominator `√exp_avg_sq / √(1-β₂ᵗ) + ε`: the
/// parameter then moves by `-step_size · exp_avg / denom`.
pub fn adam_moments(
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    grad: &Tensor,
    step: i64,
    lr: f64,
    (beta1, beta2, eps): (f64, f64, f64),
) -> (f64, Tensor) {
    let t = step as f64;
    let bias_correction1 = 1.0 - beta1.powf(t);
    let bias_correction2 = 1.0 - beta2.powf(t);
    let _ = exp_avg.lerp_(grad, 1.0 - beta1);
    *exp_avg_sq *= beta2;
    let _ = exp_avg_sq.addcmul_(&(grad * (1.0 - beta2)), grad);
    (lr / bias_correction1, exp_avg_sq.sqrt() / bias_correction2.sqrt() + eps)
}

/// Per-parameter moments, created (zeros) at the parameter's first update as torch does.
#[derive(Debug)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Updates this parameter received (torch's `state["step"]`).
    step: i64,
}

#[derive(Debug)]
struct Param {
    name: String,
    tensor: Tensor,
    weight_decay: f64,
    moments: Option<Moments>,
}

/// AdamW over the trainable variables of a `VarStore`, as `torch.optim.AdamW`
/// (`amsgrad=False`): decoupled weight decay `p *= 1 - lr·wd`, then
/// `m ← lerp(m, g, 1-β₁)`, `v ← β₂·v + (1-β₂)·g²`,
/// `p -= lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)`. Parameters without a gradient are skipped
/// (their step count does not advance).
#[derive(Debug)]
pub struct AdamW {
    params: Vec<Param>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: i64,
    /// Update with libtorch's fused kernel (`torch.optim.AdamW(fused=True)`, what the HF
    /// Trainer's default `adamw_torch_fused` runs) rather than eight tensor operations per
    /// parameter. On unless [`AdamW::with_fused`] turned it off.
    fused: bool,
    /// The device scalars of a staged update (see [`AdamW::stage_step`]), made by the
    /// first one.
    staged: Option<staged::StagedScalars>,
}

/// Name of the optimizer-wide step count in the safetensors file.
const STEP: &str = "step";

fn checkpoint_err(path: &Path, message: String) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), message }
}

impl AdamW {
    /// AdamW over the trainable variables of `vs` (sorted by name), with weight decay
    /// `weight_decay` except on the variables `no_decay` picks (see [`no_decay`]), and the
    /// default β₁, β₂, ε.
    pub fn new(vs: &nn::VarStore, weight_decay: f64, no_decay: impl Fn(&str) -> bool) -> Self {
        let params = decay_groups(vs, weight_decay, no_decay)
            .into_iter()
            .map(|(name, tensor, weight_decay)| Param { name, tensor, weight_decay, moments: None })
            .collect();
        AdamW {
            params,
            beta1: DEFAULT_BETA1,
            beta2: DEFAULT_BETA2,
            eps: DEFAULT_EPS,
            steps: 0,
            fused: true,
            staged: None,
        }
    }

    /// Chooses the fused kernel (the default) or the update written with tch's ops (same
    /// arithmetic in another order: results agree to rounding).
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
    }

    /// Sets β₁, β₂ and ε.
    pub fn with_hyperparams(mut self, beta1: f64, beta2: f64, eps: f64) -> Self {
        (self.beta1, self.beta2, self.eps) = (beta1, beta2, eps);
        self
    }

    /// The parameters updated, in update order.
    pub fn parameters(&self) -> impl Iterator<Item = &Tensor> {
        self.params.iter().map(|p| &p.tensor)
    }

    /// Optimizer steps taken ([`AdamW::step`] calls, restored by [`AdamW::load`]).
    pub fn step_count(&self) -> i64 {
        self.steps
    }

    /// One update with learning rate `lr` from the parameters' current gradients.
    pub fn step(&mut self, lr: f64) {
        // The fused kernel refuses only state that does not fit its parameter, checked
        // before anything moves: the update then falls back to tch's ops, for good.
        if self.fused && self.fused_step(lr).is_err() {
            self.fused = false;
        }
        if !self.fused {
            self.unfused_step(lr);
        }
        self.steps += 1;
    }

    /// Whether updates run libtorch's fused kernel (see [`AdamW::with_fused`]).
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    /// The update with libtorch's fused AdamW kernel, one call per weight-decay group.
    fn fused_step(&mut self, lr: f64) -> std::result::Result<(), pgmld_kernels::KernelError> {
        let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
        for (i, p) in self.params.iter_mut().enumerate() {
            if !p.tensor.grad().defined() {
                continue;
            }
            p.moments.get_or_insert_with(|| Moments {
                exp_avg: p.tensor.zeros_like(),
                exp_avg_sq: p.tensor.zeros_like(),
                step: 0,
            });
            match groups.iter_mut().find(|(wd, _)| *wd == p.weight_decay) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((p.weight_decay, vec![i])),
            }
        }
        // The kernel only reads the step counts: parameters at the same count on the same
        // device share one scalar tensor, so a step copies one value to the GPU, not one per
        // parameter (a launch each).
        let mut step_tensors: Vec<(i64, Device, Tensor)> = Vec::new();
        for (weight_decay, idx) in &groups {
            let mut lists: [Vec<Tensor>; 5] = Default::default();
            for &i in idx {
                let p = &self.params[i];
                let m = p.moments.as_ref().expect("created above");
                lists[0].push(p.tensor.shallow_clone());
                lists[1].push(p.tensor.grad());
                lists[2].push(m.exp_avg.shallow_clone());
                lists[3].push(m.exp_avg_sq.shallow_clone());
                let (step, device) = (m.step + 1, p.tensor.device());
                let shared = match step_tensors.iter().find(|(s, d, _)| *s == step && *d == device)
                {
                    Some((_, _, t)) => t.shallow_clone(),
                    None => {
                        let t = Tensor::from(step as f32).to_device(device);
                        step_tensors.push((step, device, t.shallow_clone()));
                        t
                    }
                };
                lists[4].push(shared);
            }
            let hp = pgmld_kernels::AdamWStep {
                lr,
                beta1: self.beta1,
                beta2: self.beta2,
                weight_decay: *weight_decay,
                eps: self.eps,
            };
            let [p, g, m, v, s] = &lists;
            pgmld_kernels::fused_adamw_(p, g, m, v, s, None, hp)?;
            for &i in idx {
                if let Some(m) = self.params[i].moments.as_mut() {
                    m.step += 1;
                }
            }
        }
        Ok(())
    }

    /// The update written with tch's tensor operations.
    fn unfused_step(&mut self, lr: f64) {
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                if p.weight_decay != 0.0 {
                    p.tensor *= 1.0 - lr * p.weight_decay;
                }
                let m = p.moments.get_or_insert_with(|| Moments {
                    exp_avg: p.tensor.zeros_like(),
                    exp_avg_sq: p.tensor.zeros_like(),
                    step: 0,
                });
                m.step += 1;
                let (step_size, denom) = adam_moments(
                    &mut m.exp_avg,
                    &mut m.exp_avg_sq,
                    &grad,
                    m.step,
                    lr,
                    (beta1, beta2, eps),
                );
                let _ = p.tensor.addcdiv_(&(&m.exp_avg * -step_size), &denom);
            }
        });
    }

    /// Zeroes the gradients of the parameters (those defined), as `Tensor::zero_grad`.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Writes the state as safetensors: `exp_avg.<name>`, `exp_avg_sq.<name>` and
    /// `step.<name>` (int64 scalar) for every parameter updated so far, and `step`, the
    /// optimizer's step count.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let cpu = |t: &Tensor| t.to_device(Device::Cpu).contiguous();
        let mut named: Vec<(String, Tensor)> = vec![(STEP.into(), Tensor::from(self.steps))];
        for p in &self.params {
            if let Some(m) = &p.moments {
                named.push((format!("exp_avg.{}", p.name), cpu(&m.exp_avg)));
                named.push((format!("exp_avg_sq.{}", p.name), cpu(&m.exp_avg_sq)));
                named.push((format!("step.{}", p.name), Tensor::from(m.step)));
            }
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Restores the state [`AdamW::save`] wrote. Every tensor must belong to a parameter of
    /// this optimizer, with its shape; parameters the file lacks start fresh.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut tensors: HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let scalar = |t: &Tensor, name: &str| -> Result<i64> {
            if t.kind() != Kind::Int64 || t.numel() != 1 {
                return Err(checkpoint_err(path, format!("{name} is not an int64 scalar")));
            }
            Ok(t.int64_value(&[]))
        };
        let steps = match tensors.remove(STEP) {
            Some(t) => scalar(&t, STEP)?,
            None => return Err(checkpoint_err(path, "no step count".into())),
        };
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let (avg, sq, step) = (
                tensors.remove(&format!("exp_avg.{}", p.name)),
                tensors.remove(&format!("exp_avg_sq.{}", p.name)),
                tensors.remove(&format!("step.{}", p.name)),
            );
            let moments = match (avg, sq, step) {
                (None, None, None) => None,
                (Some(exp_avg), Some(exp_avg_sq), Some(step)) => {
                    for t in [&exp_avg, &exp_avg_sq] {
                        if t.size() != p.tensor.size() {
                            return Err(Error::ShapeMismatch {
                                name: format!("optimizer state of {}", p.name),
                                found: t.size(),
                                expected: p.tensor.size(),
                            });
                        }
                    }
                    let to = |t: Tensor| t.to_device(p.tensor.device()).to_kind(p.tensor.kind());
                    Some(Moments {
                        exp_avg: to(exp_avg),
                        exp_avg_sq: to(exp_avg_sq),
                        step: scalar(&step, &p.name)?,
                    })
                }
                _ => {
                    return Err(checkpoint_err(
                        path,
                        format!("incomplete optimizer state for {}", p.name),
                    ))
                }
            };
            restored.push(moments);
        }
        if !tensors.is_empty() {
            let mut names: Vec<String> = tensors.into_keys().collect();
            names.sort_unstable();
            names.truncate(5);
            return Err(checkpoint_err(
                path,
                format!("optimizer state for variables the model lacks: {names:?}"),
            ));
        }
        for (p, m) in self.params.iter_mut().zip(restored) {
            p.moments = m;
        }
        self.steps = steps;
        Ok(())
    }
}

/// Global L2 norm of the gradients of `params` (before clipping); when `max_norm` > 0 the
/// gradients are scaled so the norm is at most `max_norm` (as `clip_grad_norm_`, with its
/// foreach kernels: a few launches for all gradients on CUDA). Stays on the device: no host
/// sync. Parameters without a gradient are left out; none at all gives a norm of 0.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> crate::Result<Tensor> {
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
    if grads.is_empty() {
        let device = params.first().map_or(Device::Cpu, Tensor::device);
        return Ok(Tensor::zeros([], (Kind::Float, device)));
    }
    Ok(pgmld_kernels::clip_grad_norm_(&grads, max_norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tch::nn::{Module, OptimizerConfig};

    #[test]
    fn no_decay_names() {
        assert!(no_decay("bert.encoder.layer.0.output.dense.bias"));
        assert!(no_decay("bert.embeddings.LayerNorm.weight"));
        assert!(!no_decay("bert.encoder.layer.0.output.dense.weight"));
        assert!(!no_decay("classifier.weight"));
    }

    /// A small model: linear → LayerNorm → gelu → linear.
    fn model(vs: &nn::VarStore) -> impl Module {
        let root = vs.root();
        nn::seq()
            .add(nn::linear(&root / "dense", 6, 8, Default::default()))
            .add(nn::layer_norm(&root / "LayerNorm", vec![8], Default::default()))
            .add_fn(|x| x.gelu("none"))
            .add(nn::linear(&root / "out", 8, 3, Default::default()))
    }

    fn loss(m: &impl Module, step: i64) -> Tensor {
        let g = Tensor::arange(40, (Kind::Float, Device::Cpu)).view([5, 8]);
        let x = ((&g.narrow(1, 0, 6) * 0.37 + step as f64).sin()) * 2.0;
        let y = Tensor::from_slice(&[0i64, 2, 1, 1, 0]);
        m.forward(&x).cross_entropy_for_logits(&y)
    }

    fn params(vs: &nn::VarStore) -> HashMap<String, Tensor> {
        vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
    }

    fn max_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
        a.iter().map(|(k, t)| (t - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max)
    }

    #[test]
    fn matches_tch_adamw_with_weight_decay_groups() {
        for fused in [true, false] {
            matches_tch_adamw(fused);
        }
    }

    fn matches_tch_adamw(fused: bool) {
        let (wd, steps) = (0.1, 30);
        tch::manual_seed(3);
        let vs_ours = nn::VarStore::new(Device::Cpu);
        let m_ours = model(&vs_ours);
        let mut vs_tch = nn::VarStore::new(Device::Cpu);
        let m_tch = model(&vs_tch);
        vs_tch.copy(&vs_ours).unwrap();
        // tch's AdamW with the trainer's former groups: 0 decayed, 1 not.
        {
            let named = vs_tch.variables();
            let nd: HashSet<usize> = named
                .iter()
                .filter(|(n, _)| no_decay(n))
                .map(|(_, t)| t.data_ptr() as usize)
                .collect();
            assert_eq!(nd.len(), 4, "LayerNorm weight and three biases");
            let mut vars = vs_tch.variables_.lock().unwrap();
            for v in vars.trainable_variables.iter_mut() {
                v.group = usize::from(nd.contains(&(v.tensor.data_ptr() as usize)));
            }
        }
        let mut theirs = nn::AdamW { wd, ..Default::default() }.build(&vs_tch, 1e-2).unwrap();
        theirs.set_weight_decay_group(0, wd);
        theirs.set_weight_decay_group(1, 0.0);
        let mut ours = AdamW::new(&vs_ours, wd, no_decay).with_fused(fused);
        for s in 0..steps {
            let lr = 1e-2 * (1.0 - s as f64 / steps as f64);
            loss(&m_ours, s).backward();
            ours.step(lr);
            ours.zero_grad();
            loss(&m_tch, s).backward();
            theirs.set_lr(lr);
            theirs.step();
            theirs.zero_grad();
        }
        assert_eq!(ours.step_count(), steps);
        assert_eq!(ours.is_fused(), fused, "the kernel asked for ran");
        let d = max_diff(&params(&vs_ours), &params(&vs_tch));
        println!("fused {fused}: max |ours - tch| = {d:e}");
        assert!(d < 1e-6, "max |ours - tch| = {d}");
        // The parameters moved: the comparison is not vacuous.
        let fresh = nn::VarStore::new(Device::Cpu);
        let _ = model(&fresh);
        assert!(max_diff(&params(&vs_ours), &params(&fresh)) > 1e-2);
    }

    #[test]
    fn save_and_load_continue_the_same_trajectory() {
        tch::manual_seed(5);
        let vs_a = nn::VarStore::new(Device::Cpu);
        let m_a = model(&vs_a);
        let mut vs_b = nn::VarStore::new(Device::Cpu);
        let m_b = model(&vs_b);
        vs_b.copy(&vs_a).unwrap();
        let mut a = AdamW::new(&vs_a, 0.01, no_decay);
        for s in 0..4 {
            loss(&m_a, s).backward();
            a.step(1e-2);
            a.zero_grad();
        }
        let dir = std::env::temp_dir().join(format!("pgmld-optim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("optimizer.safetensors");
        a.save(&file).unwrap();
        vs_b.copy(&vs_a).unwrap();
        let mut b = AdamW::new(&vs_b, 0.01, no_decay);
        b.load(&file).unwrap();
        assert_eq!(b.step_count(), 4);
        for s in 4..8 {
            loss(&m_a, s).backward();
            a.step(1e-2);
            a.zero_grad();
            loss(&m_b, s).backward();
            b.step(1e-2);
            b.zero_grad();
        }
        assert_eq!(max_diff(&params(&vs_a), &params(&vs_b)), 0.0);
        // A state for another model is refused.
        let other = nn::VarStore::new(Device::Cpu);
        let _ = nn::linear(other.root() / "dense", 6, 9, Default::default());
        let err = AdamW::new(&other, 0.0, no_decay).load(&file).unwrap_err();
        assert!(err.to_string().contains("dense"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
