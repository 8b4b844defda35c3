//! Opening a model wherever it lies: a Hugging Face directory (config.json, safetensors,
//! tokenizer.json, tokenizer_config.json, generation_config.json) or a GGUF file (or a
//! directory holding exactly one). Both give the same [`LoadedModel`]: config, weights
//! under HF names, tokenizer and chat template.

use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use crate::chat_template::{template_source_from_hf_dir, ChatTemplate};
use crate::config::TokenIds;
use crate::generate::GenerationDefaults;
use crate::gguf::GgufFile;
use crate::tokenizer::{read_json, ChatTokenizer};
use crate::weights::read_hf_weights;
use crate::{Error, LlamaConfig, Result, Weights};

/// A model ready to be built: everything [`crate::llama::Llama::load`] and generation need.
#[derive(Debug)]
pub struct LoadedModel {
    /// The architecture's shape; `eos_token_id` also holds generation_config.json's ids.
    pub config: LlamaConfig,
    /// Tensors by Hugging Face name (empty when opened without weights).
    pub weights: Weights,
    /// The model's tokenizer.
    pub tokenizer: ChatTokenizer,
    /// The model's own chat template, when it ships one ([`LoadedModel::template`] falls
    /// back to ChatML).
    pub chat_template: Option<ChatTemplate>,
    /// Sampling defaults from generation_config.json (all unset when there is none, and
    /// for GGUF files); a call's own arguments go over them.
    pub generation: GenerationDefaults,
    /// The directory or GGUF file it was read from.
    pub source: PathBuf,
}

impl LoadedModel {
    /// The chat template to use: the model's, else ChatML with its BOS/EOS.
    pub fn template(&self) -> ChatTemplate {
        self.chat_template.clone().unwrap_or_else(|| {
            let text = |t: Option<&crate::tokenizer::SpecialToken>| {
                t.map(|t| t.text.clone()).unwrap_or_default()
            };
            ChatTemplate::chatml(
                &text(self.tokenizer.bos_token()),
                &text(self.tokenizer.eos_token()),
            )
        })
    }

    /// Ids that end generation: the config's (and generation_config.json's) EOS ids and
    /// the tokenizer's EOS token (a chat model's end-of-turn).
    pub fn stop_ids(&self) -> Vec<i64> {
        let mut ids = self.config.eos_ids();
        if let Some(eos) = self.tokenizer.eos_token() {
            if !ids.contains(&eos.id) {
                ids.push(eos.id);
            }
        }
        ids
    }
}

/// How a model is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A Hugging Face directory.
    HuggingFace,
    /// A GGUF file.
    Gguf,
}

/// Options of [`open_with`].
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Where the weights go.
    pub device: Device,
    /// Float dtype for the weights: `None` keeps safetensors' stored dtype and gives f32
    /// for GGUF (dequantised).
    pub kind: Option<Kind>,
    /// `false` reads only config, tokenizer and template (cheap inspection).
    pub load_weights: bool,
}

impl OpenOptions {
    /// Weights on `device` in their natural dtype.
    pub fn new(device: Device) -> Self {
        OpenOptions { device, kind: None, load_weights: true }
    }
}

/// Which format `path` holds and the file or directory to read: a `.gguf` file, a
/// directory with config.json, or a directory holding exactly one `.gguf` file.
pub fn locate(path: &Path) -> Result<(ModelFormat, PathBuf)> {
    if path.is_file() {
        return Ok((ModelFormat::Gguf, path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file or directory"),
        ));
    }
    if path.join("config.json").is_file() {
        return Ok((ModelFormat::HuggingFace, path.to_path_buf()));
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut ggufs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("gguf")))
        .collect();
    ggufs.sort();
    match ggufs.len() {
        1 => Ok((ModelFormat::Gguf, ggufs.remove(0))),
        0 => Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither config.json nor a .gguf file in the directory",
            ),
        )),
        _ => Err(Error::Invalid(format!(
            "{} holds several GGUF files ({}); name one",
            path.display(),
            ggufs
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Opens the model at `path` (see [`locate`]) with its weights on `device`.
pub fn open(path: &Path, device: Device) -> Result<LoadedModel> {
    open_with(path, &OpenOptions::new(device))
}

/// Opens the model at `path` with explicit options.
pub fn open_with(path: &Path, options: &OpenOptions) -> Result<LoadedModel> {
    let (format, location) = locate(path)?;
    match format {
        ModelFormat::HuggingFace => open_hf_dir(&location, options),
        ModelFormat::Gguf => open_gguf(&location, options),
    }
}

fn open_hf_dir(dir: &Path, options: &OpenOptions) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut config = LlamaConfig::from_json_str(&text).map_err(|e| match e {
        Error::Json { source, .. } => {
            Error::Json { what: config_path.display().to_string(), source }
        }
        other => other,
    })?;
    let generation_path = dir.join("generation_config.json");
    let mut generation = GenerationDefaults::default();
    if generation_path.is_file() {
        let json = read_json(&generation_path)?;
        // An int or a list: every one ends generation (Llama 3 lists end-of-turn too).
        let ids: Option<TokenIds> = serde_json::from_value(json["eos_token_id"].clone()).ok();
        merge_eos(&mut config, ids.map(|i| i.to_vec()).unwrap_or_default());
        generation = GenerationDefaults::from_json(&json, &generation_path.display().to_string())?;
    }
    let tokenizer = ChatTokenizer::from_hf_dir(dir)?;
    let template = template_source_from_hf_dir(dir)?;
    let weights = if options.load_weights {
        read_hf_weights(dir, options.kind, options.device)?.1
    } else {
        Weights::new()
    };
    assemble(dir, config, weights, tokenizer, template.as_deref(), generation)
}

fn open_gguf(path: &Path, options: &OpenOptions) -> Result<LoadedModel> {
    let mut file = GgufFile::open(path)?;
    let config = file.config()?;
    let tokenizer = ChatTokenizer::from_gguf(&file)?;
    let weights = if options.load_weights {
        file.read_weights(&config, options.kind.unwrap_or(Kind::Float), options.device)?
    } else {
        Weights::new()
    };
    let template = file.get_str("tokenizer.chat_template");
    assemble(path, config, weights, tokenizer, template, GenerationDefaults::default())
}

/// The [`LoadedModel`] from what either format provides, the chat template (its Jinja
/// source, if the model has one) compiled against the tokenizer.
fn assemble(
    source: &Path,
    config: LlamaConfig,
    weights: Weights,
    tokenizer: ChatTokenizer,
    template: Option<&str>,
    generation: GenerationDefaults,
) -> Result<LoadedModel> {
    let chat_template = template.map(|t| template_for(t, &tokenizer)).transpose()?;
    Ok(LoadedModel {
        config,
        weights,
        tokenizer,
        chat_template,
        generation,
        source: source.to_path_buf(),
    })
}

fn template_for(source: &str, tokenizer: &ChatTokenizer) -> Result<ChatTemplate> {
    let text =
        |t: Option<&crate::tokenizer::SpecialToken>| t.map(|t| t.text.clone()).unwrap_or_default();
    ChatTemplate::new(source, &text(tokenizer.bos_token()), &text(tokenizer.eos_token()))
}

/// Adds `extra` ids to the config's EOS ids (kept in order, without duplicates).
fn merge_eos(config: &mut LlamaConfig, extra: Vec<i64>) {
    let mut ids = config.eos_ids();
    for id in extra {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    config.eos_token_id = match ids.len() {
        0 => None,
        1 => Some(TokenIds::One(ids[0])),
        _ => Some(TokenIds::Many(ids)),
    };
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
