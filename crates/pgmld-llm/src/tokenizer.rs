//! [`ChatTokenizer`]: a Hugging Face `tokenizers::Tokenizer` plus the special tokens a chat
//! model needs (BOS, EOS, padding), loaded from `tokenizer.json` (+ `tokenizer_config.json`)
//! or rebuilt from GGUF metadata, and [`StreamDecoder`] for streaming generation.

mod from_gguf;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::gguf::GgufFile;
use crate::{Error, Result};

pub use from_gguf::tokenizer_json_from_gguf;

/// Each token's byte range `(start, end)` in the encoded text.
pub type TokenOffsets = Vec<(usize, usize)>;

/// A special token's text and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    /// Its text (`<|im_end|>`), as chat templates write it.
    pub text: String,
    /// Its id.
    pub id: i64,
}

/// A tokenizer with the chat model's special tokens; cheap to clone (shared).
#[derive(Clone)]
pub struct ChatTokenizer {
    inner: Arc<Tokenizer>,
    bos: Option<SpecialToken>,
    eos: Option<SpecialToken>,
    pad: Option<SpecialToken>,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl ChatTokenizer {
    /// Wraps `tokenizer` (truncation and padding switched off: callers decide lengths) with
    /// the named special tokens, which must be in its vocabulary.
    pub fn new(
        mut tokenizer: Tokenizer,
        bos: Option<&str>,
        eos: Option<&str>,
        pad: Option<&str>,
    ) -> Result<Self> {
        tokenizer.with_truncation(None).map_err(tok_err)?;
        tokenizer.with_padding(None);
        let special = |text: Option<&str>, what: &str| -> Result<Option<SpecialToken>> {
            let Some(text) = text else { return Ok(None) };
            let id = tokenizer.token_to_id(text).ok_or_else(|| {
                Error::Tokenizer(format!("{what} token {text:?} is not in the vocabulary"))
            })?;
            Ok(Some(SpecialToken { text: text.to_string(), id: id as i64 }))
        };
        let (bos, eos, pad) = (special(bos, "bos")?, special(eos, "eos")?, special(pad, "pad")?);
        Ok(ChatTokenizer { inner: Arc::new(tokenizer), bos, eos, pad })
    }

    /// Loads `tokenizer.json`; BOS/EOS/pad come from `tokenizer_config.json` when given
    /// (`bos_token`, `eos_token`, `pad_token`: a string or an `{"content": …}` object).
    pub fn from_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        if !tokenizer_json.is_file() {
            return Err(Error::io(
                tokenizer_json,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer.json (sentencepiece-only tokenizers are not supported)",
                ),
            ));
        }
        let tokenizer = Tokenizer::from_file(tokenizer_json)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_json.display())))?;
        let config = match tokenizer_config {
            Some(path) if path.is_file() => read_json(path)?,
            _ => Value::Null,
        };
        let name = |key: &str| special_token_text(&config[key]);
        Self::new(
            tokenizer,
            name("bos_token").as_deref(),
            name("eos_token").as_deref(),
            name("pad_token").as_deref(),
        )
    }

    /// The tokenizer of a Hugging Face model directory (`tokenizer.json`,
    /// `tokenizer_config.json`).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        Self::from_files(&dir.join("tokenizer.json"), Some(&dir.join("tokenizer_config.json")))
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata (see
    /// [`tokenizer_json_from_gguf`]).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let built = tokenizer_json_from_gguf(file)?;
        let tokenizer: Tokenizer = serde_json::from_value(built.tokenizer_json)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", file.path().display())))?;
        Self::new(tokenizer, built.bos.as_deref(), built.eos.as_deref(), built.pad.as_deref())
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Ids in use, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`. `add_special` applies the tokenizer's own rule (e.g. a leading
    /// BOS for Llama); chat-template output already holds its special tokens as text, so
    /// encode it with `add_special = false`, as `apply_chat_template` does.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<i64>> {
        Ok(self.encode_with_offsets(text, add_special)?.0)
    }

    /// Token ids with each token's byte range in `text` (used to mask training loss to
    /// the assistant's spans). Special tokens added by `add_special` get `(0, 0)`.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special: bool,
    ) -> Result<(Vec<i64>, TokenOffsets)> {
        let enc = self.inner.encode(text, add_special).map_err(tok_err)?;
        Ok((enc.get_ids().iter().map(|&i| i as i64).collect(), enc.get_offsets().to_vec()))
    }

    /// Text of `ids`; `skip_special` drops special tokens (`<|im_end|>`).
    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String> {
        let ids = self.checked_ids(ids)?;
        self.inner.decode(&ids, skip_special).map_err(tok_err)
    }

    fn checked_ids(&self, ids: &[i64]) -> Result<Vec<u32>> {
        let vocab = self.vocab_size() as i64;
        ids.iter()
            .map(|&id| {
                if (0..vocab).contains(&id) {
                    Ok(id as u32)
                } else {
                    Err(Error::Tokenizer(format!(
                        "token id {id} is outside the vocabulary (0..{vocab})"
                    )))
                }
            })
            .collect()
    }

    /// Id of a token's text.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }

    /// Text of a token id (byte-level tokens as stored, e.g. `Ġworld`).
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id))
    }

    /// Beginning-of-sequence token, when the model has one.
    pub fn bos_token(&self) -> Option<&SpecialToken> {
        self.bos.as_ref()
    }

    /// End-of-sequence token (for chat models the end-of-turn token, e.g. `<|im_end|>`).
    pub fn eos_token(&self) -> Option<&SpecialToken> {
        self.eos.as_ref()
    }

    /// Padding token, when the model names one.
    pub fn pad_token(&self) -> Option<&SpecialToken> {
        self.pad.as_ref()
    }

    /// The id to right-pad batches with: the pad token, else EOS (what HF fine-tuning
    /// recipes set when a model has no pad token); padded positions are masked anyway.
    pub fn pad_id(&self) -> Option<i64> {
        self.pad.as_ref().or(self.eos.as_ref()).map(|t| t.id)
    }

    /// An incremental detokenizer for streaming generation.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder {
        StreamDecoder {
            tokenizer: self.clone(),
            skip_special,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }
}

/// The text of a special-token entry of tokenizer_config.json: a string, an
/// `AddedToken` object (`{"content": …}`) or null.
fn special_token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Reads and parses a JSON file, naming it in errors.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|source| Error::Json { what: path.display().to_string(), source })
}

/// Turns generated ids into text pieces as they arrive, emitting only complete UTF-8 (a
/// byte-level token can end mid-character) and keeping decoders that look at neighbouring
/// tokens (SentencePiece's leading-space strip) right: each piece is the difference between
/// decoding a short window with and without the newest tokens. The pieces followed by
/// [`StreamDecoder::finish`] concatenate to `decode(all ids)`.
pub struct StreamDecoder {
    tokenizer: ChatTokenizer,
    skip_special: bool,
    /// The window of ids still needed: `[prefix_offset, read_offset)` was emitted already
    /// and gives the context; ids from `read_offset` on are pending.
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    /// Adds one generated id; returns the text it completes, if any.
    pub fn push(&mut self, id: i64) -> Result<Option<String>> {
        let id = self.tokenizer.checked_ids(&[id])?[0];
        self.ids.push(id);
        let piece = self.pending_text()?;
        match piece {
            Some(text) if !text.ends_with('\u{FFFD}') => {
                // The ids just emitted become the context of the next window.
                self.ids.drain(..self.read_offset);
                self.prefix_offset = 0;
                self.read_offset = self.ids.len();
                Ok(Some(text))
            }
            _ => Ok(None),
        }
    }

    /// Text still held back (an incomplete character at the end), decoded lossily.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let piece = self.pending_text()?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(piece)
    }

    /// Decoded text of the pending ids, given the emitted context before them.
    fn pending_text(&self) -> Result<Option<String>> {
        let decode =
            |ids: &[u32]| self.tokenizer.inner.decode(ids, self.skip_special).map_err(tok_err);
        let context = decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = decode(&self.ids[self.prefix_offset..])?;
        if full.len() > context.len() && full.starts_with(&context) {
            Ok(Some(full[context.len()..].to_string()))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
#[path = "tokenizer/tests.rs"]
mod tests;
