//! A LoRA adapter on disk, in peft's `save_pretrained` layout: `adapter_config.json` and
//! `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight`,
//! `….lora_B.weight` (the adapter name removed, as peft saves) and the trained biases.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{nn, Device, Tensor};

use super::{merge_adapters, short_name, LoraConfig, PEFT_PREFIX};
use crate::linear::LoraAdapter;
use crate::llama::Llama;
use crate::{Error, Result};

/// The adapter's configuration file (peft's name).
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's weights (peft's name).
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Older peft versions' weights file (a `torch.save` state dict), read when no safetensors.
const ADAPTER_WEIGHTS_BIN: &str = "adapter_model.bin";

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len())
}

/// Writes the adapter held in `vs` (as [`super::apply`] created it) into `dir` (created if
/// need be) for a base model known as `base_model_name_or_path`. Returns the bytes written
/// (both files): the size of what a user downloads to use the fine-tune.
pub fn save_adapter(
    dir: &Path,
    cfg: &LoraConfig,
    vs: &nn::VarStore,
    base_model_name_or_path: &str,
) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut targets: Vec<String> = vars
        .iter()
        .filter_map(|(n, _)| n.strip_suffix(".lora_A.weight"))
        .map(|module| short_name(module).to_string())
        .collect();
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        return Err(Error::Invalid("the VarStore holds no LoRA adapter to save".into()));
    }
    let tensors: Vec<(String, Tensor)> = vars
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    Tensor::write_safetensors(&tensors, &weights_path)?;
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let config = cfg.to_adapter_config(base_model_name_or_path, &targets);
    let text = serde_json::to_string_pretty(&config)
        .map_err(|source| Error::Json { what: ADAPTER_CONFIG_FILE.into(), source })?;
    std::fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))?;
    Ok(file_size(&weights_path)? + file_size(&config_path)?)
}

/// One module's tensors in an adapter file.
#[derive(Default)]
struct ModuleTensors {
    a: Option<Tensor>,
    b: Option<Tensor>,
    bias: Option<Tensor>,
}

