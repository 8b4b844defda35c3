//! End to end on the real SmolLM2-135M-Instruct GGUF (Q4_1): open the file (weights,
//! tokenizer, chat template from metadata), build the Llama decoder, and greedy-generate
//! an answer to a factual question. Prints load time and generation speed.

use std::ops::ControlFlow;
use std::time::Instant;

use pgmld_llm::chat_template::ChatMessage;
use pgmld_llm::generate::{generate, FinishReason, GenerationConfig};
use pgmld_llm::llama::Llama;
use tch::{Device, Kind};

mod smollm2_data;

use smollm2_data::smollm2_gguf;

#[test]
fn greedy_answer_mentions_paris() {
    let Some(path) = smollm2_gguf() else { return };
    let start = Instant::now();
    let mut loaded = pgmld_llm::source::open(&path, Device::Cpu).unwrap();
    let opened = start.elapsed();
    let model =
        Llama::load(loaded.config.clone(), &mut loaded.weights, Device::Cpu, Kind::Float).unwrap();
    let load_time = start.elapsed();

    let template = loaded.template();
    let prompt = template
        .render(&[ChatMessage::new("user", "What is the capital of France?")], true)
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let prompt_ids = loaded.tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(prompt_ids[0], 1, "prompt starts with <|im_start|>");

    let cfg = GenerationConfig {
        max_new_tokens: 30,
        stop_ids: loaded.stop_ids(),
        ..GenerationConfig::default()
    };
    let mut stream = loaded.tokenizer.stream_decoder(true);
    let mut streamed = String::new();
    let gen_start = Instant::now();
    let out = generate(&model, &prompt_ids, &cfg, |id| {
        streamed.extend(stream.push(id).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    let gen_time = gen_start.elapsed();
    streamed.extend(stream.finish().unwrap());
    let answer = loaded.tokenizer.decode(&out.tokens, true).unwrap();
    eprintln!(
        "open {:.2?} (load incl. Llama::load {:.2?}); {} prompt tokens; {} new tokens in {:.2?} = {:.1} tokens/s; finish {:?}\nanswer: {answer:?}",
        opened,
        load_time,
        out.prompt_tokens,
        out.tokens.len(),
        gen_time,
        out.tokens.len() as f64 / gen_time.as_secs_f64(),
        out.finish_reason,
    );
    assert_eq!(streamed, answer, "streamed pieces concatenate to the decoded answer");
    assert!(answer.contains("Paris"), "answer: {answer:?}");
    assert!(matches!(out.finish_reason, FinishReason::Stop | FinishReason::Length));
}

/// `load_in_8bit` on the CPU: int8 projections and vocabulary projection through libtorch's
/// int8 weight kernel. Same answer and logits close to f32's (speed is printed, not
/// asserted: bench/chat measures it).
#[test]
fn int8_kernels_answer_like_f32_and_faster() {
    let Some(path) = smollm2_gguf() else { return };
    let mut loaded = pgmld_llm::source::open(&path, Device::Cpu).unwrap();
    let dense =
        Llama::load(loaded.config.clone(), &mut loaded.weights, Device::Cpu, Kind::Float).unwrap();
    let mut again = pgmld_llm::source::open(&path, Device::Cpu).unwrap();
    let mut int8 =
        Llama::load(again.config.clone(), &mut again.weights, Device::Cpu, Kind::Float).unwrap();
    let report = pgmld_llm::quant::quantize_int8(&mut int8);
    assert_eq!(report.linears, 30 * 7);
    let head_bytes = pgmld_llm::quant::use_cpu_int8_kernels(&mut int8).unwrap();
    assert_eq!(head_bytes, 49152 * 576 + 4 * 49152, "int8 head from the tied embeddings");

    let prompt = loaded
        .template()
        .render(&[ChatMessage::new("user", "What is the capital of France?")], true)
        .unwrap();
    let ids = loaded.tokenizer.encode(&prompt, false).unwrap();
    let input = tch::Tensor::from_slice(&ids).view([1, -1]);
    let (want, got) =
        tch::no_grad(|| (dense.forward(&input, None, false), int8.forward(&input, None, false)));
    let rel = (&got - &want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]);
    assert!(rel > 0.0 && rel < 0.1, "int8 vs f32: relative logit error {rel}");
    let last = |t: &tch::Tensor| t.select(1, -1).argmax(-1, false).int64_value(&[0]);
    assert_eq!(last(&got), last(&want), "same next token after the prompt");

    let cfg = GenerationConfig {
        max_new_tokens: 48,
        stop_ids: Vec::new(),
        ..GenerationConfig::default()
    };
    let timed = |model: &Llama| {
        // One warm-up call, then the best of two.
        generate(model, &ids, &cfg, |_| ControlFlow::Continue(())).unwrap();
        let mut best = f64::MAX;
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let start = Instant::now();
            tokens = generate(model, &ids, &cfg, |_| ControlFlow::Continue(())).unwrap().tokens;
            best = best.min(start.elapsed().as_secs_f64());
        }
        (tokens, best)
    };
    let (dense_tokens, dense_s) = timed(&dense);
    let (int8_tokens, int8_s) = timed(&int8);
    let answer = loaded.tokenizer.decode(&int8_tokens, true).unwrap();
    let same = dense_tokens.iter().zip(&int8_tokens).take_while(|(a, b)| a == b).count();
    eprintln!(
        "f32 {:.1} tokens/s, int8 kernels {:.1} tokens/s ({:.2}x); {same} of {} greedy tokens as f32; answer: {answer:?}",
        48.0 / dense_s,
        48.0 / int8_s,
        dense_s / int8_s,
        dense_tokens.len()
    );
    assert!(answer.contains("Paris"), "answer: {answer:?}");
    assert!(same >= 1, "the first greedy token differs from f32's");
}
