//! The training loop, following Hugging Face `transformers.Trainer` (argument names,
//! defaults, learning-rate schedules, gradient accumulation and clipping, logging,
//! evaluation and checkpoint timing), over any [`TrainTask`].
//!
//! Randomness is a function of the seed alone: the data order of an epoch depends only on
//! (seed, epoch) (one seeded stream of epoch orders), and libtorch's generators are
//! reseeded before every micro-batch from (seed, optimizer step, micro-batch), so dropout
//! masks do not depend on what ran before (gradient checkpointing derives its per-segment
//! seeds from the same micro-batch seed). Results are therefore reproducible for a fixed
//! seed on one device (same libtorch build and thread count), and a run resumed from a
//! checkpoint ends as the uninterrupted run would. Across devices (CPU vs CUDA) the masks
//! and the arithmetic differ.

use std::path::Path;
use std::time::Instant;

use tch::Device;

use crate::batching::epoch_batches;
use crate::data_parallel::{all_reduce_step, grads_of, shard, Weighting};
use crate::device::autocast as with_autocast;
use crate::error::Error;
use crate::events::{TrainEvent, TrainSummary};
use crate::optim::clip_grad_norm;
use crate::step_graphs::{staged_step, StepGraphs};
use crate::step_losses::{dropout_seed, StepLosses};
use crate::task::{StepOptimizer, TrainTask};
use crate::train_state::{
    begin_checkpoint, finish_checkpoint, load_checkpoint, load_weights, TrainState, OPTIMIZER_FILE,
};
use crate::training_args::TrainingArgs;
use pgmld_kernels::dist::ProcessGroup;
use tch::Tensor;

/// What `on_save` receives every `save_steps`: the step, the task (its model) and what a
/// resumable checkpoint needs.
pub struct SavePoint<'a, T: TrainTask> {
    task: &'a T,
    optimizer: &'a T::Optimizer,
    state: &'a TrainState,
    args: &'a TrainingArgs,
}

impl<T: TrainTask> SavePoint<'_, T> {
    /// The optimizer step just done.
    pub fn step(&self) -> i64 {
        self.state.global_step
    }

    /// The task (its model) after that step.
    pub fn task(&self) -> &T {
        self.task
    }

    /// The trainer state after that step.
    pub fn state(&self) -> &TrainState {
        self.state
    }

    /// Writes a resumable checkpoint into `dir` (created if need be; an older checkpoint
    /// there is replaced): the weights, the optimizer state, the arguments and the state,
    /// the latter last. Pass `dir` as `resume_from` to go on from this step.
    pub fn write_checkpoint(&self, dir: impl AsRef<Path>) -> Result<(), T::Error> {
        let dir = dir.as_ref();
        begin_checkpoint(dir)?;
        self.task.write_weights(&dir.join(T::WEIGHTS_FILE))?;
        self.optimizer.save(&dir.join(OPTIMIZER_FILE))?;
        Ok(finish_checkpoint(dir, self.state, self.args)?)
    }
}

/// The callbacks of a run: progress events, save points, and the cancel poll.
pub struct Hooks<E, S, C> {
    /// Receives a [`TrainEvent::Log`] every `logging_steps` optimizer steps (the only
    /// points where the loss is copied to the host, besides evaluations, saves and the end
    /// of training; on CPU the loss is also checked every step) and a [`TrainEvent::Eval`]
    /// after each evaluation `eval_strategy` asks for.
    pub on_event: E,
    /// Receives a [`SavePoint`] every `save_steps` steps (after that step's log and
    /// evaluation, as HF's checkpoint saves); it runs on the training thread, so it should
    /// only write files and hand them on.
    pub on_save: S,
    /// Polled before every micro-batch; when it returns true training ends with
    /// [`Error::Cancelled`].
    pub should_stop: C,
}

/// Optimizer steps of the run: `max_steps` when set, else `num_train_epochs` epochs of
/// `updates_per_epoch` steps (at least one).
fn total_steps(args: &TrainingArgs, updates_per_epoch: i64) -> i64 {
    if args.max_steps > 0 {
        args.max_steps
    } else {
        ((args.num_train_epochs * updates_per_epoch as f64).ceil() as i64).max(1)
    }
}

