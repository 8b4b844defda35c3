//! The Hub uploader of a tune seen from the async side: its next event, each event relayed
//! to the client (notices) and pgml.logs, and the final push the call waits for.

use pgmld_sql::CallContext;
use serde_json::Value as Json;
use tokio_postgres::Client;

use crate::progress;
use crate::push::{PushEvent, Pusher};
use crate::records;
use crate::tuner::{cancelled, info, warning};
use pgmld_hub::card::{self, ModelCard};

/// A tune's pushes to the Hub: the uploader and the model card it pushes.
pub(crate) struct HubPush {
    /// The uploader.
    pub(crate) pusher: Pusher,
    /// The card pushed with each model (metrics updated as they come).
    pub(crate) card: ModelCard,
}

/// The uploader's next event; never resolves when there is no uploader or it has ended.
pub(crate) async fn next_push_event(hub: &mut Option<HubPush>) -> PushEvent {
    if let Some(h) = hub {
        if let Some(ev) = h.pusher.next_event().await {
            return ev;
        }
    }
    std::future::pending().await
}

/// Pushes the final model in `out_dir` (after pgml.files has it) with the card showing
/// `metrics`, relaying the uploader's events; returns once it is pushed. A cancel stops the
/// push (dropping the uploader), not the trained model.
pub(crate) async fn push_final(
    client: &Client,
    ctx: &CallContext,
    (project_id, model_id): (i64, i64),
    mut h: HubPush,
    (step, out_dir): (i64, &std::path::Path),
    metrics: &Json,
) {
    h.card.metrics = card_metrics(metrics);
    h.pusher.finish(step, out_dir.to_path_buf(), h.card.clone());
    loop {
        tokio::select! {
            ev = h.pusher.next_event() => match ev {
                Some(ev) => relay(client, ctx, (project_id, model_id), &ev).await,
                None => break,
            },
            _ = cancelled(&ctx.cancelled) => {
                let message = "cancelled by the client before it finished".to_string();
                let ev = PushEvent::Failed { step: Some(step), message, fatal: true };
                relay(client, ctx, (project_id, model_id), &ev).await;
                break;
            }
        }
    }
}

/// The metrics a model card shows: evaluation and training results, not bookkeeping.
pub(crate) fn card_metrics(v: &Json) -> Vec<(String, Json)> {
    const SKIP: &[&str] =
        &["timestamp", "progress", "eta_seconds", "max_steps", "stored_files", "stored_bytes"];
    card::pairs(v).into_iter().filter(|(k, _)| !SKIP.contains(&k.as_str())).collect()
}

/// Tells the client and pgml.logs what the uploader did: INFO notices for the repo and each
/// commit, WARNINGs for failures. A log row that cannot be written only goes to pgmld's log:
/// pushes never fail a tune.
pub(crate) async fn relay(
    client: &Client,
    ctx: &CallContext,
    (project_id, model_id): (i64, i64),
    ev: &PushEvent,
) {
    let logs = ev.log_json();
    match ev.warning() {
        Some(w) => warning(ctx, w),
        None => info(ctx, progress::notice_text(&logs)),
    }
    if let Err(e) = records::log(client, model_id, project_id, &logs).await {
        tracing::warn!(model_id, "cannot log a push_to_hub event: {e}");
    }
}
