//! The training step as CUDA graphs (training argument `cuda_graphs`; HF reaches the same
//! with `torch_compile_mode="reduce-overhead"`).
//!
//! A small model's step is hundreds of short kernels, and on a fast GPU the device idles
//! while the CPU launches them one by one. Here a whole step (forward, backward, gradient
//! clipping, the AdamW update, zeroing the gradients) is captured once per input shape and
//! replayed as one launch. What that asks of the step:
//! - fixed shapes: the task stages each micro-batch padded to a multiple of
//!   [`PAD_MULTIPLE`] tokens ([`TrainTask::stage`]), so one graph serves every batch of the
//!   same size and padded length (length-grouped batches keep the padding small);
//! - fixed memory: a batch's tensors are copied into those the capture read, and the
//!   graph's outputs (loss, gradient norm) are read after each replay;
//! - no host values inside: the learning rate and step count reach the update as device
//!   scalars filled before each replay ([`AdamW::stage_step`]), dropout draws from the seed
//!   set before it (the default CUDA generator is registered with every graph), the loss
//!   is checked for NaN outside (as on the eager path);
//! - a warm-up: the first batch of a shape runs eagerly on the capture stream, as
//!   torch.cuda.graph's documentation asks (cuBLAS keeps per-stream workspaces).
//!
//! On the CPU there are no graphs: the same staged step runs eagerly on the kept input
//! tensors (same arithmetic as on CUDA; what the CPU tests check against the eager path).

use std::collections::HashMap;

use pgmld_kernels::cuda_graph::{CudaGraph, SideStream};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::optim::clip_grad_norm;
use crate::task::{StepOptimizer, TrainTask};

/// Staged micro-batches pad their token length up to a multiple of this: a graph is
/// captured per (batch size, padded length), at most `max_length / 32` per batch size.
pub const PAD_MULTIPLE: usize = 32;

/// What the `cuda_graphs` path did in a run (the summary's [`crate::TrainSummary::cuda_graphs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraphStats {
    /// Steps that ran on staged (padded) batches: all of them, unless the optimizer cannot
    /// stage its update (the 8-bit ones) or the task its batches (gradient checkpointing).
    pub staged_steps: i64,
    /// Graphs captured (one per batch shape; 0 on the CPU).
    pub captured: usize,
    /// Staged steps that ran as a graph replay (0 on the CPU).
    pub replays: i64,
}

/// What a step leaves: its loss (detached) and the gradient norm before clipping.
pub(crate) type StepOut = (Tensor, Tensor);

/// One input shape: the tensors its capture reads, and its graph once captured.
struct Shape {
    inputs: Vec<Tensor>,
    graph: Option<(CudaGraph, StepOut)>,
    /// Its capture failed: its steps run eagerly for the rest of the run.
    eager_only: bool,
}

/// The graphs of one training run, by input shape.
pub(crate) struct StepGraphs {
    shapes: HashMap<Vec<Vec<i64>>, Shape>,
    /// What it did so far.
    pub(crate) stats: GraphStats,
    /// CUDA's capture stream: graphs are captured and replayed on it; `None` on the CPU,
    /// where the step runs on the kept inputs. Last field: left after the graphs are freed.
    stream: Option<SideStream>,
}

impl StepGraphs {
    /// Graphs for a run on `device`: on CUDA this thread's work moves to a stream of its own
    /// until the value is dropped (needs the plugin, else the error says how to build it).
    pub(crate) fn new(device: Device) -> Result<StepGraphs> {
        let stream = match device {
            Device::Cuda(i) => Some(SideStream::enter(i).map_err(|e| Error::CudaGraphs(e.0))?),
            _ => None,
        };
        Ok(StepGraphs { shapes: HashMap::new(), stats: GraphStats::default(), stream })
    }

