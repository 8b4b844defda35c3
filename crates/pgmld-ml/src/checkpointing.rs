//! Gradient checkpointing (HF `gradient_checkpointing`): the forward pass keeps only the
//! hidden states between transformer layers; the backward pass recomputes one layer at a
//! time and pushes the gradient through it, so activation memory is one layer's instead of
//! all of them.
//!
//! tch has no custom autograd functions, so the chain is driven by hand: each segment is
//! re-run on a detached copy of its input that requires grad, and `backward` of
//! `sum(output * upstream_grad)` both accumulates the segment's parameter gradients and
//! yields the gradient of its input. Dropout must draw the same masks in both runs: every
//! segment seeds libtorch's generator with its own seed before running, as
//! `torch.utils.checkpoint` restores the RNG state.

use tch::{Kind, Tensor};

use crate::classifier::Classifier;
use crate::encoder::attention_bool_mask;
use crate::tokenize::Batch;

/// Runs `f` with libtorch's generators seeded by `seed`.
fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    tch::manual_seed(seed);
    f()
}

/// Backpropagates `loss_fn(logits)` through `model` for one batch with per-layer
/// checkpointing; returns the detached loss. `seed` fixes the dropout masks (each segment
/// uses `seed + its index`); with `autocast`, segments run under bf16 autocast.
pub fn backward_checkpointed(
    model: &Classifier,
    batch: &Batch,
    loss_fn: impl Fn(&Tensor) -> Tensor,
    seed: i64,
    autocast: bool,
) -> Tensor {
    let run = |k: usize, f: &dyn Fn() -> Tensor| {
        seeded(seed.wrapping_add(k as i64), || {
            pgmld_train::autocast(autocast, model.vs.device(), f)
        })
    };
    let mask = attention_bool_mask(&batch.attention_mask);
    let n = model.num_layers();
    // Forward without a graph: keep each layer's input.
    let mut inputs = Vec::with_capacity(n + 1);
    tch::no_grad(|| {
        inputs.push(run(0, &|| model.embed(batch, true)));
        for i in 0..n {
            let out = run(i + 1, &|| model.layer(i, &inputs[i], Some(&mask), true));
            inputs.push(out);
        }
    });
    // Head and loss, from the last hidden state.
    let top = inputs[n].detach().set_requires_grad(true);
    let loss = run(n + 1, &|| loss_fn(&model.head(&top, true)));
    loss.backward();
    let mut grad = top.grad();
    // Layers in reverse, each recomputed with a graph.
    for i in (0..n).rev() {
        let x = inputs[i].detach().set_requires_grad(true);
        let out = run(i + 1, &|| model.layer(i, &x, Some(&mask), true));
        (&out * grad.to_kind(out.kind())).sum(Kind::Float).backward();
        grad = x.grad();
    }
    let emb = run(0, &|| model.embed(batch, true));
    (&emb * grad.to_kind(emb.kind())).sum(Kind::Float).backward();
    loss.detach()
}
