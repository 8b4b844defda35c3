//! Fine-tunes a real checkpoint on a labelled CSV (`text,label`) and prints the train and
//! eval metrics as JSON, on the best device (CUDA when present):
//! `tune_check <model_dir> <csv> <n_train> <n_eval> [bf16] [tf32] [ckpt] [group1] [graphs]
//! [nodrop]` (`ckpt`: gradient checkpointing; `group1`: train as rank 0 of a data-parallel
//! group of one, formed as a pgml.tune job's is, NCCL on CUDA and Gloo on the CPU, so the
//! collective path of `world_size` runs on a one-GPU machine; `graphs`: `cuda_graphs`, the
//! plugin from `PGMLD_CUDA_GRAPH_PLUGIN` or beside this binary; `nodrop`: the checkpoint's
//! dropout set to 0, so runs can be compared step by step). With `PGMLD_PROFILE_TRACE` set to
//! a path, the training and its final evaluation (not the loading) run under torch.profiler
//! and its Chrome trace is written there. Used on GPU machines
//! (bench/tune/gpu), where there is no cargo and no Postgres, to check training speed, bf16
//! autocast and CUDA graphs with a binary built here.

use pgmld_ml::{train_classifier_data_parallel, Classifier, Example, TextTokenizer};
use pgmld_train::{best_device, ProcessGroup, Store, TrainingArgs};
use std::time::Duration;

fn main() {
    // Before any thread: where the NCCL plugin is (PGMLD_NCCL_PLUGIN, as the kernels' GPU
    // test; else beside this binary) and NCCL's environment defaults, as pgmld sets them.
    let plugin = std::env::var_os("PGMLD_NCCL_PLUGIN").filter(|p| !p.is_empty());
    pgmld_train::nccl::configure(plugin.as_deref().map(std::path::Path::new));
    let graph_plugin = std::env::var_os("PGMLD_CUDA_GRAPH_PLUGIN").filter(|p| !p.is_empty());
    pgmld_train::cuda_graph::configure(graph_plugin.as_deref().map(std::path::Path::new));
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: tune_check <model_dir> <csv> <n_train> <n_eval> [bf16] [tf32] [ckpt] [group1] [graphs] [nodrop]"
        );
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let n_train: usize = args[3].parse().expect("n_train");
    let n_eval: usize = args[4].parse().expect("n_eval");
    let bf16 = args[5..].iter().any(|a| a == "bf16");
    let ckpt = args[5..].iter().any(|a| a == "ckpt");
    let tf32 = args[5..].iter().any(|a| a == "tf32");
    let group1 = args[5..].iter().any(|a| a == "group1");
    let graphs = args[5..].iter().any(|a| a == "graphs");
    let nodrop = args[5..].iter().any(|a| a == "nodrop");
    let mut rows: Vec<Example> = csv::Reader::from_path(&args[2])
        .expect("csv")
        .records()
        .map(|r| {
            let r = r.expect("row");
            Example::new(r[0].to_string(), r[1].parse().expect("label"))
        })
        .collect();
    assert!(rows.len() >= n_train + n_eval, "{} rows", rows.len());
    let eval = rows.split_off(n_train);
    let eval = &eval[..n_eval];
    let device = best_device();
    // As pgml.tune: seeded before the fresh head is drawn, so runs repeat.
    tch::manual_seed(42);
    let model_dir = if nodrop { without_dropout(dir) } else { dir.to_path_buf() };
    let mut model = Classifier::from_pretrained(&model_dir, Some(2), device).expect("model");
    let inner = pgmld_ml::vocab::tokenizer_from_dir(dir).expect("tokenizer");
    let tok = TextTokenizer::from_tokenizer(inner, 128).expect("tokenizer");
    let targs = TrainingArgs::from_json(&serde_json::json!({
        "learning_rate": 1e-4, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
        "num_train_epochs": 1, "warmup_ratio": 0.1, "weight_decay": 0.01, "logging_steps": 10,
        "seed": 42, "bf16": bf16, "gradient_checkpointing": ckpt, "tf32": tf32.then_some(true), "cuda_graphs": graphs
    }))
    .expect("args");
    // As a rank of a pgml.tune job: a store served on loopback, then the device's backend.
    let timeout = Duration::from_secs(120);
    let mut group = group1.then(|| {
        let store = Store::serve("127.0.0.1", 0, 1, timeout, "tune_check/").expect("store");
        let group = match device {
            tch::Device::Cuda(i) => ProcessGroup::nccl(&store, 0, 1, i, timeout),
            _ => ProcessGroup::gloo(&store, 0, 1, "127.0.0.1", timeout),
        }
        .expect("process group");
        (store, group)
    });
    let backend = group.as_ref().map(|_| if device.is_cuda() { "nccl" } else { "gloo" });
    let trace = std::env::var_os("PGMLD_PROFILE_TRACE").filter(|p| !p.is_empty());
    let profile = trace
        .as_ref()
        .map(|_| pgmld_train::profiler::Profile::start(device.is_cuda()).expect("profiler"));
    let out = train_classifier_data_parallel(
        &mut model,
        &tok,
        &rows,
        eval,
        &targs,
        |e| eprintln!("{}", serde_json::to_string(&e).unwrap_or_default()),
        |_| {},
        || false,
        None,
        group.as_mut().map(|(_, g)| g),
    )
    .expect("training");
    if let (Some(profile), Some(path)) = (profile, &trace) {
        profile.save(std::path::Path::new(path)).expect("trace");
    }
    println!(
        "{}",
        serde_json::json!({"device": format!("{device:?}"), "bf16": bf16, "tf32": tf32,
            "gradient_checkpointing": ckpt, "group": backend, "dropout": !nodrop,
            "cuda_graphs": out.cuda_graphs, "train": out.train, "eval": out.eval,
            "losses": out.log_history.iter().map(|l| l.loss).collect::<Vec<_>>()})
    );
}

/// A directory holding `dir`'s config with dropout 0 and a link to its weights.
fn without_dropout(dir: &std::path::Path) -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("tune_check_nodrop_{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config.json"))
            .expect("config.json");
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(out.join("config.json"), config.to_string()).expect("config.json");
    let weights = out.join("model.safetensors");
    if !weights.exists() {
        let src = std::fs::canonicalize(dir.join("model.safetensors")).expect("model.safetensors");
        std::os::unix::fs::symlink(src, weights).expect("link");
    }
    out
}
