//! Chat templates: a model's Jinja template (tokenizer_config.json `chat_template` or GGUF
//! `tokenizer.chat_template`) rendered with minijinja the way `transformers`'
//! `apply_chat_template` renders it (`trim_blocks`, `lstrip_blocks`, loop controls, Python
//! string methods, `raise_exception`, `tojson`, `strftime_now`, `bos_token`/`eos_token`,
//! `add_generation_prompt`), a ChatML fallback for models without one, and the byte spans
//! of the assistant's messages for loss masking in training.

use std::ops::Range;
use std::path::Path;

use minijinja::value::Kwargs;
use minijinja::{context, Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::tokenizer::read_json;
use crate::{Error, Result};

/// ChatML, the template `transformers` used for models without one.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others, e.g. `tool`).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message from its role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A rendered conversation with the byte ranges of its assistant messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConversation {
    /// The prompt text, as the model sees it.
    pub text: String,
    /// For each assistant message, in order, the bytes of `text` the model must learn to
    /// produce: the message and the template's end-of-turn marker after it (e.g.
    /// `Paris.<|im_end|>`), trailing whitespace excluded.
    pub assistant_spans: Vec<Range<usize>>,
}

/// A compiled chat template with the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos` / `eos` are what the template sees as `bos_token` /
    /// `eos_token` (empty when the model has none).
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        // transformers' ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(template_error)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// The ChatML fallback ([`CHATML_TEMPLATE`]).
    pub fn chatml(bos: &str, eos: &str) -> Self {
        Self::new(CHATML_TEMPLATE, bos, eos).expect("the built-in ChatML template compiles")
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; `add_generation_prompt` appends the header that opens the
    /// assistant's turn (inference), as `apply_chat_template` does.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(template_error)?;
        template
            .render(context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(template_error)
    }

    /// Renders a whole conversation (no generation prompt) and locates each assistant
    /// message: its span starts where the conversation before it, rendered with a
    /// generation prompt, ends, and stops where the conversation through it ends. Templates
    /// whose renderings are not prefixes of one another (some drop earlier reasoning or
    /// depend on the last message) fall back to finding the message text itself, extended
    /// over an immediately following end-of-sequence token.
    pub fn render_with_assistant_spans(
        &self,
        messages: &[ChatMessage],
    ) -> Result<RenderedConversation> {
        let text = self.render(messages, false)?;
        let mut spans = Vec::new();
        let mut cursor = 0;
        for (i, message) in messages.iter().enumerate() {
            if message.role != "assistant" {
                continue;
            }
            let by_prefix = self.span_by_prefixes(messages, i, &text);
            let span = match by_prefix {
                Some(span) if span.start >= cursor => span,
                _ => self.span_by_search(&message.content, &text, cursor).ok_or_else(|| {
                    Error::Template(format!(
                        "cannot locate assistant message {i} in the rendered conversation"
                    ))
                })?,
            };
            cursor = span.end;
            spans.push(span);
        }
        Ok(RenderedConversation { text, assistant_spans: spans })
    }

    fn span_by_prefixes(
        &self,
        messages: &[ChatMessage],
        i: usize,
        text: &str,
    ) -> Option<Range<usize>> {
        let before = self.render(&messages[..i], true).ok()?;
        let through = self.render(&messages[..=i], false).ok()?;
        if !text.starts_with(&before)
            || !text.starts_with(&through)
            || through.len() <= before.len()
        {
            return None;
        }
        let end = before.len() + through[before.len()..].trim_end().len();
        Some(before.len()..end)
    }

    fn span_by_search(&self, content: &str, text: &str, from: usize) -> Option<Range<usize>> {
        let start = from + text.get(from..)?.find(content)?;
        let mut end = start + content.len();
        if !self.eos.is_empty() && text[end..].starts_with(&self.eos) {
            end += self.eos.len();
        }
        Some(start..end)
    }
}

/// The chat template a Hugging Face model directory ships: `chat_template.jinja`, else
/// tokenizer_config.json's `chat_template` (a string, or a list of `{name, template}` of
/// which `default` is used), else `chat_template.json`.
pub fn template_source_from_hf_dir(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja).map(Some).map_err(|e| Error::io(&jinja, e));
    }
    for file in ["tokenizer_config.json", "chat_template.json"] {
        let path = dir.join(file);
        if path.is_file() {
            if let Some(source) = template_from_config(&read_json(&path)?["chat_template"]) {
                return Ok(Some(source));
            }
        }
    }
    Ok(None)
}

/// A `chat_template` value: a string, or named templates of which `default` (else the
/// first) is taken.
pub fn template_from_config(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(named) => {
            let template =
                |entry: &serde_json::Value| entry["template"].as_str().map(str::to_string);
            named
                .iter()
                .find(|e| e["name"] == "default")
                .or_else(|| named.first())
                .and_then(template)
        }
        _ => None,
    }
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        msg.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    Error::Template(msg)
}

/// `raise_exception(message)`: templates reject unsupported conversations with it.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current (UTC) date, as Llama 3 templates print it.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime_at(secs, &format)
}

/// Python's `strftime` for the directives chat templates use (`%d %m %Y %y %b %B %a %A
/// %H %M %S %j %%`), at `secs` since the Unix epoch (UTC); others are kept verbatim.
fn strftime_at(secs: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] =
        ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    // Days since the epoch of January 1st (the inverse algorithm with month 1, day 1).
    let year_start = {
        let y = year - 1;
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + 306 - 719_468
    };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => out.push_str(&format!("{:02}", in_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", in_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", in_day % 60)),
            Some('j') => out.push_str(&format!("{:03}", days - year_start + 1)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=…)`
/// (Python's `", "` / `": "` separators, no HTML escaping).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    // Serialised straight from the template value so maps keep their insertion order.
    let json = &value;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&pad),
            );
            serde::Serialize::serialize(json, &mut ser)
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
            serde::Serialize::serialize(json, &mut ser)
        }
    };
    written
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(Value::from_safe_string(String::from_utf8_lossy(&out).into_owned()))
}

/// serde_json output with Python's default `json.dumps` separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
#[path = "chat_template_tests.rs"]
mod tests;
