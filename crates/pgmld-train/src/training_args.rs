//! Hugging Face `TrainingArguments` as pgmld accepts them in `hyperparams.training_args`:
//! names, defaults, validation and the learning-rate schedules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Learning-rate schedule (HF `lr_scheduler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedulerType {
    /// Linear warmup from 0, then linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Linear warmup, then half-cosine decay to 0.
    Cosine,
    /// Constant learning rate, no warmup.
    Constant,
    /// Linear warmup, then constant.
    ConstantWithWarmup,
}

/// When to evaluate during training (HF `eval_strategy`); the final evaluation always runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalStrategy {
    /// Only after training.
    #[default]
    No,
    /// Every `eval_steps` optimizer steps.
    Steps,
    /// At the end of every epoch.
    Epoch,
}

/// When the Hub receives the model (HF `hub_strategy`). Every strategy pushes the final
/// model at the end of training (commit "End of training").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HubStrategy {
    /// The model at every save (`save_steps`, commit "Training in progress, step N") and at
    /// the end.
    #[default]
    EverySave,
    /// Only at the end.
    End,
    /// As `every_save`, plus the latest checkpoint under `last-checkpoint/`.
    Checkpoint,
    /// As `every_save`, plus every checkpoint under `checkpoint-<step>/`.
    AllCheckpoints,
}

impl HubStrategy {
    /// Whether the model is pushed at each save (every strategy but `end`).
    pub fn pushes_saves(self) -> bool {
        self != HubStrategy::End
    }
}

/// Optimizer (HF `optim`). The 8-bit choices keep AdamW's two moments block-wise quantised
/// to one byte per value (bitsandbytes' `AdamW8bit`), a quarter of the f32 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optim {
    /// `torch.optim.AdamW` with f32 moments.
    #[default]
    AdamwTorch,
    /// HF's own AdamW (deprecated there): the same update as `adamw_torch`.
    AdamwHf,
    /// bitsandbytes' block-wise 8-bit AdamW.
    AdamwBnb8bit,
    /// Alias of `adamw_bnb_8bit` (HF accepts both).
    Adamw8bit,
    /// bitsandbytes' paged 8-bit AdamW: paging only matters for CUDA unified memory, so
    /// this is `adamw_bnb_8bit` with the state in ordinary device memory.
    PagedAdamw8bit,
}

impl Optim {
    /// Every accepted `optim` value, as spelled in `training_args`.
    pub const NAMES: &'static [&'static str] =
        &["adamw_torch", "adamw_hf", "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit"];

    /// Whether the optimizer keeps 8-bit block-wise moments.
    pub fn is_8bit(self) -> bool {
        matches!(self, Optim::AdamwBnb8bit | Optim::Adamw8bit | Optim::PagedAdamw8bit)
    }

    /// The value as spelled in `training_args`.
    pub fn name(self) -> &'static str {
        match self {
            Optim::AdamwTorch => "adamw_torch",
            Optim::AdamwHf => "adamw_hf",
            Optim::AdamwBnb8bit => "adamw_bnb_8bit",
            Optim::Adamw8bit => "adamw_8bit",
            Optim::PagedAdamw8bit => "paged_adamw_8bit",
        }
    }

    /// The optimizer named `s`, or a message naming the bad value and the accepted ones.
    fn parse_name(s: &str) -> std::result::Result<Self, String> {
        [
            Optim::AdamwTorch,
            Optim::AdamwHf,
            Optim::AdamwBnb8bit,
            Optim::Adamw8bit,
            Optim::PagedAdamw8bit,
        ]
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| format!("unsupported optim {s:?}; supported: {}", Self::NAMES.join(", ")))
    }
}

impl std::str::FromStr for Optim {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Optim::parse_name(s).map_err(Error::TrainingArgs)
    }
}

impl Serialize for Optim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Optim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Optim::parse_name(&name).map_err(serde::de::Error::custom)
    }
}

/// A secret string (a Hub token): never printed by `Debug` and never serialised, so it
/// cannot leak into logs, stored hyperparameters or messages.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The most ranks a data-parallel run may ask for (`world_size`).
pub const MAX_WORLD_SIZE: usize = 256;

