//! Batch tokenization with a Hugging Face `tokenizer.json` into libtorch tensors.

use std::path::Path;

use tch::{Device, Tensor};
use tokenizers::{
    EncodeInput, PaddingDirection, PaddingParams, PaddingStrategy, TruncationParams,
    TruncationStrategy,
};

use crate::error::{Error, Result};

/// Model inputs for one batch: int64 tensors of shape `[batch, seq]`, where `seq` is the
/// longest encoding in the batch (dynamic padding).
#[derive(Debug)]
pub struct Batch {
    /// Token ids, padded with the tokenizer's pad id.
    pub input_ids: Tensor,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// Segment ids: 0 for the first text, 1 for the second of a pair.
    pub token_type_ids: Tensor,
}

impl Batch {
    /// Pads `rows` on the right with `pad_id` to the longest row (dynamic padding).
    pub fn from_encoded(rows: &[&Encoded], pad_id: u32) -> Batch {
        Self::from_encoded_to(rows, pad_id, 0)
    }

    /// Pads `rows` on the right with `pad_id` to `len` tokens, or to the longest row where
    /// that is longer.
    pub fn from_encoded_to(rows: &[&Encoded], pad_id: u32, len: usize) -> Batch {
        let n = rows.len() as i64;
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(len);
        let cap = rows.len() * seq;
        let (mut ids, mut mask, mut types) =
            (Vec::with_capacity(cap), Vec::with_capacity(cap), Vec::with_capacity(cap));
        for r in rows {
            let pad = seq - r.len();
            ids.extend_from_slice(&r.ids);
            ids.extend(std::iter::repeat_n(pad_id as i64, pad));
            mask.extend(std::iter::repeat_n(1i64, r.len()));
            mask.extend(std::iter::repeat_n(0i64, pad));
            types.extend_from_slice(&r.type_ids);
            types.extend(std::iter::repeat_n(0i64, pad));
        }
        let t = |v: &[i64]| Tensor::from_slice(v).view([n, seq as i64]);
        Batch { input_ids: t(&ids), attention_mask: t(&mask), token_type_ids: t(&types) }
    }

    /// Moves every tensor to `device`.
    pub fn to_device(&self, device: Device) -> Batch {
        Batch {
            input_ids: self.input_ids.to_device(device),
            attention_mask: self.attention_mask.to_device(device),
            token_type_ids: self.token_type_ids.to_device(device),
        }
    }
}

/// A `tokenizer.json` tokenizer configured for right padding to the batch's longest
/// sequence and truncation to `max_length` tokens (special tokens included).
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    max_length: usize,
    pad_id: u32,
    truncation: bool,
}

/// One text encoded without padding (see [`TextTokenizer::encode_unpadded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<i64>,
    /// Segment ids, one per token.
    pub type_ids: Vec<i64>,
}

impl Encoded {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("max_length", &self.max_length).finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; any padding/truncation saved in it is replaced.
    pub fn from_file(path: impl AsRef<Path>, max_length: usize) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::from_tokenizer(inner, max_length)
    }

    /// Wraps a loaded tokenizer; any padding/truncation set in it is replaced by right
    /// padding (dynamic, per batch) and truncation to `max_length`, longest text first.
    pub fn from_tokenizer(mut inner: tokenizers::Tokenizer, max_length: usize) -> Result<Self> {
        let pad = inner.get_padding().cloned();
        let pad_token = pad.as_ref().map(|p| p.pad_token.clone()).unwrap_or_else(|| "[PAD]".into());
        let pad_id =
            pad.as_ref().map(|p| p.pad_id).or_else(|| inner.token_to_id(&pad_token)).unwrap_or(0);
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(tok_err)?;
        Ok(Self { inner, max_length, pad_id, truncation: true })
    }

    /// With `false`, training data longer than `max_length` is an error instead of being
    /// cut (HF `truncation=False`); inference keeps truncating.
    pub fn with_truncation(mut self, truncation: bool) -> Self {
        self.truncation = truncation;
        self
    }

    /// Whether over-long training inputs are cut (true) or rejected.
    pub fn truncation(&self) -> bool {
        self.truncation
    }

    /// Maximum sequence length, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Encodes single texts (truncated to `max_length`) without padding, e.g. to group
    /// texts by length before batching them with [`Batch::from_encoded`].
    pub fn encode_unpadded<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Encoded>> {
        let items: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (t.as_ref(), None)).collect();
        Ok(self.encode_items(&items)?.into_iter().map(|(e, _)| e).collect())
    }

    /// Encodes texts and optional second texts (pairs: `[CLS] a [SEP] b [SEP]`) without
    /// padding; the flag says whether truncation to `max_length` cut the input.
    pub fn encode_items(&self, items: &[(&str, Option<&str>)]) -> Result<Vec<(Encoded, bool)>> {
        let inputs: Vec<EncodeInput> = items
            .iter()
            .map(|(a, b)| match b {
                None => a.to_string().into(),
                Some(b) => (a.to_string(), b.to_string()).into(),
            })
            .collect();
        let encodings = self.inner.encode_batch(inputs, true).map_err(tok_err)?;
        Ok(encodings
            .iter()
            .map(|e| {
                // Right padding: the real tokens are the leading ones with mask 1.
                let n = e.get_attention_mask().iter().filter(|&&m| m != 0).count();
                let enc = Encoded {
                    ids: e.get_ids()[..n].iter().map(|&v| v as i64).collect(),
                    type_ids: e.get_type_ids()[..n].iter().map(|&v| v as i64).collect(),
                };
                (enc, !e.get_overflowing().is_empty())
            })
            .collect())
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes single texts (`[CLS] text [SEP]`).
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Batch> {
        let inputs: Vec<EncodeInput> =
            texts.iter().map(|t| t.as_ref().to_string().into()).collect();
        self.encode_inputs(inputs)
    }

    /// Encodes text pairs (`[CLS] a [SEP] b [SEP]`, token types 0 then 1); truncation
    /// shortens the longer text first.
    pub fn encode_pairs<A: AsRef<str>, B: AsRef<str>>(&self, pairs: &[(A, B)]) -> Result<Batch> {
        let inputs: Vec<EncodeInput> = pairs
            .iter()
            .map(|(a, b)| (a.as_ref().to_string(), b.as_ref().to_string()).into())
            .collect();
        self.encode_inputs(inputs)
    }

    fn encode_inputs(&self, inputs: Vec<EncodeInput>) -> Result<Batch> {
        let n = inputs.len() as i64;
        let encodings = self.inner.encode_batch(inputs, true).map_err(tok_err)?;
        let seq = encodings.first().map_or(0, |e| e.get_ids().len()) as i64;
        let cap = (n * seq) as usize;
        let (mut ids, mut mask, mut types) =
            (Vec::with_capacity(cap), Vec::with_capacity(cap), Vec::with_capacity(cap));
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&v| v as i64));
            mask.extend(e.get_attention_mask().iter().map(|&v| v as i64));
            types.extend(e.get_type_ids().iter().map(|&v| v as i64));
        }
        let t = |v: &[i64]| Tensor::from_slice(v).view([n, seq]);
        Ok(Batch { input_ids: t(&ids), attention_mask: t(&mask), token_type_ids: t(&types) })
    }
}
