//! LoRA (peft's `LoraModel`) on a [`Llama`]: [`apply`] wraps the projections a
//! [`LoraConfig`] targets with trainable low-rank adapters held in a `VarStore`, under the
//! names peft gives them, so [`save_adapter`] writes a directory peft's
//! `PeftModel.from_pretrained` loads, and [`load_adapter`] reads one back for inference.
//!
//! The base model's tensors are not in the `VarStore` and never require gradients: only
//! the adapters (and the biases `bias` "all" / "lora_only" names) train.

mod adapter_file;
mod config;

use tch::nn::{self, Init};
use tch::Tensor;

use crate::linear::LoraAdapter;
use crate::llama::Llama;
use crate::{Error, Result};

pub use adapter_file::{load_adapter, save_adapter, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
pub use config::{default_target_modules, LoraBias, LoraConfig, TargetModules};

/// Prefix peft puts before the base model's own names (`PeftModelForCausalLM.base_model`
/// (the `LoraModel`) `.model` (the transformers model)).
pub const PEFT_PREFIX: &str = "base_model.model.";

/// Trainable and total parameter counts, as peft's `print_trainable_parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// Parameters that train (adapters, plus trainable biases).
    pub trainable: i64,
    /// Every parameter of the adapted model (base + adapters).
    pub total: i64,
}

impl ParamCount {
    /// `100 · trainable / total`.
    pub fn trainable_percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total.max(1) as f64
    }
}

impl std::fmt::Display for ParamCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = |n: i64| {
            let s = n.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        };
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            group(self.trainable),
            group(self.total),
            self.trainable_percent()
        )
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSummary {
    /// Module paths that got an adapter, in model order.
    pub adapted: Vec<String>,
    /// Short names of the adapted modules (`q_proj`, `v_proj`), sorted: what
    /// `adapter_config.json` lists as `target_modules`.
    pub target_modules: Vec<String>,
    /// Parameter counts after wrapping.
    pub params: ParamCount,
}

/// A `VarStore` path from a dotted name (tch's path components cannot hold dots).
pub(crate) fn var_path<'a>(vs: &'a nn::VarStore, dotted: &str) -> nn::Path<'a> {
    dotted.split('.').fold(vs.root(), |p, part| p / part)
}

