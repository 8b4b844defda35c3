//! Gradient checkpointing gives the gradients of the plain backward pass, for every
//! architecture, with and without dropout.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use pgmld_ml::checkpointing::backward_checkpointed;
use pgmld_ml::{Batch, Classifier};
use tch::{Device, Kind, Tensor};

/// libtorch's generator is process-global: seeding tests must not interleave.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(model_type: &str, dropout: f64) -> serde_json::Value {
    match model_type {
        "distilbert" => {
            serde_json::json!({"model_type": "distilbert", "vocab_size": 50, "dim": 32, "n_layers": 3,
            "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 40, "dropout": dropout,
            "attention_dropout": dropout, "seq_classif_dropout": dropout})
        }
        other => serde_json::json!({"model_type": other, "vocab_size": 50, "hidden_size": 32,
            "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
            "max_position_embeddings": 40, "type_vocab_size": if other == "roberta" { 1 } else { 2 },
            "pad_token_id": if other == "roberta" { 1 } else { 0 },
            "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}),
    }
}

fn batch() -> (Batch, Tensor) {
    let ids = Tensor::from_slice(&[5i64, 9, 12, 7, 3, 8, 11, 20, 21, 2, 1, 1]).view([2, 6]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]).view([2, 6]);
    let types = Tensor::zeros([2, 6], (Kind::Int64, Device::Cpu));
    (
        Batch { input_ids: ids, attention_mask: mask, token_type_ids: types },
        Tensor::from_slice(&[0i64, 2]),
    )
}

fn grads(m: &Classifier) -> HashMap<String, Tensor> {
    m.vs.variables().into_iter().map(|(k, v)| (k, v.grad().copy())).collect()
}

fn zero(m: &Classifier) {
    for (_, v) in m.vs.variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

fn max_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    a.iter().map(|(k, t)| (t - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn checkpointed_gradients_match_plain_backward() {
    let _s = serial();
    for arch in ["bert", "distilbert", "roberta"] {
        tch::manual_seed(1);
        let m = Classifier::new(config(arch, 0.0), 3, Device::Cpu).unwrap();
        let (b, labels) = batch();
        let loss = Classifier::loss(&m.forward(&b, true), &labels);
        loss.backward();
        let plain = grads(&m);
        zero(&m);
        let l2 =
            backward_checkpointed(&m, &b, |logits| Classifier::loss(logits, &labels), 7, false);
        let ckpt = grads(&m);
        assert!((loss.double_value(&[]) - l2.double_value(&[])).abs() < 1e-6);
        let d = max_diff(&plain, &ckpt);
        assert!(d < 1e-5, "{arch}: max gradient difference {d}");
        assert!(plain.values().any(|g| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
    }
}

#[test]
fn dropout_masks_are_replayed_in_the_recomputation() {
    let _s = serial();
    for arch in ["bert", "distilbert", "roberta"] {
        tch::manual_seed(2);
        let m = Classifier::new(config(arch, 0.3), 3, Device::Cpu).unwrap();
        let (b, labels) = batch();
        // Reference: one graph, each segment seeded as backward_checkpointed seeds it.
        let seed = 1234i64;
        let mask = pgmld_ml::bert::attention_bool_mask(&b.attention_mask);
        tch::manual_seed(seed);
        let mut xs = m.embed(&b, true);
        for i in 0..m.num_layers() {
            tch::manual_seed(seed + 1 + i as i64);
            xs = m.layer(i, &xs, Some(&mask), true);
        }
        tch::manual_seed(seed + 1 + m.num_layers() as i64);
        let loss = Classifier::loss(&m.head(&xs, true), &labels);
        loss.backward();
        let reference = grads(&m);
        zero(&m);
        let l2 =
            backward_checkpointed(&m, &b, |logits| Classifier::loss(logits, &labels), seed, false);
        assert!(
            (loss.double_value(&[]) - l2.double_value(&[])).abs() < 1e-6,
            "{arch}: same dropout masks"
        );
        let d = max_diff(&reference, &grads(&m));
        assert!(d < 1e-5, "{arch}: max gradient difference {d}");
        // And dropout is really on: another seed gives another loss.
        zero(&m);
        let l3 = backward_checkpointed(
            &m,
            &b,
            |logits| Classifier::loss(logits, &labels),
            seed + 100,
            false,
        );
        assert!(
            (l3.double_value(&[]) - l2.double_value(&[])).abs() > 1e-6,
            "{arch}: dropout active"
        );
    }
}
