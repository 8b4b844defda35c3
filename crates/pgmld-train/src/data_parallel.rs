//! Data-parallel training over a c10d process group ([`pgmld_kernels::dist`]), as
//! PyTorch's DistributedDataParallel does it: every rank holds the whole model, takes its
//! part of each global micro-batch (`per_device_train_batch_size` × world examples, batched
//! as a single process with that batch size would batch them), and after the step's
//! backward passes the gradients are summed over the ranks (one coalesced all-reduce), so
//! every rank clips and steps identically and the weights stay equal.
//!
//! The sum is weighted so that it equals the single-process gradient of the global
//! micro-batches exactly, also when the last one splits unevenly: each rank scales the
//! contribution of its part by [`crate::TrainTask::shard_weight`] (its share of the
//! micro-batch for a loss averaged per micro-batch).

use pgmld_kernels::dist::ProcessGroup;
use tch::Tensor;

use crate::error::Error;

/// This rank's contiguous part of the global micro-batch `idx`: the ranks' parts cover it
/// in order and differ in size by one at most (empty only when it has fewer examples than
/// ranks).
pub fn shard(idx: &[usize], rank: usize, world: usize) -> &[usize] {
    let world = world.max(1);
    let (q, rem) = (idx.len() / world, idx.len() % world);
    let start = (rank * q + rank.min(rem)).min(idx.len());
    let end = (start + q + usize::from(rank < rem)).min(idx.len());
    &idx[start..end]
}

/// Scales the gradients of the parameters as micro-batches with different weights
/// accumulate into them:
/// between micro-batches the accumulated gradients are kept divided by the weight of the
/// micro-batch about to run, and [`Weighting::finish`] multiplies by the last weight, so
/// that the result is Σ weightᵢ · contributionᵢ. Equal weights cost one multiplication per
/// step.
pub struct Weighting {
    current: Option<f64>,
}

impl Weighting {
    /// Before the first micro-batch of a step (the gradients are zero).
    pub fn new() -> Self {
        Weighting { current: None }
    }

    /// Before a micro-batch of weight `w` (> 0) runs its backward pass into the gradients
    /// of `params`.
    pub fn before(&mut self, params: &[Tensor], w: f64) {
        if let Some(prev) = self.current {
            if prev != w {
                scale(params, prev / w);
            }
        }
        self.current = Some(w);
    }

    /// After the step's last micro-batch: the gradients of `params` are the weighted sum.
    pub fn finish(self, params: &[Tensor]) {
        if let Some(w) = self.current.filter(|&w| w != 1.0) {
            scale(params, w);
        }
    }
}

impl Default for Weighting {
    fn default() -> Self {
        Self::new()
    }
}

fn scale(params: &[Tensor], by: f64) {
    tch::no_grad(|| {
        for g in params.iter().map(Tensor::grad).filter(Tensor::defined) {
            let _ = g.shallow_clone().g_mul_scalar_(by);
        }
    });
}

/// The gradients of `params` (defined ones; a parameter without a gradient yet gets zeros,
/// so every rank reduces the same list).
pub fn grads_of(params: &[Tensor]) -> Vec<Tensor> {
    params
        .iter()
        .map(|p| {
            let g = p.grad();
            if g.defined() {
                g
            } else {
                p.zeros_like()
            }
        })
        .collect()
}

/// Sums the step's weighted gradients and loss over the ranks, in place, in one
/// collective. A rank that died or hung fails it (after the group's timeout).
pub fn all_reduce_step(
    group: &mut ProcessGroup,
    grads: &[Tensor],
    step_loss: &Tensor,
) -> Result<(), Error> {
    let mut list: Vec<Tensor> = grads.iter().map(Tensor::shallow_clone).collect();
    list.push(step_loss.shallow_clone());
    group.all_reduce_sum_(&list).map_err(|e| Error::DataParallel(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shards_cover_the_micro_batch_in_order() {
        let idx: Vec<usize> = (10..21).collect();
        let parts: Vec<&[usize]> = (0..3).map(|r| shard(&idx, r, 3)).collect();
        assert_eq!(parts.concat(), idx);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 3]);
        let five: Vec<usize> = (0..5).collect();
        let sizes: Vec<usize> = (0..4).map(|r| shard(&five, r, 4).len()).collect();
        assert_eq!(sizes, [2, 1, 1, 1], "every rank gets one when it can");
        assert_eq!(shard(&idx[..1], 1, 2), &[] as &[usize], "fewer examples than ranks");
        assert_eq!(shard(&idx, 0, 1), &idx[..]);
    }

    #[test]
    fn weighting_gives_the_weighted_sum_of_contributions() {
        let p = Tensor::zeros([3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let params = [p.shallow_clone()];
        let mut w = Weighting::new();
        let mut expected = Tensor::zeros([3], (Kind::Double, Device::Cpu));
        for (weight, c) in [(0.5, 1.0), (0.5, 2.0), (0.25, 4.0), (1.0, 3.0)] {
            w.before(&params, weight);
            // A backward pass whose gradient is c everywhere.
            (&p * c).sum(Kind::Double).backward();
            expected += Tensor::full([3], c * weight, (Kind::Double, Device::Cpu));
        }
        w.finish(&params);
        let g = p.grad();
        assert!((&g - &expected).abs().max().double_value(&[]) < 1e-12, "{g} vs {expected}");
    }
}