/// The last component of a module path (`model.layers.0.self_attn.q_proj` → `q_proj`).
pub(crate) fn short_name(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Every parameter of `model`: embeddings, norms, projections (an int8 weight counts its
/// elements, as peft counts bitsandbytes int8 parameters), biases and adapters.
pub fn count_parameters(model: &mut Llama) -> i64 {
    let norms: i64 = model
        .layers
        .iter()
        .map(|l| l.input_layernorm.weight.numel() + l.post_attention_layernorm.weight.numel())
        .sum::<usize>() as i64
        + model.norm.weight.numel() as i64;
    let linears: i64 = model
        .linears_mut()
        .into_iter()
        .map(|(_, lin)| {
            let adapter = lin.lora.as_ref().map_or(0, |l| l.a.numel() + l.b.numel());
            (lin.weight.numel() + lin.bias.as_ref().map_or(0, Tensor::numel) + adapter) as i64
        })
        .sum();
    model.embed_tokens.numel() as i64 + norms + linears
}

/// Wraps the projections of `model` that `cfg` targets with fresh adapters (A
/// kaiming-uniform as peft, B zeros: the model's output is unchanged until training moves
/// B), created in `vs` as `base_model.model.<module>.lora_A.weight` / `lora_B.weight`;
/// biases made trainable by `cfg.bias` move into `vs` too (`<module>.base_layer.bias` for
/// an adapted module, `<module>.bias` otherwise, as peft names them). The initial values
/// come from libtorch's generator: seed it first for a reproducible run.
///
/// Errors: no projection matches `target_modules` (peft's "Target modules … not found"),
/// a projection already has an adapter, or `vs` is on another device than the model.
pub fn apply(model: &mut Llama, cfg: &LoraConfig, vs: &nn::VarStore) -> Result<LoraSummary> {
    let model_type = model.config.model_type.clone();
    let (device, scaling, r) = (vs.device(), cfg.scaling(), cfg.r);
    if device != model.device() {
        return Err(Error::Invalid(format!(
            "the adapter's VarStore is on {device:?} but the model on {:?}",
            model.device()
        )));
    }
    let mut adapted = Vec::new();
    for (path, lin) in model.linears_mut() {
        let targeted = cfg.targets(&path, &model_type)?;
        if targeted {
            if lin.lora.is_some() {
                return Err(Error::Invalid(format!("{path} already has a LoRA adapter")));
            }
            let p = var_path(vs, &format!("{PEFT_PREFIX}{path}"));
            let bound = 1.0 / (lin.in_features() as f64).sqrt();
            let a = (&p / "lora_A").var(
                "weight",
                &[r, lin.in_features()],
                Init::Uniform { lo: -bound, up: bound },
            );
            let b = (&p / "lora_B").var("weight", &[lin.out_features(), r], Init::Const(0.0));
            lin.lora = Some(LoraAdapter { a, b, scaling, dropout: cfg.lora_dropout });
            adapted.push(path.clone());
        }
        let bias_trains = match cfg.bias {
            LoraBias::None => false,
            LoraBias::All => true,
            LoraBias::LoraOnly => targeted,
        };
        if let (true, Some(bias)) = (bias_trains, lin.bias.as_ref()) {
            let name = if targeted {
                format!("{PEFT_PREFIX}{path}.base_layer")
            } else {
                format!("{PEFT_PREFIX}{path}")
            };
            let var = var_path(vs, &name).var_copy("bias", &bias.to_device(device));
            lin.bias = Some(var);
        }
    }
    if adapted.is_empty() {
        return Err(Error::Invalid(format!(
            "LoRA target modules {:?} not found in the base model ({model_type})",
            cfg.target_modules
        )));
    }
    let mut target_modules: Vec<String> =
        adapted.iter().map(|p| short_name(p).to_string()).collect();
    target_modules.sort();
    target_modules.dedup();
    let trainable = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let params = ParamCount { trainable, total: count_parameters(model) };
    Ok(LoraSummary { adapted, target_modules, params })
}

/// Folds every adapter into its dense weight (inference at the base model's cost);
/// projections with an int8 weight keep their adapter. Returns how many were merged.
pub fn merge_adapters(model: &mut Llama) -> usize {
    let mut merged = 0;
    for (_, lin) in model.linears_mut() {
        if lin.lora.is_some() && !lin.is_int8() && lin.merge_lora().is_ok() {
            merged += 1;
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::test_model::tiny_model;
    use serde_json::json;
    use tch::{Device, Kind};

    fn ids() -> Tensor {
        Tensor::from_slice(&[3i64, 7, 1, 30, 12, 5]).view([1, 6])
    }

    #[test]
    fn fresh_adapters_change_nothing_and_count_like_peft() {
        let mut model = tiny_model("llama", 1);
        let before = model.forward(&ids(), None, false);
        let base_params = count_parameters(&mut model);
        // 32·16 embed + 2·(2·16 norms + q 16·16 + k,v 8·16 + o 16·16 + 3·24·16) + 16 + 32·16 head
        assert_eq!(base_params, 512 + 2 * (32 + 256 + 2 * 128 + 256 + 3 * 384) + 16 + 512);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = LoraConfig::from_json(&json!({"r": 4, "lora_alpha": 8})).unwrap();
        let s = apply(&mut model, &cfg, &vs).unwrap();
        assert_eq!(s.target_modules, vec!["q_proj", "v_proj"]);
        assert_eq!(s.adapted.len(), 4);
        // q: A 4·16 + B 16·4; v: A 4·16 + B 8·4 — per layer.
        assert_eq!(s.params.trainable, 2 * (128 + 96));
        assert_eq!(s.params.total, base_params + s.params.trainable);
        let names: Vec<String> = {
            let mut n: Vec<String> = vs.variables().into_keys().collect();
            n.sort();
            n
        };
        assert_eq!(names[0], "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        let after = model.forward(&ids(), None, false);
        assert_eq!((after - before).abs().max().double_value(&[]), 0.0);
        assert!(s.params.to_string().starts_with("trainable params: 448 || all params: "));
    }

    #[test]
    fn only_adapters_get_gradients() {
        let mut model = tiny_model("llama", 2);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = LoraConfig::from_json(&json!({"target_modules": "all-linear"})).unwrap();
        let s = apply(&mut model, &cfg, &vs).unwrap();
        assert_eq!(s.adapted.len(), 2 * 7 + 1 - 1, "every projection but lm_head");
        // B starts at zero, so A gets no gradient on the first step: give B a value.
        tch::no_grad(|| {
            for (_, mut b) in vs.variables().into_iter().filter(|(n, _)| n.contains("lora_B")) {
                let _ = b.fill_(0.01);
            }
        });
        model.forward(&ids(), None, true).sum(Kind::Float).backward();
        for (name, t) in vs.variables() {
            assert!(t.grad().defined(), "{name} has no gradient");
        }
        let base = &model.layers[0].mlp.up_proj.weight;
        assert!(!base.requires_grad());
        assert!(!model.embed_tokens.requires_grad());
    }

    #[test]
    fn bias_modes_move_biases_into_the_var_store() {
        for (mode, expect) in [("none", 0), ("lora_only", 2 * 2), ("all", 2 * 3)] {
            let mut model = tiny_model("qwen2", 3);
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = LoraConfig::from_json(&json!({"bias": mode})).unwrap();
            apply(&mut model, &cfg, &vs).unwrap();
            let biases: Vec<String> =
                vs.variables().into_keys().filter(|n| n.ends_with(".bias")).collect();
            assert_eq!(biases.len(), expect, "{mode}: {biases:?}");
            if mode == "all" {
                assert!(biases.contains(
                    &"base_model.model.model.layers.0.self_attn.k_proj.bias".to_string()
                ));
                assert!(biases.contains(
                    &"base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias".to_string()
                ));
            }
            let q_bias = model.layers[0].self_attn.q_proj.bias.as_ref().unwrap();
            assert_eq!(q_bias.requires_grad(), mode != "none");
        }
    }

    #[test]
    fn no_match_and_double_wrapping_are_errors() {
        let mut model = tiny_model("llama", 4);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = LoraConfig::from_json(&json!({"target_modules": ["c_attn"]})).unwrap();
        let err = apply(&mut model, &cfg, &vs).unwrap_err().to_string();
        assert!(err.contains("c_attn") && err.contains("not found"), "{err}");
        apply(&mut model, &LoraConfig::default(), &vs).unwrap();
        let err =
            apply(&mut model, &LoraConfig::default(), &nn::VarStore::new(Device::Cpu)).unwrap_err();
        assert!(err.to_string().contains("already has"), "{err}");
        // An adapter on another device than the model (nothing is allocated there).
        let err = apply(
            &mut tiny_model("llama", 4),
            &LoraConfig::default(),
            &nn::VarStore::new(Device::Cuda(0)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Cuda"), "{err}");
    }

    #[test]
    fn merging_keeps_outputs() {
        let mut model = tiny_model("llama", 5);
        let vs = nn::VarStore::new(Device::Cpu);
        apply(&mut model, &LoraConfig::default(), &vs).unwrap();
        tch::no_grad(|| {
            for (_, mut b) in vs.variables() {
                let _ = b.normal_(0.0, 0.1);
            }
        });
        let before = model.forward(&ids(), None, false);
        assert_eq!(merge_adapters(&mut model), 4);
        assert!(model.linears_mut().iter().all(|(_, l)| l.lora.is_none()));
        let after = model.forward(&ids(), None, false);
        assert!((after - before).abs().max().double_value(&[]) < 1e-4);
    }
}
