//! A Hugging Face `tokenizer.json` rebuilt from GGUF tokenizer metadata, so GGUF models
//! tokenize exactly as their original tokenizer did.
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokens` + `merges`; the
//!   pre-tokenizer follows `tokenizer.ggml.pre` the way llama.cpp reads it (e.g. SmolLM2's
//!   `smollm` = single digits, then GPT-2's byte-level split).
//! - `"llama"`: SentencePiece BPE with byte fallback; merges are recovered from the token
//!   scores as `transformers`' SentencePiece converter does.
//!
//! Control tokens (`token_type` 3) become special added tokens, user-defined ones (4)
//! plain added tokens.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::gguf::GgufFile;
use crate::{Error, Result};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's split regex (tokenizer.json of Meta-Llama-3).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What [`tokenizer_json_from_gguf`] builds.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    /// A `tokenizer.json` document equivalent to the original model's.
    pub tokenizer_json: Value,
    /// BOS token text (`tokenizer.ggml.bos_token_id`).
    pub bos: Option<String>,
    /// EOS token text (`tokenizer.ggml.eos_token_id`).
    pub eos: Option<String>,
    /// Padding token text (`tokenizer.ggml.padding_token_id`).
    pub pad: Option<String>,
}

/// Rebuilds the tokenizer of a GGUF file as a `tokenizer.json` document.
pub fn tokenizer_json_from_gguf(file: &GgufFile) -> Result<GgufTokenizer> {
    let model = file
        .get_str("tokenizer.ggml.model")
        .ok_or_else(|| file.missing_metadata("tokenizer.ggml.model"))?;
    let tokens = file
        .get_str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| file.missing_metadata("tokenizer.ggml.tokens"))?;
    let types = match file.get_i64_array("tokenizer.ggml.token_type")? {
        Some(t) if t.len() == tokens.len() => t,
        Some(_) => return Err(file.bad_metadata("tokenizer.ggml.token_type", "one type per token")),
        None => vec![TYPE_NORMAL; tokens.len()],
    };
    let token_at = |key: &str| -> Result<Option<String>> {
        match file.get_u64(&format!("tokenizer.ggml.{key}")) {
            None => Ok(None),
            Some(id) => tokens.get(id as usize).map(|t| Some(t.to_string())).ok_or_else(|| {
                file.bad_metadata(&format!("tokenizer.ggml.{key}"), "a token id in the vocabulary")
            }),
        }
    };
    let (bos, eos, pad, unk) = (
        token_at("bos_token_id")?,
        token_at("eos_token_id")?,
        token_at("padding_token_id")?,
        token_at("unknown_token_id")?,
    );

    let mut vocab = serde_json::Map::new();
    for (id, token) in tokens.iter().enumerate() {
        // Later duplicates (rare padding entries) keep the first id, as HF's vocab does.
        vocab.entry(token.to_string()).or_insert(json!(id));
    }
    let added_tokens: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED || ty == TYPE_UNKNOWN)
        .map(|(id, (token, &ty))| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": ty != TYPE_USER_DEFINED})
        })
        .collect();

    let (normalizer, pre_tokenizer, decoder, bpe_model, add_bos_default) = match model {
        "gpt2" => {
            let merges = file
                .get_str_array("tokenizer.ggml.merges")?
                .ok_or_else(|| file.missing_metadata("tokenizer.ggml.merges"))?;
            let merges = merges
                .iter()
                .map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    file.bad_metadata("tokenizer.ggml.merges", "a list of \"left right\" pairs")
                })?;
            let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
            let (pre_tokenizer, ignore_merges) =
                byte_level_pre_tokenizer(pre).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{}: GGUF pre-tokenizer {pre:?}",
                        file.path().display()
                    ))
                })?;
            let model = json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                "vocab": vocab, "merges": merges});
            let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            (Value::Null, pre_tokenizer, decoder, model, false)
        }
        "llama" => {
            let scores = file
                .get_f64_array("tokenizer.ggml.scores")?
                .ok_or_else(|| file.missing_metadata("tokenizer.ggml.scores"))?;
            if scores.len() != tokens.len() {
                return Err(file.bad_metadata("tokenizer.ggml.scores", "one score per token"));
            }
            let merges = sentencepiece_merges(&tokens, &types, &scores);
            let space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix").unwrap_or(true);
            let pre = json!({"type": "Metaspace", "replacement": "▁",
                "prepend_scheme": if space_prefix { "first" } else { "never" }, "split": false});
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if space_prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let model = json!({"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges});
            (Value::Null, pre, json!({"type": "Sequence", "decoders": decoders}), model, true)
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF tokenizer model {other:?} (supported: gpt2, llama)",
                file.path().display()
            )))
        }
    };

    let add_bos = file.get_bool("tokenizer.ggml.add_bos_token").unwrap_or(add_bos_default);
    let add_eos = file.get_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);
    let post_processor = template_post_processor(
        if add_bos {
            bos.as_deref().zip(file.get_u64("tokenizer.ggml.bos_token_id"))
        } else {
            None
        },
        if add_eos {
            eos.as_deref().zip(file.get_u64("tokenizer.ggml.eos_token_id"))
        } else {
            None
        },
    );
    let tokenizer_json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added_tokens,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": decoder, "model": bpe_model,
    });
    Ok(GgufTokenizer { tokenizer_json, bos, eos, pad })
}

/// The `tokenizer.json` pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names (its regex
/// sets in `llama-vocab.cpp`), and whether the BPE model ignores merges for whole-word
/// vocabulary hits (Llama 3).
fn byte_level_pre_tokenizer(pre: &str) -> Option<(Value, bool)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let sequence = |parts: Vec<Value>| json!({"type": "Sequence", "pretokenizers": parts});
    Some(match pre {
        // GPT-2's own regex (also what files converted before `pre` existed expect).
        "default" | "gpt-2" | "gpt2" | "mpt" | "olmo" => (byte_level(true), false),
        // Single digits, then GPT-2's regex: StarCoder-family vocabularies incl. SmolLM.
        "smollm" | "starcoder" | "refact" | "codeshell" => (
            sequence(vec![json!({"type": "Digits", "individual_digits": true}), byte_level(true)]),
            false,
        ),
        "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => {
            (sequence(vec![split(LLAMA3_SPLIT), byte_level(false)]), true)
        }
        "qwen2" | "stablelm2" => (sequence(vec![split(QWEN2_SPLIT), byte_level(false)]), false),
        _ => return None,
    })
}

/// A `TemplateProcessing` post-processor adding BOS before / EOS after each sequence,
/// or null when neither is added.
fn template_post_processor(bos: Option<(&str, u64)>, eos: Option<(&str, u64)>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    if let Some((text, id)) = bos {
        single.push(special(text));
        pair.push(special(text));
        specials.insert(text.to_string(), json!({"id": text, "ids": [id], "tokens": [text]}));
    }
    single.push(seq("A", 0));
    pair.push(seq("A", 0));
    if let Some((text, _)) = eos {
        single.push(special(text));
        pair.push(special(text));
    }
    if let Some((text, _)) = bos {
        pair.push(json!({"SpecialToken": {"id": text, "type_id": 1}}));
    }
    pair.push(seq("B", 1));
    if let Some((text, id)) = eos {
        pair.push(json!({"SpecialToken": {"id": text, "type_id": 1}}));
        specials.insert(text.to_string(), json!({"id": text, "ids": [id], "tokens": [text]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// BPE merges implied by SentencePiece scores: every split of a normal token into two
/// normal tokens is a merge, ranked by the merged token's score (highest first), ties by
/// token id then by the parts' ids — `transformers`' `SentencePieceExtractor` order.
pub fn sentencepiece_merges(tokens: &[&str], types: &[i64], scores: &[f64]) -> Vec<Value> {
    let normal: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| types[*id] == TYPE_NORMAL || types[*id] == TYPE_USER_DEFINED)
        .map(|(id, t)| (*t, id))
        .collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if types[id] != TYPE_NORMAL {
            continue;
        }
        for (cut, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(cut);
            if let (Some(&l), Some(&r)) = (normal.get(left), normal.get(right)) {
                merges.push((scores[id], id, l, r));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3))
    });
    merges.into_iter().map(|(_, _, l, r)| json!([tokens[l], tokens[r]])).collect()
}
