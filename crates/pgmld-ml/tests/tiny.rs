//! Fast checks on a tiny random-initialised BERT: shapes, mask correctness, and that Adam
//! steps reduce the classification loss.

use pgmld_ml::{BertForSequenceClassification, BertModel, Config};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

fn tiny_config() -> Config {
    let cfg: Config = serde_json::from_str(
        r#"{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
            "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    cfg
}

fn ids(rows: &[&[i64]]) -> Tensor {
    let s = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, s])
}

#[test]
fn shapes_and_hf_names() {
    tch::manual_seed(0);
    let cfg = tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BertForSequenceClassification::load(vs.root(), &cfg, 3);
    let names = vs.variables();
    for n in [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.1.attention.self.query.weight",
        "bert.encoder.layer.1.attention.output.LayerNorm.bias",
        "bert.encoder.layer.0.intermediate.dense.weight",
        "bert.encoder.layer.0.output.dense.bias",
        "bert.pooler.dense.weight",
        "classifier.weight",
    ] {
        assert!(names.contains_key(n), "missing variable {n}");
    }
    assert_eq!(names["classifier.weight"].size(), vec![3, 32]);
    let x = ids(&[&[1, 5, 6, 7, 2, 0, 0], &[1, 8, 9, 10, 11, 12, 2]]);
    let mask = x.ne(0).to_kind(Kind::Int64);
    let hidden = model.bert().forward(&x, Some(&mask), None, false);
    assert_eq!(hidden.size(), vec![2, 7, 32]);
    let logits = model.forward(&x, Some(&mask), Some(&x.zeros_like()), false);
    assert_eq!(logits.size(), vec![2, 3]);
    assert_eq!(logits.isnan().any().int64_value(&[]), 0);
}

#[test]
fn padding_does_not_change_real_tokens() {
    tch::manual_seed(1);
    let cfg = tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BertModel::load(vs.root(), &cfg);
    let alone = model.forward(&ids(&[&[1, 5, 6, 7, 2]]), None, None, false);
    // Same sentence padded with arbitrary (non-pad) ids behind a 0 mask, next to a longer row.
    let x = ids(&[&[1, 5, 6, 7, 2, 33, 44, 55, 3], &[1, 8, 9, 10, 11, 12, 13, 14, 2]]);
    let mask = ids(&[&[1, 1, 1, 1, 1, 0, 0, 0, 0], &[1; 9]]);
    let padded = model.forward(&x, Some(&mask), None, false);
    let diff = (padded.narrow(0, 0, 1).narrow(1, 0, 5) - &alone).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "padding changed real tokens by {diff}");
    // Without the mask the padding must matter (the test would be vacuous otherwise).
    let unmasked = model.forward(&x, None, None, false);
    let diff = (unmasked.narrow(0, 0, 1).narrow(1, 0, 5) - &alone).abs().max().double_value(&[]);
    assert!(diff > 1e-3, "unmasked padding had no effect ({diff})");
}

#[test]
fn adam_reduces_classification_loss() {
    tch::manual_seed(2);
    let cfg = tiny_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BertForSequenceClassification::load(vs.root(), &cfg, 2);
    // Class 0 sentences use ids 10..20, class 1 ids 30..40.
    let rows: Vec<Vec<i64>> = (0..8)
        .map(|i| {
            let base = if i % 2 == 0 { 10 } else { 30 };
            let mut r = vec![1];
            r.extend((0..5).map(|j| base + (i * 3 + j * 7) % 10));
            r.push(2);
            r
        })
        .collect();
    let refs: Vec<&[i64]> = rows.iter().map(|r| r.as_slice()).collect();
    let x = ids(&refs);
    let mask = x.ones_like();
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 0, 1, 0, 1]);
    let eval_loss = || {
        tch::no_grad(|| {
            let logits = model.forward(&x, Some(&mask), None, false);
            BertForSequenceClassification::loss(&logits, &labels).double_value(&[])
        })
    };
    let before = eval_loss();
    let mut opt = nn::Adam::default().build(&vs, 2e-3).unwrap();
    for _ in 0..40 {
        let logits = model.forward(&x, Some(&mask), None, true);
        let l = BertForSequenceClassification::loss(&logits, &labels);
        opt.backward_step(&l);
    }
    let after = eval_loss();
    assert!(after < before * 0.5, "loss {before} -> {after}");
}
