use tch::Tensor;

use super::*;
use crate::chat_template::ChatMessage;
use crate::gguf::test_support::{smollm2_path, temp_dir};

/// A Hugging Face directory with a one-layer llama config, bf16 weights, a word-level
/// tokenizer, a template and a generation config.
fn hf_dir(tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llama", "vocab_size": 5, "hidden_size": 4, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "tie_word_embeddings": true, "eos_token_id": 1}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 0, "eos_token_id": [1, 3], "do_sample": true}"#,
    )
    .unwrap();
    let tensors = vec![
        ("model.embed_tokens.weight", Tensor::ones([5, 4], (Kind::BFloat16, Device::Cpu))),
        ("model.norm.weight", Tensor::ones([4], (Kind::BFloat16, Device::Cpu))),
    ];
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<s>": 0, "</s>": 1, "hello": 2, "world": 3, "[UNK]": 4}, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>",
            "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}"}"#,
    )
    .unwrap();
    dir
}

#[test]
fn hugging_face_directory() {
    let dir = hf_dir("src-hf");
    let model = open(&dir, Device::Cpu).unwrap();
    assert_eq!(model.source, dir);
    assert_eq!(model.config.hidden_size, 4);
    assert_eq!(model.config.eos_ids(), vec![1, 3], "generation_config.json's eos ids are merged");
    assert_eq!(model.stop_ids(), vec![1, 3]);
    assert_eq!(model.weights.len(), 2);
    assert_eq!(model.weights["model.norm.weight"].kind(), Kind::BFloat16, "dtype kept");
    assert_eq!(model.tokenizer.encode("hello world", false).unwrap(), vec![2, 3]);
    let text = model.template().render(&[ChatMessage::new("user", "hello")], false).unwrap();
    assert_eq!(text, "<s>user: hello</s>");

    let opts = OpenOptions { device: Device::Cpu, kind: Some(Kind::Float), load_weights: true };
    let model = open_with(&dir, &opts).unwrap();
    assert!(model.weights.values().all(|t| t.kind() == Kind::Float));
    let opts = OpenOptions { load_weights: false, ..OpenOptions::new(Device::Cpu) };
    assert!(open_with(&dir, &opts).unwrap().weights.is_empty());
}

#[test]
fn missing_template_falls_back_to_chatml() {
    let dir = hf_dir("src-chatml");
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "</s>"}"#).unwrap();
    let model = open(&dir, Device::Cpu).unwrap();
    assert!(model.chat_template.is_none());
    let text = model.template().render(&[ChatMessage::new("user", "hi")], true).unwrap();
    assert_eq!(text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn bad_config_is_named() {
    let dir = hf_dir("src-badcfg");
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    let err = open(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn locate_finds_the_format() {
    let dir = temp_dir("src-locate");
    assert!(matches!(locate(&dir), Err(Error::Io { .. })));
    assert!(matches!(locate(&dir.join("absent")), Err(Error::Io { .. })));
    std::fs::write(dir.join("a.gguf"), b"GGUF").unwrap();
    assert_eq!(locate(&dir).unwrap(), (ModelFormat::Gguf, dir.join("a.gguf")));
    std::fs::write(dir.join("b.GGUF"), b"GGUF").unwrap();
    let err = locate(&dir).unwrap_err().to_string();
    assert!(err.contains("a.gguf") && err.contains("b.GGUF"), "{err}");
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    assert_eq!(locate(&dir).unwrap().0, ModelFormat::HuggingFace);
    assert_eq!(locate(&dir.join("a.gguf")).unwrap(), (ModelFormat::Gguf, dir.join("a.gguf")));
}

#[test]
fn smollm2_gguf_directory_opens_completely() {
    let Some(path) = smollm2_path() else { return };
    let dir = path.parent().unwrap();
    let start = std::time::Instant::now();
    let model = open(dir, Device::Cpu).unwrap();
    eprintln!("SmolLM2 GGUF opened in {:?}", start.elapsed());
    assert_eq!(model.source, path);
    assert_eq!(model.weights.len(), 2 + 30 * 9, "embed + norm + 9 per layer, lm_head tied");
    let embed = &model.weights["model.embed_tokens.weight"];
    assert_eq!(embed.size(), vec![49152, 576]);
    assert_eq!(embed.kind(), Kind::Float);
    assert_eq!(model.weights["model.layers.29.self_attn.k_proj.weight"].size(), vec![192, 576]);
    assert_eq!(model.weights["model.layers.0.mlp.down_proj.weight"].size(), vec![576, 1536]);
    assert!(model.chat_template.is_some());
    assert!(model.stop_ids().contains(&2));
    // Dequantised weights are finite and not all zero.
    let q = &model.weights["model.layers.0.self_attn.q_proj.weight"];
    assert!(q.isfinite().all().int64_value(&[]) == 1);
    assert!(q.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn generation_config_gives_stop_ids_and_sampling_defaults() {
    let dir = hf_dir("src-genconfig");
    let model = open(&dir, Device::Cpu).unwrap();
    assert_eq!(model.generation.do_sample, Some(true), "{:?}", model.generation);
    assert!(model.generation.over(&Default::default()).to_config().do_sample);
    // Llama 3: several end ids in generation_config.json, every one a stop id.
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [2, 4], "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 64}"#,
    )
    .unwrap();
    let model = open(&dir, Device::Cpu).unwrap();
    assert_eq!(model.stop_ids(), vec![1, 2, 4]);
    let cfg = model.generation.to_config();
    assert_eq!(
        (cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.do_sample),
        (0.6, 0.9, 64, false)
    );
    // A single id is one stop id too.
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": 3}"#).unwrap();
    assert_eq!(open(&dir, Device::Cpu).unwrap().stop_ids(), vec![1, 3]);
    // Without the file nothing is set.
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    let model = open(&dir, Device::Cpu).unwrap();
    assert_eq!((model.generation.clone(), model.stop_ids()), (Default::default(), vec![1]));
    // An out-of-range value fails the load, naming the file and the value.
    std::fs::write(dir.join("generation_config.json"), r#"{"temperature": -1}"#).unwrap();
    let e = open(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("generation_config.json") && e.contains("temperature") && e.contains("-1"),
        "{e}"
    );
}
