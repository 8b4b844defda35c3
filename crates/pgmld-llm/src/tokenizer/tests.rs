use gguf_rs_lib::format::metadata::MetadataValue;
use gguf_rs_lib::format::types::GGUFValueType;
use tokenizers::{
    OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, PreTokenizerWrapper,
};

use super::*;
use crate::gguf::test_support::{array, smollm2_path, strings, temp_dir, write_metadata_only};

fn smollm2() -> Option<ChatTokenizer> {
    let path = smollm2_path()?;
    Some(ChatTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap())
}

#[test]
fn smollm2_special_tokens() {
    let Some(tok) = smollm2() else { return };
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.vocab_size(), 49152);
    let eos = tok.eos_token().expect("SmolLM2 has an EOS token");
    assert_eq!((eos.text.as_str(), eos.id), ("<|im_end|>", 2));
    assert!(tok.pad_id().is_some());
}

#[test]
fn smollm2_encodes_like_its_hf_tokenizer() {
    let Some(tok) = smollm2() else { return };
    let ids = tok.encode("Hello, world! 123", false).unwrap();
    let pieces: Vec<String> = ids.iter().map(|&id| tok.id_to_token(id).unwrap()).collect();
    // SmolLM2's tokenizer.json: Digits(individual) then ByteLevel, so the number is
    // split into single digits and its space stands alone.
    assert_eq!(pieces, ["Hello", ",", "Ġworld", "!", "Ġ", "1", "2", "3"]);
    assert_eq!(ids, [19556, 28, 905, 17, 216, 33, 34, 35]);
    // No BOS is added for SmolLM2 (tokenizer.ggml.add_bos_token is false).
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![19556]);
}

#[test]
fn smollm2_round_trips_text() {
    let Some(tok) = smollm2() else { return };
    for text in [
        "The capital of France is Paris.",
        "  leading and   inner spaces\n\ttabs\r\nand newlines\n",
        "naïve café, Ünïcödé — 東京 🚀👋🏽",
        "fn main() { println!(\"{}\", 1 + 2); }",
        "",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn smollm2_chat_markup_uses_special_ids() {
    let Some(tok) = smollm2() else { return };
    let ids = tok.encode("<|im_start|>user\nHi there<|im_end|>\n", false).unwrap();
    assert_eq!(ids[0], 1);
    assert!(ids.contains(&2));
    assert_eq!(ids.iter().filter(|&&i| i <= 2).count(), 2);
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi there\n");
    let (ids2, offsets) = tok.encode_with_offsets("<|im_start|>user", false).unwrap();
    assert_eq!(ids2[0], 1);
    assert_eq!(offsets[0], (0, "<|im_start|>".len()));
}

#[test]
fn stream_decoder_pieces_concatenate_to_decode() {
    let Some(tok) = smollm2() else { return };
    for text in
        ["Bonjour 👋🏽, 東京は晴れ — ça va?", "plain ascii text, 42 tokens or so", "é\u{301}🇫🇷"]
    {
        let ids = tok.encode(text, false).unwrap();
        for skip in [false, true] {
            let mut stream = tok.stream_decoder(skip);
            let mut pieces = Vec::new();
            for &id in &ids {
                if let Some(p) = stream.push(id).unwrap() {
                    assert!(!p.contains('\u{FFFD}'), "incomplete UTF-8 emitted: {p:?}");
                    pieces.push(p);
                }
            }
            pieces.extend(stream.finish().unwrap());
            assert_eq!(pieces.concat(), tok.decode(&ids, skip).unwrap(), "{text}");
        }
    }
    // A multi-byte character split over byte tokens is held back until complete.
    let mut stream = tok.stream_decoder(false);
    let ids = tok.encode("🚀", false).unwrap();
    assert!(ids.len() > 1, "expected byte tokens for the emoji, got {ids:?}");
    let outs: Vec<Option<String>> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert!(outs[..outs.len() - 1].iter().all(Option::is_none));
    assert_eq!(outs.last().unwrap().as_deref(), Some("🚀"));
}

#[test]
fn decode_rejects_ids_outside_the_vocabulary() {
    let Some(tok) = smollm2() else { return };
    assert!(tok.decode(&[49152], false).is_err());
    assert!(tok.decode(&[-1], false).is_err());
    assert!(tok.stream_decoder(false).push(1 << 40).is_err());
}

/// A word-level tokenizer.json small enough to write by hand.
fn word_level_json() -> serde_json::Value {
    serde_json::json!({
        "version": "1.0", "truncation": {"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<s>": 0, "</s>": 1, "hello": 2, "world": 3, "[UNK]": 4}, "unk_token": "[UNK]"}
    })
}

#[test]
fn from_files_reads_special_tokens_from_tokenizer_config() {
    let dir = temp_dir("tok-files");
    std::fs::write(dir.join("tokenizer.json"), word_level_json().to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "pad_token": null}"#,
    )
    .unwrap();
    let tok = ChatTokenizer::from_hf_dir(&dir).unwrap();
    assert_eq!(tok.bos_token().map(|t| t.id), Some(0));
    assert_eq!(tok.eos_token().map(|t| (t.text.as_str(), t.id)), Some(("</s>", 1)));
    assert!(tok.pad_token().is_none());
    assert_eq!(tok.pad_id(), Some(1), "pad falls back to EOS");
    // The file's truncation (max_length 2) is switched off.
    assert_eq!(tok.encode("hello world hello oops", false).unwrap(), vec![2, 3, 2, 4]);

    // A named special token missing from the vocabulary is an error.
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "<|eot|>"}"#).unwrap();
    let err = ChatTokenizer::from_hf_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("<|eot|>"), "{err}");
    // No tokenizer.json at all.
    let err = ChatTokenizer::from_hf_dir(&temp_dir("tok-none")).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

