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
