//! Reading the weights of a Hugging Face checkpoint directory into named tensors.
//!
//! Files are looked for in `transformers`' order of preference ([`WEIGHT_FILES`]):
//! `model.safetensors`, a sharded `model.safetensors.index.json`, `pytorch_model.bin`, a
//! sharded `pytorch_model.bin.index.json`. `.bin` files are `torch.save` pickles of a
//! state dict, read without Python or TorchScript: both the zip format (PyTorch >= 1.6:
//! `*/data.pkl` + `*/data/<key>`) and the legacy sequential format, with float32/16,
//! bfloat16, float64 and integer storages, storage offsets, strides and shared storages.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::error::{Error, Result};

mod pickle;

/// Weight files looked for by [`read_checkpoint`], most preferred first.
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Reads every tensor of the checkpoint in `dir` (CPU, dtype as stored). Returns the file
/// read (the index for sharded checkpoints) and the tensors by name. Fails with
/// [`Error::Io`] naming `dir` and the files looked for when none exists.
pub fn read_checkpoint(dir: &Path) -> Result<(PathBuf, HashMap<String, Tensor>)> {
    for name in WEIGHT_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let tensors = if name.ends_with(".index.json") {
            read_sharded(&path)?
        } else {
            read_weights_file(&path)?
        };
        return Ok((path, tensors));
    }
    Err(Error::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no model weights; looked for {}", WEIGHT_FILES.join(", ")),
        ),
    })
}

/// Reads one weight file: safetensors when the name ends in `.safetensors`, else a
/// `torch.save` state dict.
pub fn read_weights_file(path: &Path) -> Result<HashMap<String, Tensor>> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        Ok(Tensor::read_safetensors(path)?.into_iter().collect())
    } else {
        read_torch_file(path)
    }
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("checkpoint {}: {msg}", path.display()))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Reads a sharded checkpoint from its index (`{"weight_map": {tensor: shard file}}`);
/// shards are files beside the index.
pub fn read_sharded(index: &Path) -> Result<HashMap<String, Tensor>> {
    let text = std::fs::read_to_string(index).map_err(io_err(index))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|source| Error::Config { path: index.to_path_buf(), source })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad(index, "no weight_map object"))?;
    let mut shards = BTreeSet::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(index, format!("weight_map[{name:?}] is not a file name")))?;
        if file.is_empty() || file.contains(['/', '\\']) || file == ".." {
            return Err(bad(index, format!("shard {file:?} is not a file beside the index")));
        }
        shards.insert(file);
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut out = HashMap::new();
    for shard in shards {
        out.extend(read_weights_file(&dir.join(shard))?);
    }
    Ok(out)
}

/// Reads a `torch.save`d state dict (`pytorch_model.bin`), zip or legacy format.
pub fn read_torch_file(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let refs = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(path, &bytes)?
    } else if bytes.starts_with(b"\x80") {
        read_legacy(path, &bytes)?
    } else {
        return Err(bad(path, "neither a torch zip archive nor a legacy torch pickle"));
    };
    Ok(refs)
}

fn check_ref(t: &pickle::TensorRef) -> std::result::Result<(), String> {
    if t.offset < 0 || t.size.len() != t.stride.len() || t.size.iter().any(|&s| s < 0) {
        return Err(format!("bad tensor layout {t:?}"));
    }
    if t.size.contains(&0) {
        return Ok(());
    }
    let mut last = t.offset;
    for (&n, &s) in t.size.iter().zip(&t.stride) {
        if s < 0 {
            return Err(format!("negative stride in {t:?}"));
        }
        last = (n - 1)
            .checked_mul(s)
            .and_then(|x| x.checked_add(last))
            .ok_or_else(|| format!("tensor layout overflows: {t:?}"))?;
    }
    if last >= t.storage.numel {
        return Err(format!("tensor exceeds its storage: {t:?}"));
    }
    Ok(())
}

