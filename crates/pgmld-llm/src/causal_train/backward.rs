//! The forward and backward pass of one micro-batch, plain or with gradient checkpointing.
//!
//! Checkpointing (HF `gradient_checkpointing`, as `pgmld_ml::checkpointing` does for the
//! encoders): the forward pass runs without a graph and keeps only each decoder layer's
//! input; the backward pass recomputes one layer at a time from its saved input and pushes
//! the gradient through it (`backward` of `sum(output · upstream_grad)`), so activation
//! memory is one layer's instead of all of them. Each layer seeds libtorch's generator
//! before running, in both passes, so LoRA dropout draws the same masks.

use tch::{Kind, Tensor};

use super::batch::{summed_loss, LmBatch};
use crate::llama::Llama;

fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    tch::manual_seed(seed);
    f()
}

/// Runs the micro-batch, backpropagates `summed loss · scale` and returns the summed
/// cross-entropy (detached). `seed` fixes the dropout masks; `autocast` runs the forward
/// under bf16 autocast (CPU or CUDA, as the model is).
pub(crate) fn forward_backward(
    model: &Llama,
    batch: &LmBatch,
    scale: f64,
    seed: i64,
    autocast: bool,
) -> Tensor {
    tch::manual_seed(seed);
    let loss = pgmld_train::autocast(autocast, model.device(), || {
        let hidden = model.hidden_states(&batch.input_ids, None, true);
        summed_loss(&hidden, batch, |x| model.head(x))
    });
    (&loss * scale).backward();
    loss.detach()
}

/// As [`forward_backward`], recomputing each layer in the backward pass.
pub(crate) fn forward_backward_checkpointed(
    model: &Llama,
    batch: &LmBatch,
    scale: f64,
    seed: i64,
    autocast: bool,
) -> Tensor {
    let run = |k: usize, f: &dyn Fn() -> Tensor| {
        seeded(seed.wrapping_add(k as i64), || pgmld_train::autocast(autocast, model.device(), f))
    };
    let n = model.num_layers();
    let mut inputs = Vec::with_capacity(n + 1);
    tch::no_grad(|| {
        inputs.push(model.embed(&batch.input_ids));
        for i in 0..n {
            let out = run(i + 1, &|| model.layer(i, &inputs[i], 0, None, true));
            inputs.push(out);
        }
    });
    let top = inputs[n].detach().set_requires_grad(true);
    let loss = run(n + 1, &|| summed_loss(&top, batch, |x| model.head(x)));
    (&loss * scale).backward();
    let mut grad = top.grad();
    for i in (0..n).rev() {
        // The embeddings are frozen: layer 0's input needs no gradient.
        let x = if i == 0 {
            inputs[0].shallow_clone()
        } else {
            inputs[i].detach().set_requires_grad(true)
        };
        let out = run(i + 1, &|| model.layer(i, &x, 0, None, true));
        (&out * grad.to_kind(out.kind())).sum(Kind::Float).backward();
        if i > 0 {
            grad = x.grad();
        }
        inputs.truncate(i + 1);
    }
    loss.detach()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal_train::batch::make_batch;
    use crate::conversation::TokenizedExample;
    use crate::llama::test_model::tiny_model;
    use crate::lora::{apply, LoraConfig};
    use serde_json::json;
    use tch::{nn, Device};

    #[test]
    fn checkpointed_gradients_equal_plain_ones() {
        let mut model = tiny_model("llama", 21);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg =
            LoraConfig::from_json(&json!({"target_modules": "all-linear", "lora_dropout": 0.2}))
                .unwrap();
        apply(&mut model, &cfg, &vs).unwrap();
        tch::no_grad(|| {
            for (_, mut b) in vs.variables().into_iter().filter(|(n, _)| n.contains("lora_B")) {
                let _ = b.normal_(0.0, 0.05);
            }
        });
        let data = vec![
            TokenizedExample { input_ids: vec![3, 4, 5, 6, 7], labels: vec![-100, -100, 5, 6, 7] },
            TokenizedExample { input_ids: vec![9, 8, 7], labels: vec![-100, 8, 7] },
        ];
        let batch = make_batch(&data, &[0, 1], 0, Device::Cpu);
        let grads = |model: &Llama, checkpointed: bool| {
            for (_, t) in vs.variables() {
                let mut t = t;
                t.zero_grad();
            }
            let loss = if checkpointed {
                forward_backward_checkpointed(model, &batch, 0.5, 77, false)
            } else {
                forward_backward(model, &batch, 0.5, 77, false)
            };
            let mut g: Vec<(String, Tensor)> =
                vs.variables().into_iter().map(|(n, t)| (n, t.grad().copy())).collect();
            g.sort_by(|a, b| a.0.cmp(&b.0));
            (loss.double_value(&[]), g)
        };
        let (plain_loss, plain) = grads(&model, false);
        let (ck_loss, ck) = grads(&model, true);
        // Dropout masks differ between the two schedules (one seed vs one per layer), so
        // compare without dropout as well as checking both ran.
        assert!(plain_loss.is_finite() && ck_loss.is_finite());
        for (_, lin) in model.linears_mut() {
            if let Some(l) = lin.lora.as_mut() {
                l.dropout = 0.0;
            }
        }
        let (plain_loss, plain_nd) = grads(&model, false);
        let (ck_loss, ck_nd) = grads(&model, true);
        assert!((plain_loss - ck_loss).abs() < 1e-5, "{plain_loss} vs {ck_loss}");
        for ((name, a), (_, b)) in plain_nd.iter().zip(&ck_nd) {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{name}: {d}");
            assert!(a.abs().max().double_value(&[]) > 0.0, "{name} got no gradient");
        }
        assert_eq!(plain.len(), ck.len());
    }
}
