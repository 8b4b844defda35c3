//! AdamW's update in the form a CUDA graph can capture (the trainer's `cuda_graphs` path):
//! the fused kernel reading its learning rate and step count from device scalars that are
//! filled before each run, as `torch.optim.AdamW(fused=True, capturable=True)` does. A
//! captured update then follows the schedule, where a number passed to the kernel would be
//! frozen into the graph; and it copies nothing from the host while it runs.

use tch::{Device, Kind, Tensor};

use super::AdamW;
use crate::error::{Error, Result};

/// The device scalars a staged update reads when it runs.
#[derive(Debug)]
pub(super) struct StagedScalars {
    /// The learning rate of the coming update.
    lr: Tensor,
    /// The step count of the coming update (every staged parameter shares it).
    step: Tensor,
}

impl AdamW {
    /// Prepares the next update to run as [`AdamW::staged_step`] with learning rate `lr`:
    /// fills the device scalars it reads (outside any graph capture). Returns false, and
    /// changes nothing, where the update cannot be staged: the unfused update, a parameter
    /// with a gradient but no moments yet (its first update makes them, which allocates),
    /// parameters at different step counts or on different devices.
    pub fn stage_step(&mut self, lr: f64) -> bool {
        if !self.fused {
            return false;
        }
        let (mut count, mut device): (Option<i64>, Option<Device>) = (None, None);
        for p in &self.params {
            if !p.tensor.grad().defined() {
                continue;
            }
            let Some(m) = &p.moments else { return false };
            if *count.get_or_insert(m.step) != m.step
                || *device.get_or_insert(p.tensor.device()) != p.tensor.device()
            {
                return false;
            }
        }
        let (Some(count), Some(device)) = (count, device) else { return false };
        let scalars = self.staged.get_or_insert_with(|| StagedScalars {
            lr: Tensor::zeros([], (Kind::Float, device)),
            step: Tensor::zeros([], (Kind::Float, device)),
        });
        if scalars.lr.device() != device {
            return false;
        }
        let _ = scalars.lr.fill_(lr);
        let _ = scalars.step.fill_((count + 1) as f64);
        true
    }

    /// The update [`AdamW::stage_step`] prepared, as kernels only (what a CUDA graph
    /// captures; replaying the graph runs it again with the scalars filled then): the same
    /// arithmetic as [`AdamW::step`]'s fused update. The host's step counts move in
    /// [`AdamW::finish_staged_step`], once per run.
    pub fn staged_step(&self) -> Result<()> {
        let scalars = self.staged.as_ref().ok_or_else(|| {
            Error::Torch(tch::TchError::Torch("staged_step before stage_step".into()))
        })?;
        let mut groups: Vec<(f64, [Vec<Tensor>; 5])> = Vec::new();
        for p in &self.params {
            let grad = p.tensor.grad();
            let (true, Some(m)) = (grad.defined(), &p.moments) else { continue };
            let lists = match groups.iter_mut().position(|(wd, _)| *wd == p.weight_decay) {
                Some(i) => &mut groups[i].1,
                None => {
                    groups.push((p.weight_decay, Default::default()));
                    &mut groups.last_mut().expect("just pushed").1
                }
            };
            lists[0].push(p.tensor.shallow_clone());
            lists[1].push(grad);
            lists[2].push(m.exp_avg.shallow_clone());
            lists[3].push(m.exp_avg_sq.shallow_clone());
            lists[4].push(scalars.step.shallow_clone());
        }
        for (weight_decay, [p, g, m, v, s]) in &groups {
            // The kernel reads the learning rate from `scalars.lr`; NaN here would show.
            let hp = pgmld_kernels::AdamWStep {
                lr: f64::NAN,
                beta1: self.beta1,
                beta2: self.beta2,
                weight_decay: *weight_decay,
                eps: self.eps,
            };
            pgmld_kernels::fused_adamw_(p, g, m, v, s, Some(&scalars.lr), hp)?;
        }
        Ok(())
    }

