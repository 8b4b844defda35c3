//! Tokenizers for checkpoint directories, including those without a `tokenizer.json`.
//!
//! Older Hugging Face checkpoints ship only the files of a "slow" tokenizer. This module
//! rebuilds the "fast" tokenizer `transformers` would convert them to
//! (`convert_slow_tokenizer.py`): BERT-style `vocab.txt` → WordPiece, and RoBERTa/GPT-2
//! style `vocab.json` + `merges.txt` → byte-level BPE, with the special tokens and
//! options of `tokenizer_config.json` / `special_tokens_map.json`.

use std::path::Path;

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, PaddingParams, Tokenizer};

use crate::error::{Error, Result};

/// Loads the tokenizer of a checkpoint directory: `tokenizer.json` when present, else a
/// WordPiece tokenizer from `vocab.txt` (see [`wordpiece_from_dir`]), else a byte-level
/// BPE tokenizer from `vocab.json` + `merges.txt` (see [`byte_level_bpe_from_dir`]).
pub fn tokenizer_from_dir(dir: &Path) -> Result<Tokenizer> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return Tokenizer::from_file(&json)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", json.display())));
    }
    if dir.join("vocab.txt").is_file() {
        return wordpiece_from_dir(dir);
    }
    if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
        return byte_level_bpe_from_dir(dir);
    }
    Err(Error::Tokenizer(format!(
        "{}: no tokenizer.json, vocab.txt, or vocab.json + merges.txt",
        dir.display()
    )))
}

/// `tokenizer_config.json` merged with `special_tokens_map.json` (the latter wins), or an
/// empty object when neither exists.
fn tokenizer_settings(dir: &Path) -> Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|source| Error::io(path.clone(), source))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| Error::config(path.clone(), source))?;
        if let Value::Object(m) = value {
            out.extend(m);
        }
    }
    Ok(out)
}

/// A special token setting: a string, or an `AddedToken` object with `content`.
fn special(settings: &serde_json::Map<String, Value>, key: &str, default: &str) -> String {
    match settings.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => {
            o.get("content").and_then(Value::as_str).unwrap_or(default).to_string()
        }
        _ => default.to_string(),
    }
}

fn flag(settings: &serde_json::Map<String, Value>, key: &str) -> Option<bool> {
    settings.get(key).and_then(Value::as_bool)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::Tokenizer(format!("{}: path is not UTF-8", path.display())))
}

fn tok_err(path: &Path) -> impl Fn(tokenizers::Error) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{}: {e}", path.display()))
}

fn token_id(tok: &Tokenizer, token: &str, file: &Path) -> Result<u32> {
    tok.token_to_id(token).ok_or_else(|| {
        Error::Tokenizer(format!(
            "{}: special token {token:?} missing from the vocabulary",
            file.display()
        ))
    })
}

/// Registers `tokens` (those in the vocabulary) as special tokens, so they are matched
/// whole in the input, and pads with `pad`.
fn finish(
    mut tok: Tokenizer,
    tokens: Vec<AddedToken>,
    pad: &str,
    file: &Path,
) -> Result<Tokenizer> {
    let known: Vec<AddedToken> =
        tokens.into_iter().filter(|t| tok.token_to_id(&t.content).is_some()).collect();
    tok.add_special_tokens(known).map_err(tok_err(file))?;
    let pad_id = token_id(&tok, pad, file)?;
    tok.with_padding(Some(PaddingParams {
        pad_id,
        pad_token: pad.to_string(),
        ..Default::default()
    }));
    Ok(tok)
}

/// BERT's fast tokenizer from `vocab.txt` (HF `BertConverter`): `BertNormalizer`
/// (lowercasing and accent stripping per `do_lower_case` (default true) and
/// `strip_accents`, Chinese characters split per `tokenize_chinese_chars`),
/// `BertPreTokenizer`, WordPiece with `##` continuations, `[CLS] A [SEP]` /
/// `[CLS] A [SEP] B [SEP]` with token types 0 then 1, padding with `[PAD]`.
pub fn wordpiece_from_dir(dir: &Path) -> Result<Tokenizer> {
    let vocab = dir.join("vocab.txt");
    let s = tokenizer_settings(dir)?;
    let unk = special(&s, "unk_token", "[UNK]");
    let (cls, sep) = (special(&s, "cls_token", "[CLS]"), special(&s, "sep_token", "[SEP]"));
    let (pad, mask) = (special(&s, "pad_token", "[PAD]"), special(&s, "mask_token", "[MASK]"));
    let model = WordPiece::from_file(path_str(&vocab)?)
        .unk_token(unk.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(tok_err(&vocab))?;
    let lowercase = flag(&s, "do_lower_case").unwrap_or(true);
    let chinese = flag(&s, "tokenize_chinese_chars").unwrap_or(true);
    let normalizer = BertNormalizer::new(true, chinese, flag(&s, "strip_accents"), lowercase);
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(normalizer))
        .map_err(tok_err(&vocab))?
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(WordPieceDecoder::default()));
    let processor = BertProcessing::new(
        (sep.clone(), token_id(&tok, &sep, &vocab)?),
        (cls.clone(), token_id(&tok, &cls, &vocab)?),
    );
    tok.with_post_processor(Some(processor));
    let specials = [&pad, &unk, &cls, &sep, &mask]
        .into_iter()
        .map(|t| AddedToken::from(t.as_str(), true))
        .collect();
    finish(tok, specials, &pad, &vocab)
}

/// RoBERTa's fast tokenizer from `vocab.json` + `merges.txt` (HF `RobertaConverter`):
/// byte-level pre-tokenization (`add_prefix_space` from `tokenizer_config.json`, default
/// false), BPE, `<s> A </s>` / `<s> A </s></s> B </s>` (all token types 0), padding with
/// `<pad>`; `<mask>` absorbs the space before it.
pub fn byte_level_bpe_from_dir(dir: &Path) -> Result<Tokenizer> {
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let s = tokenizer_settings(dir)?;
    let (bos, eos, unk) = (
        special(&s, "bos_token", "<s>"),
        special(&s, "eos_token", "</s>"),
        special(&s, "unk_token", "<unk>"),
    );
    let (cls, sep) = (special(&s, "cls_token", "<s>"), special(&s, "sep_token", "</s>"));
    let (pad, mask) = (special(&s, "pad_token", "<pad>"), special(&s, "mask_token", "<mask>"));
    let model =
        BPE::from_file(path_str(&vocab)?, path_str(&merges)?).build().map_err(tok_err(&vocab))?;
    let prefix_space = flag(&s, "add_prefix_space").unwrap_or(false);
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(ByteLevel::new(prefix_space, true, true)))
        .with_decoder(Some(ByteLevelDecoder::default()));
    let processor = RobertaProcessing::new(
        (sep.clone(), token_id(&tok, &sep, &vocab)?),
        (cls.clone(), token_id(&tok, &cls, &vocab)?),
    )
    .trim_offsets(true)
    .add_prefix_space(prefix_space);
    tok.with_post_processor(Some(processor));
    let mut specials: Vec<AddedToken> = [&bos, &pad, &eos, &unk, &cls, &sep]
        .into_iter()
        .map(|t| AddedToken::from(t.as_str(), true))
        .collect();
    specials.push(AddedToken::from(mask.as_str(), true).lstrip(true));
    finish(tok, specials, &pad, &vocab)
}
