//! Conversation rows → token ids and labels for causal-LM fine-tuning (`task =>
//! 'conversation'`).
//!
//! A row is one exchange: an optional system message, the user's message and the
//! assistant's reply. The prompt text comes from the model's chat template (as
//! `apply_chat_template`) or a `prompt_template` string with `{system}`, `{user}` and
//! `{assistant}` placeholders. By default only the assistant's reply and the end-of-turn
//! token after it carry labels (TRL's `assistant_only_loss` / completion-only training);
//! `train_on_prompt` puts the loss on every token, as PostgresML's trainer does. Labels are
//! aligned with the input ids (the model shifts them: token t is predicted from tokens < t)
//! and are −100 where no loss applies.

use std::ops::Range;

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::tokenizer::ChatTokenizer;
use crate::{Error, Result};

/// Label of positions that carry no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;
/// `max_seq_length` when the caller sets none (TRL's `SFTConfig` default).
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 1024;

/// One training exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    /// System message, if any (an empty one is left out).
    pub system: Option<String>,
    /// The user's message.
    pub user: String,
    /// The assistant's reply: what the model learns to produce.
    pub assistant: String,
}

/// How a row becomes prompt text.
// One value per training job: the size of a compiled template does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum PromptFormat {
    /// The model's chat template.
    ChatTemplate(ChatTemplate),
    /// A template with `{system}`, `{user}` and `{assistant}` placeholders (`{assistant}`
    /// required); tokenized with the tokenizer's special tokens (e.g. BOS) and followed by
    /// EOS, so the model learns to stop.
    Template(String),
}

/// Options of the encoding. `pgml.tune` reads them from `hyperparams` (with its other
/// conversation keys, in `pgmld_tune::conversation::options`), so this crate has no parser
/// of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationArgs {
    /// Longest sequence in tokens; longer ones are cut at the end. Bounded by the model's
    /// `max_position_embeddings`.
    pub max_seq_length: usize,
    /// Loss on every token instead of the assistant's only (PostgresML's behaviour).
    pub train_on_prompt: bool,
    /// Concatenate whole examples into sequences of up to `max_seq_length` tokens (TRL's
    /// `packing`): fewer, fuller rows and no padding. Labels stay masked per example;
    /// attention is causal over the whole packed sequence, as in TRL's classic packing.
    pub packing: bool,
}

impl Default for ConversationArgs {
    fn default() -> Self {
        ConversationArgs {
            max_seq_length: DEFAULT_MAX_SEQ_LENGTH,
            train_on_prompt: false,
            packing: false,
        }
    }
}

/// One training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Token ids.
    pub input_ids: Vec<i64>,
    /// Same length: the token id where the loss applies, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

