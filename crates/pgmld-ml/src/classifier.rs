//! One sequence classifier over every supported encoder architecture, so training,
//! evaluation, saving and inference need not know which one a checkpoint holds.
//!
//! The architecture comes from `config.json` (`model_type`, else `architectures`), as
//! `transformers.AutoModelForSequenceClassification` decides it.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{nn, Device, Tensor};

use crate::bert::{BertForSequenceClassification, Config as BertConfig};
use crate::config::read_json;
use crate::distilbert::{Config as DistilBertConfig, DistilBertForSequenceClassification};
use crate::error::{Error, Result};
use crate::load::{load_checkpoint, LoadReport};
use crate::roberta::{self, RobertaForSequenceClassification};
use crate::tokenize::Batch;

/// Encoder families with a sequence-classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT and MiniLM (`model_type` `bert`).
    Bert,
    /// DistilBERT (`model_type` `distilbert`).
    DistilBert,
    /// RoBERTa (`model_type` `roberta`).
    Roberta,
}

impl Architecture {
    /// The architecture a `config.json` describes.
    pub fn detect(config: &serde_json::Value) -> Result<Self> {
        let model_type = config.get("model_type").and_then(|v| v.as_str());
        let arch_names: Vec<&str> = config
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let by_class = |prefix: &str| arch_names.iter().any(|a| a.starts_with(prefix));
        match model_type {
            Some("bert") => Ok(Architecture::Bert),
            Some("distilbert") => Ok(Architecture::DistilBert),
            Some("roberta") => Ok(Architecture::Roberta),
            Some(other) => Err(Error::Unsupported(format!(
                "model_type {other:?}; supported: {}",
                Self::SUPPORTED.join(", ")
            ))),
            None if by_class("Bert") => Ok(Architecture::Bert),
            None if by_class("DistilBert") => Ok(Architecture::DistilBert),
            None if by_class("Roberta") => Ok(Architecture::Roberta),
            None => Err(Error::Unsupported(format!(
                "config.json names no model_type (architectures {arch_names:?}); supported: {}",
                Self::SUPPORTED.join(", ")
            ))),
        }
    }

    /// `model_type` values accepted, for messages.
    pub const SUPPORTED: &'static [&'static str] = &["bert", "distilbert", "roberta"];

    /// The HF class name written to `architectures` when saving.
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Bert => "BertForSequenceClassification",
            Architecture::DistilBert => "DistilBertForSequenceClassification",
            Architecture::Roberta => "RobertaForSequenceClassification",
        }
    }

    /// Whether variable `name` belongs to the task head, which a checkpoint may lack (a
    /// base or masked-LM model) or hold with another label count: it then stays fresh.
    pub fn is_head(self, name: &str) -> bool {
        match self {
            Architecture::Bert => {
                name.starts_with("classifier.") || name.starts_with("bert.pooler.")
            }
            Architecture::DistilBert => {
                name.starts_with("pre_classifier.") || name.starts_with("classifier.")
            }
            Architecture::Roberta => name.starts_with("classifier."),
        }
    }
}

/// The architecture-specific model.
#[derive(Debug)]
enum Inner {
    Bert(BertForSequenceClassification),
    DistilBert(DistilBertForSequenceClassification),
    Roberta(RobertaForSequenceClassification),
}

/// A sequence classifier with its variables and the `config.json` it was built from.
#[derive(Debug)]
pub struct Classifier {
    /// Holds every variable (the optimizer is built over it; `save` writes it).
    pub vs: nn::VarStore,
    /// Which encoder family this is.
    pub arch: Architecture,
    /// The checkpoint's `config.json`, kept whole so saving preserves every field.
    pub config: serde_json::Value,
    /// How the checkpoint weights were matched.
    pub report: LoadReport,
    inner: Inner,
    num_labels: i64,
    max_positions: i64,
}

fn labels_in(config: &serde_json::Value) -> Option<i64> {
    config.get("id2label").and_then(|m| m.as_object()).map(|m| m.len() as i64).filter(|&n| n > 0)
}

impl Classifier {
    /// Builds the model a `config` describes with `num_labels` outputs and fresh weights.
    pub fn new(config: serde_json::Value, num_labels: i64, device: Device) -> Result<Self> {
        let arch = Architecture::detect(&config)?;
        let vs = nn::VarStore::new(device);
        let parse_err = |e: serde_json::Error| {
            Error::Unsupported(format!("{} config.json: {e}", arch.class_name()))
        };
        let (inner, max_positions) = match arch {
            Architecture::Bert => {
                let cfg: BertConfig = serde_json::from_value(config.clone()).map_err(parse_err)?;
                cfg.validate()?;
                let m = BertForSequenceClassification::load(vs.root(), &cfg, num_labels);
                (Inner::Bert(m), cfg.max_position_embeddings)
            }
            Architecture::DistilBert => {
                let cfg: DistilBertConfig =
                    serde_json::from_value(config.clone()).map_err(parse_err)?;
                cfg.validate()?;
                let m = DistilBertForSequenceClassification::load(vs.root(), &cfg, num_labels);
                (Inner::DistilBert(m), cfg.max_position_embeddings)
            }
            Architecture::Roberta => {
                let cfg: roberta::Config =
                    serde_json::from_value(config.clone()).map_err(parse_err)?;
                roberta::validate(&cfg)?;
                let m = RobertaForSequenceClassification::load(vs.root(), &cfg, num_labels);
                (Inner::Roberta(m), roberta::max_positions(&cfg))
            }
        };
        Ok(Classifier {
            vs,
            arch,
            config,
            report: LoadReport::default(),
            inner,
            num_labels,
            max_positions,
        })
    }

