//! Sampling settings that may be left unset, layered as Hugging Face `generate` layers
//! them: a call's arguments over the model's `generation_config.json` over `transformers`'
//! own defaults. Llama 3 Instruct, Qwen2 and others ship sampling defaults there
//! (`do_sample: true, temperature: 0.6, top_p: 0.9`) that their authors tuned the model
//! for; a call that names none of them gets those, as it would in Python.

use std::path::Path;

use serde::Deserialize;

use super::GenerationConfig;
use crate::{Error, Result};

/// New tokens when neither the call nor the model names a limit (`transformers` stops at
/// 20 tokens in all, which cuts most answers short).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// `top_k` when neither the call nor the model names one (`transformers`' default).
pub const DEFAULT_TOP_K: usize = 50;

/// Sampling settings, each optional: what a `generation_config.json` or a call sets.
/// [`GenerationDefaults::over`] layers two of them; [`GenerationDefaults::to_config`]
/// fills what is still unset with `transformers`' defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationDefaults {
    /// Most new tokens.
    pub max_new_tokens: Option<usize>,
    /// Sample (`true`) or decode greedily (`false`).
    pub do_sample: Option<bool>,
    /// Softmax temperature; 0 means greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, in (0, 1].
    pub top_p: Option<f64>,
    /// Sample among the `k` most likely tokens; 0 turns the filter off.
    pub top_k: Option<usize>,
    /// CTRL-style penalty on tokens already present (1 = off).
    pub repetition_penalty: Option<f64>,
}

impl GenerationDefaults {
    /// Reads the sampling defaults of `generation_config.json` at `path` (other keys,
    /// such as `eos_token_id`, are read elsewhere; `null` counts as unset). A value of the
    /// wrong type or out of range is an error naming the file, the key and the value.
    pub fn from_file(path: &Path) -> Result<GenerationDefaults> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|source| Error::Json { what: path.display().to_string(), source })?;
        Self::from_json(&json, &path.display().to_string())
    }

    /// [`GenerationDefaults::from_file`] for a file already parsed; `what` names it in
    /// errors.
    pub fn from_json(json: &serde_json::Value, what: &str) -> Result<GenerationDefaults> {
        let defaults: GenerationDefaults = serde_json::from_value(json.clone())
            .map_err(|source| Error::Json { what: what.to_string(), source })?;
        defaults.validate().map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{what}: {m}")),
            other => other,
        })?;
        Ok(defaults)
    }

    /// Rejects values `generate` would reject, naming the key and the value.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == Some(0) {
            return Err(Error::Invalid("max_new_tokens must be at least 1, got 0".into()));
        }
        if let Some(t) = self.temperature.filter(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(Error::Invalid(format!("temperature must be >= 0, got {t}")));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(Error::Invalid(format!("top_p must be in (0, 1], got {p}")));
        }
        if let Some(r) = self.repetition_penalty.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(Error::Invalid(format!("repetition_penalty must be > 0, got {r}")));
        }
        Ok(())
    }

    /// These settings over `base`: each one set here wins, the others come from `base`
    /// (a call's arguments over its model's defaults).
    pub fn over(&self, base: &GenerationDefaults) -> GenerationDefaults {
        GenerationDefaults {
            max_new_tokens: self.max_new_tokens.or(base.max_new_tokens),
            do_sample: self.do_sample.or(base.do_sample),
            temperature: self.temperature.or(base.temperature),
            top_p: self.top_p.or(base.top_p),
            top_k: self.top_k.or(base.top_k),
            repetition_penalty: self.repetition_penalty.or(base.repetition_penalty),
        }
    }

    /// A whole configuration: what is unset takes `transformers`' defaults (greedy,
    /// temperature 1, top_p 1, top_k 50, no penalty) and [`DEFAULT_MAX_NEW_TOKENS`].
    /// Temperature 0 means greedy even with `do_sample` (OpenAI's convention; transformers
    /// would refuse it). No seed and no stop ids: the caller adds those.
    pub fn to_config(&self) -> GenerationConfig {
        let temperature = self.temperature.unwrap_or(1.0);
        GenerationConfig {
            max_new_tokens: self.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            temperature,
            top_p: self.top_p.unwrap_or(1.0),
            top_k: match self.top_k.unwrap_or(DEFAULT_TOP_K) {
                0 => None,
                k => Some(k),
            },
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            do_sample: self.do_sample.unwrap_or(false) && temperature > 0.0,
            seed: None,
            stop_ids: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tag: &str, text: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pgmld-gen-defaults-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("generation_config.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn unset_settings_take_the_transformers_defaults() {
        let cfg = GenerationDefaults::default().to_config();
        assert_eq!(
            (cfg.max_new_tokens, cfg.top_k, cfg.do_sample),
            (DEFAULT_MAX_NEW_TOKENS, Some(50), false)
        );
        assert_eq!((cfg.temperature, cfg.top_p, cfg.repetition_penalty), (1.0, 1.0, 1.0));
        let off = GenerationDefaults {
            top_k: Some(0),
            do_sample: Some(true),
            temperature: Some(0.0),
            ..Default::default()
        };
        let cfg = off.to_config();
        assert_eq!(cfg.top_k, None, "top_k 0 turns the filter off");
        assert!(!cfg.do_sample, "temperature 0 is greedy");
    }

    #[test]
    fn a_llama3_generation_config_sets_sampling_and_the_call_wins() {
        let path = file(
            "llama3",
            r#"{"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": true,
                "temperature": 0.6, "top_p": 0.9, "top_k": null, "transformers_version": "4.45.0"}"#,
        );
        let model = GenerationDefaults::from_file(&path).unwrap();
        assert_eq!(model.do_sample, Some(true));
        assert_eq!((model.temperature, model.top_p, model.top_k), (Some(0.6), Some(0.9), None));
        let cfg = GenerationDefaults::default().over(&model).to_config();
        assert!(cfg.do_sample && cfg.is_sampling());
        assert_eq!((cfg.temperature, cfg.top_p, cfg.top_k), (0.6, 0.9, Some(50)));
        let call = GenerationDefaults {
            do_sample: Some(false),
            top_p: Some(0.5),
            max_new_tokens: Some(9),
            ..Default::default()
        };
        let cfg = call.over(&model).to_config();
        assert!(!cfg.do_sample, "the call's do_sample wins");
        assert_eq!((cfg.top_p, cfg.temperature, cfg.max_new_tokens), (0.5, 0.6, 9));
        let greedy_call = GenerationDefaults { temperature: Some(0.0), ..Default::default() };
        assert!(
            !greedy_call.over(&model).to_config().is_sampling(),
            "temperature 0 from the call is greedy"
        );
    }

    #[test]
    fn bad_values_name_the_file_key_and_value() {
        let e = GenerationDefaults::from_file(&file("bad-range", r#"{"top_p": 1.5}"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("generation_config.json") && e.contains("top_p") && e.contains("1.5"),
            "{e}"
        );
        let e = GenerationDefaults::from_file(&file("bad-type", r#"{"do_sample": "yes"}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("generation_config.json") && e.contains("yes"), "{e}");
        let e = GenerationDefaults::from_file(&file("bad-json", "{")).unwrap_err().to_string();
        assert!(e.contains("generation_config.json"), "{e}");
        let e = GenerationDefaults { max_new_tokens: Some(0), ..Default::default() }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_new_tokens"), "{e}");
    }
}