/// Reads `dir`'s adapter (peft layout; `adapter_model.bin` when there is no safetensors)
/// and attaches it to `model`'s projections for inference (no dropout). With `merge`, the
/// adapters are folded into dense weights (int8 projections keep theirs). Every tensor must
/// fit a projection of the model, with the shape the config's `r` implies. Returns the
/// adapter's configuration.
pub fn load_adapter(model: &mut Llama, dir: &Path, merge: bool) -> Result<LoraConfig> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|source| Error::Json { what: config_path.display().to_string(), source })?;
    let cfg = LoraConfig::from_adapter_config(&json)?;
    let safetensors = dir.join(ADAPTER_WEIGHTS_FILE);
    let weights_path =
        if safetensors.is_file() { safetensors } else { dir.join(ADAPTER_WEIGHTS_BIN) };
    if !weights_path.is_file() {
        return Err(Error::io(
            &weights_path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {ADAPTER_WEIGHTS_FILE} or {ADAPTER_WEIGHTS_BIN}"),
            ),
        ));
    }
    let tensors = pgmld_train::weights_file::read_weights_file(&weights_path)?;
    let mut modules: BTreeMap<String, ModuleTensors> = BTreeMap::new();
    for (key, tensor) in tensors {
        let unknown =
            || Error::Invalid(format!("{}: unexpected tensor {key}", weights_path.display()));
        let name = key.strip_prefix(PEFT_PREFIX).ok_or_else(unknown)?;
        let (module, slot) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
            (m, 0)
        } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
            (m, 1)
        } else if let Some(m) =
            name.strip_suffix(".base_layer.bias").or_else(|| name.strip_suffix(".bias"))
        {
            (m, 2)
        } else {
            return Err(unknown());
        };
        let entry = modules.entry(module.to_string()).or_default();
        match slot {
            0 => entry.a = Some(tensor),
            1 => entry.b = Some(tensor),
            _ => entry.bias = Some(tensor),
        }
    }
    if !modules.values().any(|m| m.a.is_some()) {
        return Err(Error::Invalid(format!("{} holds no LoRA weights", weights_path.display())));
    }
    let (device, kind, scaling) = (model.device(), model.kind(), cfg.scaling());
    for (path, lin) in model.linears_mut() {
        let Some(found) = modules.remove(&path) else { continue };
        let shape_err = |what: &str, t: &Tensor, expected: Vec<i64>| Error::Shape {
            name: format!("{PEFT_PREFIX}{path}.{what}"),
            found: t.size(),
            expected,
        };
        let to_model = |t: Tensor| t.to_device(device).to_kind(kind);
        match (found.a, found.b) {
            (Some(a), Some(b)) => {
                let (a_shape, b_shape) =
                    (vec![cfg.r, lin.in_features()], vec![lin.out_features(), cfg.r]);
                if a.size() != a_shape {
                    return Err(shape_err("lora_A.weight", &a, a_shape));
                }
                if b.size() != b_shape {
                    return Err(shape_err("lora_B.weight", &b, b_shape));
                }
                lin.lora =
                    Some(LoraAdapter { a: to_model(a), b: to_model(b), scaling, dropout: 0.0 });
            }
            (None, None) => {}
            _ => {
                return Err(Error::MissingWeight(format!(
                    "{PEFT_PREFIX}{path}: lora_A and lora_B come in pairs"
                )))
            }
        }
        if let Some(bias) = found.bias {
            if lin.bias.is_none() || bias.size() != [lin.out_features()] {
                return Err(shape_err("bias", &bias, vec![lin.out_features()]));
            }
            lin.bias = Some(to_model(bias));
        }
    }
    if let Some(extra) = modules.keys().next() {
        return Err(Error::Invalid(format!(
            "{}: adapter weights for {extra}, which the base model does not have (another base model?)",
            weights_path.display()
        )));
    }
    if merge {
        merge_adapters(model);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::test_model::{random_weights, tiny_config};
    use crate::lora::apply;
    use crate::Weights;
    use serde_json::json;

    /// Random base weights, drawn once per test: libtorch's generator is shared with tests
    /// running in parallel, so two draws could differ.
    fn base_weights() -> Weights {
        random_weights(&tiny_config("qwen2"), 7)
    }

    /// A model over a copy of `weights`.
    fn tiny_model(weights: &Weights) -> Llama {
        let mut copy: Weights = weights.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        Llama::load(tiny_config("qwen2"), &mut copy, Device::Cpu, tch::Kind::Float).unwrap()
    }

    fn ids() -> Tensor {
        Tensor::from_slice(&[2i64, 9, 4, 31, 0, 17, 5]).view([1, 7])
    }

    fn trained_adapter(dir: &Path, lora: serde_json::Value, weights: &Weights) -> (Tensor, u64) {
        let mut model = tiny_model(weights);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = LoraConfig::from_json(&lora).unwrap();
        apply(&mut model, &cfg, &vs).unwrap();
        // Stand-in for training: every trainable tensor moves.
        tch::no_grad(|| {
            for (_, mut t) in vs.variables() {
                let _ = t.g_add_(&(t.randn_like() * 0.1));
            }
        });
        let bytes = save_adapter(dir, &cfg, &vs, "tiny/qwen2").unwrap();
        (model.forward(&ids(), None, false), bytes)
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pgmld-lora-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saved_adapter_reloads_to_the_same_logits_merged_or_not() {
        let dir = tmp("roundtrip");
        let weights = base_weights();
        let lora = json!({"r": 2, "lora_alpha": 4, "bias": "all", "target_modules": "all-linear"});
        let (want, bytes) = trained_adapter(&dir, lora, &weights);
        let on_disk = std::fs::metadata(dir.join(ADAPTER_WEIGHTS_FILE)).unwrap().len()
            + std::fs::metadata(dir.join(ADAPTER_CONFIG_FILE)).unwrap().len();
        assert_eq!(bytes, on_disk);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG_FILE)).unwrap())
                .unwrap();
        assert_eq!(config["base_model_name_or_path"], "tiny/qwen2");
        assert_eq!(
            config["target_modules"],
            json!(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"])
        );
        let names: Vec<String> = Tensor::read_safetensors(dir.join(ADAPTER_WEIGHTS_FILE))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names
            .contains(&"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight".to_string()));
        assert!(names.contains(
            &"base_model.model.model.layers.0.self_attn.k_proj.base_layer.bias".to_string()
        ));
        for merge in [false, true] {
            let mut fresh = tiny_model(&weights);
            let base = fresh.forward(&ids(), None, false);
            let cfg = load_adapter(&mut fresh, &dir, merge).unwrap();
            assert_eq!((cfg.r, cfg.lora_alpha), (2, 4.0));
            let got = fresh.forward(&ids(), None, false);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "merge={merge}: {diff}");
            assert!(
                (got - base).abs().max().double_value(&[]) > 1e-3,
                "the adapter changes the model"
            );
            let has_adapters = fresh.linears_mut().iter().any(|(_, l)| l.lora.is_some());
            assert_eq!(has_adapters, !merge);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn adapter_for_another_model_is_refused() {
        let dir = tmp("mismatch");
        let weights = base_weights();
        let _ = trained_adapter(&dir, json!({"r": 2}), &weights);
        // Rename a module so it matches nothing in the model.
        let mut tensors = Tensor::read_safetensors(dir.join(ADAPTER_WEIGHTS_FILE)).unwrap();
        for (name, _) in tensors.iter_mut() {
            *name = name.replace("layers.0.self_attn.v_proj", "layers.9.self_attn.v_proj");
        }
        Tensor::write_safetensors(&tensors, dir.join(ADAPTER_WEIGHTS_FILE)).unwrap();
        let err = load_adapter(&mut tiny_model(&weights), &dir, false).unwrap_err().to_string();
        assert!(err.contains("layers.9"), "{err}");
        // A rank that does not fit the shapes.
        let _ = trained_adapter(&dir, json!({"r": 2}), &weights);
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG_FILE)).unwrap())
                .unwrap();
        config["r"] = json!(3);
        std::fs::write(dir.join(ADAPTER_CONFIG_FILE), config.to_string()).unwrap();
        let err = load_adapter(&mut tiny_model(&weights), &dir, false).unwrap_err().to_string();
        assert!(err.contains("lora_A.weight"), "{err}");
        let err =
            load_adapter(&mut tiny_model(&weights), &tmp("absent"), false).unwrap_err().to_string();
        assert!(err.contains(ADAPTER_CONFIG_FILE), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
