//! Hugging Face checkpoint weights → [`Weights`]: `model.safetensors`, or a sharded
//! `model.safetensors.index.json` with its shards (`pytorch_model.bin` checkpoints are read
//! by pgmld-ml's pickle reader). Float tensors keep their stored dtype or are converted
//! to a requested one; errors name the file at fault.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::tokenizer::read_json;
use crate::{Error, Result, Weights};

/// The safetensors layouts looked for, most preferred first.
pub const SAFETENSORS_FILES: [&str; 2] = ["model.safetensors", "model.safetensors.index.json"];

/// Reads one safetensors file (CPU, stored dtypes).
pub fn read_safetensors(path: &Path) -> Result<Weights> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such weight file"),
        ));
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| Error::Invalid(format!("cannot read safetensors {}: {e}", path.display())))?;
    Ok(tensors.into_iter().collect())
}

/// Reads a sharded checkpoint from its index (`{"weight_map": {tensor: shard}}`); shards
/// lie beside the index. Fails naming the index when a listed tensor is absent from its
/// shard.
pub fn read_sharded_safetensors(index: &Path) -> Result<Weights> {
    let json = read_json(index)?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| Error::Invalid(format!("{}: no weight_map object", index.display())))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut by_shard: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::Invalid(format!("{}: shard of {name} is not a file name", index.display()))
        })?;
        by_shard.entry(shard).or_default().push(name);
    }
    let shards: BTreeSet<&str> = by_shard.keys().copied().collect();
    let mut weights = Weights::new();
    for shard in shards {
        let path = dir.join(shard);
        let mut tensors = read_safetensors(&path)?;
        for name in &by_shard[shard] {
            let tensor = tensors.remove(*name).ok_or_else(|| {
                Error::MissingWeight(format!(
                    "{name} (listed in {} for {})",
                    index.display(),
                    path.display()
                ))
            })?;
            weights.insert(name.to_string(), tensor);
        }
    }
    Ok(weights)
}

/// Reads the weights of the Hugging Face model directory `dir` (see the module doc),
/// converts floating-point tensors to `kind` when given, and moves them to `device`.
/// Returns the file read (the index for sharded checkpoints) and the tensors.
pub fn read_hf_weights(
    dir: &Path,
    kind: Option<Kind>,
    device: Device,
) -> Result<(PathBuf, Weights)> {
    let single = dir.join(SAFETENSORS_FILES[0]);
    let index = dir.join(SAFETENSORS_FILES[1]);
    let (file, mut weights) = if single.is_file() {
        let w = read_safetensors(&single)?;
        (single, w)
    } else if index.is_file() {
        let w = read_sharded_safetensors(&index)?;
        (index, w)
    } else {
        // pytorch_model.bin (single or sharded), read without Python.
        pgmld_train::weights_file::read_checkpoint(dir)?
    };
    for tensor in weights.values_mut() {
        *tensor = convert(tensor, kind, device);
    }
    Ok((file, weights))
}

/// `tensor` on `device`, floating-point values converted to `kind` when given (integer
/// tensors, e.g. quantisation codes, keep theirs).
pub fn convert(tensor: &Tensor, kind: Option<Kind>, device: Device) -> Tensor {
    match kind {
        Some(kind) if tensor.is_floating_point() && tensor.kind() != kind => {
            tensor.to_device(device).to_kind(kind)
        }
        _ => tensor.to_device(device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pgmld-llm-weights-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            (
                "model.embed_tokens.weight".into(),
                Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]),
            ),
            ("model.norm.weight".into(), Tensor::ones([4], (Kind::BFloat16, Device::Cpu))),
            ("lm_head.weight".into(), Tensor::full([3, 4], 0.5, (Kind::Half, Device::Cpu))),
        ]
    }

    #[test]
    fn single_file_keeps_or_converts_dtypes() {
        let dir = temp_dir("single");
        Tensor::write_safetensors(&sample(), dir.join("model.safetensors")).unwrap();
        let (file, w) = read_hf_weights(&dir, None, Device::Cpu).unwrap();
        assert!(file.ends_with("model.safetensors"));
        assert_eq!(w["model.norm.weight"].kind(), Kind::BFloat16);
        assert_eq!(w["lm_head.weight"].kind(), Kind::Half);
        assert!(w["model.embed_tokens.weight"].equal(&sample()[0].1));

        let (_, w) = read_hf_weights(&dir, Some(Kind::Float), Device::Cpu).unwrap();
        assert!(w.values().all(|t| t.kind() == Kind::Float));
        assert_eq!(Vec::<f32>::try_from(&w["lm_head.weight"].flatten(0, -1)).unwrap()[0], 0.5);
    }

    #[test]
    fn sharded_index_reads_every_shard() {
        let dir = temp_dir("sharded");
        let tensors = sample();
        Tensor::write_safetensors(&tensors[..2], dir.join("model-00001-of-00002.safetensors"))
            .unwrap();
        Tensor::write_safetensors(&tensors[2..], dir.join("model-00002-of-00002.safetensors"))
            .unwrap();
        let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors"}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let (file, w) = read_hf_weights(&dir, Some(Kind::BFloat16), Device::Cpu).unwrap();
        assert!(file.ends_with("model.safetensors.index.json"));
        assert_eq!(w.len(), 3);
        assert!(w.values().all(|t| t.kind() == Kind::BFloat16));

        // A tensor listed for the wrong shard is named with the index and the shard.
        let bad = serde_json::json!({"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}});
        std::fs::write(dir.join("model.safetensors.index.json"), bad.to_string()).unwrap();
        let err = read_hf_weights(&dir, None, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("lm_head.weight") && err.contains("model-00001-of-00002"), "{err}");

        // A missing shard is an I/O error naming it.
        let missing = serde_json::json!({"weight_map": {"x": "model-00003-of-00003.safetensors"}});
        std::fs::write(dir.join("model.safetensors.index.json"), missing.to_string()).unwrap();
        let err = read_hf_weights(&dir, None, Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, .. } if path.ends_with("model-00003-of-00003.safetensors")),
            "{err}"
        );
    }

    #[test]
    fn corrupt_or_absent_files_are_named() {
        let dir = temp_dir("corrupt");
        std::fs::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
        let err = read_hf_weights(&dir, None, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        let empty = temp_dir("empty");
        let err = read_hf_weights(&empty, None, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