    /// Counts the update [`AdamW::staged_step`] ran (the step counts a checkpoint saves).
    pub fn finish_staged_step(&mut self) {
        for p in &mut self.params {
            if let (true, Some(m)) = (p.tensor.grad().defined(), p.moments.as_mut()) {
                m.step += 1;
            }
        }
        self.steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module};

    /// Staged updates equal [`AdamW::step`]'s over a schedule of learning rates, and the
    /// state a checkpoint saves is the same.
    #[test]
    fn staged_updates_equal_eager_ones() {
        let run = |staged: bool| {
            // Fixed values, not libtorch's generator (other tests reseed it concurrently).
            let ramp =
                |n: i64, scale: f64| Tensor::arange(n, (Kind::Float, Device::Cpu)).sin() * scale;
            let vs = nn::VarStore::new(Device::Cpu);
            let mut lin = nn::linear(&vs.root() / "dense", 6, 3, Default::default());
            tch::no_grad(|| {
                lin.ws.copy_(&ramp(18, 0.4).view([3, 6]));
                lin.bs.as_mut().expect("a bias").copy_(&ramp(3, 0.1));
            });
            let mut opt = AdamW::new(&vs, 0.01, super::super::no_decay);
            let x = ramp(30, 1.0).view([5, 6]);
            for (i, lr) in [1e-2, 5e-3, 2e-3, 1e-3].into_iter().enumerate() {
                lin.forward(&x).pow_tensor_scalar(2).sum(Kind::Float).backward();
                if staged {
                    // The first update makes the moments: it cannot be staged.
                    assert_eq!(opt.stage_step(lr), i > 0, "step {i}");
                }
                if staged && i > 0 {
                    opt.staged_step().unwrap();
                    opt.finish_staged_step();
                } else {
                    opt.step(lr);
                }
                opt.zero_grad();
            }
            (vs, opt)
        };
        let (eager_vs, eager_opt) = run(false);
        let (staged_vs, staged_opt) = run(true);
        assert_eq!(staged_opt.step_count(), 4);
        let staged_vars = staged_vs.variables();
        for (name, a) in eager_vs.variables() {
            let d = (&a - &staged_vars[&name]).abs().max().double_value(&[]);
            assert!(d < 1e-7, "{name}: {d}");
        }
        let dir = std::env::temp_dir().join(format!("pgmld-staged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        eager_opt.save(dir.join("a.safetensors")).unwrap();
        staged_opt.save(dir.join("b.safetensors")).unwrap();
        let read = |f: &str| {
            let mut named = Tensor::read_safetensors(dir.join(f)).unwrap();
            named.sort_by(|x, y| x.0.cmp(&y.0));
            named
        };
        let (a, b) = (read("a.safetensors"), read("b.safetensors"));
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(b.iter()) {
            assert_eq!(na, nb);
            assert!(
                (ta.to_kind(Kind::Double) - tb.to_kind(Kind::Double)).abs().max().double_value(&[])
                    < 1e-7,
                "{na}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unfused_or_fresh_optimizer_does_not_stage() {
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(&vs.root() / "dense", 2, 2, Default::default());
        let mut opt = AdamW::new(&vs, 0.0, super::super::no_decay);
        assert!(!opt.stage_step(1e-3), "no gradients yet");
        lin.forward(&Tensor::ones([1, 2], (Kind::Float, Device::Cpu))).sum(Kind::Float).backward();
        assert!(!opt.stage_step(1e-3), "no moments yet");
        opt.step(1e-3);
        assert!(opt.stage_step(1e-3));
        let mut unfused = AdamW::new(&vs, 0.0, super::super::no_decay).with_fused(false);
        unfused.step(1e-3);
        assert!(!unfused.stage_step(1e-3));
        assert!(unfused.staged_step().is_err(), "nothing staged");
    }
}
