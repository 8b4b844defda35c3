//! Resuming training from a checkpoint (issue #7): a run stopped after its checkpoint at
//! step 8 and resumed in a freshly built model ends exactly where the uninterrupted run
//! does, on the tiny BERT of `train_tiny.rs` with dropout on.

mod tiny_train;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pgmld_ml::{train_classifier, Classifier, Error, Example, TrainOutcome};
use pgmld_train::{load_checkpoint, Error as TrainError, LogEvent, Secret, TrainingArgs};
use tch::Tensor;
use tiny_train::{args, logs_into, serial, tiny_model, tiny_tokenizer, toy_data};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgmld-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn params(m: &Classifier) -> HashMap<String, Tensor> {
    m.vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

fn max_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().map(|(k, t)| (t - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

fn steps(logs: &[LogEvent]) -> Vec<i64> {
    logs.iter().map(|l| l.step).collect()
}

struct Run {
    params: HashMap<String, Tensor>,
    outcome: TrainOutcome,
    events: Vec<LogEvent>,
}

/// Trains a fresh tiny model (init seed `init`), writing every checkpoint under `ckpts` as
/// `checkpoint-<step>`; stops after the checkpoint of `stop_after`, if given.
fn run(
    a: &TrainingArgs,
    data: (&[Example], &[Example]),
    init: i64,
    ckpts: &Path,
    stop_after: Option<i64>,
    resume_from: Option<&Path>,
) -> Result<Run, Error> {
    let tok = tiny_tokenizer();
    let mut model = tiny_model(init);
    let mut events = Vec::new();
    let stop = Cell::new(false);
    let outcome = train_classifier(
        &mut model,
        &tok,
        data.0,
        data.1,
        a,
        logs_into(&mut events),
        |at| {
            at.write_checkpoint(ckpts.join(format!("checkpoint-{}", at.step()))).unwrap();
            stop.set(Some(at.step()) == stop_after);
        },
        || stop.get(),
        resume_from,
    )?;
    Ok(Run { params: params(&model), outcome, events })
}

/// Runs A (12 steps uninterrupted) and B (stopped after step 8, then resumed in a model
/// with another init to step 12); returns the max abs parameter difference.
fn interrupted_run_ends_as_uninterrupted(name: &str, extra: &str) -> f64 {
    let _serial = serial();
    let train = toy_data(40, 1);
    let eval = toy_data(12, 2);
    let mut a = args(&format!(
        r#"{{"max_steps": 12, "save_steps": 4, "logging_steps": 2, "learning_rate": 2e-3,
            "per_device_train_batch_size": 4, "weight_decay": 0.01, "warmup_steps": 2,
            "eval_strategy": "steps", "eval_steps": 6 {extra}}}"#
    ));
    a.hub_token = Some(Secret("hf_not_to_be_saved".into()));
    let dir = temp_dir(name);
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));

    let t = Instant::now();
    let full = run(&a, (&train, &eval), 0, &dir_a, None, None).unwrap();
    let t_full = t.elapsed();
    assert_eq!(steps(&full.events), [2, 4, 6, 8, 10, 12]);
    assert_eq!(full.events, full.outcome.log_history);
    for s in [4, 8, 12] {
        assert!(dir_a.join(format!("checkpoint-{s}/trainer_state.json")).is_file());
    }

    let stopped = run(&a, (&train, &eval), 0, &dir_b, Some(8), None);
    assert!(matches!(stopped, Err(Error::Train(TrainError::Cancelled))), "{:?}", stopped.err());
    let ck8 = dir_b.join("checkpoint-8");
    assert!(!dir_b.join("checkpoint-12").exists());
    for f in ["model.safetensors", "optimizer.safetensors", "training_args.json"] {
        assert!(ck8.join(f).is_file(), "{f}");
    }
    let args_json = std::fs::read_to_string(ck8.join("training_args.json")).unwrap();
    assert!(!args_json.contains("hf_not_to_be_saved") && !args_json.contains("hub_token"));
    let saved = load_checkpoint(&ck8).unwrap();
    assert_eq!(saved.state.global_step, 8);
    assert_eq!(saved.state.max_steps, 12);
    assert_eq!(steps(&saved.state.log_history), [2, 4, 6, 8]);
    assert_eq!(saved.args.hub_token, None);
    let state_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck8.join("trainer_state.json")).unwrap())
            .unwrap();
    for key in ["global_step", "epoch", "log_history", "max_steps", "train_batch_size"] {
        assert!(state_json.get(key).is_some(), "trainer_state.json lacks {key}");
    }

    let t = Instant::now();
    let resumed = run(&a, (&train, &eval), 77, &dir_b, None, Some(&ck8)).unwrap();
    let t_resumed = t.elapsed();
    // Events continue after the checkpoint; the history is the whole run's.
    assert_eq!(steps(&resumed.events), [10, 12]);
    assert_eq!(steps(&resumed.outcome.log_history), steps(&full.outcome.log_history));
    for (x, y) in full.outcome.log_history.iter().zip(&resumed.outcome.log_history) {
        assert_eq!((x.max_steps, x.learning_rate), (y.max_steps, y.learning_rate));
        for (p, q) in [(x.loss, y.loss), (x.grad_norm, y.grad_norm), (x.epoch, y.epoch)] {
            assert!((p - q).abs() <= 1e-9 * p.abs().max(1.0), "{x:?} vs {y:?}");
        }
    }
    let (ta, tb) = (&full.outcome.train, &resumed.outcome.train);
    assert_eq!((ta.global_step, ta.epoch), (tb.global_step, tb.epoch));
    assert!((ta.train_loss - tb.train_loss).abs() < 1e-6, "{ta:?} vs {tb:?}");
    let (ea, eb) = (full.outcome.eval.unwrap(), resumed.outcome.eval.unwrap());
    assert!((ea.eval_loss - eb.eval_loss).abs() < 1e-6, "{ea:?} vs {eb:?}");
    let d = max_diff(&full.params, &resumed.params);
    assert!(d <= 1e-5, "{name}: max |A - B| = {d}");
    // The resumed model's own init was overwritten: it differs from A's initialisation.
    assert!(max_diff(&params(&tiny_model(77)), &params(&tiny_model(0))) > 1e-3);
    println!(
        "{name}: max |A - B| = {d:e}, train_loss {} vs {}, uninterrupted {:?}, resumed 8→12 {:?}",
        ta.train_loss, tb.train_loss, t_full, t_resumed
    );
    let _ = std::fs::remove_dir_all(&dir);
    d
}

