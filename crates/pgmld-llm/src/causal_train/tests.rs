use super::*;
use crate::conversation::IGNORE_INDEX;
use crate::llama::test_model::{random_weights, tiny_config};
use crate::lora::{apply, LoraConfig};
use crate::quant::quantize_int8;
use pgmld_train::batching::Rng;
use serde_json::json;
use std::cell::Cell;

/// Sequences of a random "prompt" (ids 10..32) followed by the fixed reply 5 6 7 1, whose
/// tokens alone carry labels: a pattern LoRA can learn.
fn data(n: usize, seed: u64) -> Vec<TokenizedExample> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let len = 3 + rng.below(5);
            let mut ids: Vec<i64> = (0..len).map(|_| 10 + rng.below(22) as i64).collect();
            let mut labels = vec![IGNORE_INDEX; len];
            ids.extend([5, 6, 7, 1]);
            labels.extend([5, 6, 7, 1]);
            TokenizedExample { input_ids: ids, labels }
        })
        .collect()
}

/// The tiny Llama, its weights from a formula rather than libtorch's (process-wide)
/// generator, which tests running in parallel share: every call gives the same model.
fn tiny_model() -> Llama {
    let cfg = tiny_config("llama");
    let mut weights = random_weights(&cfg, 31);
    for (k, t) in weights.iter_mut() {
        let salt = k.bytes().map(f64::from).sum::<f64>();
        let n = t.numel() as i64;
        // A hash-like pseudo-random sequence in (−1, 1) (a plain sine would make every
        // matrix rank 2).
        let hash = ((Tensor::arange(n, (Kind::Double, Device::Cpu)) * 12.9898 + salt).sin()
            * 43758.5453)
            .frac();
        let v = hash.to_kind(Kind::Float) * if k.contains("norm") { 0.1 } else { 0.5 };
        let v = if k.contains("norm") { v + 1.0 } else { v };
        *t = v.view(t.size().as_slice());
    }
    Llama::load(cfg, &mut weights, Device::Cpu, Kind::Float).unwrap()
}

/// The tiny model with an adapter whose A matrices are set from a formula, not from
/// libtorch's (process-wide) generator, which tests running in parallel share.
fn adapted(lora: serde_json::Value) -> (Llama, nn::VarStore) {
    let mut model = tiny_model();
    let vs = nn::VarStore::new(Device::Cpu);
    apply(&mut model, &LoraConfig::from_json(&lora).unwrap(), &vs).unwrap();
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    tch::no_grad(|| {
        for (k, name) in names.iter().enumerate().filter(|(_, n)| n.contains("lora_A")) {
            let mut t = vars[*name].shallow_clone();
            let n = t.numel() as i64;
            let v = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + k as f64).sin() * 0.2;
            t.copy_(&v.view(t.size().as_slice()));
        }
    });
    (model, vs)
}

fn args(extra: serde_json::Value) -> TrainingArgs {
    let mut base = json!({"learning_rate": 0.02, "per_device_train_batch_size": 4, "num_train_epochs": 4,
                          "logging_steps": 2, "save_steps": 1000, "seed": 7});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    TrainingArgs::from_json(&base).unwrap()
}

fn run(
    model: &Llama,
    vs: &nn::VarStore,
    train: &[TokenizedExample],
    eval: &[TokenizedExample],
    a: &TrainingArgs,
) -> (CausalTrainOutcome, Vec<CausalTrainEvent>) {
    let mut events = Vec::new();
    let out =
        train_causal_lm(model, vs, train, eval, a, 0, |e| events.push(e), |_| {}, || false, None)
            .unwrap();
    (out, events)
}

