//! Data-parallel training (#16 item 5) at the trainer level: two ranks over c10d's Gloo
//! process group, each with per-device batch 4, end with the weights, losses and metrics of
//! one process trained with batch 8 on the same data (within 1e-5 after 10 steps, dropout
//! off, an uneven last batch included), and a rank that stops fails the other's next
//! collective instead of hanging it.

mod tiny_train;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgmld_ml::{train_classifier, train_classifier_data_parallel, Classifier, Error};
use pgmld_train::{Error as TrainError, LogEvent, ProcessGroup, Store, TrainingArgs};
use tch::{Device, Tensor};
use tiny_train::{args, logs_into, serial, tiny_config, tiny_tokenizer, toy_data};

/// The tiny BERT without dropout (ranks draw other masks than a single process).
fn model(seed: i64) -> Classifier {
    let mut config = tiny_config();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    tch::manual_seed(seed);
    Classifier::new(config, 2, Device::Cpu).unwrap()
}

fn params(m: &Classifier) -> HashMap<String, Tensor> {
    m.vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

fn max_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().map(|(k, t)| (t - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

const T: Duration = Duration::from_secs(30);

/// 10 steps over 61 examples: the 8th global batch holds 5 (3 + 2 on two ranks).
fn hp(batch: usize, world_size: usize) -> TrainingArgs {
    args(&format!(
        r#"{{"learning_rate": 1e-3, "max_steps": 10, "per_device_train_batch_size": {batch},
            "logging_steps": 1, "seed": 5, "warmup_steps": 2, "weight_decay": 0.01,
            "world_size": {world_size}}}"#
    ))
}

#[test]
fn two_ranks_end_as_one_process_with_the_global_batch() {
    let _g = serial();
    let (train, eval) = (toy_data(61, 1), toy_data(16, 2));
    let tok = tiny_tokenizer();

    let mut single = model(7);
    let mut single_logs = Vec::new();
    let one = train_classifier(
        &mut single,
        &tok,
        &train,
        &eval,
        &hp(8, 1),
        logs_into(&mut single_logs),
        |_| {},
        || false,
        None,
    )
    .unwrap();

    // Rank 1 starts from other weights: rank 0's are broadcast.
    let models = [model(7), model(99)];
    let server = Store::serve("127.0.0.1", 0, 2, T, "dp-test/").unwrap();
    let port = server.port();
    let started = Instant::now();
    let mut ranks = Vec::new();
    for (rank, mut m) in models.into_iter().enumerate() {
        let (train, eval) = (train.clone(), eval.clone());
        ranks.push(std::thread::spawn(move || {
            let store = Store::connect("127.0.0.1", port, 2, T, "dp-test/").unwrap();
            let mut group = ProcessGroup::gloo(&store, rank, 2, "127.0.0.1", T).unwrap();
            let tok = tiny_tokenizer();
            let mut logs: Vec<LogEvent> = Vec::new();
            let out = train_classifier_data_parallel(
                &mut m,
                &tok,
                &train,
                &eval,
                &hp(4, 2),
                logs_into(&mut logs),
                |_| {},
                || false,
                None,
                Some(&mut group),
            )
            .unwrap();
            (params(&m), logs, out)
        }));
    }
    let results: Vec<_> = ranks.into_iter().map(|r| r.join().unwrap()).collect();
    println!("two ranks, 10 steps: {:?}", started.elapsed());
    drop(server);
    let reference = params(&single);
    for (rank, (p, logs, out)) in results.iter().enumerate() {
        let d = max_diff(p, &reference);
        println!("rank {rank}: max |w - w_single| = {d:e}");
        assert!(d < 1e-5, "rank {rank}: weights differ by {d}");
        assert_eq!(logs.len(), single_logs.len());
        for (a, b) in logs.iter().zip(&single_logs) {
            assert_eq!(a.step, b.step);
            assert!(
                (a.loss - b.loss).abs() < 1e-5,
                "step {}: loss {} vs {}",
                a.step,
                a.loss,
                b.loss
            );
        }
        assert_eq!(out.train.global_step, 10);
        if rank > 0 {
            assert!(out.eval.is_none(), "only rank 0 evaluates");
            continue;
        }
        let (e, s) = (out.eval.as_ref().unwrap(), one.eval.as_ref().unwrap());
        assert!((e.eval_loss - s.eval_loss).abs() < 1e-5, "{} vs {}", e.eval_loss, s.eval_loss);
    }
    assert!(max_diff(&results[0].0, &results[1].0) < 1e-6, "the ranks' weights agree");
}

#[test]
fn a_rank_that_stops_fails_the_others_collective() {
    let _g = serial();
    let train = toy_data(40, 3);
    let server = Store::serve("127.0.0.1", 0, 2, T, "dp-stop/").unwrap();
    let port = server.port();
    let models = [model(1), model(2)];
    let mut ranks = Vec::new();
    for (rank, mut m) in models.into_iter().enumerate() {
        let train = train.clone();
        ranks.push(std::thread::spawn(move || {
            let store = Store::connect("127.0.0.1", port, 2, T, "dp-stop/").unwrap();
            let timeout = Duration::from_secs(3);
            let mut group = ProcessGroup::gloo(&store, rank, 2, "127.0.0.1", timeout).unwrap();
            let tok = tiny_tokenizer();
            let steps = std::cell::Cell::new(0);
            let started = Instant::now();
            let out = train_classifier_data_parallel(
                &mut m,
                &tok,
                &train,
                &[],
                &hp(4, 2),
                |e| {
                    if matches!(e, pgmld_ml::TrainEvent::Log(_)) {
                        steps.set(steps.get() + 1);
                    }
                },
                |_| {},
                // Rank 1 stops after its third step (as a cancelled or killed rank would).
                || rank == 1 && steps.get() >= 3,
                None,
                Some(&mut group),
            );
            drop(group);
            (out.err(), started.elapsed())
        }));
    }
    let results: Vec<_> = ranks.into_iter().map(|r| r.join().unwrap()).collect();
    drop(server);
    assert!(
        matches!(results[1].0, Some(Error::Train(TrainError::Cancelled))),
        "{:?}",
        results[1].0
    );
    match &results[0].0 {
        Some(Error::Train(TrainError::DataParallel(m))) => println!("rank 0: {m}"),
        other => panic!("rank 0 should fail its collective: {other:?}"),
    }
    assert!(results[0].1 < Duration::from_secs(20), "failed within the group's timeout");
}
