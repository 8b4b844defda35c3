//! Weight files other than `model.safetensors`: `pytorch_model.bin` (torch.save zip and
//! legacy formats, written by `tests/torch_save.py` exactly as torch lays them out) and
//! sharded indexes. Each must give the same model as the safetensors checkpoint.

mod common;

use std::path::Path;

use common::{ids, matrix, max_abs_diff, python, rows, temp_dir};
use pgmld_ml::{Batch, BertModel, Classifier};
use pgmld_train::weights_file::{read_checkpoint, WEIGHT_FILES};
use tch::{Device, Kind, Tensor};

fn batch() -> Batch {
    let input_ids = ids(&[&[1, 5, 6, 7, 8, 2], &[1, 10, 11, 2, 0, 0]]);
    let attention_mask = input_ids.ne(0).to_kind(Kind::Int64);
    Batch { token_type_ids: attention_mask.zeros_like(), input_ids, attention_mask }
}

/// A tiny DistilBERT checkpoint in `dir` (safetensors); returns the numpy logits.
fn safetensors_model(dir: &Path) -> Tensor {
    let b = batch();
    let req = serde_json::json!({
        "input_ids": rows(&b.input_ids),
        "attention_mask": rows(&b.attention_mask),
    });
    matrix(&python("distilbert_ref.py", &[dir, Path::new("seqcls")], &req)["logits"])
}

fn torch_save(args: &[&str]) {
    let args: Vec<&Path> = args.iter().map(Path::new).collect();
    python("torch_save.py", &args, &serde_json::Value::Null);
}

fn logits(dir: &Path) -> (Classifier, Tensor) {
    let model = Classifier::from_pretrained(dir, None, Device::Cpu).unwrap();
    let l = tch::no_grad(|| model.forward(&batch(), false));
    (model, l)
}

fn check_same_model(tag: &str, dir: &Path, reference: &Tensor, numpy: &Tensor) -> Classifier {
    let (model, got) = logits(dir);
    let diff = max_abs_diff(&got, reference);
    let to_numpy = max_abs_diff(&got, numpy);
    eprintln!("{tag}: max |logits - safetensors| = {diff:e}, |logits - numpy| = {to_numpy:e}");
    assert!(diff < 1e-6, "{tag}: logits differ from the safetensors model by {diff}");
    assert!(to_numpy < 1e-4, "{tag}: logits differ from numpy by {to_numpy}");
    assert!(model.report.fresh.is_empty(), "{tag}: {:?}", model.report.fresh);
    model
}

fn bin_format(fmt: &str) {
    let src = temp_dir(&format!("ckpt-{fmt}-src"));
    let dst = temp_dir(&format!("ckpt-{fmt}-bin"));
    let numpy = safetensors_model(&src);
    let (_, reference) = logits(&src);
    torch_save(&["bin", src.to_str().unwrap(), dst.to_str().unwrap(), fmt]);
    assert!(!dst.join("model.safetensors").exists());
    let (path, tensors) = read_checkpoint(&dst).unwrap();
    assert_eq!(path, dst.join("pytorch_model.bin"));
    // Stored transposed (strided) and at offsets in a shared bias storage, yet equal.
    let st: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(src.join("model.safetensors")).unwrap().into_iter().collect();
    for (name, t) in &st {
        assert_eq!(max_abs_diff(&tensors[name], t), 0.0, "{name}");
    }
    let model = check_same_model(fmt, &dst, &reference, &numpy);
    assert_eq!(model.report.unused, vec!["tied.weight"]);
}

#[test]
fn pytorch_model_bin_zip_matches_safetensors() {
    bin_format("zip");
}

#[test]
fn pytorch_model_bin_legacy_matches_safetensors() {
    bin_format("legacy");
}

#[test]
fn sharded_indexes_match_safetensors() {
    let src = temp_dir("ckpt-shard-src");
    let numpy = safetensors_model(&src);
    let (_, reference) = logits(&src);
    for (kind, index) in
        [("safetensors", "model.safetensors.index.json"), ("bin", "pytorch_model.bin.index.json")]
    {
        let dst = temp_dir(&format!("ckpt-shard-{kind}"));
        torch_save(&["shard", src.to_str().unwrap(), dst.to_str().unwrap(), kind, "3"]);
        let (path, _) = read_checkpoint(&dst).unwrap();
        assert_eq!(path, dst.join(index));
        check_same_model(kind, &dst, &reference, &numpy);
        // A missing shard is an error naming it.
        let shard = if kind == "bin" {
            "pytorch_model-00002-of-00003.bin"
        } else {
            "model-00002-of-00003.safetensors"
        };
        std::fs::remove_file(dst.join(shard)).unwrap();
        let err = read_checkpoint(&dst).unwrap_err().to_string();
        assert!(err.contains(shard), "{err}");
    }
}

#[test]
fn storage_dtypes_offsets_strides_and_sharing() {
    let dir = temp_dir("ckpt-dtypes");
    torch_save(&["dtypes", dir.to_str().unwrap()]);
    let (_, got) = read_checkpoint(&dir).unwrap();
    let want = Tensor::read_safetensors(dir.join("expected.safetensors")).unwrap();
    assert_eq!(got.len(), want.len());
    let kinds = [
        ("half", Kind::Half),
        ("bf16", Kind::BFloat16),
        ("double", Kind::Double),
        ("long", Kind::Int64),
        ("bool", Kind::Bool),
        ("offset_view", Kind::Float),
        ("scalar", Kind::Float),
    ];
    for (name, kind) in kinds {
        assert_eq!(got[name].kind(), kind, "{name}");
    }
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!(g.size(), w.size(), "{name}");
        let equal = g.to_kind(Kind::Double).eq_tensor(&w.to_kind(Kind::Double)).all();
        assert!(bool::try_from(equal).unwrap(), "{name}: {g} vs {w}");
    }
}

#[test]
fn preference_order_and_errors() {
    let dir = temp_dir("ckpt-errors");
    let err = read_checkpoint(&dir).unwrap_err();
    assert!(matches!(err, pgmld_train::Error::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    for f in WEIGHT_FILES {
        assert!(msg.contains(f), "{msg} lacks {f}");
    }
    // Both present: model.safetensors wins, as in transformers.
    let _ = safetensors_model(&dir);
    std::fs::write(dir.join("pytorch_model.bin"), b"garbage").unwrap();
    let (path, _) = read_checkpoint(&dir).unwrap();
    assert_eq!(path, dir.join("model.safetensors"));
    // A corrupt .bin alone is an error, not a panic.
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = Classifier::from_pretrained(&dir, None, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&[0; 40]);
    std::fs::write(dir.join("pytorch_model.bin"), zip).unwrap();
    assert!(read_checkpoint(&dir).is_err());
    // Truncated legacy pickle.
    std::fs::write(dir.join("pytorch_model.bin"), b"\x80\x02\x8a\x0a\x6c\xfc").unwrap();
    assert!(read_checkpoint(&dir).is_err());
    // The BERT loaders read the same files.
    assert!(BertModel::from_pretrained(&dir, Device::Cpu).is_err());
}
