//! DistilBERT against an independent numpy forward (`tests/distilbert_ref.py`) on a tiny
//! random checkpoint, for the HF checkpoint layouts a user may bring.

mod common;

use common::{ids, matrix, max_abs_diff, python, temp_dir};
use pgmld_ml::{Architecture, Batch, Classifier};
use tch::{Device, Kind, Tensor};

/// Three rows, two right-padded with 0 (`pad_token_id`); token types are nonzero on
/// purpose: DistilBERT must ignore them.
fn batch() -> Batch {
    let input_ids =
        ids(&[&[1, 5, 6, 7, 8, 9, 2], &[1, 10, 11, 2, 0, 0, 0], &[1, 12, 13, 14, 2, 0, 0]]);
    let attention_mask = input_ids.ne(0).to_kind(Kind::Int64);
    Batch { token_type_ids: attention_mask.ones_like(), input_ids, attention_mask }
}

fn reference(dir: &std::path::Path, layout: &str, b: &Batch) -> Tensor {
    let req = serde_json::json!({
        "input_ids": common::rows(&b.input_ids),
        "attention_mask": common::rows(&b.attention_mask),
    });
    let layout = std::path::Path::new(layout);
    matrix(&python("distilbert_ref.py", &[dir, layout], &req)["logits"])
}

fn logits(model: &Classifier, b: &Batch) -> Tensor {
    tch::no_grad(|| model.forward(b, false))
}

#[test]
fn seqcls_checkpoint_matches_numpy() {
    let dir = temp_dir("distilbert-seqcls");
    let b = batch();
    let want = reference(&dir, "seqcls", &b);
    let model = Classifier::from_pretrained(&dir, None, Device::Cpu).unwrap();
    assert_eq!(model.arch, Architecture::DistilBert);
    assert_eq!(model.num_labels(), 3);
    assert_eq!(model.max_positions(), Some(24));
    assert!(model.report.fresh.is_empty(), "{:?}", model.report.fresh);
    assert!(model.report.unused.is_empty(), "{:?}", model.report.unused);
    let got = logits(&model, &b);
    let diff = max_abs_diff(&got, &want);
    eprintln!("distilbert seqcls: max |tch - numpy| = {diff:e}");
    assert!(diff < 1e-4, "max |tch - numpy| = {diff}");
    // The logits are not trivially small, and the padding mask matters.
    assert!(want.abs().max().double_value(&[]) > 0.1);
    let unmasked = Batch {
        input_ids: b.input_ids.shallow_clone(),
        attention_mask: b.attention_mask.ones_like(),
        token_type_ids: b.token_type_ids.shallow_clone(),
    };
    assert!(max_abs_diff(&logits(&model, &unmasked), &want) > 1e-3);
}

#[test]
fn bare_encoder_checkpoint_with_mlm_tensors_loads() {
    let dir = temp_dir("distilbert-bare");
    let b = batch();
    let want = reference(&dir, "bare", &b);
    let model = Classifier::from_pretrained(&dir, None, Device::Cpu).unwrap();
    assert!(model.report.fresh.is_empty(), "{:?}", model.report.fresh);
    for n in ["vocab_projector.weight", "vocab_transform.bias", "vocab_layer_norm.weight"] {
        assert!(model.report.unused.iter().any(|u| u == n), "{n} not reported unused");
    }
    let diff = max_abs_diff(&logits(&model, &b), &want);
    eprintln!("distilbert bare: max |tch - numpy| = {diff:e}");
    assert!(diff < 1e-4, "max |tch - numpy| = {diff}");
}

#[test]
fn masked_lm_checkpoint_gets_fresh_head() {
    let dir = temp_dir("distilbert-mlm");
    let b = batch();
    let _ = reference(&dir, "mlm", &b);
    let model = Classifier::from_pretrained(&dir, Some(2), Device::Cpu).unwrap();
    assert_eq!(
        model.report.fresh,
        vec![
            "classifier.bias",
            "classifier.weight",
            "pre_classifier.bias",
            "pre_classifier.weight"
        ]
    );
    assert!(model.report.unused.iter().any(|u| u == "vocab_projector.weight"));
    assert_eq!(logits(&model, &b).size(), vec![3, 2]);
}

#[test]
fn save_and_reload_round_trips() {
    let dir = temp_dir("distilbert-save-src");
    let out = temp_dir("distilbert-save-out");
    let b = batch();
    let _ = reference(&dir, "seqcls", &b);
    let model = Classifier::from_pretrained(&dir, None, Device::Cpu).unwrap();
    let labels: Vec<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
    model.save(&out, &labels).unwrap();
    let back = Classifier::from_pretrained(&out, None, Device::Cpu).unwrap();
    assert_eq!(back.config["architectures"][0], "DistilBertForSequenceClassification");
    assert_eq!(back.config["id2label"]["2"], "z");
    assert_eq!(max_abs_diff(&logits(&model, &b), &logits(&back, &b)), 0.0);
}

#[test]
fn sinusoidal_positions_are_fixed_sinusoids() {
    let (n_pos, dim) = (24, 32);
    let cfg = serde_json::json!({
        "model_type": "distilbert", "vocab_size": 50, "dim": dim, "n_layers": 1,
        "n_heads": 4, "hidden_dim": 48, "max_position_embeddings": n_pos,
        "sinusoidal_pos_embds": true, "activation": "relu",
    });
    let model = Classifier::new(cfg, 2, Device::Cpu).unwrap();
    let name = "distilbert.embeddings.position_embeddings.weight";
    let vars = model.vs.variables();
    let dir = temp_dir("distilbert-sinusoidal");
    let req = serde_json::json!({"n_pos": n_pos, "dim": dim});
    let want = matrix(
        &python("distilbert_ref.py", &[&dir, std::path::Path::new("sinusoidal")], &req)["table"],
    );
    let diff = max_abs_diff(&vars[name], &want);
    assert!(diff < 1e-6, "sinusoidal table off by {diff}");
    assert!(
        model.vs.trainable_variables().iter().all(|t| t.size() != vec![n_pos, dim]),
        "sinusoidal positions must not be trained"
    );
    let logits = tch::no_grad(|| model.forward(&batch(), true));
    assert_eq!(logits.size(), vec![3, 2]);
}

#[test]
fn detects_architectures() {
    use serde_json::json;
    let detect = |v| Architecture::detect(&v).map_err(|e| e.to_string());
    assert_eq!(detect(json!({"model_type": "distilbert"})), Ok(Architecture::DistilBert));
    assert_eq!(detect(json!({"model_type": "roberta"})), Ok(Architecture::Roberta));
    assert_eq!(
        detect(json!({"architectures": ["DistilBertForMaskedLM"]})),
        Ok(Architecture::DistilBert)
    );
    assert_eq!(detect(json!({"architectures": ["RobertaModel"]})), Ok(Architecture::Roberta));
    assert_eq!(detect(json!({"architectures": ["BertModel"]})), Ok(Architecture::Bert));
    let err = detect(json!({"model_type": "xlm-roberta"})).unwrap_err();
    assert!(err.contains("distilbert") && err.contains("roberta"), "{err}");
    assert!(detect(json!({"architectures": ["XLMRobertaModel"]})).is_err());
    let bad = json!({"model_type": "distilbert", "dim": 30, "n_heads": 4});
    assert!(Classifier::new(bad, 2, Device::Cpu).is_err());
}
