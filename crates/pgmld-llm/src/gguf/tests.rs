use std::path::PathBuf;

use gguf_rs_lib::builder::GGUFBuilder;
use gguf_rs_lib::format::metadata::MetadataValue;
use gguf_rs_lib::tensor::TensorType;

use super::test_support::{smollm2_path, strings, temp_dir};
use super::*;
use half::f16;

/// A two-layer llama-architecture file: hidden 8, 2 heads of 4, 1 kv head, ffn 12,
/// vocab 5, F32 weights whose values are their flat index (so permutations show).
fn tiny_llama(version_2: bool, with_output: bool) -> PathBuf {
    let (h, ffn, vocab, kv_dim) = (8u64, 12u64, 5u64, 4u64);
    let mut b = GGUFBuilder::new()
        .add_metadata("general.architecture", MetadataValue::String("llama".into()))
        .add_metadata("llama.embedding_length", MetadataValue::U32(h as u32))
        .add_metadata("llama.block_count", MetadataValue::U32(2))
        .add_metadata("llama.feed_forward_length", MetadataValue::U32(ffn as u32))
        .add_metadata("llama.attention.head_count", MetadataValue::U32(2))
        .add_metadata("llama.attention.head_count_kv", MetadataValue::U32(1))
        .add_metadata("llama.attention.layer_norm_rms_epsilon", MetadataValue::F32(1e-5))
        .add_metadata("llama.rope.freq_base", MetadataValue::F32(100000.0))
        .add_metadata("llama.context_length", MetadataValue::U32(64))
        .add_metadata("tokenizer.ggml.tokens", strings(&["a", "b", "c", "d", "e"]))
        .add_metadata("tokenizer.ggml.bos_token_id", MetadataValue::U32(1))
        .add_metadata("tokenizer.ggml.eos_token_id", MetadataValue::U32(2));
    let iota = |n: u64| (0..n).map(|i| i as f32).collect::<Vec<_>>();
    let add = |b: GGUFBuilder, name: &str, ne: Vec<u64>| {
        let n = ne.iter().product();
        b.add_f32_tensor(name, ne, iota(n)).unwrap()
    };
    b = add(b, "token_embd.weight", vec![h, vocab]);
    b = add(b, "output_norm.weight", vec![h]);
    if with_output {
        b = add(b, "output.weight", vec![h, vocab]);
    }
    for l in 0..2 {
        b = add(b, &format!("blk.{l}.attn_q.weight"), vec![h, h]);
        b = add(b, &format!("blk.{l}.attn_k.weight"), vec![h, kv_dim]);
        b = add(b, &format!("blk.{l}.attn_v.weight"), vec![h, kv_dim]);
        b = add(b, &format!("blk.{l}.attn_output.weight"), vec![h, h]);
        b = add(b, &format!("blk.{l}.ffn_gate.weight"), vec![h, ffn]);
        b = add(b, &format!("blk.{l}.ffn_up.weight"), vec![h, ffn]);
        b = add(b, &format!("blk.{l}.ffn_down.weight"), vec![ffn, h]);
        b = add(b, &format!("blk.{l}.attn_norm.weight"), vec![h]);
        b = add(b, &format!("blk.{l}.ffn_norm.weight"), vec![h]);
    }
    let (mut bytes, _) = b.build_to_bytes().unwrap();
    if version_2 {
        bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    }
    let path = temp_dir(&format!("tiny-{version_2}-{with_output}")).join("tiny.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn tiny_llama_config_and_weights() {
    for version_2 in [false, true] {
        let path = tiny_llama(version_2, false);
        let mut file = GgufFile::open(&path).unwrap();
        assert_eq!(file.version(), if version_2 { 2 } else { 3 });
        let cfg = file.config().unwrap();
        assert_eq!(
            (
                cfg.hidden_size,
                cfg.num_hidden_layers,
                cfg.intermediate_size,
                cfg.num_attention_heads
            ),
            (8, 2, 12, 2)
        );
        assert_eq!((cfg.num_kv_heads(), cfg.head_dim(), cfg.vocab_size), (1, 4, 5));
        assert!(cfg.tie_word_embeddings);
        assert_eq!(cfg.rope_theta, 100000.0);
        assert_eq!(cfg.max_position_embeddings, 64);
        assert!((cfg.rms_norm_eps - 1e-5).abs() < 1e-9);
        assert_eq!(cfg.eos_ids(), vec![2]);
        assert!(cfg.rope_scaling.is_none());

        let w = file.read_weights(&cfg, Kind::Float, Device::Cpu).unwrap();
        assert_eq!(w.len(), 2 + 2 * 9);
        assert!(!w.contains_key("lm_head.weight"));
        assert_eq!(w["model.embed_tokens.weight"].size(), vec![5, 8]);
        assert_eq!(w["model.layers.1.mlp.down_proj.weight"].size(), vec![8, 12]);
        assert_eq!(w["model.layers.0.self_attn.k_proj.weight"].size(), vec![4, 8]);
        // Row r of the stored q_proj holds r*8..r*8+8; per head of 4 rows the stored order
        // is HF rows [0, 2, 1, 3], so HF row 1 is stored row 2.
        let q = &w["model.layers.0.self_attn.q_proj.weight"];
        let first_col: Vec<f32> = Vec::try_from(q.select(1, 0)).unwrap();
        assert_eq!(first_col, vec![0., 16., 8., 24., 32., 48., 40., 56.]);
        // v_proj is not permuted.
        let v: Vec<f32> =
            Vec::try_from(w["model.layers.0.self_attn.v_proj.weight"].select(1, 0)).unwrap();
        assert_eq!(v, vec![0., 8., 16., 24.]);
    }
}

#[test]
fn untied_output_and_kind_conversion() {
    let path = tiny_llama(false, true);
    let mut file = GgufFile::open(&path).unwrap();
    let cfg = file.config().unwrap();
    assert!(!cfg.tie_word_embeddings);
    let w = file.read_weights(&cfg, Kind::BFloat16, Device::Cpu).unwrap();
    assert_eq!(w["lm_head.weight"].kind(), Kind::BFloat16);
    assert_eq!(w["lm_head.weight"].size(), vec![5, 8]);
}

#[test]
fn quantized_tensor_is_dequantised_in_torch_shape() {
    // One Q8_0 row of 32 and a 2x32 Q4_0 matrix.
    let mut q8 = f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
    q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let mut q4 = Vec::new();
    for d in [1.0f32, 2.0] {
        q4.extend(f16::from_f32(d).to_bits().to_le_bytes());
        q4.extend([0x98u8; 16]); // low nibble 8 → 0, high nibble 9 → 1
    }
    let (bytes, _) = GGUFBuilder::new()
        .add_metadata("general.architecture", MetadataValue::String("llama".into()))
        .add_quantized_tensor("a", vec![32], TensorType::Q8_0, q8)
        .unwrap()
        .add_quantized_tensor("b", vec![32, 2], TensorType::Q4_0, q4)
        .unwrap()
        .build_to_bytes()
        .unwrap();
    let path = temp_dir("quant").join("q.gguf");
    std::fs::write(&path, bytes).unwrap();
    let mut file = GgufFile::open(&path).unwrap();
    let a: Vec<f32> = Vec::try_from(file.read_tensor("a", Kind::Float).unwrap()).unwrap();
    assert_eq!(a[0], -8.0);
    assert_eq!(a[31], 7.5);
    let b = file.read_tensor("b", Kind::Float).unwrap();
    assert_eq!(b.size(), vec![2, 32]);
    let row1: Vec<f32> = Vec::try_from(b.get(1)).unwrap();
    assert_eq!(&row1[..2], &[0.0, 0.0]);
    assert_eq!(&row1[16..18], &[2.0, 2.0]);
    let err = file.read_tensor("missing", Kind::Float).unwrap_err();
    assert!(matches!(err, Error::MissingWeight(_)), "{err}");
}

#[test]
fn not_gguf_and_bad_versions_are_named() {
    let dir = temp_dir("bad");
    let not = dir.join("not.gguf");
    std::fs::write(&not, b"PK\x03\x04 not a gguf file").unwrap();
    let err = GgufFile::open(&not).unwrap_err().to_string();
    assert!(err.contains("not.gguf") && err.contains("magic"), "{err}");
    let v1 = dir.join("v1.gguf");
    std::fs::write(&v1, b"GGUF\x01\x00\x00\x00rest").unwrap();
    let err = GgufFile::open(&v1).unwrap_err().to_string();
    assert!(err.contains("version 1"), "{err}");
    let err = GgufFile::open(&dir.join("absent.gguf")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn llama3_rope_divisors_are_recognised() {
    let d = config::llama3_divisors(500000.0, 64, 8.0, 1.0, 4.0, 8192.0);
    assert_eq!(d.len(), 32);
    assert_eq!(d[0], 1.0); // highest frequency kept
    assert_eq!(d[31], 8.0); // lowest divided by the factor
    assert!(d.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn smollm2_metadata_gives_its_config() {
    let Some(path) = smollm2_path() else { return };
    let mut file = GgufFile::open(&path).unwrap();
    assert_eq!(file.architecture().unwrap(), "llama");
    let cfg = file.config().unwrap();
    assert_eq!(cfg.model_type, "llama");
    assert_eq!(cfg.num_hidden_layers, 30);
    assert_eq!(cfg.hidden_size, 576);
    assert_eq!(cfg.num_attention_heads, 9);
    assert_eq!(cfg.num_kv_heads(), 3);
    assert_eq!(cfg.head_dim(), 64);
    assert_eq!(cfg.intermediate_size, 1536);
    assert_eq!(cfg.vocab_size, 49152);
    assert!(cfg.tie_word_embeddings);
    assert_eq!(cfg.rope_theta, 100000.0);
    assert!(cfg.eos_ids().contains(&2), "{:?}", cfg.eos_ids());
    let types: std::collections::BTreeSet<_> = file.tensors().iter().map(|t| t.type_name).collect();
    eprintln!("tensor types: {types:?}");
}
