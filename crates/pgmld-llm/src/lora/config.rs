//! [`LoraConfig`]: peft's `LoraConfig` as pgmld accepts it in `hyperparams.lora_config`,
//! and as it is written to / read from a saved adapter's `adapter_config.json`.

use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// Which biases train along with the adapters (peft's `bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraBias {
    /// No bias trains.
    #[default]
    None,
    /// Every bias of the model trains (and is saved with the adapter).
    All,
    /// The biases of the adapted projections train.
    LoraOnly,
}

impl LoraBias {
    /// The value as peft spells it.
    pub fn name(self) -> &'static str {
        match self {
            LoraBias::None => "none",
            LoraBias::All => "all",
            LoraBias::LoraOnly => "lora_only",
        }
    }
}

/// Which projections get an adapter (peft's `target_modules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModules {
    /// Module names: a projection matches when its path equals one or ends with `.name`.
    Names(Vec<String>),
    /// `"all-linear"`: every projection but the output layer.
    AllLinear,
}

/// A LoRA configuration (peft names and defaults: r 8, lora_alpha 8, lora_dropout 0, bias
/// none, task_type CAUSAL_LM).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: i64,
    /// Scale numerator: the update is multiplied by `lora_alpha / r` (`/ √r` with rsLoRA).
    pub lora_alpha: f64,
    /// Dropout on the adapters' input while training.
    pub lora_dropout: f64,
    /// Which biases train.
    pub bias: LoraBias,
    /// Adapted projections; `None` takes peft's default for the architecture.
    pub target_modules: Option<TargetModules>,
    /// rsLoRA: scale by `lora_alpha / √r` (peft's `use_rslora`).
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            bias: LoraBias::None,
            target_modules: None,
            use_rslora: false,
        }
    }
}

/// peft's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` for the architectures this
/// crate runs.
pub fn default_target_modules(model_type: &str) -> Result<Vec<String>> {
    match model_type {
        "llama" | "mistral" | "qwen2" => Ok(vec!["q_proj".into(), "v_proj".into()]),
        other => Err(Error::Unsupported(format!(
            "no default LoRA target_modules for model_type {other:?}; set lora_config.target_modules"
        ))),
    }
}

/// Keys a `lora_config` may hold.
pub const SUPPORTED_KEYS: &[&str] = &[
    "r",
    "lora_alpha",
    "lora_dropout",
    "bias",
    "task_type",
    "target_modules",
    "use_rslora",
    "modules_to_save",
    "fan_in_fan_out",
    "inference_mode",
    "init_lora_weights",
    "peft_type",
    "base_model_name_or_path",
    "use_dora",
    "layers_to_transform",
    "rank_pattern",
    "alpha_pattern",
];

fn invalid(key: &str, value: &Value, why: &str) -> Error {
    Error::Invalid(format!("lora_config.{key} = {value}: {why}"))
}

/// Whether an `init_lora_weights` value leaves the base weights as they are: peft's
/// default (true / null) always; for a saved adapter also `false` and the random schemes
/// (`"gaussian"`), whose trained A and B are simply loaded.
fn init_keeps_base(v: &Value, saved: bool) -> bool {
    v.is_null() || v == true || (saved && (v == false || v == "gaussian"))
}

