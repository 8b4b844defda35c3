//! The per-step bookkeeping the trainer ([`crate::trainer`]) does after each optimizer
//! step: running loss sums, the
//! first non-finite step, log events, eval timing and the sums a save point records.
//!
//! The sums stay on the device as f32 tensors (as saved in `trainer_state.json`), so a GPU
//! run only syncs with the host to log or save; on the CPU a non-finite loss fails at once.

use tch::{Device, Kind, Tensor};

use crate::batching::derive_seed;
use crate::error::{Error, Result};
use crate::events::LogEvent;
use crate::train_state::TrainState;
use crate::training_args::{EvalStrategy, TrainingArgs};

/// What is due after an optimizer step, as [`StepLosses::after_update`] found.
#[derive(Debug)]
pub struct StepEnd {
    /// The log event, at a logging step (also in `log_history`).
    pub log: Option<LogEvent>,
    /// Whether to evaluate now (never after the last step: the final evaluation follows).
    pub eval: bool,
    /// Whether a save point is due (every `save_steps`); the sums are stored in the state.
    pub save: bool,
}

/// Loss sums since the last log and over the run, plus the first step whose loss was not
/// finite (-1 while none).
pub struct StepLosses {
    window: Tensor,
    total: Tensor,
    first_bad: Tensor,
    device: Device,
}

impl StepLosses {
    /// Starts from the sums `st` holds (zero for a fresh run, the checkpoint's on resume).
    pub fn new(st: &TrainState, device: Device) -> Self {
        StepLosses {
            window: Tensor::full([], st.window_loss_sum, (Kind::Float, device)),
            total: Tensor::full([], st.total_loss_sum, (Kind::Float, device)),
            first_bad: Tensor::full([], -1i64, (Kind::Int64, device)),
            device,
        }
    }

    /// A zero scalar on the trainer's device, to sum one step's micro-batch losses into.
    pub fn zero(&self) -> Tensor {
        Tensor::zeros([], (Kind::Float, self.device))
    }

    /// Adds optimizer step `global_step`'s loss; remembers it if it is the first that is
    /// not finite, and on the CPU (where the check costs no device sync) fails at once.
    pub fn record(&mut self, step_loss: &Tensor, global_step: i64) -> Result<()> {
        let step_t = Tensor::full([], global_step, (Kind::Int64, self.device));
        self.first_bad = tch::no_grad(|| {
            let newly_bad = step_loss.isfinite().logical_not().logical_and(&self.first_bad.lt(0));
            step_t.where_self(&newly_bad, &self.first_bad)
        });
        self.window += step_loss;
        self.total += step_loss;
        if self.device == Device::Cpu {
            self.check(step_loss)?;
        }
        Ok(())
    }

    /// Book-keeping after the update of micro-batch group `group_no` of an epoch of
    /// `batches_in_epoch` micro-batches (`updates_per_epoch` updates): advances `st` (step,
    /// epoch position, fractional epoch), records `step_loss` and says what is due.
    pub fn after_update(
        &mut self,
        st: &mut TrainState,
        args: &TrainingArgs,
        (step_loss, grad_norm, learning_rate): (&Tensor, &Tensor, f64),
        group_no: usize,
        batches_in_epoch: usize,
        updates_per_epoch: i64,
    ) -> Result<StepEnd> {
        st.global_step += 1;
        let done = group_no + 1;
        st.micro_batches_done_in_epoch =
            (done * args.gradient_accumulation_steps).min(batches_in_epoch);
        let global_step = st.global_step;
        self.record(step_loss, global_step)?;
        st.epoch = st.epoch_index as f64 + done as f64 / updates_per_epoch as f64;
        let log = self.log(st, args, step_loss, grad_norm, learning_rate)?;
        let eval = eval_due(args, global_step, done as i64 == updates_per_epoch)
            && global_step < st.max_steps;
        let save = global_step % args.save_steps == 0;
        if save {
            self.store(st, step_loss)?;
        }
        Ok(StepEnd { log, eval, save })
    }

    /// Fails with [`Error::NonFiniteLoss`] if any recorded step was not finite (`loss`: the
    /// value to report).
    pub fn check(&self, loss: &Tensor) -> Result<()> {
        let step = self.first_bad.int64_value(&[]);
        if step >= 0 {
            return Err(Error::NonFiniteLoss { step, loss: loss.double_value(&[]) });
        }
        Ok(())
    }