    /// Runs one step over a staged micro-batch `inputs`. The first batch of a shape runs
    /// `step` eagerly (the warm-up); the next is captured, then replayed; later ones are only
    /// replayed, after their values are copied into the captured inputs. `step(inputs,
    /// clean)` must zero the gradients first when `clean` (after a failed capture, whose
    /// bookkeeping may have replaced them). A failed capture is logged, and that shape's
    /// steps run eagerly from then on: the run goes on with the same arithmetic.
    pub(crate) fn step(
        &mut self,
        inputs: Vec<Tensor>,
        step: &mut dyn FnMut(&[Tensor], bool) -> Result<StepOut>,
    ) -> Result<StepOut> {
        let key: Vec<Vec<i64>> = inputs.iter().map(Tensor::size).collect();
        let Some(shape) = self.shapes.get_mut(&key) else {
            let out = step(&inputs, false)?;
            self.shapes.insert(key, Shape { inputs, graph: None, eager_only: false });
            return Ok(out);
        };
        for (kept, new) in shape.inputs.iter_mut().zip(&inputs) {
            kept.copy_(new);
        }
        if let Some((graph, (loss, norm))) = &shape.graph {
            graph.replay().map_err(|e| Error::CudaGraphs(e.0))?;
            self.stats.replays += 1;
            return Ok((loss.shallow_clone(), norm.shallow_clone()));
        }
        if self.stream.is_none() || shape.eager_only {
            return step(&shape.inputs, false);
        }
        let captured = {
            let _no_cast_cache = pgmld_kernels::autocast_cache_off();
            let kept = &shape.inputs;
            CudaGraph::capture(|| step(kept, false))
        };
        let why = match captured {
            Ok((graph, Ok((loss, norm)))) => {
                graph.replay().map_err(|e| Error::CudaGraphs(e.0))?;
                self.stats.captured += 1;
                self.stats.replays += 1;
                let out = (loss.shallow_clone(), norm.shallow_clone());
                shape.graph = Some((graph, (loss, norm)));
                return Ok(out);
            }
            Ok((_, Err(e))) => e.to_string(),
            Err(e) => e.0,
        };
        tracing::warn!(shape = ?key, "CUDA graph capture failed, this shape's steps run eagerly: {why}");
        shape.eager_only = true;
        step(&shape.inputs, true)
    }
}

/// One optimizer step of `task` over the micro-batch `micro` through `graphs`, when it can
/// be staged: the optimizer is AdamW ([`StepOptimizer::staged`]) and the task stages the
/// batch ([`TrainTask::stage`]); `None`: run the step eagerly instead (nothing happened).
/// An update that cannot read device scalars yet (the first, which makes AdamW's moments,
/// also the first after a resume, before any gradient exists) runs eagerly on the same
/// staged batch, so every step of a run sees the same padding whichever way it runs (with
/// dropout, the padding decides the masks). The dropout seed, learning rate and clipping
/// are the eager step's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn staged_step<T: TrainTask>(
    graphs: &mut StepGraphs,
    task: &mut T,
    opt: &mut T::Optimizer,
    params: &[Tensor],
    micro: &[usize],
    (seed, lr, max_grad_norm): (i64, f64, f64),
    autocast: bool,
) -> std::result::Result<Option<StepOut>, T::Error> {
    let Some(adamw) = opt.staged() else { return Ok(None) };
    let Some(inputs) = task.stage(micro, PAD_MULTIPLE) else { return Ok(None) };
    graphs.stats.staged_steps += 1;
    tch::manual_seed(seed);
    if !adamw.stage_step(lr) {
        let loss = task.forward_backward_staged(&inputs, autocast);
        let norm = clip_grad_norm(params, max_grad_norm)?;
        adamw.step(lr);
        adamw.zero_grad();
        return Ok(Some((loss, norm)));
    }
    let out = graphs.step(inputs, &mut |inputs, clean| {
        if clean {
            adamw.zero_grad();
        }
        let loss = task.forward_backward_staged(inputs, autocast);
        let norm = clip_grad_norm(params, max_grad_norm)?;
        adamw.staged_step()?;
        adamw.zero_grad();
        Ok((loss, norm))
    })?;
    adamw.finish_staged_step();
    Ok(Some(out))
}