/// True for JSON values that mean "not set": null, false, `{}` and `[]`.
fn unset(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

impl LoraConfig {
    /// Parses a user's `lora_config` object (null: the defaults). Unknown keys and values
    /// pgmld cannot honour are [`Error::Invalid`] / [`Error::Unsupported`] naming the key
    /// and value.
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = match value {
            Value::Null => return Ok(Self::default()),
            Value::Object(o) => o,
            other => {
                return Err(Error::Invalid(format!(
                    "lora_config must be a JSON object, got {other}"
                )))
            }
        };
        let mut unknown: Vec<&str> =
            obj.keys().map(String::as_str).filter(|k| !SUPPORTED_KEYS.contains(k)).collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(Error::Invalid(format!(
                "unsupported lora_config key(s) {}; supported keys: {}",
                unknown.join(", "),
                SUPPORTED_KEYS.join(", ")
            )));
        }
        Self::from_object(obj, false)
    }

    /// Parses a saved adapter's `adapter_config.json`: keys this crate does not use are
    /// ignored (peft adds fields over versions), but settings that change the adapter's
    /// meaning must be ones it honours.
    pub fn from_adapter_config(value: &Value) -> Result<Self> {
        match value {
            Value::Object(o) => Self::from_object(o, true),
            other => Err(Error::Invalid(format!(
                "adapter_config.json must be a JSON object, got {other}"
            ))),
        }
    }

    /// `saved`: the object describes trained weights, so how they were initialised only
    /// matters for schemes that also rewrote the base model (PiSSA, OLoRA, LoftQ, …).
    fn from_object(obj: &Map<String, Value>, saved: bool) -> Result<Self> {
        let mut cfg = Self::default();
        for (key, v) in obj {
            match key.as_str() {
                "r" => {
                    cfg.r = v
                        .as_i64()
                        .filter(|&r| r > 0)
                        .ok_or_else(|| invalid(key, v, "must be an integer ≥ 1"))?
                }
                "lora_alpha" => {
                    cfg.lora_alpha = v
                        .as_f64()
                        .filter(|a| a.is_finite() && *a > 0.0)
                        .ok_or_else(|| invalid(key, v, "must be a number > 0"))?
                }
                "lora_dropout" => {
                    cfg.lora_dropout = v
                        .as_f64()
                        .filter(|p| (0.0..1.0).contains(p))
                        .ok_or_else(|| invalid(key, v, "must be a number in [0, 1)"))?
                }
                "bias" => {
                    cfg.bias = match v.as_str() {
                        Some("none") => LoraBias::None,
                        Some("all") => LoraBias::All,
                        Some("lora_only") => LoraBias::LoraOnly,
                        _ => {
                            return Err(invalid(
                                key,
                                v,
                                "must be \"none\", \"all\" or \"lora_only\"",
                            ))
                        }
                    }
                }
                "task_type" => match v {
                    Value::Null => {}
                    Value::String(s) if s == "CAUSAL_LM" => {}
                    _ => {
                        return Err(invalid(key, v, "conversation fine-tuning trains a CAUSAL_LM"))
                    }
                },
                "peft_type" if !(v.is_null() || v == "LORA") => {
                    return Err(invalid(key, v, "only LORA adapters are supported"));
                }
                "target_modules" => cfg.target_modules = parse_targets(v)?,
                "use_rslora" => {
                    cfg.use_rslora =
                        v.as_bool().ok_or_else(|| invalid(key, v, "must be true or false"))?
                }
                "modules_to_save"
                | "fan_in_fan_out"
                | "use_dora"
                | "layers_to_transform"
                | "rank_pattern"
                | "alpha_pattern"
                    if !unset(v) =>
                {
                    return Err(Error::Unsupported(format!("lora_config.{key} = {v}")));
                }
                "init_lora_weights" if !init_keeps_base(v, saved) => {
                    return Err(Error::Unsupported(format!(
                        "lora_config.init_lora_weights = {v} (only peft's default initialisation)"
                    )));
                }
                // Descriptive only (inference_mode, base_model_name_or_path, revision, …),
                // or one of the above with a value that changes nothing.
                _ => {}
            }
        }
        Ok(cfg)
    }

    /// The multiplier of `B A x`: `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Whether the projection at `path` (`model.layers.0.self_attn.q_proj`) gets an
    /// adapter, for a model of `model_type`.
    pub fn targets(&self, path: &str, model_type: &str) -> Result<bool> {
        let names = match &self.target_modules {
            Some(TargetModules::AllLinear) => return Ok(path != "lm_head"),
            Some(TargetModules::Names(names)) => names.clone(),
            None => default_target_modules(model_type)?,
        };
        Ok(names.iter().any(|n| path == n || path.ends_with(&format!(".{n}"))))
    }

    /// `adapter_config.json` as peft's `save_pretrained` writes it; `target_modules` are
    /// the module names actually adapted (peft saves the resolved set, never the
    /// `all-linear` shorthand or an absent value).
    pub fn to_adapter_config(
        &self,
        base_model_name_or_path: &str,
        target_modules: &[String],
    ) -> Value {
        json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": base_model_name_or_path,
            "bias": self.bias.name(),
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layer_replication": null,
            "layers_pattern": null,
            "layers_to_transform": null,
            "loftq_config": {},
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "megatron_config": null,
            "megatron_core": "megatron.core",
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": self.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": target_modules,
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": self.use_rslora,
        })
    }
}