/// Trains `task` with the arguments `args` (already validated by the caller, with a
/// non-empty training set), then evaluates it.
///
/// A NaN or infinite loss ends the run with [`Error::NonFiniteLoss`] naming the first bad
/// step. With `resume_from` (a directory [`SavePoint::write_checkpoint`] wrote) the run
/// goes on from that checkpoint: the task's variables and the optimizer take its weights
/// and state, the data order skips what was trained on, and the run ends at the
/// checkpoint's total step count with the parameters an uninterrupted run would have (on
/// the same device). The batch size, gradient accumulation, seed, training data and total
/// steps must be those of the checkpoint's run, else [`Error::TrainingArgs`] names what
/// differs. Events continue from the saved step; the summary's `log_history`,
/// `train_loss`, `epoch` and `global_step` cover the whole run, its runtime and counts
/// this call only.
pub fn train<T: TrainTask>(
    task: &mut T,
    args: &TrainingArgs,
    hooks: Hooks<
        impl FnMut(TrainEvent<T::Metrics>),
        impl FnMut(&SavePoint<'_, T>),
        impl Fn() -> bool,
    >,
    resume_from: Option<&Path>,
) -> Result<TrainSummary<T::Metrics>, T::Error> {
    run(task, args, hooks, resume_from, None)
}

/// [`train`] as rank `group.rank()` of a data-parallel run over `group` (see
/// [`crate::data_parallel`]): the global micro-batch is `per_device_train_batch_size` ×
/// `args.world_size` examples (however many ranks `group` has, at most `world_size`), each
/// rank runs its part, the gradients and the step loss are summed over the ranks before
/// clipping. Rank 0's weights are broadcast first. With the same global batch, the
/// weights, losses and metrics equal a single-process run's (up to the order of
/// floating-point sums) when dropout is off; each rank seeds its dropout masks with its
/// rank, so they differ otherwise. Only rank 0 evaluates; every rank calls its hooks: give
/// the others hooks that report and save nothing. A rank's failure fails the others' next
/// collective ([`Error::DataParallel`]).
pub fn train_data_parallel<T: TrainTask>(
    task: &mut T,
    args: &TrainingArgs,
    hooks: Hooks<
        impl FnMut(TrainEvent<T::Metrics>),
        impl FnMut(&SavePoint<'_, T>),
        impl Fn() -> bool,
    >,
    resume_from: Option<&Path>,
    group: &mut ProcessGroup,
) -> Result<TrainSummary<T::Metrics>, T::Error> {
    run(task, args, hooks, resume_from, Some(group))
}

fn run<T: TrainTask>(
    task: &mut T,
    args: &TrainingArgs,
    mut hooks: Hooks<
        impl FnMut(TrainEvent<T::Metrics>),
        impl FnMut(&SavePoint<'_, T>),
        impl Fn() -> bool,
    >,
    resume_from: Option<&Path>,
    mut group: Option<&mut ProcessGroup>,
) -> Result<TrainSummary<T::Metrics>, T::Error> {
    tch::manual_seed(args.seed as i64);
    let device = task.device();
    // `bf16` (HF's): autocast on the CPU as on CUDA, as the Trainer does with `bf16=True`.
    let autocast = args.bf16;
    if autocast && device == Device::Cpu && !pgmld_kernels::cpu_has_bf16() {
        tracing::warn!("bf16 on a CPU without AVX512-BF16 or AMX: slower than float32 here");
    }
    // `tf32` (HF's): set for CUDA runs only, restored when the run ends (process-wide).
    let _tf32 = match (args.tf32, device) {
        (Some(allow), Device::Cuda(_)) => Some(pgmld_kernels::tf32(allow)),
        _ => None,
    };
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world()));

    let lengths = task.lengths();
    if world > args.world_size {
        return Err(Error::DataParallel(format!(
            "{world} ranks joined a run whose world_size is {}",
            args.world_size
        ))
        .into());
    }
    let accum = args.gradient_accumulation_steps;
    // The global micro-batch, whatever the ranks that share it.
    let bs = args.per_device_train_batch_size * args.world_size;
    let updates_per_epoch = lengths.len().div_ceil(bs).div_ceil(accum) as i64;
    let total_steps = total_steps(args, updates_per_epoch);

    let mut opt = task.optimizer(args);
    let mut st = TrainState::for_data(args, total_steps, lengths.len(), task.fingerprint());
    if let Some(dir) = resume_from {
        let ck = load_checkpoint(dir)?;
        ck.state.check_resumable(&st, dir)?;
        load_weights(task.trained_vars(), dir.join(T::WEIGHTS_FILE))?;
        opt.load(&dir.join(OPTIMIZER_FILE))?;
        st = ck.state;
    }
    let params = task.clipped_parameters(&opt);
    if let Some(g) = group.as_deref_mut() {
        // Every rank starts from rank 0's weights (a fresh head or a checkpoint's).
        let vars: Vec<Tensor> = task.trained_vars().trainable_variables();
        g.broadcast_(&vars, 0).map_err(|e| Error::DataParallel(e.to_string()))?;
    }

    let mut losses = StepLosses::new(&st, device);
    let (start_step, start_samples) = (st.global_step, st.samples);
    // `cuda_graphs` (validated: one micro-batch per step, one process; a group, even of one,
    // keeps its all-reduce on the eager path).
    let mut graphs = if args.cuda_graphs && accum == 1 && group.is_none() {
        Some(StepGraphs::new(device)?)
    } else {
        None
    };

    let started = Instant::now();
    'outer: while st.global_step < total_steps {
        let batches = epoch_batches(&lengths, bs, args.seed, st.epoch_index);
        let done_groups = st.micro_batches_done_in_epoch.div_ceil(accum);
        for (group_no, step_group) in batches.chunks(accum).enumerate().skip(done_groups) {
            if st.global_step >= total_steps {
                break 'outer;
            }
            task.begin_step(step_group);
            // Optimizer step `global_step` (0-based) uses the scheduled learning rate.
            let lr = args.learning_rate * args.lr_factor(st.global_step, total_steps);
            let staged = match graphs.as_mut() {
                Some(graphs) => {
                    if (hooks.should_stop)() {
                        return Err(Error::Cancelled.into());
                    }
                    let seed = dropout_seed(args.seed, st.global_step, 0);
                    let knobs = (seed, lr, args.max_grad_norm);
                    let full = &step_group[0];
                    staged_step(graphs, task, &mut opt, &params, full, knobs, autocast)?
                }
                None => None,
            };
            let (step_loss, norm) = match staged {
                Some(out) => {
                    st.samples += step_group[0].len() as u64;
                    out
                }
                None => {
                    let mut step_loss = losses.zero();
                    let mut weighting = Weighting::new();
                    for (micro, full) in step_group.iter().enumerate() {
                        if (hooks.should_stop)() {
                            return Err(Error::Cancelled.into());
                        }
                        // Rank 0 draws a single process's masks; the others their own.
                        let seed = dropout_seed(args.seed, st.global_step, micro)
                            .wrapping_add(rank as i64 * 1_000_003);
                        let idx = shard(full, rank, world);
                        if world == 1 {
                            step_loss += task.forward_backward(idx, seed, autocast);
                        } else if !idx.is_empty() {
                            let w = task.shard_weight(idx, full);
                            weighting.before(&params, w);
                            step_loss += task.forward_backward(idx, seed, autocast) * w;
                        }
                        st.samples += full.len() as u64;
                    }
                    if let Some(g) = group.as_deref_mut() {
                        weighting.finish(&params);
                        all_reduce_step(g, &grads_of(&params), &step_loss)?;
                    }
                    let norm = clip_grad_norm(&params, args.max_grad_norm)?;
                    opt.step(lr);
                    if group.is_none() && graphs.is_none() {
                        // torch's zero_grad(set_to_none=True): two launches per parameter
                        // fewer than zeroing (docs/benchmarks.md, the op census).
                        pgmld_kernels::clear_grads(&params).map_err(Error::from)?;
                    } else {
                        // Ranks reduce every gradient into the parameter's own, and a
                        // captured step reuses the same gradient buffers: both keep them.
                        opt.zero_grad();
                    }
                    (step_loss, norm)
                }
            };
            let end = losses.after_update(
                &mut st,
                args,
                (&step_loss, &norm, lr),
                group_no,
                batches.len(),
                updates_per_epoch,
            )?;
            let global_step = st.global_step;
            if let Some(ev) = end.log {
                (hooks.on_event)(TrainEvent::Log(ev));
            }
            // Only rank 0 reports: the others' evaluations would repeat its own.
            if end.eval && rank == 0 {
                if let Some(metrics) = with_autocast(autocast, device, || task.evaluate())? {
                    (hooks.on_event)(TrainEvent::Eval {
                        step: global_step,
                        epoch: st.epoch,
                        metrics,
                    });
                }
            }
            if end.save {
                (hooks.on_save)(&SavePoint { task, optimizer: &opt, state: &st, args });
            }
        }
        st.epoch_index += 1;
        st.micro_batches_done_in_epoch = 0;
    }
    let cuda_graphs = graphs.take().map(|g| g.stats);
    if let Some(g) = cuda_graphs {
        tracing::info!(
            "cuda_graphs: {} of {} steps staged, {} graphs captured, {} replays",
            g.staged_steps,
            st.global_step - start_step,
            g.captured,
            g.replays
        );
    }
    let global_step = st.global_step;
    let train_loss = losses.train_loss(global_step)?;
    let runtime = started.elapsed().as_secs_f64();
    // The optimizer state goes before the final evaluation needs memory.
    drop(opt);
    // Evaluated as trained: under autocast with `bf16`, as the Trainer's evaluate() is.
    let eval = if rank == 0 { with_autocast(autocast, device, || task.evaluate())? } else { None };
    Ok(TrainSummary {
        runtime,
        samples: st.samples - start_samples,
        steps: global_step - start_step,
        train_loss,
        epoch: global_step as f64 / updates_per_epoch as f64,
        global_step,
        eval,
        log_history: st.log_history,
        cuda_graphs,
    })
}