/// Training hyperparameters, named and defaulted as HF `TrainingArguments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingArgs {
    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// Training batch size.
    pub per_device_train_batch_size: usize,
    /// Evaluation batch size.
    pub per_device_eval_batch_size: usize,
    /// Number of epochs (may be fractional); ignored when `max_steps > 0`.
    pub num_train_epochs: f64,
    /// Total number of optimizer steps; `-1` (or any value ≤ 0) derives it from epochs.
    pub max_steps: i64,
    /// AdamW decoupled weight decay, not applied to biases and LayerNorm weights.
    pub weight_decay: f64,
    /// Linear warmup steps; when 0, `warmup_ratio` of the total steps is used.
    pub warmup_steps: i64,
    /// Fraction of the total steps used for warmup when `warmup_steps` is 0.
    pub warmup_ratio: f64,
    /// Learning-rate schedule.
    pub lr_scheduler_type: LrSchedulerType,
    /// Micro-batches whose gradients are summed before each optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Maximum global gradient L2 norm (clipping disabled when ≤ 0).
    pub max_grad_norm: f64,
    /// Emit a [`LogEvent`] every this many optimizer steps.
    pub logging_steps: i64,
    /// Seed for libtorch (initialisation, dropout) and data shuffling.
    pub seed: u64,
    /// When to evaluate during training (`evaluation_strategy` is the older HF name).
    #[serde(alias = "evaluation_strategy")]
    pub eval_strategy: EvalStrategy,
    /// Steps between evaluations with `eval_strategy` `steps`; `logging_steps` when unset.
    pub eval_steps: Option<i64>,
    /// Steps between checkpoints.
    pub save_steps: i64,
    /// Checkpoints kept; all when unset.
    pub save_total_limit: Option<i64>,
    /// bfloat16 mixed precision (autocast, as HF's `bf16`): forward passes compute matrix
    /// products in bfloat16, weights, gradients and optimizer state stay float32. On CUDA
    /// and on the CPU; a CPU gains where it has AVX512-BF16 or AMX and loses elsewhere.
    pub bf16: bool,
    /// TensorFloat-32 for float32 matmuls and convolutions on CUDA (Ampere and newer), as
    /// HF's `tf32`: `true` allows, `false` forbids, unset leaves libtorch's setting (matmuls
    /// in full float32). Process-wide while the run lasts; ignored on CPU.
    pub tf32: Option<bool>,
    /// Recompute activations in the backward pass to save memory.
    pub gradient_checkpointing: bool,
    /// Run each training step as a CUDA graph, captured once per batch shape (token lengths
    /// padded to multiples of 32) and replayed: one launch instead of hundreds, for small
    /// models on fast GPUs (HF gets the same from `torch_compile_mode="reduce-overhead"`).
    /// Needs `gradient_accumulation_steps` 1, `world_size` 1, no gradient checkpointing, and
    /// the plugin `libpgmld_cuda_graph.so` on CUDA; on the CPU the steps run the same padded
    /// arithmetic without graphs. Default false. Steps that cannot be staged run eagerly:
    /// the first (it makes AdamW's moments), those of the 8-bit optimizers, and the causal
    /// LM's with int8 weights (they recompute layers in backward).
    pub cuda_graphs: bool,
    /// Optimizer: f32 AdamW or block-wise 8-bit AdamW (see [`Optim`]). Only the causal-LM
    /// trainer (`pgmld_llm`, which depends on this crate) has the 8-bit one; the classifier
    /// trainer here always uses f32 AdamW, so `pgml.tune` refuses the 8-bit names for the
    /// classification tasks (0A000) rather than ignore them.
    pub optim: Optim,
    /// Upload the model to the Hugging Face Hub (see `hub_strategy`).
    pub push_to_hub: bool,
    /// Token for the Hub (write access); never serialised, stored or printed. When unset,
    /// pgmld's `hub_token` setting, else `HF_TOKEN`.
    #[serde(skip_serializing)]
    pub hub_token: Option<Secret>,
    /// Create the Hub repository as private (an existing repo keeps its visibility).
    pub hub_private_repo: bool,
    /// Hub repository id, `namespace/name`; a name without `/` goes under the token owner's
    /// namespace. Default: `<token owner>/<project name, spaces as "_">`.
    pub hub_model_id: Option<String>,
    /// When uploads happen.
    pub hub_strategy: HubStrategy,
    /// How many processes (ranks) train the run data-parallel: the global batch is
    /// `per_device_train_batch_size` × `world_size` (× `gradient_accumulation_steps`) however
    /// many ranks actually join, so a run that continues with fewer ranks (one died) trains
    /// exactly as before, each rank taking a larger part. 1 (the default): one process.
    pub world_size: usize,
}

