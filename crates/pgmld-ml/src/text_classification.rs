//! Inference for sequence classifiers, shaped like Hugging Face's `text-classification`
//! pipeline: labels from `id2label`, softmax (or sigmoid for multi-label / single-output
//! heads), top-k, text pairs, truncation to the model's maximum length.
//!
//! Inputs are tokenized once, sorted by length and cut into batches, so a batch pads only
//! to its own longest input; scores go back in input order.

use std::path::Path;
use std::sync::Arc;

use tch::{Device, Kind};

use crate::classifier::Classifier;
use crate::error::{Error, Result};
use crate::tokenize::{Batch, TextTokenizer};

/// How logits become scores (HF `function_to_apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreFn {
    /// Probabilities over classes (single-label heads).
    Softmax,
    /// Independent probabilities (multi-label heads, single-output heads).
    Sigmoid,
    /// Raw logits.
    None,
}

impl ScoreFn {
    /// Parses HF's names (`softmax`, `sigmoid`, `none`).
    pub fn parse(name: &str) -> Option<ScoreFn> {
        match name.to_ascii_lowercase().as_str() {
            "softmax" => Some(ScoreFn::Softmax),
            "sigmoid" => Some(ScoreFn::Sigmoid),
            "none" => Some(ScoreFn::None),
            _ => None,
        }
    }

    /// Scores from one input's logits.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            ScoreFn::None => logits.to_vec(),
            ScoreFn::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            ScoreFn::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                exps.into_iter().map(|e| e / sum).collect()
            }
        }
    }
}

/// One input: a text, or a pair for text-pair classification.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyInput {
    /// The (first) text.
    pub text: String,
    /// The second text of a pair.
    pub text_pair: Option<String>,
}

/// The model's output for one input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassScores {
    /// One logit per class, in id order (turn into scores with [`ScoreFn::apply`]).
    pub logits: Vec<f32>,
    /// Tokens the input had before truncation cut it (`None` when it fitted).
    pub truncated_from: Option<usize>,
}

/// A loaded classifier with its tokenizer and label names, ready to score texts.
#[derive(Debug)]
pub struct TextClassifier {
    model: Classifier,
    tokenizer: Arc<TextTokenizer>,
    labels: Vec<String>,
    default_fn: ScoreFn,
    device: Device,
    /// Forward passes under bfloat16 autocast (see [`TextClassifier::with_bf16`]).
    bf16: bool,
}

/// `model_max_length` from tokenizer_config.json when it is a real limit (HF writes a huge
/// sentinel when there is none).
pub(crate) fn tokenizer_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("model_max_length")?.as_f64().filter(|&m| m > 0.0 && m < 1e6).map(|m| m as usize)
}

/// Label names in id order from `id2label` (`LABEL_<i>` where missing).
fn label_names(config: &serde_json::Value, n: i64) -> Vec<String> {
    let map = config.get("id2label").and_then(|m| m.as_object());
    (0..n)
        .map(|i| {
            map.and_then(|m| m.get(&i.to_string()))
                .and_then(|l| l.as_str())
                .map_or_else(|| format!("LABEL_{i}"), str::to_string)
        })
        .collect()
}

/// The tokens each input has after truncation (special tokens included): what a batch of
/// it pads to. Callers sort by it, so that each batch holds inputs of similar length.
pub fn token_counts(tokenizer: &TextTokenizer, inputs: &[ClassifyInput]) -> Result<Vec<usize>> {
    let items: Vec<(&str, Option<&str>)> =
        inputs.iter().map(|i| (i.text.as_str(), i.text_pair.as_deref())).collect();
    Ok(tokenizer.encode_items(&items)?.iter().map(|(e, _)| e.ids.len()).collect())
}

impl TextClassifier {
    /// Loads `dir` (config.json, weights, tokenizer). Fails when the checkpoint has no
    /// trained classification head: such a model was made for another task, and a
    /// freshly initialised head would only produce noise.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let model = Classifier::from_pretrained(dir, None, device)?;
        if !model.report.fresh.is_empty() {
            let architectures = model
                .config
                .get("architectures")
                .map_or_else(|| "no architectures".to_string(), |a| a.to_string());
            return Err(Error::Unsupported(format!(
                "{} has no trained text-classification head (config.json lists {architectures}; missing {})",
                dir.display(),
                model.report.fresh.join(", ")
            )));
        }
        let model_max = model.max_positions().filter(|&m| m > 0).map_or(512, |m| m as usize);
        let max_length = tokenizer_max_length(dir).map_or(model_max, |t| t.min(model_max));
        let inner = crate::vocab::tokenizer_from_dir(dir)?;
        let tokenizer = Arc::new(TextTokenizer::from_tokenizer(inner, max_length)?);
        let n = model.num_labels();
        let multi = model.config.get("problem_type").and_then(|p| p.as_str())
            == Some("multi_label_classification");
        let default_fn = if multi || n == 1 { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
        let labels = label_names(&model.config, n);
        Ok(TextClassifier { model, tokenizer, labels, default_fn, device, bf16: false })
    }

