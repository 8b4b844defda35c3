use std::ops::ControlFlow;

use tch::Tensor;

use super::*;
use crate::llama::test_model::tiny_model;

fn run(model: &Llama, prompt: &[i64], cfg: &GenerationConfig) -> Generated {
    generate(model, prompt, cfg, |_| ControlFlow::Continue(())).unwrap()
}

fn greedy(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens, ..GenerationConfig::default() }
}

/// Greedy decoding without a cache: re-run the whole sequence and take the argmax.
fn reference_greedy(model: &Llama, prompt: &[i64], n: usize) -> Vec<i64> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let input = Tensor::from_slice(&seq).view([1, -1]);
        let logits = tch::no_grad(|| model.forward(&input, None, false));
        let next = logits.get(0).get(seq.len() as i64 - 1).argmax(-1, false).int64_value(&[]);
        seq.push(next);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn greedy_generation_matches_uncached_argmax_and_ends_on_budget() {
    let model = tiny_model("llama", 21);
    let prompt = [2i64, 9, 14];
    let out = run(&model, &prompt, &greedy(12));
    assert_eq!(out.tokens, reference_greedy(&model, &prompt, 12));
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.prompt_tokens, 3);
}

#[test]
fn stop_id_ends_generation_without_emitting_it() {
    let model = tiny_model("llama", 22);
    let prompt = [5i64, 6];
    let free = run(&model, &prompt, &greedy(8)).tokens;
    // Stop on the third token greedy decoding produces: generation ends where it first
    // appears.
    let stop = free[2];
    let first = free.iter().position(|&t| t == stop).unwrap_or(2);
    let mut streamed = Vec::new();
    let cfg = GenerationConfig { stop_ids: vec![stop], ..greedy(8) };
    let out = generate(&model, &prompt, &cfg, |t| {
        streamed.push(t);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.tokens, free[..first].to_vec());
    assert_eq!(streamed, out.tokens, "on_token saw every returned token and not the stop id");
}

#[test]
fn callback_break_cancels() {
    let model = tiny_model("llama", 23);
    let mut calls = 0;
    let out = generate(&model, &[1, 2, 3], &greedy(10), |_| {
        calls += 1;
        if calls == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!(out.tokens.len(), 2);
    assert_eq!(out.finish_reason.as_str(), "cancelled");
}

#[test]
fn seeded_sampling_is_reproducible_and_tiny_top_p_is_greedy() {
    let model = tiny_model("llama", 24);
    let prompt = [4i64, 8];
    let sample = |seed| GenerationConfig {
        do_sample: true,
        temperature: 1.5,
        seed: Some(seed),
        ..greedy(24)
    };
    let a = run(&model, &prompt, &sample(1)).tokens;
    assert_eq!(a, run(&model, &prompt, &sample(1)).tokens);
    assert_ne!(a, run(&model, &prompt, &sample(2)).tokens);
    let nucleus = GenerationConfig { top_p: 1e-6, ..sample(3) };
    assert_eq!(run(&model, &prompt, &nucleus).tokens, run(&model, &prompt, &greedy(24)).tokens);
}

#[test]
fn repetition_penalty_changes_greedy_output() {
    let model = tiny_model("llama", 25);
    let prompt = [7i64, 7, 7];
    let plain = run(&model, &prompt, &greedy(16)).tokens;
    let penalised =
        run(&model, &prompt, &GenerationConfig { repetition_penalty: 5.0, ..greedy(16) }).tokens;
    assert_ne!(plain, penalised);
    // A strong penalty makes repeats rarer.
    let distinct = |t: &[i64]| {
        let mut t = t.to_vec();
        t.sort_unstable();
        t.dedup();
        t.len()
    };
    assert!(distinct(&penalised) >= distinct(&plain), "{plain:?} vs {penalised:?}");
}

#[test]
fn context_limit_caps_the_budget() {
    let model = tiny_model("llama", 26);
    // max_position_embeddings is 128.
    let prompt: Vec<i64> = (0..120).map(|i| i % 32).collect();
    let out = run(&model, &prompt, &greedy(100));
    assert_eq!(out.tokens.len(), 8);
    assert_eq!(out.finish_reason, FinishReason::Length);
    let err =
        generate(&model, &vec![1; 128], &greedy(1), |_| ControlFlow::Continue(())).unwrap_err();
    assert!(err.to_string().contains("128"), "{err}");
}

#[test]
fn bad_options_and_prompts_are_rejected_naming_the_value() {
    let model = tiny_model("llama", 27);
    let check = |cfg: GenerationConfig, prompt: &[i64], needle: &str| {
        let err = generate(&model, prompt, &cfg, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    };
    check(GenerationConfig { temperature: -0.5, ..greedy(4) }, &[1], "-0.5");
    check(GenerationConfig { top_p: 0.0, ..greedy(4) }, &[1], "top_p");
    check(GenerationConfig { top_p: 1.5, ..greedy(4) }, &[1], "1.5");
    check(GenerationConfig { repetition_penalty: 0.0, ..greedy(4) }, &[1], "repetition_penalty");
    check(GenerationConfig { repetition_penalty: -1.0, ..greedy(4) }, &[1], "-1");
    check(greedy(0), &[1], "max_new_tokens");
    check(greedy(4), &[], "prompt");
    check(greedy(4), &[1, 32], "32");
}
