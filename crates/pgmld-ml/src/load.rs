//! Loading Hugging Face checkpoints (`config.json` + `model.safetensors`) into a `VarStore`.
//!
//! Names are matched as HF would: a variable `bert.encoder...` also matches a checkpoint
//! saved from a bare `BertModel` (`encoder...`, as MiniLM's), and the other way round; the
//! legacy LayerNorm names `gamma`/`beta` match `weight`/`bias`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tch::{nn, Device, Tensor};

use crate::bert::{BertForSequenceClassification, BertModel, Config};
use crate::error::{Error, Result};

/// What [`load_safetensors`] did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Variables filled from the checkpoint.
    pub loaded: Vec<String>,
    /// Variables left at their fresh initialisation (absent, or a head of another shape).
    pub fresh: Vec<String>,
    /// Checkpoint tensors no variable took (e.g. `embeddings.position_ids`).
    pub unused: Vec<String>,
}

/// A model built from a checkpoint directory, with its variables.
#[derive(Debug)]
pub struct Pretrained<M> {
    /// Holds every variable of `model` (train with `nn::Adam::default().build(&vs, lr)`).
    pub vs: nn::VarStore,
    /// The parsed `config.json`.
    pub config: Config,
    /// The model.
    pub model: M,
    /// How the weights were matched.
    pub report: LoadReport,
}

fn candidates(name: &str) -> Vec<String> {
    let mut base = vec![name.to_string()];
    match name.strip_prefix("bert.") {
        Some(rest) => base.push(rest.to_string()),
        None => base.push(format!("bert.{name}")),
    }
    let mut out = base.clone();
    for b in base {
        if let Some(p) = b.strip_suffix("LayerNorm.weight") {
            out.push(format!("{p}LayerNorm.gamma"));
        } else if let Some(p) = b.strip_suffix("LayerNorm.bias") {
            out.push(format!("{p}LayerNorm.beta"));
        }
    }
    out
}

/// Copies the tensors of a safetensors file into the variables of `vs`, converting dtype
/// and device. Variables for which `may_stay_fresh(name)` holds may be absent from the
/// checkpoint or differ in shape (a new classifier head) and keep their initialisation;
/// any other absence or shape mismatch is an error.
pub fn load_safetensors(
    vs: &mut nn::VarStore,
    path: impl AsRef<Path>,
    may_stay_fresh: impl Fn(&str) -> bool,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    let mut used = HashSet::new();
    let mut report = LoadReport::default();
    let mut missing = Vec::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let found = candidates(&name)
            .into_iter()
            .find(|c| tensors.contains_key(c));
        let Some(key) = found else {
            if may_stay_fresh(&name) {
                report.fresh.push(name);
            } else {
                missing.push(name);
            }
            continue;
        };
        let src = &tensors[&key];
        used.insert(key);
        if src.size() != var.size() {
            if may_stay_fresh(&name) {
                report.fresh.push(name);
                continue;
            }
            return Err(Error::ShapeMismatch {
                name,
                found: src.size(),
                expected: var.size(),
            });
        }
        tch::no_grad(|| var.f_copy_(src))?;
        report.loaded.push(name);
    }
    if !missing.is_empty() {
        missing.truncate(8);
        return Err(Error::MissingWeights {
            path: path.to_path_buf(),
            names: missing,
        });
    }
    report.unused = tensors.into_keys().filter(|k| !used.contains(k)).collect();
    report.unused.sort();
    Ok(report)
}

fn files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("config.json"), dir.join("model.safetensors"))
}

impl BertModel {
    /// Builds the encoder from `dir/config.json` and fills it from `dir/model.safetensors`;
    /// every encoder weight must be present.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: Device) -> Result<Pretrained<Self>> {
        let (cfg_path, weights) = files(dir.as_ref());
        let config = Config::from_file(cfg_path)?;
        let mut vs = nn::VarStore::new(device);
        let model = BertModel::load(vs.root(), &config);
        let report = load_safetensors(&mut vs, weights, |_| false)?;
        Ok(Pretrained {
            vs,
            config,
            model,
            report,
        })
    }
}

impl BertForSequenceClassification {
    /// Builds the classifier from `dir/config.json` and fills it from
    /// `dir/model.safetensors`. `num_labels` defaults to the config's `id2label` size, else 2.
    /// The pooler and classifier are initialised fresh when the checkpoint lacks them (or,
    /// for the classifier, has another label count); the encoder must be complete.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        num_labels: Option<i64>,
        device: Device,
    ) -> Result<Pretrained<Self>> {
        let (cfg_path, weights) = files(dir.as_ref());
        let config = Config::from_file(cfg_path)?;
        let n = num_labels.or(config.num_labels()).unwrap_or(2);
        let mut vs = nn::VarStore::new(device);
        let model = BertForSequenceClassification::load(vs.root(), &config, n);
        let head = |name: &str| name.starts_with("classifier.") || name.starts_with("bert.pooler.");
        let report = load_safetensors(&mut vs, weights, head)?;
        Ok(Pretrained {
            vs,
            config,
            model,
            report,
        })
    }
}
