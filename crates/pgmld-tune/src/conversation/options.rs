//! The hyperparameters only `task => 'conversation'` reads, at the top level of
//! `hyperparams` as in PostgresML's guide: `lora_config`, `load_in_8bit`, `token`, plus
//! `prompt_template`, `max_seq_length`, `packing` and `train_on_prompt`.

use pgmld_train::Secret;
use serde_json::{Map, Value as Json};

use crate::error::{Result, TuneError};

/// PostgresML's default sequence length for conversation fine-tuning (the encoder's).
pub use pgmld_llm::conversation::DEFAULT_MAX_SEQ_LENGTH;

/// A bound on `max_seq_length` far above any supported model's context, so a typo (an
/// extra zero or two) is an error instead of an allocation failure.
const MAX_SEQ_LENGTH_LIMIT: usize = 1 << 20;

/// The conversation task's settings, read from `hyperparams` before the task is known
/// (a call may omit `task` for an existing project); [`ConversationArgs::given`] lets a
/// classification call reject them.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationArgs {
    /// `lora_config` as given (a JSON object, or null for peft's defaults); parsed by
    /// `pgmld_llm::lora` when the task is conversation.
    pub lora_config: Json,
    /// Quantise the frozen base to int8 (per-channel scales) to save memory.
    pub load_in_8bit: bool,
    /// A prompt with `{system}`, `{user}` and `{assistant}` placeholders instead of the
    /// tokenizer's chat template.
    pub prompt_template: Option<String>,
    /// Tokens per training sequence (longer conversations are truncated), bounded by the
    /// model's context.
    pub max_seq_length: usize,
    /// Concatenate examples into full `max_seq_length` sequences (TRL's packing).
    pub packing: bool,
    /// Train on every token, prompt included (PostgresML's behaviour), instead of the
    /// assistant's reply only.
    pub train_on_prompt: bool,
    /// Hugging Face token for reading a gated base model; never stored or printed.
    pub token: Option<Secret>,
    /// The keys the call set.
    pub given: Vec<String>,
}

impl Default for ConversationArgs {
    fn default() -> Self {
        ConversationArgs {
            lora_config: Json::Null,
            load_in_8bit: false,
            prompt_template: None,
            max_seq_length: DEFAULT_MAX_SEQ_LENGTH,
            packing: false,
            train_on_prompt: false,
            token: None,
            given: Vec::new(),
        }
    }
}

fn flag(hp: &Map<String, Json>, key: &str) -> Result<Option<bool>> {
    match hp.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        // The guide's client passes "true" as a string; accept the two spellings.
        Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(TuneError::bad(
            format!("hyperparams.{key} must be true or false, got {other}"),
            format!("Example: {{\"{key}\": true}}"),
        )),
    }
}

