//! Shared by the trainer tests: a tiny random-initialised BERT, a word-level tokenizer
//! and a toy separable dataset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use pgmld_ml::{Classifier, Example, TextTokenizer, TrainEvent};
use pgmld_train::{LogEvent, TrainingArgs};
use tch::Device;

/// libtorch's generator is process-global: tests that seed it must not interleave.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 2-layer BERT, hidden size 32, default dropout 0.1.
pub fn tiny_config() -> serde_json::Value {
    serde_json::json!({"model_type": "bert", "vocab_size": 64, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "hidden_act": "gelu", "max_position_embeddings": 32, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12})
}

/// The tiny BERT with 2 labels, initialised from libtorch seed `seed`.
pub fn tiny_model(seed: i64) -> Classifier {
    tch::manual_seed(seed);
    Classifier::new(tiny_config(), 2, Device::Cpu).unwrap()
}

/// Collects the log events of a run.
pub fn logs_into(logs: &mut Vec<LogEvent>) -> impl FnMut(TrainEvent) + '_ {
    move |e| {
        if let TrainEvent::Log(l) = e {
            logs.push(l)
        }
    }
}

/// Word-level tokenizer: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3, then a0..a19, b0..b19, c0..c9.
pub fn tiny_tokenizer() -> TextTokenizer {
    let mut vocab = serde_json::Map::new();
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let words: Vec<String> = specials
        .iter()
        .map(|s| s.to_string())
        .chain((0..20).map(|i| format!("a{i}")))
        .chain((0..20).map(|i| format!("b{i}")))
        .chain((0..10).map(|i| format!("c{i}")))
        .collect();
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.clone(), i.into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("pgmld-ml-tiny-tok-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, tok.to_string()).unwrap();
    TextTokenizer::from_file(&path, 24).unwrap()
}

/// Class 0 texts use words a*, class 1 words b*, both mixed with shared fillers c*.
pub fn toy_data(n: usize, seed: u64) -> Vec<Example> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |m: u64| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) % m
    };
    (0..n)
        .map(|i| {
            let label = (i % 2) as i64;
            let len = 3 + next(10);
            let words: Vec<String> = (0..len)
                .map(|_| {
                    if next(3) == 0 {
                        format!("c{}", next(10))
                    } else {
                        format!("{}{}", if label == 0 { 'a' } else { 'b' }, next(20))
                    }
                })
                .collect();
            Example::new(words.join(" "), label)
        })
        .collect()
}

/// Parses training arguments.
pub fn args(json: &str) -> TrainingArgs {
    TrainingArgs::from_json_str(json).unwrap()
}