/// Builds the named tensors of `refs`, taking storage bytes from `storage(key, nbytes)`.
fn materialize(
    path: &Path,
    refs: Vec<(String, pickle::TensorRef)>,
    mut storage: impl FnMut(&pickle::StorageRef) -> Result<Vec<u8>>,
) -> Result<HashMap<String, Tensor>> {
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = HashMap::new();
    for (name, t) in refs {
        check_ref(&t).map_err(|m| bad(path, format!("{name}: {m}")))?;
        if !storages.contains_key(&t.storage.key) {
            let bytes = storage(&t.storage)?;
            let need = t.storage.nbytes();
            if bytes.len() < need {
                return Err(bad(
                    path,
                    format!("storage {} has {} bytes, needs {need}", t.storage.key, bytes.len()),
                ));
            }
            let s = Tensor::f_from_data_size(&bytes[..need], &[t.storage.numel], t.storage.kind)?;
            storages.insert(t.storage.key.clone(), s);
        }
        let s = &storages[&t.storage.key];
        let view = s.f_as_strided(t.size.as_slice(), t.stride.as_slice(), t.offset)?;
        out.insert(name, view.f_contiguous()?);
    }
    Ok(out)
}

fn read_zip(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Tensor>> {
    let zip_err = |e: zip::result::ZipError| bad(path, format!("zip archive: {e}"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(zip_err)?;
    let pkl = zip
        .file_names()
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or_else(|| bad(path, "zip archive has no data.pkl"))?;
    let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
    let mut entry = |name: &str| -> Result<Option<Vec<u8>>> {
        let mut f = match zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(zip_err(e)),
        };
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf).map_err(io_err(path))?;
        Ok(Some(buf))
    };
    if let Some(order) = entry(&format!("{prefix}byteorder"))? {
        if order.trim_ascii() != b"little" {
            return Err(bad(path, "big-endian tensor data is not supported"));
        }
    }
    let data = entry(&pkl)?.ok_or_else(|| bad(path, "data.pkl unreadable"))?;
    let mut un = pickle::Unpickler::new(&data);
    let value = un.load().map_err(|m| bad(path, m))?;
    let refs = pickle::state_dict(value).map_err(|m| bad(path, m))?;
    materialize(path, refs, |s| {
        let name = format!("{prefix}data/{}", s.key);
        entry(&name)?.ok_or_else(|| bad(path, format!("missing storage entry {name}")))
    })
}

/// `0x1950a86a20f9469cfc6c` as pickled (LONG1, little-endian): the legacy format's magic.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn read_legacy(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Tensor>> {
    let err = |m: String| bad(path, format!("legacy torch format: {m}"));
    let mut un = pickle::Unpickler::new(bytes);
    match un.load().map_err(err)? {
        pickle::Value::BigInt(b) if b == LEGACY_MAGIC => {}
        _ => return Err(bad(path, "not a torch.save file (bad magic number)")),
    }
    let _protocol = un.load().map_err(err)?;
    let sys_info = un.load().map_err(err)?;
    if let pickle::Value::Dict(items) = &sys_info {
        let big = items.iter().any(|(k, v)| {
            matches!((k, v), (pickle::Value::Str(k), pickle::Value::Bool(false)) if k == "little_endian")
        });
        if big {
            return Err(bad(path, "big-endian tensor data is not supported"));
        }
    }
    let value = un.load().map_err(err)?;
    let keys = match un.load().map_err(err)? {
        pickle::Value::List(k) => k,
        _ => return Err(bad(path, "legacy torch format: no storage key list")),
    };
    // Raw storages follow in key order, each an int64 element count then the data.
    let mut pos = un.position();
    let mut raw: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let pickle::Value::Str(key) = key else {
            return Err(bad(path, "legacy torch format: storage key is not a string"));
        };
        let s = un
            .storages()
            .get(&key)
            .ok_or_else(|| bad(path, format!("legacy storage {key} is never used")))?;
        let header =
            bytes.get(pos..pos + 8).ok_or_else(|| bad(path, "legacy torch format: truncated"))?;
        let numel = i64::from_le_bytes(header.try_into().unwrap_or([0; 8]));
        if numel != s.numel {
            return Err(bad(
                path,
                format!("legacy storage {key}: {numel} elements, expected {}", s.numel),
            ));
        }
        let start = pos + 8;
        let end = start + s.nbytes();
        let data = bytes
            .get(start..end)
            .ok_or_else(|| bad(path, "legacy torch format: truncated storage data"))?;
        raw.insert(key, data);
        pos = end;
    }
    let refs = pickle::state_dict(value).map_err(|m| bad(path, m))?;
    materialize(path, refs, |s| {
        raw.get(&s.key)
            .map(|d| d.to_vec())
            .ok_or_else(|| bad(path, format!("legacy storage {} has no data", s.key)))
    })
}
