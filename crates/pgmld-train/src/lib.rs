//! The training framework of pgmld, shared by the encoder classifiers (pgmld-ml) and the
//! causal language models (pgmld-llm).
//!
//! - [`trainer`]: the one training loop (HF `Trainer` semantics: steps, gradient
//!   accumulation and clipping, learning-rate schedule, logging, evaluation, checkpoints,
//!   resume, cancel) over a [`TrainTask`] ([`task`]) a model family implements.
//! - [`training_args`]: HF `TrainingArguments` as pgmld accepts them; [`optim`]: AdamW,
//!   whose state can be saved; [`batching`]: seeded, length-grouped epochs.
//! - [`step_graphs`]: the step as CUDA graphs (`cuda_graphs`); [`step_losses`]: per-step
//!   loss bookkeeping; [`train_state`]: resumable checkpoints;
//!   [`events`]: what a run reports.
//! - [`weights_file`]: Hugging Face weight files (safetensors, sharded, `torch.save`
//!   pickles) as named tensors; [`device`]: CUDA when available.

#![warn(missing_docs)]

pub mod batching;
pub mod data_parallel;
pub mod device;
pub mod error;
pub mod events;
pub mod optim;
pub mod step_graphs;
pub mod step_losses;
pub mod task;
pub mod train_state;
pub mod trainer;
pub mod training_args;
pub mod weights_file;

pub use device::{autocast, best_device, load_cuda};
pub use error::{Error, Result};
pub use events::{LogEvent, TrainEvent, TrainMetrics, TrainSummary};
pub use optim::AdamW;
/// The c10d store and process group data-parallel training runs over.
pub use pgmld_kernels::dist::{ProcessGroup, Store};
pub use pgmld_kernels::{
    autocast_bf16, autocast_bf16_for_this_thread, cpu_has_bf16, AutocastGuard,
};
pub use pgmld_kernels::{cuda_graph, nccl, profiler};
pub use step_graphs::GraphStats;
pub use task::{StepOptimizer, TrainTask};
pub use train_state::{load_checkpoint, Checkpoint, TrainState};
pub use trainer::{train, train_data_parallel, Hooks, SavePoint};
pub use training_args::{
    EvalStrategy, HubStrategy, LrSchedulerType, Optim, Secret, TokenizerArgs, TrainingArgs,
};
