use tch::{Device, Kind, Tensor};

use super::test_model::{random_weights, tiny_config, tiny_model};
use super::*;

fn ids(tokens: &[i64]) -> Tensor {
    Tensor::from_slice(tokens).view([1, -1])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn full_forward_equals_step_by_step_decode_with_cache() {
    let model = tiny_model("llama", 7);
    let tokens = [3i64, 17, 5, 9, 30, 2, 11, 4];
    let full = tch::no_grad(|| model.forward(&ids(&tokens), None, false));
    assert_eq!(full.size(), vec![1, 8, 32]);
    let mut cache = KvCache::new(&model.config);
    for (t, &tok) in tokens.iter().enumerate() {
        let step = tch::no_grad(|| model.forward(&ids(&[tok]), Some(&mut cache), false));
        let diff = max_abs_diff(&step.get(0).get(0), &full.get(0).get(t as i64));
        assert!(diff < 1e-4, "position {t}: {diff}");
    }
    assert_eq!(cache.len(), 8);
}

#[test]
fn chunked_prefill_after_cache_matches_full_forward() {
    let model = tiny_model("llama", 8);
    let tokens = [3i64, 17, 5, 9, 30, 2, 11];
    let full = tch::no_grad(|| model.forward(&ids(&tokens), None, false));
    let mut cache = KvCache::new(&model.config);
    let first = tch::no_grad(|| model.forward(&ids(&tokens[..3]), Some(&mut cache), false));
    let rest = tch::no_grad(|| model.forward(&ids(&tokens[3..]), Some(&mut cache), false));
    let both = Tensor::cat(&[first, rest], 1);
    assert!(max_abs_diff(&both, &full) < 1e-4);
}

#[test]
fn right_padding_does_not_change_real_positions() {
    let model = tiny_model("llama", 9);
    let long = [4i64, 8, 15, 16, 23, 31];
    let short = [7i64, 12, 19];
    let pad = 0i64;
    let batch = Tensor::from_slice(&[&long[..], &short[..], &[pad; 3][..]].concat()).view([2, 6]);
    let batched = tch::no_grad(|| model.forward(&batch, None, false));
    let alone_long = tch::no_grad(|| model.forward(&ids(&long), None, false));
    let alone_short = tch::no_grad(|| model.forward(&ids(&short), None, false));
    assert!(max_abs_diff(&batched.get(0), &alone_long.get(0)) < 1e-4);
    assert!(max_abs_diff(&batched.get(1).narrow(0, 0, 3), &alone_short.get(0)) < 1e-4);
}

#[test]
fn training_forward_is_differentiable_layer_by_layer() {
    let model = tiny_model("llama", 10);
    let input = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([2, 3]);
    // A trainable input to the layer stack stands in for adapter parameters.
    let x = model.embed(&input).detach().set_requires_grad(true);
    let mut h = x.shallow_clone();
    for i in 0..model.num_layers() {
        h = model.layer(i, &h, 0, None, true);
    }
    let logits = model.head(&h);
    let loss = logits.log_softmax(-1, Kind::Float).mean(Kind::Float);
    loss.backward();
    let grad = x.grad();
    assert!(grad.defined() && grad.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn tied_embeddings_use_embed_tokens_as_head() {
    let mut cfg = tiny_config("llama");
    cfg.tie_word_embeddings = true;
    let mut weights = random_weights(&cfg, 11);
    assert!(!weights.contains_key("lm_head.weight"));
    let model = Llama::load(cfg, &mut weights, Device::Cpu, Kind::Float).unwrap();
    assert!(model.lm_head.is_none());
    let h = Tensor::randn([1, 1, 16], (Kind::Float, Device::Cpu));
    let want = model.norm.forward(&h).matmul(&model.embed_tokens.tr());
    assert!(max_abs_diff(&model.head(&h), &want) < 1e-5);
}

#[test]
fn qwen2_biases_are_loaded_and_used() {
    let cfg = tiny_config("qwen2");
    assert!(cfg.qkv_bias() && !cfg.o_bias());
    let mut weights = random_weights(&cfg, 12);
    assert!(weights.contains_key("model.layers.0.self_attn.q_proj.bias"));
    let mut model = Llama::load(cfg.clone(), &mut weights, Device::Cpu, Kind::Float).unwrap();
    assert!(
        weights.is_empty(),
        "every weight was consumed: {:?}",
        weights.keys().collect::<Vec<_>>()
    );
    let attn = &model.layers[1].self_attn;
    assert!(attn.q_proj.bias.is_some() && attn.k_proj.bias.is_some() && attn.v_proj.bias.is_some());
    assert!(attn.o_proj.bias.is_none());
    let input = ids(&[5, 6, 7]);
    let with_bias = tch::no_grad(|| model.forward(&input, None, false));
    for (name, linear) in model.linears_mut() {
        if name.ends_with("k_proj") {
            linear.bias = None;
        }
    }
    let without = tch::no_grad(|| model.forward(&input, None, false));
    assert!(max_abs_diff(&with_bias, &without) > 1e-3, "k biases change the logits");

    // A Qwen2 checkpoint without its biases is rejected, naming the first one.
    let mut weights = random_weights(&cfg, 12);
    weights.remove("model.layers.0.self_attn.q_proj.bias");
    let err = Llama::load(cfg, &mut weights, Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        matches!(err, Error::MissingWeight(ref n) if n == "model.layers.0.self_attn.q_proj.bias"),
        "{err}"
    );
}

#[test]
fn missing_and_misshapen_weights_are_named() {
    let cfg = tiny_config("llama");
    let mut weights = random_weights(&cfg, 13);
    weights.remove("model.layers.1.mlp.up_proj.weight");
    let err = Llama::load(cfg.clone(), &mut weights, Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        matches!(err, Error::MissingWeight(ref n) if n == "model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );

    let mut weights = random_weights(&cfg, 13);
    weights.insert(
        "model.layers.0.self_attn.k_proj.weight".into(),
        Tensor::zeros([16, 16], (Kind::Float, Device::Cpu)),
    );
    let err = Llama::load(cfg.clone(), &mut weights, Device::Cpu, Kind::Float).unwrap_err();
    match err {
        Error::Shape { name, found, expected } => {
            assert_eq!(name, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!(found, vec![16, 16]);
            assert_eq!(expected, vec![8, 16]);
        }
        other => panic!("expected a shape error, got {other}"),
    }

    let mut weights = random_weights(&cfg, 13);
    weights.remove("lm_head.weight");
    let err = Llama::load(cfg, &mut weights, Device::Cpu, Kind::Float).unwrap_err();
    assert!(matches!(err, Error::MissingWeight(ref n) if n == "lm_head.weight"), "{err}");
}

#[test]
fn linears_are_listed_with_hf_paths() {
    let mut model = tiny_model("llama", 14);
    let names: Vec<String> = model.linears_mut().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2 * 7 + 1);
    assert_eq!(names[0], "model.layers.0.self_attn.q_proj");
    assert_eq!(names[6], "model.layers.0.mlp.down_proj");
    assert_eq!(names[13], "model.layers.1.mlp.down_proj");
    assert_eq!(names[14], "lm_head");
    // Wrapping in place is visible to the model.
    let before = tch::no_grad(|| model.forward(&ids(&[1, 2]), None, false));
    for (_, linear) in model.linears_mut() {
        if linear.out_features() == 32 {
            linear.weight = linear.weight.zeros_like();
        }
    }
    let after = tch::no_grad(|| model.forward(&ids(&[1, 2]), None, false));
    assert!(max_abs_diff(&before, &after) > 1e-3);
    assert!(after.abs().max().double_value(&[]) < 1e-6, "zeroed lm_head gives zero logits");
}

#[test]
fn bf16_model_returns_f32_logits_close_to_f32() {
    let cfg = tiny_config("llama");
    let mut w32 = random_weights(&cfg, 15);
    let mut w16 = random_weights(&cfg, 15);
    let m32 = Llama::load(cfg.clone(), &mut w32, Device::Cpu, Kind::Float).unwrap();
    let m16 = Llama::load(cfg, &mut w16, Device::Cpu, Kind::BFloat16).unwrap();
    let input = ids(&[3, 4, 5, 6]);
    let l32 = tch::no_grad(|| m32.forward(&input, None, false));
    let l16 = tch::no_grad(|| m16.forward(&input, None, false));
    assert_eq!(l16.kind(), Kind::Float);
    let scale = l32.abs().max().double_value(&[]);
    assert!(max_abs_diff(&l32, &l16) < 0.1 * scale.max(1.0));
}
