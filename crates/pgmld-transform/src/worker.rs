//! The thread that owns one loaded model. Tensors are not `Sync`, so each model lives on
//! its own thread; requests from every session queue on its channel, and the thread
//! gathers what arrived within `max_wait` (up to `max_batch` inputs) into one pass.
//! Classifiers and sentence encoders are served alike ([`Batched`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgmld_metrics::Metrics;
use pgmld_ml::{ClassScores, ClassifyInput, SentenceEncoder, TextClassifier};
use tokio::sync::oneshot;

/// A model a worker thread serves: it answers a list of inputs, one output per input in
/// order, in forward passes of at most `max_batch` inputs.
pub trait Batched: Send + 'static {
    /// One input.
    type Input: Clone + Send + 'static;
    /// The answer to one input.
    type Output: Send + 'static;
    /// The outputs for `inputs`, in order.
    fn run(&self, inputs: &[Self::Input], max_batch: usize) -> Result<Vec<Self::Output>, String>;
    /// Bytes of weights it holds, for the cache's budget.
    fn bytes(&self) -> u64;
}

impl Batched for TextClassifier {
    type Input = ClassifyInput;
    type Output = ClassScores;
    fn run(&self, inputs: &[ClassifyInput], max_batch: usize) -> Result<Vec<ClassScores>, String> {
        self.classify(inputs, max_batch).map_err(|e| e.to_string())
    }
    fn bytes(&self) -> u64 {
        self.weight_bytes()
    }
}

impl Batched for SentenceEncoder {
    type Input = String;
    /// The model's own vector (normalised when its modules say so); a caller asking for
    /// `normalize_embeddings` normalises its own rows.
    type Output = Vec<f32>;
    fn run(&self, inputs: &[String], max_batch: usize) -> Result<Vec<Vec<f32>>, String> {
        self.embed(inputs, max_batch, false).map_err(|e| e.to_string())
    }
    fn bytes(&self) -> u64 {
        self.weight_bytes()
    }
}

/// One chunk of a call's inputs, answered with their outputs in order.
pub struct Request<M: Batched> {
    /// The inputs.
    pub inputs: Vec<M::Input>,
    /// Set when the caller gave up (cancel, disconnect): skip the work.
    pub cancelled: Arc<AtomicBool>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Vec<M::Output>, String>>,
}

/// How a worker batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most inputs in one forward pass.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others to join it (zero: only
    /// requests already queued join, which under load are those that arrived while the
    /// previous batch ran).
    pub max_wait: Duration,
}

/// Serves requests until every sender is gone (the model left the cache and no call
/// holds it), then drops the model.
pub fn serve<M: Batched>(
    model: M,
    rx: Receiver<Request<M>>,
    batching: Batching,
    metrics: Arc<Metrics>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let mut inputs = batch[0].inputs.len();
        // Requests that queued while the previous batch ran join at once; with a wait
        // configured, the first one also waits that long for company.
        let deadline = Instant::now() + batching.max_wait;
        while inputs < batching.max_batch {
            let next = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => match rx.recv_timeout(left) {
                        Ok(r) => Some(r),
                        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                            None
                        }
                    },
                    _ => None,
                },
            };
            let Some(r) = next else { break };
            inputs += r.inputs.len();
            batch.push(r);
        }
        batch.retain(|r| !r.cancelled.load(Ordering::Relaxed) && !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let all: Vec<M::Input> = batch.iter().flat_map(|r| r.inputs.iter().cloned()).collect();
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.run(&all, batching.max_batch)
        }));
        metrics.inference_batches.inc_by(all.len().div_ceil(batching.max_batch.max(1)) as u64);
        metrics.inference_inputs.inc_by(all.len() as u64);
        tracing::debug!(
            requests = batch.len(),
            inputs = all.len(),
            ms = started.elapsed().as_millis() as u64,
            "inference batch"
        );
        match result {
            Ok(Ok(scores)) => {
                let mut it = scores.into_iter();
                for r in batch {
                    let mine: Vec<M::Output> = it.by_ref().take(r.inputs.len()).collect();
                    let _ = r.reply.send(Ok(mine));
                }
            }
            Ok(Err(e)) => {
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "inference panicked".into());
                for r in batch {
                    let _ = r.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}