impl ConversationArgs {
    /// The `hyperparams` keys this struct reads.
    pub const KEYS: &'static [&'static str] = &[
        "lora_config",
        "load_in_8bit",
        "prompt_template",
        "max_seq_length",
        "packing",
        "train_on_prompt",
        "token",
    ];

    /// Reads the conversation keys of a `hyperparams` object (other keys are left to the
    /// caller). Bad values are 22023 errors naming the key and the value.
    pub fn parse(hp: &Map<String, Json>) -> Result<ConversationArgs> {
        let mut args = ConversationArgs {
            given: Self::KEYS
                .iter()
                .filter(|k| hp.get(**k).is_some_and(|v| !v.is_null()))
                .map(|k| k.to_string())
                .collect(),
            ..ConversationArgs::default()
        };
        match hp.get("lora_config") {
            None | Some(Json::Null) => {}
            Some(Json::Object(o)) => args.lora_config = Json::Object(o.clone()),
            Some(other) => {
                return Err(TuneError::bad(
                    format!("hyperparams.lora_config must be a JSON object, got {other}"),
                    "Example: {\"lora_config\": {\"r\": 2, \"lora_alpha\": 4, \"lora_dropout\": 0.05, \"bias\": \"none\", \"task_type\": \"CAUSAL_LM\"}}",
                ))
            }
        }
        args.load_in_8bit = flag(hp, "load_in_8bit")?.unwrap_or(false);
        args.packing = flag(hp, "packing")?.unwrap_or(false);
        args.train_on_prompt = flag(hp, "train_on_prompt")?.unwrap_or(false);
        match hp.get("prompt_template") {
            None | Some(Json::Null) => {}
            Some(Json::String(t)) if t.contains("{assistant}") => args.prompt_template = Some(t.clone()),
            Some(other) => {
                return Err(TuneError::bad(
                    format!("hyperparams.prompt_template must be a string holding {{assistant}}, got {other}"),
                    "Placeholders: {system}, {user}, {assistant}. Example: \"{system}\\nQ: {user}\\nA: {assistant}\". \
                     Leave prompt_template out to use the model's chat template.",
                ))
            }
        }
        match hp.get("max_seq_length") {
            None | Some(Json::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if n >= 2 && n as usize <= MAX_SEQ_LENGTH_LIMIT => args.max_seq_length = n as usize,
                _ => {
                    return Err(TuneError::bad(
                        format!("hyperparams.max_seq_length must be a whole number of tokens from 2 to {MAX_SEQ_LENGTH_LIMIT}, got {v}"),
                        format!("The default is {DEFAULT_MAX_SEQ_LENGTH}; the model's max_position_embeddings bounds it."),
                    ))
                }
            },
        }
        match hp.get("token") {
            None | Some(Json::Null) => {}
            Some(Json::String(t)) if !t.trim().is_empty() => {
                args.token = Some(Secret(t.trim().to_string()))
            }
            Some(_) => {
                return Err(TuneError::bad(
                    "hyperparams.token must be a Hugging Face token string",
                    "Pass the token as a JSON string, or leave it out to use pgmld's HF_TOKEN.",
                ))
            }
        }
        Ok(args)
    }

    /// The encoder's options (sequence length, packing, loss on the prompt).
    pub fn encoding(&self) -> pgmld_llm::conversation::ConversationArgs {
        pgmld_llm::conversation::ConversationArgs {
            max_seq_length: self.max_seq_length,
            train_on_prompt: self.train_on_prompt,
            packing: self.packing,
        }
    }

    /// Rejects conversation keys in a call for another task (22023 naming the key).
    pub fn reject_for(&self, task: &str) -> Result<()> {
        match self.given.first() {
            Some(k) => Err(TuneError::bad(
                format!("hyperparams key \"{k}\" applies to task conversation only, not {task}"),
                format!(
                    "Task {task} reads hyperparams training_args, dataset_args and tokenizer_args."
                ),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Json) -> Result<ConversationArgs> {
        ConversationArgs::parse(v.as_object().unwrap())
    }

    #[test]
    fn the_guide_hyperparams_parse_with_defaults() {
        let a = parse(json!({"lora_config": {"r": 2, "lora_alpha": 4}, "load_in_8bit": false, "token": "hf_SECRET",
            "training_args": {}}))
        .unwrap();
        assert_eq!(a.lora_config, json!({"r": 2, "lora_alpha": 4}));
        assert!(!a.load_in_8bit && !a.packing && !a.train_on_prompt);
        assert_eq!(a.max_seq_length, DEFAULT_MAX_SEQ_LENGTH);
        assert_eq!(a.token.as_ref().map(|t| t.0.as_str()), Some("hf_SECRET"));
        assert!(!format!("{a:?}").contains("hf_SECRET"));
        assert_eq!(a.given, vec!["lora_config", "load_in_8bit", "token"]);
        let b = parse(json!({"load_in_8bit": "TRUE", "packing": true, "train_on_prompt": true, "max_seq_length": 64,
            "prompt_template": "{user} => {assistant}"}))
        .unwrap();
        assert!(b.load_in_8bit && b.packing && b.train_on_prompt);
        assert_eq!(
            (b.max_seq_length, b.prompt_template.as_deref()),
            (64, Some("{user} => {assistant}"))
        );
        assert_eq!(parse(json!({})).unwrap(), ConversationArgs::default());
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        for (hp, needle) in [
            (json!({"lora_config": [1]}), "lora_config"),
            (json!({"load_in_8bit": 1}), "load_in_8bit"),
            (json!({"packing": "yes"}), "\"yes\""),
            (json!({"max_seq_length": 0}), "max_seq_length"),
            (json!({"max_seq_length": 12.5}), "12.5"),
            (json!({"max_seq_length": 100000000}), "100000000"),
            (json!({"prompt_template": "{user} only"}), "{user} only"),
            (json!({"token": 5}), "token"),
        ] {
            let e = parse(hp.clone()).unwrap_err();
            assert!(e.to_string().contains(needle), "{hp}: {e}");
            assert!(matches!(e, TuneError::BadArgument { hint: Some(_), .. }), "{hp}: {e:?}");
        }
    }

    #[test]
    fn classification_calls_reject_conversation_keys() {
        let a = parse(json!({"lora_config": {}})).unwrap();
        let e = a.reject_for("text-classification").unwrap_err();
        assert!(
            e.to_string().contains("lora_config") && e.to_string().contains("text-classification"),
            "{e}"
        );
        assert!(parse(json!({})).unwrap().reject_for("text-classification").is_ok());
    }
}
