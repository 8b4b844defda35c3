//! Sentence embeddings as `sentence-transformers` computes them: an encoder's token states,
//! pooled (the modes of `1_Pooling/config.json`), then L2-normalised when the model's
//! `modules.json` ends with a `Normalize` module.
//!
//! A directory without `modules.json` (a plain Hugging Face checkpoint) gets what
//! `SentenceTransformer(dir)` gives it: mean pooling, no normalisation. The longest input is
//! `max_seq_length` of `sentence_bert_config.json`, else the model's and tokenizer's limit.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{nn, Device, Kind, Tensor};

use crate::bert::{BertModel, Config as BertConfig};
use crate::classifier::Architecture;
use crate::config::read_json;
use crate::distilbert::{Config as DistilBertConfig, DistilBertModel};
use crate::error::{Error, Result};
use crate::load::load_checkpoint;
use crate::roberta::{self, RobertaModel};
use crate::tokenize::{Batch, TextTokenizer};

/// The encoder under the pooling.
#[derive(Debug)]
enum Base {
    Bert(BertModel),
    DistilBert(DistilBertModel),
    Roberta(RobertaModel),
}

/// Which token states make the sentence vector (`1_Pooling/config.json`); several modes
/// are concatenated in sentence-transformers' order: cls, max, mean, mean_sqrt_len.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Pooling {
    /// The first token's state.
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    /// The element-wise maximum over real tokens.
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    /// The mean over real tokens.
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    /// The sum over real tokens divided by the square root of their number.
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    /// Position-weighted mean (not supported: an error names it).
    #[serde(default)]
    pub pooling_mode_weightedmean_tokens: bool,
    /// The last real token's state (not supported: an error names it).
    #[serde(default)]
    pub pooling_mode_lasttoken: bool,
}

impl Pooling {
    /// Mean pooling, sentence-transformers' choice for a model without a pooling config.
    pub fn mean() -> Self {
        Pooling { pooling_mode_mean_tokens: true, ..Pooling::default() }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let unsupported = [
            (self.pooling_mode_weightedmean_tokens, "pooling_mode_weightedmean_tokens"),
            (self.pooling_mode_lasttoken, "pooling_mode_lasttoken"),
        ];
        if let Some((_, name)) = unsupported.iter().find(|(on, _)| *on) {
            return Err(Error::Unsupported(format!(
                "{}: {name} (supported: cls_token, max_tokens, mean_tokens, mean_sqrt_len_tokens)",
                path.display()
            )));
        }
        let any = self.pooling_mode_cls_token
            || self.pooling_mode_max_tokens
            || self.pooling_mode_mean_tokens
            || self.pooling_mode_mean_sqrt_len_tokens;
        if !any {
            return Err(Error::Unsupported(format!(
                "{} turns every pooling mode off",
                path.display()
            )));
        }
        Ok(())
    }

    /// `[batch, seq, hidden]` token states and the `[batch, seq]` 0/1 mask → sentence
    /// vectors `[batch, hidden × modes]`.
    pub fn apply(&self, tokens: &Tensor, attention_mask: &Tensor) -> Tensor {
        let mask = attention_mask.to_kind(tokens.kind()).unsqueeze(-1);
        let mut parts = Vec::new();
        if self.pooling_mode_cls_token {
            parts.push(tokens.select(1, 0));
        }
        if self.pooling_mode_max_tokens {
            let masked = tokens.masked_fill(&mask.eq(0.0), -1e9);
            parts.push(masked.amax([1].as_slice(), false));
        }
        if self.pooling_mode_mean_tokens || self.pooling_mode_mean_sqrt_len_tokens {
            let sum = (tokens * &mask).sum_dim_intlist(1, false, None);
            let count = mask.sum_dim_intlist(1, false, None).clamp_min(1e-9);
            if self.pooling_mode_mean_tokens {
                parts.push(&sum / &count);
            }
            if self.pooling_mode_mean_sqrt_len_tokens {
                parts.push(&sum / count.sqrt());
            }
        }
        Tensor::cat(&parts, 1)
    }
}

/// One entry of `modules.json`.
#[derive(Debug, Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `sentence_bert_config.json`.
#[derive(Debug, Default, Deserialize)]
struct SentenceConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// What `modules.json` describes: where the encoder lives, its pooling, normalisation.
#[derive(Debug)]
struct Layout {
    encoder_dir: PathBuf,
    pooling: Pooling,
    normalize: bool,
}

fn layout(dir: &Path) -> Result<Layout> {
    let mut out =
        Layout { encoder_dir: dir.to_path_buf(), pooling: Pooling::mean(), normalize: false };
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(out);
    }
    let modules: Vec<Module> = read_json(&modules_path)?;
    for m in &modules {
        let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
        let path = dir.join(&m.path);
        match kind {
            "Transformer" => out.encoder_dir = path,
            "Pooling" => {
                let cfg = path.join("config.json");
                out.pooling = read_json(&cfg)?;
                out.pooling.check(&cfg)?;
            }
            "Normalize" => out.normalize = true,
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: module {other} (supported: Transformer, Pooling, Normalize)",
                    modules_path.display()
                )))
            }
        }
    }
    Ok(out)
}