    /// Runs the forward passes under bfloat16 autocast (`torch.autocast(dtype=bfloat16)`):
    /// matrix products in bfloat16, layer norms and softmax in float32, the weights kept
    /// in float32. On a CPU with AVX512-BF16 or AMX about twice as fast; scores move by
    /// about 1e-2 at most, so a label changes only where two classes nearly tie. The first
    /// [`TextClassifier::classify`] turns autocast on for its thread for good (the weights'
    /// bfloat16 casts are then made once): give such a model a thread of its own.
    pub fn with_bf16(mut self, bf16: bool) -> Self {
        self.bf16 = bf16;
        self
    }

    /// The tokenizer, to count tokens where the model is not (see [`token_counts`]).
    pub fn tokenizer(&self) -> Arc<TextTokenizer> {
        self.tokenizer.clone()
    }

    /// Class names in id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Longest input in tokens (special tokens included); longer ones are truncated.
    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// The scoring function used when the caller names none.
    pub fn default_score_fn(&self) -> ScoreFn {
        self.default_fn
    }

    /// Bytes held by the weights, for the model cache's memory budget.
    pub fn weight_bytes(&self) -> u64 {
        crate::load::weight_bytes(&self.model.vs)
    }

    /// Logits of every input; batches hold at most `max_batch` inputs of similar length.
    pub fn classify(&self, inputs: &[ClassifyInput], max_batch: usize) -> Result<Vec<ClassScores>> {
        let items: Vec<(&str, Option<&str>)> =
            inputs.iter().map(|i| (i.text.as_str(), i.text_pair.as_deref())).collect();
        let encoded = self.tokenizer.encode_items(&items)?;
        let full_lengths = if encoded.iter().any(|(_, cut)| *cut) {
            Some(self.untruncated_lengths(&items)?)
        } else {
            None
        };
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].0.len()));
        let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
        let _guard = tch::no_grad_guard();
        if self.bf16 {
            pgmld_train::autocast_bf16_for_this_thread(self.device);
        }
        for chunk in order.chunks(max_batch.max(1)) {
            let rows: Vec<_> = chunk.iter().map(|&i| &encoded[i].0).collect();
            let batch: Batch =
                Batch::from_encoded(&rows, self.tokenizer.pad_id()).to_device(self.device);
            let scores =
                self.model.forward(&batch, false).to_kind(Kind::Float).to_device(Device::Cpu);
            let flat: Vec<f32> = Vec::<f32>::try_from(scores.flatten(0, -1))
                .map_err(|e| Error::Unsupported(format!("reading scores: {e}")))?;
            let width = self.labels.len().max(1);
            for (row, &i) in flat.chunks(width).zip(chunk) {
                out[i] = Some(row.to_vec());
            }
        }
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, s)| ClassScores {
                logits: s.unwrap_or_default(),
                truncated_from: full_lengths.as_ref().and_then(|l| l[i]),
            })
            .collect())
    }

    /// Token counts of the inputs that truncation cut, for the caller's notice.
    fn untruncated_lengths(&self, items: &[(&str, Option<&str>)]) -> Result<Vec<Option<usize>>> {
        let mut plain = self.tokenizer.inner().clone();
        plain.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        plain.with_padding(None);
        items
            .iter()
            .map(|(a, b)| {
                let enc = match b {
                    None => plain.encode(*a, true),
                    Some(b) => plain.encode((*a, *b), true),
                }
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
                let n = enc.get_ids().len();
                Ok((n > self.max_length()).then_some(n))
            })
            .collect()
    }
}

/// `scores` as (label index, score), highest first; ties keep id order.
pub fn ranked(scores: &[f32]) -> Vec<(usize, f32)> {
    let mut r: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fall_back_to_hf_names() {
        let cfg = serde_json::json!({"id2label": {"0": "negative", "2": "neutral"}});
        assert_eq!(label_names(&cfg, 3), vec!["negative", "LABEL_1", "neutral"]);
    }

    #[test]
    fn ranking_is_by_score_then_id() {
        assert_eq!(ranked(&[0.2, 0.5, 0.2, 0.1]), vec![(1, 0.5), (0, 0.2), (2, 0.2), (3, 0.1)]);
    }

    #[test]
    fn score_functions_match_torch() {
        let p = ScoreFn::Softmax.apply(&[1.0, 2.0, 3.0]);
        let want = [0.09003057, 0.24472847, 0.66524096];
        assert!(p.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{p:?}");
        assert!((ScoreFn::Sigmoid.apply(&[0.0])[0] - 0.5).abs() < 1e-7);
    }

    #[test]
    fn score_fn_names() {
        assert_eq!(ScoreFn::parse("Softmax"), Some(ScoreFn::Softmax));
        assert_eq!(ScoreFn::parse("none"), Some(ScoreFn::None));
        assert_eq!(ScoreFn::parse("relu"), None);
    }
}