impl TokenizedExample {
    /// Positions that carry a label, excluding the first (which nothing predicts).
    pub fn num_label_tokens(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// The encoded data set and what happened on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedConversations {
    /// Training sequences (packed when asked).
    pub examples: Vec<TokenizedExample>,
    /// Rows cut at `max_seq_length`.
    pub truncated: usize,
    /// Rows left with no label token after truncation (a prompt longer than
    /// `max_seq_length`), which are dropped: they would teach nothing.
    pub dropped: usize,
    /// The effective maximum length.
    pub max_seq_length: usize,
}

impl ConversationRow {
    fn messages(&self) -> Vec<ChatMessage> {
        let mut m = Vec::with_capacity(3);
        if let Some(system) = self.system.as_deref().filter(|s| !s.is_empty()) {
            m.push(ChatMessage::new("system", system));
        }
        m.push(ChatMessage::new("user", self.user.as_str()));
        m.push(ChatMessage::new("assistant", self.assistant.as_str()));
        m
    }
}

/// `template` with its placeholders filled in one pass (a message containing `{user}`
/// stays as written) and the byte range of the assistant's text.
fn fill_template(template: &str, row: &ConversationRow) -> Result<(String, Range<usize>)> {
    let mut out = String::with_capacity(template.len() + row.user.len() + row.assistant.len());
    let mut span = None;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let (value, len) = if after.starts_with("{system}") {
            (row.system.as_deref().unwrap_or(""), "{system}".len())
        } else if after.starts_with("{user}") {
            (row.user.as_str(), "{user}".len())
        } else if after.starts_with("{assistant}") {
            let start = out.len();
            span = Some(start..start + row.assistant.len());
            (row.assistant.as_str(), "{assistant}".len())
        } else {
            ("{", 1)
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    let span = span.ok_or_else(|| {
        Error::Invalid(format!("prompt_template {template:?} has no {{assistant}} placeholder"))
    })?;
    Ok((out, span))
}

/// Token ids and labels of one row, before truncation.
fn encode_row(
    row: &ConversationRow,
    tokenizer: &ChatTokenizer,
    format: &PromptFormat,
    train_on_prompt: bool,
) -> Result<TokenizedExample> {
    let (mut ids, offsets, spans, append_eos) = match format {
        PromptFormat::ChatTemplate(template) => {
            let rendered = template.render_with_assistant_spans(&row.messages())?;
            let (ids, offsets) = tokenizer.encode_with_offsets(&rendered.text, false)?;
            (ids, offsets, rendered.assistant_spans, false)
        }
        PromptFormat::Template(template) => {
            let (text, span) = fill_template(template, row)?;
            let (ids, offsets) = tokenizer.encode_with_offsets(&text, true)?;
            (ids, offsets, vec![span], true)
        }
    };
    let in_reply =
        |&(start, end): &(usize, usize)| end > start && spans.iter().any(|s| s.contains(&start));
    let mut labels: Vec<i64> = ids
        .iter()
        .zip(&offsets)
        .map(|(&id, off)| if train_on_prompt || in_reply(off) { id } else { IGNORE_INDEX })
        .collect();
    if append_eos {
        let eos = tokenizer.eos_token().ok_or_else(|| {
            Error::Tokenizer("the tokenizer has no EOS token to end the assistant's reply".into())
        })?;
        ids.push(eos.id);
        labels.push(eos.id);
    }
    Ok(TokenizedExample { input_ids: ids, labels })
}

/// Encodes `rows` for training. `model_max_positions` is the model's
/// `max_position_embeddings`, which bounds `args.max_seq_length`.
pub fn encode_conversations(
    rows: &[ConversationRow],
    tokenizer: &ChatTokenizer,
    format: &PromptFormat,
    args: &ConversationArgs,
    model_max_positions: i64,
) -> Result<EncodedConversations> {
    if args.max_seq_length < 2 {
        return Err(Error::Invalid(format!(
            "max_seq_length must be ≥ 2, got {}",
            args.max_seq_length
        )));
    }
    let max_len = args.max_seq_length.min(model_max_positions.max(2) as usize);
    let (mut truncated, mut dropped) = (0, 0);
    let mut examples = Vec::with_capacity(rows.len());
    for row in rows {
        let mut ex = encode_row(row, tokenizer, format, args.train_on_prompt)?;
        if ex.input_ids.len() > max_len {
            ex.input_ids.truncate(max_len);
            ex.labels.truncate(max_len);
            truncated += 1;
        }
        if ex.num_label_tokens() == 0 {
            dropped += 1;
            continue;
        }
        examples.push(ex);
    }
    if examples.is_empty() {
        return Err(Error::Invalid(format!(
            "no training row has an assistant token within max_seq_length {max_len} ({} rows)",
            rows.len()
        )));
    }
    if args.packing {
        examples = pack(examples, max_len);
    }
    Ok(EncodedConversations { examples, truncated, dropped, max_seq_length: max_len })
}

/// Concatenates whole examples, in order, into sequences of at most `max_len` tokens.
/// The first token of each appended example keeps its label (the previous example's last
/// token predicts it), so no label is lost to packing.
pub fn pack(examples: Vec<TokenizedExample>, max_len: usize) -> Vec<TokenizedExample> {
    let mut packed: Vec<TokenizedExample> = Vec::new();
    for ex in examples {
        match packed.last_mut() {
            Some(last) if last.input_ids.len() + ex.input_ids.len() <= max_len => {
                last.input_ids.extend_from_slice(&ex.input_ids);
                last.labels.extend_from_slice(&ex.labels);
            }
            _ => packed.push(ex),
        }
    }
    packed
}

#[cfg(test)]
mod tests;
