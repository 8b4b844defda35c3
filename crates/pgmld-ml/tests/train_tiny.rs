//! Fast checks of `train_classifier` on a tiny random-initialised BERT with a word-level
//! tokenizer, on a toy separable dataset.

mod tiny_train;

use std::cell::Cell;

use pgmld_ml::{train_classifier, Error, Example, TrainEvent};
use pgmld_train::{Error as TrainError, LrSchedulerType, TrainingArgs};
use tiny_train::{args, logs_into, serial, tiny_model, tiny_tokenizer, toy_data};

#[test]
fn loss_falls_and_metrics_are_sane() {
    let _serial = serial();
    let mut model = tiny_model(0);
    let tok = tiny_tokenizer();
    let train = toy_data(128, 1);
    let eval = toy_data(64, 2);
    let a = args(
        r#"{"learning_rate": 3e-3, "num_train_epochs": 4, "logging_steps": 4,
                     "warmup_ratio": 0.1, "weight_decay": 0.01}"#,
    );
    let mut logs = Vec::new();
    let out = train_classifier(
        &mut model,
        &tok,
        &train,
        &eval,
        &a,
        logs_into(&mut logs),
        |_| {},
        || false,
        None,
    )
    .unwrap();
    // 128 / 8 = 16 steps per epoch, 4 epochs.
    assert_eq!(out.train.global_step, 64);
    assert_eq!(logs.len(), 16);
    assert_eq!(logs, out.log_history);
    assert_eq!(logs[0].step, 4);
    assert_eq!(logs[0].max_steps, 64);
    assert!((logs.last().unwrap().epoch - 4.0).abs() < 1e-9);
    let first = logs[0].loss;
    let last = logs.last().unwrap().loss;
    assert!(last < first * 0.5, "loss did not fall: {first} -> {last}");
    for l in &logs {
        assert!(l.loss.is_finite() && l.grad_norm.is_finite() && l.grad_norm > 0.0);
        assert!(l.learning_rate > 0.0 && l.learning_rate <= 3e-3);
    }
    // warmup (7 steps) then linear decay: peak in the middle, decreasing at the end.
    assert!(logs[1].learning_rate > logs[0].learning_rate);
    assert!(logs[15].learning_rate < logs[8].learning_rate);
    let t = &out.train;
    assert!(t.train_runtime > 0.0 && t.train_samples_per_second > 0.0);
    assert!(t.train_steps_per_second > 0.0 && t.train_loss.is_finite());
    assert!((t.epoch - 4.0).abs() < 1e-9);
    let e = out.eval.expect("eval metrics");
    assert!(e.eval_accuracy >= 0.9, "eval_accuracy {}", e.eval_accuracy);
    assert!((0.0..=1.0).contains(&e.eval_f1) && e.eval_f1 >= 0.9);
    assert!(e.eval_loss.is_finite() && e.eval_loss < 0.5, "eval_loss {}", e.eval_loss);
    assert!(e.eval_runtime > 0.0 && e.eval_samples_per_second > 0.0);
    assert!(e.eval_steps_per_second > 0.0);
    println!("{}", serde_json::to_string(&out.train).unwrap());
    println!("{}", serde_json::to_string(&e).unwrap());
}

#[test]
fn max_steps_and_gradient_accumulation() {
    let _serial = serial();
    let mut model = tiny_model(3);
    let tok = tiny_tokenizer();
    let train = toy_data(40, 4);
    let a = args(
        r#"{"max_steps": 5, "gradient_accumulation_steps": 2, "logging_steps": 1,
            "per_device_train_batch_size": 4, "lr_scheduler_type": "linear"}"#,
    );
    let mut logs = Vec::new();
    let out = train_classifier(
        &mut model,
        &tok,
        &train,
        &[],
        &a,
        logs_into(&mut logs),
        |_| {},
        || false,
        None,
    )
    .unwrap();
    assert_eq!(out.train.global_step, 5);
    assert!(out.eval.is_none());
    assert_eq!(logs.iter().map(|l| l.step).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    // 10 micro-batches per epoch → 5 optimizer steps per epoch.
    assert!((logs[4].epoch - 1.0).abs() < 1e-9);
    // Linear decay from 5e-5, no warmup: lr of step k (0-based) = 5e-5 * (5 - k) / 5.
    for (k, l) in logs.iter().enumerate() {
        assert!((l.learning_rate - 5e-5 * (5 - k) as f64 / 5.0).abs() < 1e-15);
    }
    // 5 steps × 2 micro-batches × 4 samples.
    let samples = out.train.train_samples_per_second * out.train.train_runtime;
    assert!((samples - 40.0).abs() < 1e-6, "{samples}");
}