    /// Builds the classifier from `dir/config.json` and fills it from the checkpoint in
    /// `dir` (`model.safetensors`, sharded safetensors or `pytorch_model.bin`: see
    /// [`pgmld_train::weights_file::read_checkpoint`]). `num_labels` defaults to the config's
    /// `id2label` size, else 2. The head ([`Architecture::is_head`]) is initialised fresh
    /// when the checkpoint lacks it (a base or masked-LM checkpoint) or has another label
    /// count; the encoder must be complete.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        num_labels: Option<i64>,
        device: Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config: serde_json::Value = read_json(&dir.join("config.json"))?;
        let n = num_labels.or(labels_in(&config)).unwrap_or(2);
        let mut model = Classifier::new(config, n, device)?;
        let arch = model.arch;
        model.report = load_checkpoint(&mut model.vs, dir, |name| arch.is_head(name))?;
        Ok(model)
    }

    /// Number of output classes.
    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    /// Longest input the position embeddings allow (special tokens included); for RoBERTa
    /// `max_position_embeddings - pad_token_id - 1` (512 for roberta-base).
    pub fn max_positions(&self) -> Option<i64> {
        Some(self.max_positions)
    }

    /// Logits `[batch, num_labels]` for a batch (dropout on when `train`).
    pub fn forward(&self, batch: &Batch, train: bool) -> Tensor {
        match &self.inner {
            Inner::Bert(m) => m.forward(
                &batch.input_ids,
                Some(&batch.attention_mask),
                Some(&batch.token_type_ids),
                train,
            ),
            // DistilBERT has no token types; RoBERTa's tokenizers return none (all 0).
            Inner::DistilBert(m) => m.forward(&batch.input_ids, Some(&batch.attention_mask), train),
            Inner::Roberta(m) => {
                m.forward(&batch.input_ids, Some(&batch.attention_mask), None, train)
            }
        }
    }

    /// The embedding output for a batch: the first segment of a checkpointed pass.
    pub fn embed(&self, batch: &Batch, train: bool) -> Tensor {
        match &self.inner {
            Inner::Bert(m) => m.bert().embed(&batch.input_ids, Some(&batch.token_type_ids), train),
            Inner::DistilBert(m) => m.distilbert().embed(&batch.input_ids, None, train),
            Inner::Roberta(m) => m.roberta().embed(&batch.input_ids, None, train),
        }
    }

    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        match &self.inner {
            Inner::Bert(m) => m.bert().num_layers(),
            Inner::DistilBert(m) => m.distilbert().num_layers(),
            Inner::Roberta(m) => m.roberta().num_layers(),
        }
    }

    /// Transformer layer `i` alone; `mask` is [`crate::encoder::attention_bool_mask`] of the
    /// batch's attention mask.
    pub fn layer(&self, i: usize, xs: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        match &self.inner {
            Inner::Bert(m) => m.bert().layer_forward(i, xs, mask, train),
            Inner::DistilBert(m) => m.distilbert().layer_forward(i, xs, mask, train),
            Inner::Roberta(m) => m.roberta().layer_forward(i, xs, mask, train),
        }
    }

    /// The classification head alone: `last_hidden_state` → logits.
    pub fn head(&self, hidden: &Tensor, train: bool) -> Tensor {
        match &self.inner {
            Inner::Bert(m) => m.head(hidden, train),
            Inner::DistilBert(m) => m.head(hidden, train),
            Inner::Roberta(m) => m.head(hidden, train),
        }
    }

    /// Mean cross-entropy of `logits` `[batch, num_labels]` against int64 `labels`.
    pub fn loss(logits: &Tensor, labels: &Tensor) -> Tensor {
        logits.cross_entropy_for_logits(labels)
    }

    /// `config.json` for the trained model: the original fields plus the label mapping
    /// (`id2label`, `label2id`) and this head's `architectures`.
    pub fn config_with_labels(&self, labels: &[String]) -> serde_json::Value {
        let mut cfg = self.config.clone();
        let id2label: BTreeMap<String, String> =
            labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect();
        let label2id: BTreeMap<String, i64> =
            labels.iter().enumerate().map(|(i, l)| (l.clone(), i as i64)).collect();
        if let Some(obj) = cfg.as_object_mut() {
            obj.insert("id2label".into(), serde_json::json!(id2label));
            obj.insert("label2id".into(), serde_json::json!(label2id));
            obj.insert("architectures".into(), serde_json::json!([self.arch.class_name()]));
            obj.remove("num_labels");
        }
        cfg
    }

    /// Writes `config.json` (with `labels` as id2label) and `model.safetensors` into `dir`.
    pub fn save(&self, dir: impl AsRef<Path>, labels: &[String]) -> Result<()> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::io(path, source)
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cfg_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config_with_labels(labels))
            .map_err(|e| Error::Unsupported(e.to_string()))?;
        std::fs::write(&cfg_path, text).map_err(io(&cfg_path))?;
        self.vs.save(dir.join("model.safetensors"))?;
        Ok(())
    }
}
