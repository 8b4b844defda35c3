//! RoBERTa against an independent numpy forward (`tests/roberta_ref.py`) on a tiny random
//! checkpoint: padding-aware position ids on a right-padded batch, the classification
//! head, and the HF checkpoint layouts a user may bring.

mod common;

use common::{ids, matrix, max_abs_diff, python, rows, temp_dir};
use pgmld_ml::roberta::position_ids;
use pgmld_ml::{Architecture, Batch, Classifier};
use tch::{Device, Kind, Tensor};

const PAD: i64 = 1;

/// `<s>` = 0, `</s>` = 2, padded with `<pad>` = 1, rows of different lengths; the last is
/// left-padded, where HF's padding-aware position ids differ from `arange`.
fn batch() -> Batch {
    let input_ids = ids(&[
        &[0, 5, 6, 7, 8, 9, 10, 2],
        &[0, 11, 12, 2, PAD, PAD, PAD, PAD],
        &[0, 13, 14, 15, 16, 2, PAD, PAD],
        &[PAD, PAD, PAD, 0, 17, 18, 19, 2],
    ]);
    let attention_mask = input_ids.ne(PAD).to_kind(Kind::Int64);
    Batch { token_type_ids: attention_mask.zeros_like(), input_ids, attention_mask }
}

fn reference(dir: &std::path::Path, layout: &str, b: &Batch) -> serde_json::Value {
    let req = serde_json::json!({
        "input_ids": rows(&b.input_ids),
        "attention_mask": rows(&b.attention_mask),
    });
    python("roberta_ref.py", &[dir, std::path::Path::new(layout)], &req)
}

fn logits(model: &Classifier, b: &Batch) -> Tensor {
    tch::no_grad(|| model.forward(b, false))
}

#[test]
fn seqcls_checkpoint_matches_numpy_on_padded_batch() {
    let dir = temp_dir("roberta-seqcls");
    let b = batch();
    let reply = reference(&dir, "seqcls", &b);
    let py_pos: Vec<Vec<i64>> = serde_json::from_value(reply["position_ids"].clone()).unwrap();
    assert_eq!(rows(&position_ids(&b.input_ids, PAD)), py_pos);
    assert_eq!(py_pos[1], vec![2, 3, 4, 5, 1, 1, 1, 1]);
    assert_eq!(py_pos[3], vec![1, 1, 1, 2, 3, 4, 5, 6]);
    let model = Classifier::from_pretrained(&dir, None, Device::Cpu).unwrap();
    assert_eq!(model.arch, Architecture::Roberta);
    assert_eq!(model.num_labels(), 3);
    assert!(model.report.fresh.is_empty(), "{:?}", model.report.fresh);
    assert!(model.report.unused.is_empty(), "{:?}", model.report.unused);
    let want = matrix(&reply["logits"]);
    let got = logits(&model, &b);
    let diff = max_abs_diff(&got, &want);
    eprintln!("roberta seqcls: max |tch - numpy| = {diff:e}");
    assert!(diff < 1e-4, "max |tch - numpy| = {diff}");
    assert!(want.abs().max().double_value(&[]) > 0.1);

    // A padded row scores as it does alone (positions restart past the padding offset).
    let alone = Batch {
        input_ids: ids(&[&[0, 11, 12, 2]]),
        attention_mask: ids(&[&[1, 1, 1, 1]]),
        token_type_ids: ids(&[&[0, 0, 0, 0]]),
    };
    let d = max_abs_diff(&logits(&model, &alone), &got.narrow(0, 1, 1));
    assert!(d < 1e-5, "padding changed the logits by {d}");
}

#[test]
fn bare_encoder_checkpoint_with_lm_head_loads() {
    let dir = temp_dir("roberta-bare");
    let b = batch();
    let want = matrix(&reference(&dir, "bare", &b)["logits"]);
    let model = Classifier::from_pretrained(&dir, None, Device::Cpu).unwrap();
    assert!(model.report.fresh.is_empty(), "{:?}", model.report.fresh);
    for n in ["lm_head.decoder.weight", "lm_head.bias", "pooler.dense.weight"] {
        assert!(model.report.unused.iter().any(|u| u == n), "{n} not reported unused");
    }
    let diff = max_abs_diff(&logits(&model, &b), &want);
    eprintln!("roberta bare: max |tch - numpy| = {diff:e}");
    assert!(diff < 1e-4, "max |tch - numpy| = {diff}");
}

#[test]
fn masked_lm_checkpoint_gets_fresh_head() {
    let dir = temp_dir("roberta-mlm");
    let b = batch();
    reference(&dir, "mlm", &b);
    let model = Classifier::from_pretrained(&dir, Some(5), Device::Cpu).unwrap();
    assert_eq!(
        model.report.fresh,
        vec![
            "classifier.dense.bias",
            "classifier.dense.weight",
            "classifier.out_proj.bias",
            "classifier.out_proj.weight"
        ]
    );
    assert!(model.report.unused.iter().any(|u| u == "lm_head.dense.weight"));
    assert_eq!(logits(&model, &b).size(), vec![4, 5]);
}

#[test]
fn max_positions_excludes_the_padding_offset() {
    let dir = temp_dir("roberta-maxpos");
    reference(&dir, "seqcls", &batch());
    let model = Classifier::from_pretrained(&dir, None, Device::Cpu).unwrap();
    // max_position_embeddings 20, pad_token_id 1: positions 2..=19 serve 18 tokens.
    let n = model.max_positions().unwrap();
    assert_eq!(n, 18);
    let full: Vec<i64> = (0..n).map(|i| 3 + i % 50).collect();
    let b = Batch {
        input_ids: ids(&[&full]),
        attention_mask: ids(&[&vec![1; n as usize]]),
        token_type_ids: ids(&[&vec![0; n as usize]]),
    };
    assert_eq!(logits(&model, &b).size(), vec![1, 3]);

    let base = serde_json::json!({"model_type": "roberta", "vocab_size": 50265, "hidden_size": 768,
        "num_hidden_layers": 0, "num_attention_heads": 12, "intermediate_size": 3072,
        "hidden_act": "gelu", "max_position_embeddings": 514, "type_vocab_size": 1,
        "pad_token_id": 1, "layer_norm_eps": 1e-5});
    let roberta_base = Classifier::new(base, 2, Device::Cpu).unwrap();
    assert_eq!(roberta_base.max_positions(), Some(512));
}