impl Default for TrainingArgs {
    fn default() -> Self {
        Self {
            learning_rate: 5e-5,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            num_train_epochs: 3.0,
            max_steps: -1,
            weight_decay: 0.0,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            lr_scheduler_type: LrSchedulerType::Linear,
            gradient_accumulation_steps: 1,
            max_grad_norm: 1.0,
            logging_steps: 500,
            seed: 42,
            eval_strategy: EvalStrategy::No,
            eval_steps: None,
            save_steps: 500,
            save_total_limit: None,
            bf16: false,
            tf32: None,
            gradient_checkpointing: false,
            cuda_graphs: false,
            optim: Optim::AdamwTorch,
            push_to_hub: false,
            hub_token: None,
            hub_private_repo: false,
            hub_model_id: None,
            hub_strategy: HubStrategy::EverySave,
            world_size: 1,
        }
    }
}

impl TrainingArgs {
    /// The keys accepted in a `training_args` JSON object.
    pub const SUPPORTED_KEYS: &'static [&'static str] = &[
        "learning_rate",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "num_train_epochs",
        "max_steps",
        "weight_decay",
        "warmup_steps",
        "warmup_ratio",
        "lr_scheduler_type",
        "gradient_accumulation_steps",
        "max_grad_norm",
        "logging_steps",
        "seed",
        "eval_strategy",
        "evaluation_strategy",
        "eval_steps",
        "save_steps",
        "save_total_limit",
        "bf16",
        "tf32",
        "gradient_checkpointing",
        "cuda_graphs",
        "optim",
        "push_to_hub",
        "hub_token",
        "hub_private_repo",
        "hub_model_id",
        "hub_strategy",
        "world_size",
    ];

    /// Parses a JSON object (missing keys take their defaults) and validates it. Unknown
    /// keys are rejected with an error listing the supported ones.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let obj = match value {
            serde_json::Value::Null => return Ok(Self::default()),
            serde_json::Value::Object(o) => o,
            other => {
                return Err(Error::TrainingArgs(format!("expected a JSON object, got {other}")))
            }
        };
        let mut unknown: Vec<&str> =
            obj.keys().map(String::as_str).filter(|k| !Self::SUPPORTED_KEYS.contains(k)).collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(Error::TrainingArgs(format!(
                "unsupported key(s) {}; supported keys: {}",
                unknown.join(", "),
                Self::SUPPORTED_KEYS.join(", ")
            )));
        }
        let args: Self = from_json_naming_key(value, "").map_err(Error::TrainingArgs)?;
        args.validate()?;
        Ok(args)
    }

    /// Parses a JSON text, as [`TrainingArgs::from_json`].
    pub fn from_json_str(s: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| Error::TrainingArgs(e.to_string()))?;
        Self::from_json(&v)
    }

    /// Checks the ranges of the arguments.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::TrainingArgs(m));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!("learning_rate must be > 0, got {}", self.learning_rate));
        }
        if self.per_device_train_batch_size == 0 || self.per_device_eval_batch_size == 0 {
            return bad("batch sizes must be ≥ 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps must be ≥ 1".into());
        }
        if !(1..=MAX_WORLD_SIZE).contains(&self.world_size) {
            return bad(format!(
                "world_size must be between 1 and {MAX_WORLD_SIZE}, got {}",
                self.world_size
            ));
        }
        if self.max_steps <= 0
            && !(self.num_train_epochs.is_finite() && self.num_train_epochs > 0.0)
        {
            return bad(format!(
                "num_train_epochs must be > 0 when max_steps is not set, got {}",
                self.num_train_epochs
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay must be ≥ 0, got {}", self.weight_decay));
        }
        if self.warmup_steps < 0 {
            return bad(format!("warmup_steps must be ≥ 0, got {}", self.warmup_steps));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(format!("warmup_ratio must be in [0, 1), got {}", self.warmup_ratio));
        }
        if !self.max_grad_norm.is_finite() {
            return bad(format!("max_grad_norm must be finite, got {}", self.max_grad_norm));
        }
        if matches!(self.eval_steps, Some(n) if n < 1) {
            return bad(format!("eval_steps must be ≥ 1, got {:?}", self.eval_steps));
        }
        if self.save_steps < 1 {
            return bad(format!("save_steps must be ≥ 1, got {}", self.save_steps));
        }
        if matches!(self.save_total_limit, Some(n) if n < 1) {
            return bad(format!("save_total_limit must be ≥ 1, got {:?}", self.save_total_limit));
        }
        if self.logging_steps < 1 {
            return bad(format!("logging_steps must be ≥ 1, got {}", self.logging_steps));
        }
        if self.cuda_graphs {
            // A graph replays one micro-batch's forward, backward and update as captured.
            let conflicts = [
                (self.gradient_accumulation_steps != 1, "gradient_accumulation_steps > 1"),
                (self.world_size != 1, "world_size > 1"),
                (self.gradient_checkpointing, "gradient_checkpointing"),
            ];
            if let Some((_, what)) = conflicts.iter().find(|(on, _)| *on) {
                return bad(format!(
                    "cuda_graphs cannot be combined with {what}: a captured step is one \
                     micro-batch's forward, backward and update on one process"
                ));
            }
        }
        Ok(())
    }

    /// Steps between evaluations during training, if any.
    pub fn eval_every(&self) -> Option<i64> {
        match self.eval_strategy {
            EvalStrategy::Steps => Some(self.eval_steps.unwrap_or(self.logging_steps)),
            _ => None,
        }
    }

    /// Warmup steps for a run of `total_steps` optimizer steps.
    pub fn num_warmup_steps(&self, total_steps: i64) -> i64 {
        if self.warmup_steps > 0 {
            self.warmup_steps
        } else {
            (self.warmup_ratio * total_steps as f64).ceil() as i64
        }
    }

    /// Learning-rate multiplier for optimizer step `step` (0-based) of `total_steps`, as
    /// the `transformers.get_scheduler` lambdas.
    pub fn lr_factor(&self, step: i64, total_steps: i64) -> f64 {
        let warmup = self.num_warmup_steps(total_steps);
        let (s, w, t) = (step as f64, warmup as f64, total_steps as f64);
        let warm = || s / w.max(1.0);
        match self.lr_scheduler_type {
            LrSchedulerType::Constant => 1.0,
            LrSchedulerType::ConstantWithWarmup => {
                if step < warmup {
                    warm()
                } else {
                    1.0
                }
            }
            LrSchedulerType::Linear => {
                if step < warmup {
                    warm()
                } else {
                    ((t - s) / (t - w).max(1.0)).max(0.0)
                }
            }
            LrSchedulerType::Cosine => {
                if step < warmup {
                    warm()
                } else {
                    let progress = (s - w) / (t - w).max(1.0);
                    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
                }
            }
        }
    }
}