fn parse_targets(v: &Value) -> Result<Option<TargetModules>> {
    let key = "target_modules";
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s == "all-linear" => Ok(Some(TargetModules::AllLinear)),
        Value::String(_) => Err(Error::Unsupported(format!(
            "lora_config.{key} = {v}: a regular expression is not supported; give a list of module names or \"all-linear\""
        ))),
        Value::Array(items) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) if !s.is_empty() => names.push(s.to_string()),
                    _ => return Err(invalid(key, v, "every entry must be a module name")),
                }
            }
            if names.is_empty() {
                return Err(invalid(key, v, "must name at least one module"));
            }
            Ok(Some(TargetModules::Names(names)))
        }
        _ => Err(invalid(key, v, "must be a list of module names or \"all-linear\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_config_parses() {
        let cfg = LoraConfig::from_json(&json!({
            "r": 2, "lora_alpha": 4, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM"
        }))
        .unwrap();
        assert_eq!(
            (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.bias),
            (2, 4.0, 0.05, LoraBias::None)
        );
        assert_eq!(cfg.scaling(), 2.0);
        assert!(cfg.targets("model.layers.3.self_attn.q_proj", "llama").unwrap());
        assert!(cfg.targets("model.layers.3.self_attn.v_proj", "qwen2").unwrap());
        assert!(!cfg.targets("model.layers.3.self_attn.k_proj", "llama").unwrap());
        assert!(!cfg.targets("lm_head", "llama").unwrap());
        assert_eq!(LoraConfig::from_json(&Value::Null).unwrap(), LoraConfig::default());
    }

    #[test]
    fn target_forms() {
        let all = LoraConfig::from_json(&json!({"target_modules": "all-linear"})).unwrap();
        assert!(all.targets("model.layers.0.mlp.down_proj", "llama").unwrap());
        assert!(!all.targets("lm_head", "llama").unwrap());
        let listed =
            LoraConfig::from_json(&json!({"target_modules": ["o_proj", "mlp.up_proj"]})).unwrap();
        assert!(listed.targets("model.layers.1.self_attn.o_proj", "llama").unwrap());
        assert!(listed.targets("model.layers.1.mlp.up_proj", "llama").unwrap());
        assert!(!listed.targets("model.layers.1.mlp.gate_proj", "llama").unwrap());
        // A suffix must match whole path components.
        assert!(!listed.targets("model.layers.1.self_attn.xo_proj", "llama").unwrap());
        let rs =
            LoraConfig::from_json(&json!({"r": 16, "lora_alpha": 8, "use_rslora": true})).unwrap();
        assert_eq!(rs.scaling(), 2.0);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        for (bad, needle) in [
            (json!({"r": 0}), "lora_config.r = 0"),
            (json!({"r": "8"}), "lora_config.r = \"8\""),
            (json!({"lora_alpha": -1}), "lora_config.lora_alpha = -1"),
            (json!({"lora_dropout": 1.5}), "lora_config.lora_dropout = 1.5"),
            (json!({"bias": "some"}), "lora_config.bias = \"some\""),
            (json!({"task_type": "SEQ_CLS"}), "lora_config.task_type = \"SEQ_CLS\""),
            (json!({"target_modules": [1]}), "lora_config.target_modules"),
            (json!({"target_modules": ".*proj"}), "regular expression"),
            (json!({"modules_to_save": ["lm_head"]}), "modules_to_save"),
            (json!({"use_dora": true}), "use_dora"),
            (json!({"rank": 8}), "unsupported lora_config key(s) rank"),
            (json!([1]), "JSON object"),
        ] {
            let err = LoraConfig::from_json(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn saved_adapters_may_have_any_init_that_keeps_the_base() {
        // peft's `init_lora_weights=False` / "gaussian" only choose the starting values of A
        // and B: a saved adapter's trained values load as they are.
        for init in [json!(false), json!("gaussian"), json!(true)] {
            assert!(
                LoraConfig::from_adapter_config(&json!({"r": 4, "init_lora_weights": init}))
                    .is_ok(),
                "{init}"
            );
        }
        // Schemes that also rewrite the base weights stay refused, as training options too.
        let err =
            LoraConfig::from_adapter_config(&json!({"init_lora_weights": "pissa"})).unwrap_err();
        assert!(err.to_string().contains("init_lora_weights = \"pissa\""), "{err}");
        assert!(LoraConfig::from_json(&json!({"init_lora_weights": false})).is_err());
    }

    #[test]
    fn adapter_config_round_trips_and_tolerates_new_peft_fields() {
        let cfg = LoraConfig {
            r: 4,
            lora_alpha: 16.0,
            lora_dropout: 0.1,
            bias: LoraBias::LoraOnly,
            ..Default::default()
        };
        let mut written = cfg.to_adapter_config(
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            &["q_proj".into(), "v_proj".into()],
        );
        assert_eq!(written["peft_type"], "LORA");
        assert_eq!(written["task_type"], "CAUSAL_LM");
        assert_eq!(written["target_modules"], json!(["q_proj", "v_proj"]));
        written["eva_config"] = Value::Null; // a field from a newer peft
        let back = LoraConfig::from_adapter_config(&written).unwrap();
        assert_eq!(
            back.target_modules,
            Some(TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]))
        );
        assert_eq!(
            (back.r, back.lora_alpha, back.lora_dropout, back.bias),
            (4, 16.0, 0.1, LoraBias::LoraOnly)
        );
        written["use_dora"] = json!(true);
        assert!(LoraConfig::from_adapter_config(&written).is_err());
    }

    #[test]
    fn unknown_architecture_needs_explicit_targets() {
        let err = LoraConfig::default().targets("x.q_proj", "gpt2").unwrap_err().to_string();
        assert!(err.contains("gpt2"), "{err}");
    }
}
