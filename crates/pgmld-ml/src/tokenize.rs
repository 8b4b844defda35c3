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
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("max_length", &self.max_length)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; any padding/truncation saved in it is replaced.
    pub fn from_file(path: impl AsRef<Path>, max_length: usize) -> Result<Self> {
        let path = path.as_ref();
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let pad = inner.get_padding().cloned();
        let pad_token = pad
            .as_ref()
            .map(|p| p.pad_token.clone())
            .unwrap_or_else(|| "[PAD]".into());
        let pad_id = pad
            .as_ref()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id(&pad_token))
            .unwrap_or(0);
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
        Ok(Self { inner, max_length })
    }

    /// Maximum sequence length, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes single texts (`[CLS] text [SEP]`).
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Batch> {
        let inputs: Vec<EncodeInput> = texts
            .iter()
            .map(|t| t.as_ref().to_string().into())
            .collect();
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
        let (mut ids, mut mask, mut types) = (
            Vec::with_capacity(cap),
            Vec::with_capacity(cap),
            Vec::with_capacity(cap),
        );
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&v| v as i64));
            mask.extend(e.get_attention_mask().iter().map(|&v| v as i64));
            types.extend(e.get_type_ids().iter().map(|&v| v as i64));
        }
        let t = |v: &[i64]| Tensor::from_slice(v).view([n, seq]);
        Ok(Batch {
            input_ids: t(&ids),
            attention_mask: t(&mask),
            token_type_ids: t(&types),
        })
    }
}
