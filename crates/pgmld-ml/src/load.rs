//! Loading Hugging Face checkpoints (`config.json` + weights) into a `VarStore`.
//!
//! Weights are read by [`pgmld_train::weights_file::read_checkpoint`] (safetensors, sharded or not,
//! or `pytorch_model.bin`). Names are matched as HF would: a variable under the model's
//! base prefix (`bert.`, `distilbert.`, `roberta.`: [`BASE_PREFIXES`]) also matches a
//! checkpoint saved from the bare base model (`encoder...`, as MiniLM's), and the other way
//! round; the legacy LayerNorm names `gamma`/`beta` match `weight`/`bias`. Checkpoint
//! tensors no variable takes (a masked-LM head, `position_ids` buffers) are reported unused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tch::{nn, Device, Tensor};

use crate::bert::{BertForSequenceClassification, BertModel, Config};
use crate::error::Result;
use pgmld_train::weights_file::read_checkpoint;

/// Attribute names under which HF task models hold their base model.
pub const BASE_PREFIXES: &[&str] = &["bert", "distilbert", "roberta"];

/// What [`load_safetensors`] / [`load_checkpoint`] did.
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

/// Bytes held by the variables of `vs` (what a model cache budgets for).
pub fn weight_bytes(vs: &nn::VarStore) -> u64 {
    vs.variables().values().map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64).sum()
}

fn first_component(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The base prefix in use: the one the variables carry, else the one the checkpoint does.
fn base_prefix<'a>(
    vars: impl IntoIterator<Item = &'a String>,
    keys: impl IntoIterator<Item = &'a String>,
) -> Option<&'static str> {
    let find = |names: &mut dyn Iterator<Item = &'a String>| {
        let firsts: HashSet<&str> = names.map(|n| first_component(n)).collect();
        BASE_PREFIXES.iter().copied().find(|p| firsts.contains(p))
    };
    find(&mut vars.into_iter()).or_else(|| find(&mut keys.into_iter()))
}

fn candidates(name: &str, base: Option<&str>) -> Vec<String> {
    let mut names = vec![name.to_string()];
    if let Some(base) = base {
        match name.strip_prefix(base).and_then(|r| r.strip_prefix('.')) {
            Some(rest) => names.push(rest.to_string()),
            None => names.push(format!("{base}.{name}")),
        }
    }
    let mut out = names.clone();
    for b in names {
        if let Some(p) = b.strip_suffix("LayerNorm.weight") {
            out.push(format!("{p}LayerNorm.gamma"));
        } else if let Some(p) = b.strip_suffix("LayerNorm.bias") {
            out.push(format!("{p}LayerNorm.beta"));
        }
    }
    out
}

/// Copies `tensors` (read from `source`, named in HF style) into the variables of `vs`,
/// converting dtype and device. Variables for which `may_stay_fresh(name)` holds may be
/// absent from the checkpoint or differ in shape (a new classifier head) and keep their
/// initialisation; any other absence or shape mismatch is an error.
pub fn load_tensors(
    vs: &mut nn::VarStore,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
    may_stay_fresh: impl Fn(&str) -> bool,
) -> Result<LoadReport> {
    let mut used = HashSet::new();
    let mut report = LoadReport::default();
    let mut missing = Vec::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let base = base_prefix(vars.iter().map(|v| &v.0), tensors.keys());
    for (name, mut var) in vars {
        let found = candidates(&name, base).into_iter().find(|c| tensors.contains_key(c));
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
            return Err(pgmld_train::Error::ShapeMismatch {
                name,
                found: src.size(),
                expected: var.size(),
            }
            .into());
        }
        tch::no_grad(|| var.f_copy_(src))?;
        report.loaded.push(name);
    }
    if !missing.is_empty() {
        missing.truncate(8);
        return Err(pgmld_train::Error::MissingWeights {
            path: source.to_path_buf(),
            names: missing,
        }
        .into());
    }
    report.unused = tensors.keys().filter(|k| !used.contains(*k)).cloned().collect();
    report.unused.sort();
    Ok(report)
}

/// Copies the tensors of a safetensors file into the variables of `vs`; see
/// [`load_tensors`].
pub fn load_safetensors(
    vs: &mut nn::VarStore,
    path: impl AsRef<Path>,
    may_stay_fresh: impl Fn(&str) -> bool,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    load_tensors(vs, &tensors, path, may_stay_fresh)
}

/// Fills `vs` from the weights in checkpoint directory `dir` (any format
/// [`read_checkpoint`] reads); see [`load_tensors`].
pub fn load_checkpoint(
    vs: &mut nn::VarStore,
    dir: impl AsRef<Path>,
    may_stay_fresh: impl Fn(&str) -> bool,
) -> Result<LoadReport> {
    let (path, tensors) = read_checkpoint(dir.as_ref())?;
    load_tensors(vs, &tensors, &path, may_stay_fresh)
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

impl BertModel {
    /// Builds the encoder from `dir/config.json` and fills it from the weights in `dir`
    /// ([`load_checkpoint`]); every encoder weight must be present.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: Device) -> Result<Pretrained<Self>> {
        let dir = dir.as_ref();
        let config = Config::from_file(config_path(dir))?;
        let mut vs = nn::VarStore::new(device);
        let model = BertModel::load(vs.root(), &config);
        let report = load_checkpoint(&mut vs, dir, |_| false)?;
        Ok(Pretrained { vs, config, model, report })
    }
}

impl BertForSequenceClassification {
    /// Builds the classifier from `dir/config.json` and fills it from the weights in `dir`
    /// ([`load_checkpoint`]). `num_labels` defaults to the config's `id2label` size, else 2.
    /// The pooler and classifier are initialised fresh when the checkpoint lacks them (or,
    /// for the classifier, has another label count); the encoder must be complete.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        num_labels: Option<i64>,
        device: Device,
    ) -> Result<Pretrained<Self>> {
        let dir = dir.as_ref();
        let config = Config::from_file(config_path(dir))?;
        let n = num_labels.or(config.num_labels()).unwrap_or(2);
        let mut vs = nn::VarStore::new(device);
        let model = BertForSequenceClassification::load(vs.root(), &config, n);
        let head = |name: &str| name.starts_with("classifier.") || name.starts_with("bert.pooler.");
        let report = load_checkpoint(&mut vs, dir, head)?;
        Ok(Pretrained { vs, config, model, report })
    }
}