#[test]
fn same_seed_same_run() {
    let _serial = serial();
    let tok = tiny_tokenizer();
    let train = toy_data(32, 5);
    let a = args(r#"{"max_steps": 6, "logging_steps": 2, "learning_rate": 1e-3}"#);
    let run = || {
        let mut m = tiny_model(9);
        train_classifier(&mut m, &tok, &train, &[], &a, |_| {}, |_| {}, || false, None)
            .unwrap()
            .log_history
    };
    let (x, y) = (run(), run());
    for (a, b) in x.iter().zip(&y) {
        assert!((a.loss - b.loss).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn should_stop_cancels() {
    let _serial = serial();
    let mut model = tiny_model(0);
    let tok = tiny_tokenizer();
    let train = toy_data(64, 1);
    let calls = Cell::new(0);
    let mut logs = 0;
    let r = train_classifier(
        &mut model,
        &tok,
        &train,
        &[],
        &args(r#"{"logging_steps": 1}"#),
        |e| {
            if matches!(e, TrainEvent::Log(_)) {
                logs += 1
            }
        },
        |_| {},
        || {
            calls.set(calls.get() + 1);
            calls.get() > 3
        },
        None,
    );
    assert!(matches!(r, Err(Error::Train(TrainError::Cancelled))), "{r:?}");
    assert_eq!(calls.get(), 4);
    assert_eq!(logs, 3);
}

#[test]
fn nan_loss_is_an_error_naming_the_step() {
    let _serial = serial();
    let tok = tiny_tokenizer();
    let train = toy_data(64, 1);
    // Poisoned weights: the very first loss is NaN.
    let mut model = tiny_model(0);
    tch::no_grad(|| {
        let mut w = model.vs.variables()["classifier.weight"].shallow_clone();
        let _ = w.fill_(f64::NAN);
    });
    let r = train_classifier(
        &mut model,
        &tok,
        &train,
        &[],
        &TrainingArgs::default(),
        |_| {},
        |_| {},
        || false,
        None,
    );
    match r {
        Err(e @ Error::Train(TrainError::NonFiniteLoss { step: 1, .. })) => {
            assert!(e.to_string().contains("step 1"), "{e}")
        }
        other => panic!("expected NonFiniteLoss at step 1, got {other:?}"),
    }
    // An absurd learning rate without clipping blows the model up within a few steps.
    let mut model = tiny_model(0);
    let a = args(r#"{"learning_rate": 1e30, "max_grad_norm": 0, "num_train_epochs": 20}"#);
    let r = train_classifier(&mut model, &tok, &train, &[], &a, |_| {}, |_| {}, || false, None);
    assert!(
        matches!(r, Err(Error::Train(TrainError::NonFiniteLoss { step, .. })) if step > 1),
        "{r:?}"
    );
}

#[test]
fn bad_labels_are_rejected() {
    let _serial = serial();
    let mut model = tiny_model(0);
    let tok = tiny_tokenizer();
    let train = vec![Example::new("a1 a2", 0), Example::new("b1 b2", 2)];
    let r = train_classifier(
        &mut model,
        &tok,
        &train,
        &[],
        &TrainingArgs::default(),
        |_| {},
        |_| {},
        || false,
        None,
    );
    assert!(matches!(r, Err(Error::Train(TrainError::Data(_)))), "{r:?}");
}

#[test]
fn training_args_parse_defaults_and_reject_unknown_keys() {
    let _serial = serial();
    let d = TrainingArgs::from_json_str("{}").unwrap();
    assert_eq!(d, TrainingArgs::default());
    assert_eq!(d.learning_rate, 5e-5);
    assert_eq!(d.per_device_train_batch_size, 8);
    assert_eq!(d.per_device_eval_batch_size, 8);
    assert_eq!(d.num_train_epochs, 3.0);
    assert_eq!(d.max_steps, -1);
    assert_eq!(d.weight_decay, 0.0);
    assert_eq!(d.warmup_steps, 0);
    assert_eq!(d.warmup_ratio, 0.0);
    assert_eq!(d.lr_scheduler_type, LrSchedulerType::Linear);
    assert_eq!(d.gradient_accumulation_steps, 1);
    assert_eq!(d.max_grad_norm, 1.0);
    assert_eq!(d.logging_steps, 500);
    assert_eq!(d.seed, 42);
    let a = args(
        r#"{"lr_scheduler_type": "constant_with_warmup", "num_train_epochs": 1.5, "seed": 7}"#,
    );
    assert_eq!(a.lr_scheduler_type, LrSchedulerType::ConstantWithWarmup);
    assert_eq!(a.num_train_epochs, 1.5);
    assert_eq!(a.seed, 7);
    assert_eq!(
        args(r#"{"lr_scheduler_type": "cosine"}"#).lr_scheduler_type,
        LrSchedulerType::Cosine
    );

    let err = TrainingArgs::from_json_str(r#"{"learning_rate": 1e-4, "num_epochs": 2}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_epochs"), "{err}");
    for k in TrainingArgs::SUPPORTED_KEYS {
        assert!(err.contains(k), "{err} lacks {k}");
    }
    for bad in [
        r#"{"learning_rate": "fast"}"#,
        r#"{"learning_rate": -1}"#,
        r#"{"lr_scheduler_type": "polynomial"}"#,
        r#"{"gradient_accumulation_steps": 0}"#,
        r#"{"per_device_train_batch_size": 0}"#,
        r#"{"world_size": 0}"#,
        r#"{"world_size": 100000}"#,
        r#"[1, 2]"#,
    ] {
        assert!(
            matches!(TrainingArgs::from_json_str(bad), Err(TrainError::TrainingArgs(_))),
            "{bad} accepted"
        );
    }
}

#[test]
fn gradient_checkpointing_trains_as_well() {
    let _serial = serial();
    let tok = tiny_tokenizer();
    let train = toy_data(128, 1);
    let eval = toy_data(64, 2);
    let a = args(
        r#"{"learning_rate": 3e-3, "num_train_epochs": 4, "logging_steps": 4, "gradient_checkpointing": true}"#,
    );
    let mut model = tiny_model(0);
    let mut logs = Vec::new();
    let out = train_classifier(
        &mut model,
        &tok,
        &train,
        &eval,
        &a,
        logs_into(&mut logs),
        |_| {},
        || false,
        None,
    )
    .unwrap();
    assert_eq!(out.train.global_step, 64);
    assert!(logs.last().unwrap().loss < logs[0].loss * 0.5, "{logs:?}");
    assert!(out.eval.unwrap().eval_accuracy >= 0.9);
}

#[test]
fn eval_strategy_steps_and_epoch_report_evaluations() {
    let _serial = serial();
    let tok = tiny_tokenizer();
    let train = toy_data(64, 1);
    let eval = toy_data(16, 2);
    let evals = |json: &str| {
        let mut model = tiny_model(0);
        let mut at = Vec::new();
        train_classifier(
            &mut model,
            &tok,
            &train,
            &eval,
            &args(json),
            |e| {
                if let TrainEvent::Eval { step, metrics, .. } = e {
                    assert!((0.0..=1.0).contains(&metrics.eval_accuracy));
                    at.push(step);
                }
            },
            |_| {},
            || false,
            None,
        )
        .unwrap();
        at
    };
    // 8 steps per epoch, 2 epochs; the final evaluation is the outcome's, not an event.
    assert_eq!(
        evals(r#"{"num_train_epochs": 2, "eval_strategy": "steps", "eval_steps": 3}"#),
        vec![3, 6, 9, 12, 15]
    );
    assert_eq!(evals(r#"{"num_train_epochs": 2, "evaluation_strategy": "epoch"}"#), vec![8]);
    assert!(evals(r#"{"num_train_epochs": 2}"#).is_empty());
}

#[test]
fn on_save_runs_every_save_steps_with_the_model() {
    let _serial = serial();
    let tok = tiny_tokenizer();
    let train = toy_data(32, 1);
    let saves = |json: &str| {
        let mut model = tiny_model(0);
        let mut at = Vec::new();
        train_classifier(
            &mut model,
            &tok,
            &train,
            &[],
            &args(json),
            |_| {},
            |s| {
                assert_eq!(s.task().model().num_labels(), 2);
                at.push(s.step());
            },
            || false,
            None,
        )
        .unwrap();
        at
    };
    assert_eq!(saves(r#"{"max_steps": 5, "save_steps": 2}"#), vec![2, 4]);
    assert_eq!(saves(r#"{"max_steps": 6, "save_steps": 3}"#), vec![3, 6]);
    assert!(saves(r#"{"max_steps": 3}"#).is_empty(), "default save_steps 500");
}