/// `hyperparams.tokenizer_args`: how texts become token ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerArgs {
    /// Longest input in tokens, special tokens included; the model's maximum when unset
    /// (and never more than it).
    pub max_length: Option<usize>,
    /// Cut longer inputs to `max_length` (the longer text of a pair first). When false,
    /// a longer input is an error naming it.
    pub truncation: bool,
}

impl Default for TokenizerArgs {
    fn default() -> Self {
        TokenizerArgs { max_length: None, truncation: true }
    }
}

impl TokenizerArgs {
    /// The keys accepted in a `tokenizer_args` JSON object.
    pub const SUPPORTED_KEYS: &'static [&'static str] = &["max_length", "truncation"];

    /// Parses a JSON object (or null for the defaults); unknown keys are errors.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let args: Self = from_json_naming_key(value, "tokenizer_args").map_err(|e| {
            Error::TrainingArgs(format!("{e}; supported keys: {}", Self::SUPPORTED_KEYS.join(", ")))
        })?;
        if args.max_length == Some(0) {
            return Err(Error::TrainingArgs("tokenizer_args.max_length must be ≥ 1".into()));
        }
        Ok(args)
    }

    /// The effective maximum length for a model that accepts `model_max` positions.
    pub fn max_length_for(&self, model_max: Option<i64>) -> usize {
        let model_max = model_max.filter(|&m| m > 0).map_or(512, |m| m as usize);
        self.max_length.map_or(model_max, |m| m.min(model_max))
    }
}

