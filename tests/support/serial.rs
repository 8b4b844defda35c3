//! One model-heavy test at a time within a test binary.
//!
//! The harness runs a binary's tests side by side (one per core). Two tests that each
//! train or generate with libtorch in their own pgmld oversubscribe the cores, and
//! libtorch's thread pools then collapse. Measured on 2 cores (load about 2), side by side
//! vs one at a time: `tests/transform_chat.rs` 60 s vs 36 s (its LoRA tune 47 s vs 10 s),
//! `tests/tune.rs` 32 s vs 15 s, `tests/transform_stream.rs` 11 s vs 7 s. Tests that run
//! models hold this lock for their whole body.

use tokio::sync::{Mutex, MutexGuard};

static MODEL_TESTS: Mutex<()> = Mutex::const_new(());

/// Waits until no other model-heavy test of this binary runs; holds that until dropped.
/// Not poisoned by a failing test, so one failure does not fail the tests after it.
pub async fn model_test() -> MutexGuard<'static, ()> {
    MODEL_TESTS.lock().await
}

/// [`model_test`] for a plain (non-async) `#[test]`.
pub fn model_test_blocking() -> MutexGuard<'static, ()> {
    MODEL_TESTS.blocking_lock()
}