#[test]
fn resumed_run_ends_as_uninterrupted() {
    let d = interrupted_run_ends_as_uninterrupted("plain", "");
    assert_eq!(d, 0.0, "bitwise on CPU");
}

#[test]
fn resumed_run_ends_as_uninterrupted_with_accumulation_and_checkpointing() {
    // 10 micro-batches per epoch, 5 steps: step 8 is mid-way through the second epoch.
    let d = interrupted_run_ends_as_uninterrupted(
        "accum",
        r#", "gradient_accumulation_steps": 2, "gradient_checkpointing": true"#,
    );
    assert_eq!(d, 0.0, "bitwise on CPU");
}

#[test]
fn resumed_run_ends_as_uninterrupted_with_cuda_graphs() {
    // The staged steps (on the CPU: padded batches, AdamW reading device scalars): the
    // resumed run stages from its first step, since the checkpoint brings the moments.
    let d = interrupted_run_ends_as_uninterrupted("graphs", r#", "cuda_graphs": true"#);
    assert_eq!(d, 0.0, "bitwise on CPU");
}

#[test]
fn other_runs_cannot_resume() {
    let _serial = serial();
    let train = toy_data(40, 1);
    let base = r#""max_steps": 8, "save_steps": 4, "per_device_train_batch_size": 4"#;
    let a = args(&format!("{{{base}}}"));
    let dir = temp_dir("mismatch");
    let _ = run(&a, (&train, &[]), 0, &dir, Some(4), None);
    let ck = dir.join("checkpoint-4");
    assert!(ck.join("trainer_state.json").is_file());
    let refused = |a: &TrainingArgs, data: &[Example]| -> String {
        match run(a, (data, &[]), 0, &dir.join("x"), None, Some(&ck)) {
            Err(e @ Error::Train(TrainError::TrainingArgs(_))) => e.to_string(),
            Err(e) => panic!("expected a TrainingArgs error, got {e}"),
            Ok(_) => panic!("resumed"),
        }
    };
    let e = refused(&args(&format!(r#"{{{base}, "per_device_train_batch_size": 8}}"#)), &train);
    assert!(e.contains("per_device_train_batch_size is 8 but the checkpoint's run has 4"), "{e}");
    let e = refused(&args(&format!(r#"{{{base}, "seed": 1}}"#)), &train);
    assert!(e.contains("seed is 1"), "{e}");
    let e = refused(&args(&format!(r#"{{{base}, "max_steps": 10}}"#)), &train);
    assert!(e.contains("total number of optimizer steps"), "{e}");
    let e = refused(&args(&format!(r#"{{{base}, "gradient_accumulation_steps": 2}}"#)), &train);
    assert!(e.contains("gradient_accumulation_steps is 2"), "{e}");
    let e = refused(&a, &train[..36]);
    assert!(e.contains("number of training examples is 36"), "{e}");
    let e = refused(&a, &toy_data(40, 9));
    assert!(e.contains("training data"), "{e}");
    // Same run, other logging: fine.
    let ok = run(
        &args(&format!(r#"{{{base}, "logging_steps": 1}}"#)),
        (&train, &[]),
        0,
        &dir.join("y"),
        None,
        Some(&ck),
    );
    assert_eq!(steps(&ok.unwrap().events), [5, 6, 7, 8]);
    // Not a checkpoint.
    let r = run(&a, (&train, &[]), 0, &dir.join("z"), None, Some(&dir.join("nowhere")));
    assert!(matches!(r, Err(Error::Train(TrainError::Io { .. }))), "{:?}", r.err());
    let _ = std::fs::remove_dir_all(&dir);
}