    /// At a logging step (`st.global_step` a multiple of `logging_steps`): the event for the
    /// mean loss since the last log, also appended to `st.log_history`; the window restarts.
    pub fn log(
        &mut self,
        st: &mut TrainState,
        args: &TrainingArgs,
        step_loss: &Tensor,
        grad_norm: &Tensor,
        learning_rate: f64,
    ) -> Result<Option<LogEvent>> {
        if st.global_step % args.logging_steps != 0 {
            return Ok(None);
        }
        self.check(step_loss)?;
        let ev = LogEvent {
            step: st.global_step,
            max_steps: st.max_steps,
            epoch: st.epoch,
            loss: f64::try_from(&self.window)? / st.steps_since_log() as f64,
            grad_norm: f64::try_from(grad_norm)?,
            learning_rate,
        };
        st.log_history.push(ev.clone());
        self.window = self.zero();
        st.last_logged = st.global_step;
        Ok(Some(ev))
    }

    /// Before a save point: checks the losses and copies the sums into `st`.
    pub fn store(&self, st: &mut TrainState, step_loss: &Tensor) -> Result<()> {
        self.check(step_loss)?;
        st.total_loss_sum = f64::try_from(&self.total)?;
        st.window_loss_sum = f64::try_from(&self.window)?;
        Ok(())
    }

    /// At the end of training: the mean loss per optimizer step of the whole run
    /// (`train_loss`), after a last check.
    pub fn train_loss(&self, global_step: i64) -> Result<f64> {
        self.check(&self.total)?;
        Ok(f64::try_from(&self.total)? / global_step.max(1) as f64)
    }
}

/// Domain tag of [`derive_seed`] for dropout seeds.
const DROPOUT: u64 = 0xD409_0D70;

/// Seed of libtorch's generators for micro-batch `micro` of optimizer step `step`
/// (0-based): dropout depends on nothing else, so a resumed run draws the same masks.
pub fn dropout_seed(seed: u64, step: i64, micro: usize) -> i64 {
    (derive_seed(seed, &[DROPOUT, step as u64, micro as u64]) >> 1) as i64
}

/// Whether to evaluate after optimizer step `global_step` (before the last one): every
/// `eval_every` steps when set, else at the end of each epoch with `eval_strategy: epoch`.
pub fn eval_due(args: &TrainingArgs, global_step: i64, epoch_end: bool) -> bool {
    match (args.eval_every(), args.eval_strategy) {
        (Some(n), _) => global_step % n == 0,
        (None, EvalStrategy::Epoch) => epoch_end,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(args: &TrainingArgs) -> TrainState {
        TrainState::for_data(args, 10, 0, String::new())
    }

    #[test]
    fn logs_window_means_and_keeps_totals() {
        let args = TrainingArgs { logging_steps: 2, ..TrainingArgs::default() };
        let mut st = state(&args);
        let mut losses = StepLosses::new(&st, Device::Cpu);
        let norm = Tensor::from(1.5f32);
        for (step, loss) in [(1, 4.0f32), (2, 2.0), (3, 1.0)] {
            st.global_step = step;
            let l = Tensor::from(loss);
            losses.record(&l, step).unwrap();
            let ev = losses.log(&mut st, &args, &l, &norm, 0.1).unwrap();
            assert_eq!(
                ev.map(|e| (e.step, e.loss)),
                (step == 2).then_some((2, 3.0)),
                "step {step}"
            );
        }
        losses.store(&mut st, &Tensor::from(1.0f32)).unwrap();
        assert_eq!((st.total_loss_sum, st.window_loss_sum, st.last_logged), (7.0, 1.0, 2));
        assert!((losses.train_loss(3).unwrap() - 7.0 / 3.0).abs() < 1e-9);
        // A resumed run starts from the stored sums.
        let again = StepLosses::new(&st, Device::Cpu);
        assert!((again.train_loss(3).unwrap() - 7.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_non_finite_step_fails_naming_it() {
        let args = TrainingArgs::default();
        let st = state(&args);
        let mut losses = StepLosses::new(&st, Device::Cpu);
        losses.record(&Tensor::from(1.0f32), 1).unwrap();
        let err = losses.record(&Tensor::from(f32::NAN), 2).unwrap_err();
        assert!(matches!(err, Error::NonFiniteLoss { step: 2, .. }), "{err}");
    }

    #[test]
    fn eval_timing() {
        let every = TrainingArgs {
            eval_steps: Some(5),
            eval_strategy: EvalStrategy::Steps,
            ..TrainingArgs::default()
        };
        assert!(eval_due(&every, 10, false) && !eval_due(&every, 7, true));
        let epoch = TrainingArgs { eval_strategy: EvalStrategy::Epoch, ..TrainingArgs::default() };
        assert!(eval_due(&epoch, 7, true) && !eval_due(&epoch, 7, false));
    }
}
