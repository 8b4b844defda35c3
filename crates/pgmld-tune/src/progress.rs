//! The JSON of progress notices and `pgml.logs` rows: PostgresML's shape (HF's log
//! dictionaries plus step, max_steps and timestamp), with progress (0–1) and eta_seconds.

use pgmld_ml::EvalMetrics;
use pgmld_train::{LogEvent, TrainMetrics};
use serde_json::{json, Map, Value as Json};

/// Local wall time as PostgresML prints it: `2024-03-07 01:59:15.090612`.
pub fn timestamp() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

fn with(mut base: Map<String, Json>, extra: Json) -> Json {
    if let Json::Object(e) = extra {
        base.extend(e);
    }
    Json::Object(base)
}

/// A training log event (`loss` rounded to 4 digits as HF does), with progress and the
/// estimated seconds left at this run's rate so far (`elapsed` seconds for the steps after
/// `start_step`, the checkpoint a resumed run started from).
pub fn log_event(ev: &LogEvent, elapsed: f64, start_step: i64) -> Json {
    let progress = ev.step as f64 / ev.max_steps.max(1) as f64;
    let done = ev.step - start_step;
    let eta =
        if done > 0 { elapsed / done as f64 * (ev.max_steps - ev.step).max(0) as f64 } else { 0.0 };
    json!({
        "loss": round(ev.loss, 4),
        "grad_norm": ev.grad_norm,
        "learning_rate": ev.learning_rate,
        "epoch": round(ev.epoch, 4),
        "step": ev.step,
        "max_steps": ev.max_steps,
        "timestamp": timestamp(),
        "progress": round(progress, 4),
        "eta_seconds": round(eta, 1),
    })
}

/// The evaluation summary, with the position in training.
pub fn eval_event(m: &EvalMetrics, epoch: f64, step: i64, max_steps: i64) -> Json {
    metrics_event(serde_json::to_value(m).unwrap_or_default(), epoch, step, max_steps)
}

/// Any evaluation's metrics (a JSON object: `eval_loss`, `perplexity`, …), with the position
/// in training.
pub fn metrics_event(metrics: Json, epoch: f64, step: i64, max_steps: i64) -> Json {
    let base = match metrics {
        Json::Object(o) => o,
        _ => Map::new(),
    };
    with(
        base,
        json!({"epoch": round(epoch, 4), "step": step, "max_steps": max_steps, "timestamp": timestamp(),
               "progress": round(step as f64 / max_steps.max(1) as f64, 4)}),
    )
}

/// The training summary.
pub fn train_summary(t: &TrainMetrics, max_steps: i64) -> Json {
    json!({
        "train_runtime": round(t.train_runtime, 4),
        "train_samples_per_second": round(t.train_samples_per_second, 3),
        "train_steps_per_second": round(t.train_steps_per_second, 3),
        "train_loss": t.train_loss,
        "epoch": round(t.epoch, 4),
        "step": t.global_step,
        "max_steps": max_steps,
        "timestamp": timestamp(),
        "progress": 1.0,
        "eta_seconds": 0.0,
    })
}

/// Notice text for a JSON event, pretty-printed as in the guide.
pub fn notice_text(v: &Json) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_event_has_the_guide_keys_and_eta() {
        let ev = LogEvent {
            step: 500,
            max_steps: 10000,
            epoch: 0.25,
            loss: 0.345_349,
            grad_norm: 5.23,
            learning_rate: 1.9e-5,
        };
        let v = log_event(&ev, 100.0, 0);
        for k in [
            "loss",
            "grad_norm",
            "learning_rate",
            "epoch",
            "step",
            "max_steps",
            "timestamp",
            "progress",
            "eta_seconds",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        assert_eq!(v["loss"], json!(0.3453));
        assert_eq!(v["progress"], json!(0.05));
        assert_eq!(v["eta_seconds"], json!(1900.0));
        // Resumed at step 400: 100 s bought 100 steps, 9,500 are left.
        assert_eq!(log_event(&ev, 100.0, 400)["eta_seconds"], json!(9500.0));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "loss", "guide order kept: {keys:?}");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2024-03-07 01:59:15.090612".len(), "{ts}");
    }

    #[test]
    fn metrics_events_keep_the_metrics_first_and_add_the_position() {
        let v = metrics_event(json!({"eval_loss": 1.5, "perplexity": 4.48}), 2.0, 30, 60);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[..2], ["eval_loss", "perplexity"]);
        assert_eq!(
            (v["step"].clone(), v["max_steps"].clone(), v["progress"].clone()),
            (json!(30), json!(60), json!(0.5))
        );
        assert!(v["timestamp"].is_string());
    }
}