/// A sentence-transformers model: encoder, tokenizer, pooling and normalisation.
#[derive(Debug)]
pub struct SentenceEncoder {
    vs: nn::VarStore,
    base: Base,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    normalize: bool,
    lower_case: bool,
    device: Device,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers directory (or a plain checkpoint: mean pooling).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let layout = layout(dir)?;
        let enc_dir = &layout.encoder_dir;
        let config: serde_json::Value = read_json(&enc_dir.join("config.json"))?;
        let arch = Architecture::detect(&config)?;
        let mut vs = nn::VarStore::new(device);
        let parse_err = |e: serde_json::Error| {
            Error::Unsupported(format!("{}: {e}", enc_dir.join("config.json").display()))
        };
        let (base, model_max) = match arch {
            Architecture::Bert => {
                let cfg: BertConfig = serde_json::from_value(config).map_err(parse_err)?;
                cfg.validate()?;
                (Base::Bert(BertModel::load(vs.root(), &cfg)), cfg.max_position_embeddings)
            }
            Architecture::DistilBert => {
                let cfg: DistilBertConfig = serde_json::from_value(config).map_err(parse_err)?;
                cfg.validate()?;
                let max = cfg.max_position_embeddings;
                (Base::DistilBert(DistilBertModel::load(vs.root(), &cfg)), max)
            }
            Architecture::Roberta => {
                let cfg: roberta::Config = serde_json::from_value(config).map_err(parse_err)?;
                roberta::validate(&cfg)?;
                (Base::Roberta(RobertaModel::load(vs.root(), &cfg)), roberta::max_positions(&cfg))
            }
        };
        load_checkpoint(&mut vs, enc_dir, |_| false)?;
        vs.freeze();
        let st_path = enc_dir.join("sentence_bert_config.json");
        let st: SentenceConfig =
            if st_path.is_file() { read_json(&st_path)? } else { SentenceConfig::default() };
        let model_max = usize::try_from(model_max).unwrap_or(512).max(1);
        let max_length = st
            .max_seq_length
            .or_else(|| crate::text_classification::tokenizer_max_length(enc_dir))
            .map_or(model_max, |m| m.min(model_max));
        let tokenizer =
            TextTokenizer::from_tokenizer(crate::vocab::tokenizer_from_dir(enc_dir)?, max_length)?;
        Ok(SentenceEncoder {
            vs,
            base,
            tokenizer,
            pooling: layout.pooling,
            normalize: layout.normalize,
            lower_case: st.do_lower_case,
            device,
        })
    }

    /// Longest input in tokens (special tokens included); longer ones are truncated.
    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// Whether the model normalises its vectors (a `Normalize` module).
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Bytes held by the weights, for the model cache's memory budget.
    pub fn weight_bytes(&self) -> u64 {
        crate::load::weight_bytes(&self.vs)
    }

    fn token_states(&self, batch: &Batch) -> Tensor {
        let mask = Some(&batch.attention_mask);
        match &self.base {
            Base::Bert(m) => m.forward(&batch.input_ids, mask, Some(&batch.token_type_ids), false),
            Base::DistilBert(m) => m.forward(&batch.input_ids, mask, None, false),
            Base::Roberta(m) => m.forward(&batch.input_ids, mask, None, false),
        }
    }

    /// One vector per text, in input order; batches hold at most `max_batch` texts of
    /// similar length. `normalize` forces L2 normalisation (sentence-transformers'
    /// `normalize_embeddings`) on a model that does not normalise by itself.
    pub fn embed(
        &self,
        texts: &[String],
        max_batch: usize,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let lowered: Vec<String>;
        let texts: &[String] = if self.lower_case {
            lowered = texts.iter().map(|t| t.to_lowercase()).collect();
            &lowered
        } else {
            texts
        };
        let encoded = self.tokenizer.encode_unpadded(texts)?;
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let _guard = tch::no_grad_guard();
        for chunk in order.chunks(max_batch.max(1)) {
            let rows: Vec<_> = chunk.iter().map(|&i| &encoded[i]).collect();
            let batch = Batch::from_encoded(&rows, self.tokenizer.pad_id()).to_device(self.device);
            let states = self.token_states(&batch).to_kind(Kind::Float);
            let mut vectors = self.pooling.apply(&states, &batch.attention_mask);
            if self.normalize || normalize {
                let norms = vectors.norm_scalaropt_dim(2, [1].as_slice(), true).clamp_min(1e-12);
                vectors /= norms;
            }
            let (n, width) = vectors.size2().map_err(|e| Error::Unsupported(e.to_string()))?;
            let flat = Vec::<f32>::try_from(vectors.to_device(Device::Cpu).flatten(0, -1))
                .map_err(|e| Error::Unsupported(format!("reading embeddings: {e}")))?;
            debug_assert_eq!(n as usize, chunk.len());
            for (row, &i) in flat.chunks(width as usize).zip(chunk) {
                out[i] = row.to_vec();
            }
        }
        Ok(out)
    }
}