/// Deserialises a user's JSON options; the message of a bad value starts with its key
/// (`"learning_rate: invalid type: string \"fast\", expected f64"`), under `within` when
/// the object is itself a key (`tokenizer_args.max_length: ...`), since serde's own
/// message names only the type, which leaves the user to guess which key it was.
fn from_json_naming_key<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    within: &str,
) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        // "." is the object itself (a wrong type for the whole object, an unknown key).
        let path = e.path().to_string();
        let key = match (within, path.as_str()) {
            (w, ".") => w.to_string(),
            ("", p) => p.to_string(),
            (w, p) => format!("{w}.{p}"),
        };
        let inner = e.into_inner();
        if key.is_empty() {
            inner.to_string()
        } else {
            format!("{key}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_transformers() {
        let mut a = TrainingArgs { warmup_steps: 2, ..Default::default() };
        // linear: warmup 0, .5, then (10-s)/8
        let f: Vec<f64> = (0..10).map(|s| a.lr_factor(s, 10)).collect();
        assert_eq!(f[0], 0.0);
        assert_eq!(f[1], 0.5);
        assert_eq!(f[2], 1.0);
        assert!((f[6] - 0.5).abs() < 1e-12);
        a.lr_scheduler_type = LrSchedulerType::Cosine;
        assert!((a.lr_factor(6, 10) - 0.5).abs() < 1e-12);
        assert!((a.lr_factor(2, 10) - 1.0).abs() < 1e-12);
        a.lr_scheduler_type = LrSchedulerType::ConstantWithWarmup;
        assert_eq!(a.lr_factor(1, 10), 0.5);
        assert_eq!(a.lr_factor(9, 10), 1.0);
        a.lr_scheduler_type = LrSchedulerType::Constant;
        assert_eq!(a.lr_factor(0, 10), 1.0);
        // warmup_ratio rounds up
        let r = TrainingArgs { warmup_ratio: 0.1, ..Default::default() };
        assert_eq!(r.num_warmup_steps(25), 3);
    }

    #[test]
    fn optim_values_parse_and_bad_ones_are_named() {
        assert_eq!(TrainingArgs::default().optim, Optim::AdamwTorch);
        for (name, eight) in [
            ("adamw_torch", false),
            ("adamw_hf", false),
            ("adamw_bnb_8bit", true),
            ("adamw_8bit", true),
            ("paged_adamw_8bit", true),
        ] {
            let a = TrainingArgs::from_json_str(&format!(r#"{{"optim": "{name}"}}"#)).unwrap();
            assert_eq!(a.optim.name(), name);
            assert_eq!(a.optim.is_8bit(), eight, "{name}");
            // Round-trips through the stored JSON.
            let back: TrainingArgs =
                serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
            assert_eq!(back.optim, a.optim);
        }
        let err = TrainingArgs::from_json_str(r#"{"optim": "adafactor"}"#).unwrap_err().to_string();
        assert!(err.contains("\"adafactor\"") && err.contains("adamw_bnb_8bit"), "{err}");
        assert!("sgd".parse::<Optim>().unwrap_err().to_string().contains("\"sgd\""));
    }

    #[test]
    fn a_bad_value_is_named_by_its_key() {
        let err = |j: &str| TrainingArgs::from_json_str(j).unwrap_err().to_string();
        let e = err(r#"{"learning_rate": "fast"}"#);
        assert!(e.contains("learning_rate: invalid type: string \"fast\""), "{e}");
        let e = err(r#"{"per_device_train_batch_size": -8}"#);
        assert!(e.contains("per_device_train_batch_size: invalid value: integer `-8`"), "{e}");
        let e = err(r#"{"lr_scheduler_type": "stepwise"}"#);
        assert!(e.contains("lr_scheduler_type: unknown variant `stepwise`"), "{e}");
        let e = err(r#"{"save_total_limit": 1.5}"#);
        assert!(e.contains("save_total_limit: invalid type: floating point `1.5`"), "{e}");
        // The object's own type has no key to name.
        assert!(err("[1]").contains("expected a JSON object"));
        let tok = |j: &str| {
            TokenizerArgs::from_json(&serde_json::from_str(j).unwrap()).unwrap_err().to_string()
        };
        let e = tok(r#"{"max_length": "long"}"#);
        assert!(e.contains("tokenizer_args.max_length: invalid type: string \"long\""), "{e}");
        let e = tok(r#"{"padding": true}"#);
        assert!(e.contains("tokenizer_args.padding: unknown field `padding`"), "{e}");
        assert!(e.contains("supported keys: max_length, truncation"), "{e}");
    }
}