fn params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    a.iter()
        .zip(b)
        .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn loss_falls_and_events_follow_the_arguments() {
    let (model, vs) = adapted(json!({"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}));
    let (train, eval) = (data(24, 1), data(8, 2));
    let before = evaluate_causal_lm(&model, &eval, 4, 0).unwrap();
    let a = args(json!({"eval_strategy": "epoch", "learning_rate": 0.05}));
    let (out, events) = run(&model, &vs, &train, &eval, &a);
    let after = out.eval.clone().unwrap();
    println!(
        "eval_loss {:.3} -> {:.3}, ppl {:.2}",
        before.eval_loss, after.eval_loss, after.perplexity
    );
    assert!(
        after.eval_loss < 0.5 * before.eval_loss,
        "{} -> {}",
        before.eval_loss,
        after.eval_loss
    );
    assert!((after.perplexity - after.eval_loss.exp()).abs() < 1e-9);
    assert_eq!(after.eval_label_tokens, 8 * 4);
    // 24 rows / batch 4 = 6 steps per epoch, 4 epochs.
    assert_eq!(out.train.global_step, 24);
    assert!(!out.train.gradient_checkpointing);
    assert!(out.train.train_tokens_per_second > 0.0);
    let logs: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            CausalTrainEvent::Log(l) => Some(l.step),
            _ => None,
        })
        .collect();
    assert_eq!(logs, (1..=12).map(|i| 2 * i).collect::<Vec<_>>());
    let evals: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            CausalTrainEvent::Eval { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(evals, vec![6, 12, 18], "every epoch end but the last (the final evaluation)");
    assert_eq!(out.log_history.len(), 12);
    assert!(out.log_history.last().unwrap().loss < out.log_history[0].loss);
}

#[test]
fn accumulation_trains_as_the_larger_batch() {
    let train: Vec<TokenizedExample> = data(4, 3);
    let one = |extra: serde_json::Value| {
        let (model, vs) = adapted(json!({"r": 2, "target_modules": ["q_proj", "down_proj"]}));
        // B ≠ 0 so both A and B move on the first step.
        tch::no_grad(|| {
            for (_, mut t) in vs.variables().into_iter().filter(|(n, _)| n.contains("lora_B")) {
                let _ = t.fill_(0.05);
            }
        });
        run(&model, &vs, &train, &[], &args(extra));
        params(&vs)
    };
    let big = one(json!({"per_device_train_batch_size": 4, "max_steps": 1}));
    let accum = one(
        json!({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 1}),
    );
    let single = one(
        json!({"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4, "max_steps": 1}),
    );
    let d = max_diff(&big, &accum).max(max_diff(&big, &single));
    assert!(d < 1e-6, "{d}");
    let (_, fresh) = adapted(json!({"r": 2, "target_modules": ["q_proj", "down_proj"]}));
    assert!(max_diff(&big, &params(&fresh)) > 1e-3, "the step moved the adapter");
}

#[test]
fn checkpointing_matches_the_plain_pass() {
    let train = data(8, 4);
    let one = |ck: bool| {
        let (model, vs) = adapted(json!({"r": 4, "target_modules": "all-linear"}));
        let (out, _) = run(
            &model,
            &vs,
            &train,
            &[],
            &args(json!({"max_steps": 3, "gradient_checkpointing": ck})),
        );
        assert_eq!(out.train.gradient_checkpointing, ck);
        (params(&vs), out.train.train_loss)
    };
    let (plain, l1) = one(false);
    let (ck, l2) = one(true);
    assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
    assert!(max_diff(&plain, &ck) < 1e-5);
}

#[test]
fn memory_options_train() {
    let (train, eval) = (data(16, 5), data(8, 6));
    // int8 base (layers recomputed in backward) with the 8-bit optimizer, on adapters
    // large enough (≥ 4096 values) to get 8-bit states: r 256.
    let mut model = tiny_model();
    quantize_int8(&mut model);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg =
        LoraConfig::from_json(&json!({"r": 256, "lora_alpha": 32, "target_modules": "all-linear"}))
            .unwrap();
    apply(&mut model, &cfg, &vs).unwrap();
    let before = evaluate_causal_lm(&model, &eval, 8, 0).unwrap().eval_loss;
    let a = args(
        json!({"optim": "adamw_bnb_8bit", "learning_rate": 0.01, "gradient_accumulation_steps": 2,
                        "num_train_epochs": 8}),
    );
    let (out, _) = run(&model, &vs, &train, &eval, &a);
    assert!(out.train.gradient_checkpointing, "int8 weights force recomputation");
    let after = out.eval.unwrap().eval_loss;
    println!("int8 + 8-bit AdamW: eval_loss {before:.3} -> {after:.3}");
    assert!(after < 0.5 * before, "{before} -> {after}");
}

#[test]
fn cancel_and_bad_input_are_errors() {
    let (model, vs) = adapted(json!({}));
    let train = data(8, 7);
    let calls = Cell::new(0);
    let stop = || {
        calls.set(calls.get() + 1);
        calls.get() > 3
    };
    let err =
        train_causal_lm(&model, &vs, &train, &[], &args(json!({})), 0, |_| {}, |_| {}, stop, None)
            .unwrap_err();
    assert!(matches!(err, Error::Train(pgmld_train::Error::Cancelled)), "{err}");
    let err =
        train_causal_lm(&model, &vs, &[], &[], &args(json!({})), 0, |_| {}, |_| {}, || false, None)
            .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let frozen = nn::VarStore::new(Device::Cpu);
    let err = train_causal_lm(
        &model,
        &frozen,
        &train,
        &[],
        &args(json!({})),
        0,
        |_| {},
        |_| {},
        || false,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("LoRA"), "{err}");
    let err = train_causal_lm(
        &model,
        &vs,
        &train,
        &[],
        &args(json!({"learning_rate": 1e30})),
        0,
        |_| {},
        |_| {},
        || false,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Train(pgmld_train::Error::NonFiniteLoss { .. })), "{err}");
}

#[test]
fn resumed_run_ends_as_the_uninterrupted_one() {
    let train = data(12, 8);
    let dir = std::env::temp_dir().join(format!("pgmld-causal-ck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for optim in ["adamw_torch", "adamw_8bit"] {
        let a = args(
            json!({"max_steps": 6, "save_steps": 2, "optim": optim, "per_device_train_batch_size": 2,
                            "gradient_accumulation_steps": 2}),
        );
        // No dropout: libtorch's generator is shared with tests running in parallel.
        let lora = json!({"r": 64, "lora_alpha": 16, "target_modules": "all-linear"});
        let (model, vs) = adapted(lora.clone());
        let whole =
            train_causal_lm(&model, &vs, &train, &[], &a, 0, |_| {}, |_| {}, || false, None)
                .unwrap();
        let want = params(&vs);
        // Interrupted after step 4 (its checkpoint written), then resumed.
        let (model, vs) = adapted(lora.clone());
        let saves = Cell::new(0);
        let _ = train_causal_lm(
            &model,
            &vs,
            &train,
            &[],
            &a,
            0,
            |_| {},
            |sp| {
                if sp.step() == 4 {
                    sp.write_checkpoint(&dir).unwrap();
                }
                saves.set(sp.step());
            },
            || saves.get() >= 4,
            None,
        );
        let (model, vs) = adapted(lora);
        let resumed =
            train_causal_lm(&model, &vs, &train, &[], &a, 0, |_| {}, |_| {}, || false, Some(&dir))
                .unwrap();
        assert_eq!(resumed.train.global_step, 6);
        assert_eq!(resumed.log_history.len(), whole.log_history.len());
        assert!((resumed.train.train_loss - whole.train.train_loss).abs() < 1e-6);
        let d = max_diff(&want, &params(&vs));
        assert!(d == 0.0, "{optim}: {d}");
        // Other data: refused.
        let (model, vs) =
            adapted(json!({"r": 64, "lora_alpha": 16, "target_modules": "all-linear"}));
        let err = train_causal_lm(
            &model,
            &vs,
            &data(12, 9),
            &[],
            &a,
            0,
            |_| {},
            |_| {},
            || false,
            Some(&dir),
        )
        .unwrap_err();
        assert!(err.to_string().contains("training data"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `cuda_graphs` on the CPU runs the staged step (ids padded to multiples of 32 tokens,
/// every shifted position scored, the scale and the AdamW scalars as device tensors) without
/// graphs: it trains as the eager step does, every step staged (the first one's update
/// eagerly: it makes AdamW's moments); the 8-bit optimizer stays eager.
#[test]
fn staged_steps_train_as_eager_ones() {
    let (train, eval) = (data(13, 8), data(4, 9));
    let one = |extra: serde_json::Value| {
        let (model, vs) = adapted(json!({"r": 4, "target_modules": "all-linear"}));
        let (out, _) = run(&model, &vs, &train, &eval, &args(extra));
        (params(&vs), out)
    };
    let (eager, e) = one(json!({"max_steps": 6, "logging_steps": 1}));
    let (staged, s) = one(json!({"max_steps": 6, "logging_steps": 1, "cuda_graphs": true}));
    let stats = s.cuda_graphs.expect("asked for");
    assert_eq!((stats.staged_steps, stats.captured, stats.replays), (6, 0, 0));
    assert!(e.cuda_graphs.is_none());
    let d = max_diff(&eager, &staged);
    assert!(d < 1e-5, "adapter weights differ by {d}");
    for (a, b) in e.log_history.iter().zip(&s.log_history) {
        assert!((a.loss - b.loss).abs() < 1e-5 * a.loss.abs().max(1.0), "{a:?} vs {b:?}");
        assert!((a.grad_norm - b.grad_norm).abs() < 1e-4 * a.grad_norm.max(1.0), "{a:?} vs {b:?}");
    }
    let (ee, se) = (e.eval.unwrap(), s.eval.unwrap());
    assert!((ee.eval_loss - se.eval_loss).abs() < 1e-5, "{ee:?} vs {se:?}");
    let (_, bit8) = one(json!({"max_steps": 2, "cuda_graphs": true, "optim": "adamw_8bit"}));
    assert_eq!(bit8.cuda_graphs.map(|g| g.staged_steps), Some(0), "the 8-bit update is eager");
}

/// `bf16` on the CPU (HF's `bf16=True` there: `torch.autocast("cpu", dtype=torch.bfloat16)`):
/// the forward passes, evaluation included, run in bfloat16, so losses move by its rounding
/// and no more; adapters stay float32; the recomputing (checkpointed) and the staged passes
/// run under the same autocast as the plain one.
#[test]
fn bf16_trains_under_autocast_on_the_cpu() {
    let (train, eval) = (data(13, 8), data(4, 9));
    let one = |extra: serde_json::Value| {
        let mut a = json!({"max_steps": 4, "logging_steps": 1});
        a.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (model, vs) = adapted(json!({"r": 4, "target_modules": "all-linear"}));
        let (out, _) = run(&model, &vs, &train, &eval, &args(a));
        (params(&vs), out)
    };
    let (_, f32_run) = one(json!({}));
    let (weights, bf16_run) = one(json!({"bf16": true}));
    let (_, ck) = one(json!({"bf16": true, "gradient_checkpointing": true}));
    let (_, staged) = one(json!({"bf16": true, "cuda_graphs": true}));
    for (name, t) in &weights {
        assert_eq!(t.kind(), tch::Kind::Float, "{name} stays float32");
    }
    let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-6);
    let losses = |o: &CausalTrainOutcome| o.log_history.iter().map(|l| l.loss).collect::<Vec<_>>();
    let gap = |a: &CausalTrainOutcome, b: &CausalTrainOutcome| {
        losses(a).iter().zip(losses(b)).map(|(x, y)| rel(*x, y)).fold(0.0, f64::max)
    };
    let eval_loss = |o: &CausalTrainOutcome| o.eval.as_ref().unwrap().eval_loss;
    let (vs_f32, vs_ck, vs_staged) =
        (gap(&bf16_run, &f32_run), gap(&ck, &bf16_run), gap(&staged, &bf16_run));
    println!(
        "bf16 vs float32 {vs_f32:e}, checkpointed {vs_ck:e}, staged {vs_staged:e}; eval {} vs {}",
        eval_loss(&bf16_run),
        eval_loss(&f32_run)
    );
    assert!(vs_f32 > 1e-6 && vs_f32 < 2e-2, "bf16 losses vs float32: {vs_f32:e}");
    assert_ne!(eval_loss(&bf16_run), eval_loss(&f32_run), "evaluation ran in bfloat16 too");
    assert!(rel(eval_loss(&bf16_run), eval_loss(&f32_run)) < 2e-2);
    assert!(vs_ck < 1e-5, "the recomputed layers ran under autocast: {vs_ck:e}");
    assert!(vs_staged < 1e-2, "the staged pass ran under autocast: {vs_staged:e}");
}