/// A SentencePiece-style (`tokenizer.ggml.model = llama`) vocabulary: control tokens, 256
/// byte tokens and a few pieces whose scores rank the merges.
fn spm_gguf() -> std::path::PathBuf {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let pieces = [
        "▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁he", "ll", "llo", "▁hello", "▁w", "or",
        "▁wor", "ld", "▁world",
    ];
    for p in pieces {
        tokens.push(p.into());
        types.push(1);
    }
    let scores: Vec<MetadataValue> = (0..tokens.len())
        .map(|i| MetadataValue::F32(if i < 259 { 0.0 } else { -(i as f32) }))
        .collect();
    write_metadata_only(
        "spm",
        vec![
            ("tokenizer.ggml.model", MetadataValue::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            (
                "tokenizer.ggml.token_type",
                array(GGUFValueType::I32, types.into_iter().map(MetadataValue::I32).collect()),
            ),
            ("tokenizer.ggml.scores", array(GGUFValueType::F32, scores)),
            ("tokenizer.ggml.bos_token_id", MetadataValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
            ("tokenizer.ggml.unknown_token_id", MetadataValue::U32(0)),
        ],
    )
}

#[test]
fn sentencepiece_vocabulary_from_gguf() {
    let file = GgufFile::open(&spm_gguf()).unwrap();
    let tok = ChatTokenizer::from_gguf(&file).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(tok.bos_token().map(|t| t.id), Some(1));
    // BOS added by default for llama vocabularies; a leading "▁" marks the first word.
    assert_eq!(tok.encode("hello world", true).unwrap(), vec![1, id("▁hello"), id("▁world")]);
    // Unknown characters fall back to their UTF-8 bytes.
    assert_eq!(tok.encode("hé", false).unwrap(), vec![id("▁h"), id("<0xC3>"), id("<0xA9>")]);
    for text in ["hello world", "hé", "hello  world"] {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), text);
        let mut stream = tok.stream_decoder(true);
        let mut out = String::new();
        for &i in &ids {
            out.extend(stream.push(i).unwrap());
        }
        out.extend(stream.finish().unwrap());
        assert_eq!(out, text, "streamed");
    }
}

#[test]
fn sentencepiece_merges_follow_scores() {
    let tokens = ["a", "b", "ab", "c", "abc", "bc"];
    let types = [1, 1, 1, 1, 1, 1];
    let scores = [0.0, 0.0, -1.0, 0.0, -3.0, -2.0];
    let merges = from_gguf::sentencepiece_merges(&tokens, &types, &scores);
    let pairs: Vec<(String, String)> = merges
        .iter()
        .map(|m| (m[0].as_str().unwrap().into(), m[1].as_str().unwrap().into()))
        .collect();
    let p = |a: &str, b: &str| (a.to_string(), b.to_string());
    // "ab" (score -1) first, then "bc" (-2), then both splits of "abc" (-3) by part ids.
    assert_eq!(pairs, vec![p("a", "b"), p("b", "c"), p("a", "bc"), p("ab", "c")]);
}

fn split_with(pre: &serde_json::Value, text: &str) -> Vec<String> {
    let pre: PreTokenizerWrapper = serde_json::from_value(pre.clone()).unwrap();
    let mut s = PreTokenizedString::from(text);
    pre.pre_tokenize(&mut s).unwrap();
    s.get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(t, _, _)| t.to_string())
        .collect()
}

#[test]
fn pre_tokenizers_split_like_their_models() {
    let text = "I'm 12345 ok!!";
    let pre = |name: &str| tokenizer_json_pre(name);
    assert_eq!(split_with(&pre("llama-bpe"), text), ["I", "'m", "Ġ", "123", "45", "Ġok", "!!"]);
    assert_eq!(
        split_with(&pre("qwen2"), text),
        ["I", "'m", "Ġ", "1", "2", "3", "4", "5", "Ġok", "!!"]
    );
    assert_eq!(
        split_with(&pre("smollm"), text),
        ["I", "'m", "Ġ", "1", "2", "3", "4", "5", "Ġok", "!!"]
    );
    assert_eq!(split_with(&pre("gpt-2"), text), ["I", "'m", "Ġ12345", "Ġok", "!!"]);
}

/// The pre-tokenizer a gpt2-model GGUF with `tokenizer.ggml.pre = name` gets.
fn tokenizer_json_pre(name: &str) -> serde_json::Value {
    let path = write_metadata_only(
        &format!("pre-{name}"),
        vec![
            ("tokenizer.ggml.model", MetadataValue::String("gpt2".into())),
            ("tokenizer.ggml.pre", MetadataValue::String(name.into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b", "ab"])),
            ("tokenizer.ggml.merges", strings(&["a b"])),
        ],
    );
    let built = tokenizer_json_from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    built.tokenizer_json["pre_tokenizer"].clone()
}

#[test]
fn unsupported_gguf_tokenizers_are_named() {
    let path = write_metadata_only(
        "pre-weird",
        vec![
            ("tokenizer.ggml.model", MetadataValue::String("gpt2".into())),
            ("tokenizer.ggml.pre", MetadataValue::String("weird-new-pre".into())),
            ("tokenizer.ggml.tokens", strings(&["a"])),
            ("tokenizer.ggml.merges", strings::<&str>(&[])),
        ],
    );
    let err = ChatTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err().to_string();
    assert!(err.contains("weird-new-pre"), "{err}");
    let path = write_metadata_only(
        "model-bert",
        vec![
            ("tokenizer.ggml.model", MetadataValue::String("bert".into())),
            ("tokenizer.ggml.tokens", strings(&["a"])),
        ],
    );
    let err = ChatTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err().to_string();
    assert!(err.contains("bert"), "{err}");
}
