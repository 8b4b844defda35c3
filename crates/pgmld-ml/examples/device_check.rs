//! Reports which device libtorch uses and times a tiny BERT's training steps there:
//! `cargo run --release -p pgmld-ml --example device_check`. Used on GPU machines to check
//! that a binary built against the lean CPU libtorch finds CUDA at run time.

use pgmld_ml::{BertForSequenceClassification, Config};
use pgmld_train::best_device;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

fn main() {
    let device = best_device();
    println!(
        "cuda available: {}, devices: {}, using {device:?}",
        tch::Cuda::is_available(),
        tch::Cuda::device_count()
    );
    let cfg: Config = serde_json::from_str(
        r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
            "intermediate_size": 1536, "hidden_act": "gelu", "max_position_embeddings": 512,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#,
    )
    .expect("config");
    tch::manual_seed(0);
    for kind in [Kind::Float, Kind::BFloat16] {
        if kind == Kind::BFloat16 && device == tch::Device::Cpu {
            continue;
        }
        let mut vs = nn::VarStore::new(device);
        let model = BertForSequenceClassification::load(vs.root(), &cfg, 2);
        if kind == Kind::BFloat16 {
            vs.bfloat16();
        }
        let mut opt = nn::AdamW::default().build(&vs, 5e-5).expect("optimizer");
        let (batch, seq) = (16i64, 128i64);
        let ids = Tensor::randint(30522, [batch, seq], (Kind::Int64, device));
        let mask = Tensor::ones([batch, seq], (Kind::Int64, device));
        let labels = Tensor::randint(2, [batch], (Kind::Int64, device));
        let mut step = |i: usize| {
            let logits = model.forward(&ids, Some(&mask), None, true);
            let loss = BertForSequenceClassification::loss(&logits.to_kind(Kind::Float), &labels);
            opt.backward_step(&loss);
            if i % 10 == 9 {
                let _ = f64::try_from(&loss);
            }
        };
        for i in 0..3 {
            step(i);
        }
        let steps = 20;
        let t = Instant::now();
        for i in 0..steps {
            step(i);
        }
        if device != tch::Device::Cpu {
            tch::Cuda::synchronize(0);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{kind:?}: MiniLM-sized BERT, batch {batch} x {seq} tokens: {:.1} ms/step, {:.0} samples/s",
            secs * 1000.0 / steps as f64,
            (batch as f64 * steps as f64) / secs
        );
    }
}
