//! Parity of the causal-LM / LoRA trainer with transformers.Trainer + peft (issue #15 item
//! 4): the real SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to f32 by both sides) and real
//! chitchat conversations, LoRA r 8 on q_proj / v_proj with peft's default dropout 0.05.
//!
//! For each of 3 seeds, peft draws the adapter (`tests/peft_trainer_ref.py`, run from the
//! pinned Python environment that `bash scripts/setup.sh deps` installs into `.deps/bench`)
//! and pgmld starts from that very adapter; both sides train the same steps on the same
//! batches in the same order (pgmld's epoch order, handed to the Trainer as its batch
//! sampler), each with its own dropout masks. Checked:
//! - the token ids and labels pgmld builds are the Trainer's (chat template, loss on the
//!   reply and its end-of-turn token);
//! - the base model's eval_loss agrees within 0.1 %;
//! - after training, eval_loss agrees within 1 % for every seed, while training moved it by
//!   far more than that (so the check can fail);
//! - each step's loss agrees within 3 % (the dropout masks differ, nothing else does).

#[path = "../../pgmld-ml/tests/common/mod.rs"]
mod common;
mod smollm2_data;

use common::{hf_python, temp_dir};
use pgmld_llm::causal_train::{evaluate_causal_lm, train_causal_lm, CausalTrainEvent};
use pgmld_llm::lora::{apply, LoraConfig, ADAPTER_WEIGHTS_FILE};
use pgmld_train::batching::epoch_batches;
use pgmld_train::train_state::load_weights;
use pgmld_train::training_args::TrainingArgs;
use serde_json::{json, Value};
use smollm2_data::{build, chitchat_rows, encode, open, smollm2_and_chitchat};
use tch::{nn, Device};

const SEEDS: [u64; 3] = [1, 2, 3];
const TRAIN_ROWS: usize = 32;
const EVAL_ROWS: usize = 8;
const BATCH: usize = 8;
const STEPS: i64 = 4;

fn lora_json() -> Value {
    json!({"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]})
}

fn train_args_json(seed: u64) -> Value {
    json!({
        "learning_rate": 5e-3, "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": EVAL_ROWS, "max_steps": STEPS, "warmup_steps": 0,
        "weight_decay": 0.0, "max_grad_norm": 1.0, "lr_scheduler_type": "linear",
        "logging_steps": 1, "save_steps": 100_000, "seed": seed,
    })
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn lora_training_matches_transformers_and_peft_over_three_seeds() {
    let Some(gguf) = smollm2_and_chitchat() else { return };
    let (loaded, weights) = open();
    let rows = chitchat_rows(TRAIN_ROWS + EVAL_ROWS, "");
    assert_eq!(rows.len(), TRAIN_ROWS + EVAL_ROWS);
    let examples = encode(&loaded, &rows);
    let (train, eval) = examples.split_at(TRAIN_ROWS);
    let pad = loaded.tokenizer.pad_id().unwrap();
    let lengths: Vec<usize> = train.iter().map(|e| e.input_ids.len()).collect();

    let dir = temp_dir("lora-parity");
    let runs: Vec<Value> = SEEDS
        .iter()
        .map(|&seed| {
            json!({
                "seed": seed,
                "init_dir": dir.join(format!("seed{seed}")),
                "batches": epoch_batches(&lengths, BATCH, seed, 0),
            })
        })
        .collect();
    let args0 = train_args_json(0);
    let request = json!({
        "model": gguf,
        "rows": rows.iter().map(|r| json!([r.system, r.user, r.assistant])).collect::<Vec<_>>(),
        "n_train": TRAIN_ROWS,
        "max_seq_length": 128,
        "end_of_turn": "<|im_end|>",
        "threads": 2,
        "lora": lora_json(),
        "args": args0,
        "runs": runs,
    });
    let hf = hf_python("peft_trainer_ref.py", &request);

    // The same tokens: pgmld's conversation encoding is the Trainer's input.
    for (i, e) in examples.iter().enumerate() {
        let ids: Vec<i64> = serde_json::from_value(hf["input_ids"][i].clone()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(hf["labels"][i].clone()).unwrap();
        assert_eq!(e.input_ids, ids, "row {i}: token ids");
        assert_eq!(e.labels, labels, "row {i}: labels");
    }

    let base = evaluate_causal_lm(&build(&loaded, &weights), eval, EVAL_ROWS, pad).unwrap();
    let hf_base = hf["base_eval_loss"].as_f64().unwrap();
    eprintln!("base eval_loss: pgmld {:.5}, transformers {hf_base:.5}", base.eval_loss);
    assert!(rel(base.eval_loss, hf_base) < 1e-3, "{} vs {hf_base}", base.eval_loss);

    let cfg = LoraConfig::from_json(&lora_json()).unwrap();
    for (i, &seed) in SEEDS.iter().enumerate() {
        let theirs = &hf["runs"][i];
        let mut model = build(&loaded, &weights);
        let vs = nn::VarStore::new(Device::Cpu);
        apply(&mut model, &cfg, &vs).unwrap();
        // peft's freshly drawn adapter: A from its generator, B zero.
        let init = dir.join(format!("seed{seed}")).join(ADAPTER_WEIGHTS_FILE);
        load_weights(&vs, &init).unwrap();
        let args = TrainingArgs::from_json(&train_args_json(seed)).unwrap();
        let mut losses = Vec::new();
        let out = train_causal_lm(
            &model,
            &vs,
            train,
            eval,
            &args,
            pad,
            |e| {
                if let CausalTrainEvent::Log(l) = e {
                    losses.push(l.loss);
                }
            },
            |_| {},
            || false,
            None,
        )
        .unwrap();
        let ours = out.eval.unwrap().eval_loss;
        let hf_eval = theirs["eval_loss"].as_f64().unwrap();
        let hf_losses = floats(&theirs["losses"]);
        eprintln!(
            "seed {seed}: eval_loss pgmld {ours:.5}, transformers+peft {hf_eval:.5} ({:+.3} %); \
             step losses pgmld {losses:.4?}, transformers {hf_losses:.4?}",
            100.0 * (ours - hf_eval) / hf_eval
        );
        assert_eq!(losses.len(), hf_losses.len(), "seed {seed}: steps");
        for (step, (a, b)) in losses.iter().zip(&hf_losses).enumerate() {
            assert!(rel(*a, *b) < 0.03, "seed {seed} step {}: loss {a} vs {b}", step + 1);
        }
        // Training moved the loss far more than the tolerance, on both sides.
        assert!(hf_base - hf_eval > 0.1 * hf_base, "seed {seed}: {hf_base} -> {hf_eval}");
        assert!(rel(ours, hf_eval) < 0.01, "seed {seed}: eval_loss {ours} vs {hf_eval}");
    }
}
