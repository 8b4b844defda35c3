//! One `pgml.transform` text-classification call end to end: find the model, get it from
//! the shared cache, score the inputs on its worker, shape the JSON, and tell the client
//! about inputs that had to be truncated.

use std::path::PathBuf;
use std::sync::Arc;

use pgmld_hub::HubConfig;
use pgmld_ml::{ClassScores, ClassifyInput};
use pgmld_models::resolve::{self, ModelRef};
use pgmld_models::ModelError;
use pgmld_sql::{CallContext, Notice};
use pgmld_upstream::Connector;
use serde_json::{json, Value as Json};
use tokio_postgres::Client;

use crate::cache::{LoadedModel, ModelCache};
use crate::error::TransformError;
use crate::request::{ClassifyRequest, Dtype, TopK};

/// Serves `pgml.transform` for every database of the upstream.
pub struct Transformer {
    /// pgmld's own connections (one shared per database for lookups): the one connector
    /// pgmld built at startup.
    pub connector: Arc<Connector>,
    /// Hub endpoint, token and cache, for Hub repo ids: the one configuration pgmld built at
    /// startup.
    pub hub: Arc<HubConfig>,
    /// Where models stored in pgml.files are unpacked while they load.
    pub work_dir: PathBuf,
    /// The shared model cache.
    pub cache: ModelCache,
    /// Inputs per worker request; a call's inputs are cut into chunks this size, so other
    /// sessions' requests interleave with a long per-row query's.
    pub chunk: usize,
}

/// How many truncated inputs a notice names one by one.
const NOTICE_EXAMPLES: usize = 5;

impl Transformer {
    /// A transformer over `cache`.
    pub fn new(
        connector: Arc<Connector>,
        hub: Arc<HubConfig>,
        work_dir: PathBuf,
        cache: ModelCache,
        chunk: usize,
    ) -> Self {
        Transformer { connector, hub, work_dir, cache, chunk: chunk.max(1) }
    }

    /// The connection to `database` that every session's model lookups share.
    pub(crate) async fn client(&self, database: &str) -> Result<Arc<Client>, TransformError> {
        Ok(self.connector.shared(database).await.map_err(ModelError::from)?)
    }

    /// The model `req` names, loaded once for all sessions.
    pub async fn model(
        &self,
        ctx: &CallContext,
        req: &ClassifyRequest,
    ) -> Result<Arc<LoadedModel>, TransformError> {
        let client = self.client(&ctx.database).await?;
        let r = resolve::locate(&client, &req.model, &ctx.caller).await?;
        if let ModelRef::Stored { id, task, via } = &r {
            if task != "text-classification" && task != "text-pair-classification" {
                return Err(TransformError::WrongTask {
                    message: format!(
                        "model \"{}\" was trained for {task}, not text-classification",
                        req.model
                    ),
                    detail: format!(
                        "{via} resolves to pgml.models id {id}, whose project's task is {task}."
                    ),
                    hint: crate::error::CLASSIFY_HINT.into(),
                });
            }
        }
        let bf16 = match req.dtype {
            Dtype::Float32 => false,
            Dtype::BFloat16 => true,
            Dtype::Auto => self.cache.device() == tch::Device::Cpu && pgmld_train::cpu_has_bf16(),
        };
        let mut key = cache_key(&r, &ctx.database, req.revision.as_deref());
        if bf16 {
            key.push_str("#bf16");
        }
        let tmp_root = self.work_dir.join("transform");
        self.cache
            .get_or_load(&key, &req.model, bf16, || async {
                let revision = req.revision.as_deref();
                Ok(resolve::fetch_at(&client, &r, revision, &self.hub, &tmp_root).await?)
            })
            .await
    }

    /// Scores `inputs` with the model `req` names and returns one JSON result per input.
    pub async fn classify(
        &self,
        ctx: &CallContext,
        req: &ClassifyRequest,
        inputs: &[ClassifyInput],
    ) -> Result<Vec<Json>, TransformError> {
        let model = self.model(ctx, req).await?;
        // Sorted by tokens (what a batch pads to), not bytes: tokenizing twice costs
        // about 1 % of the forward passes it saves on padding.
        let tokens = {
            let (tokenizer, owned) = (model.tokenizer.clone(), inputs.to_vec());
            tokio::task::spawn_blocking(move || {
                pgmld_ml::text_classification::token_counts(&tokenizer, &owned)
            })
            .await
            .map_err(|e| TransformError::Internal(format!("counting tokens: {e}")))?
            .map_err(|e| TransformError::Load {
                model: model.name.clone(),
                message: e.to_string(),
            })?
        };
        let scores = in_chunks(
            ctx,
            inputs,
            self.chunk,
            |i| tokens[i],
            |part| model.classify(part, ctx.cancelled.clone()),
        )
        .await?;
        notice_truncated(ctx, &model, &scores);
        Ok(scores.iter().map(|s| shape(&model, req, s)).collect())
    }
}

/// Sends `inputs` to a model's worker in chunks of `chunk` and returns the answers in input
/// order. Longest first (`len` of each input's index), so each chunk pads to inputs of
/// similar length; chunks, so other sessions' requests interleave with a long per-row
/// query's.
pub(crate) async fn in_chunks<I, O, F, Fut>(
    ctx: &CallContext,
    inputs: &[I],
    chunk: usize,
    len: impl Fn(usize) -> usize,
    ask: F,
) -> Result<Vec<O>, TransformError>
where
    I: Clone,
    F: Fn(Vec<I>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<O>, TransformError>>,
{
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(len(i)));
    let chunk = chunk.max(1);
    let pending: Vec<_> = order
        .chunks(chunk)
        .map(|part| ask(part.iter().map(|&i| inputs[i].clone()).collect()))
        .collect();
    let answers = futures_util::future::join_all(pending).await;
    if ctx.is_cancelled() {
        return Err(TransformError::Cancelled);
    }
    let mut out: Vec<Option<O>> = std::iter::repeat_with(|| None).take(inputs.len()).collect();
    for (part, answer) in order.chunks(chunk).zip(answers) {
        let answer = answer?;
        if answer.len() != part.len() {
            return Err(TransformError::Internal(format!(
                "a worker answered {} of {} inputs",
                answer.len(),
                part.len()
            )));
        }
        for (&i, o) in part.iter().zip(answer) {
            out[i] = Some(o);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Cache identity: stored models by database and id (a new deployment is a new key),
/// local directories by path and modification time (a rewritten checkpoint reloads),
/// Hub repos by id and revision.
pub(crate) fn cache_key(r: &ModelRef, database: &str, revision: Option<&str>) -> String {
    match r {
        ModelRef::Dir(dir) => {
            let stamp = |f: &str| -> u128 {
                std::fs::metadata(dir.join(f))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos())
            };
            let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            format!(
                "dir:{}@{}-{}",
                canon.display(),
                stamp("config.json"),
                stamp("model.safetensors")
            )
        }
        ModelRef::Hub(repo) => format!("hub:{repo}@{}", revision.unwrap_or("main")),
        other => other.cache_key(database),
    }
}

/// The pipeline's output for one input: `{"label", "score"}`, or the ranked classes.
fn shape(model: &LoadedModel, req: &ClassifyRequest, s: &ClassScores) -> Json {
    let scores = req.score_fn.unwrap_or(model.default_fn).apply(&s.logits);
    let entry = |(i, score): (usize, f32)| {
        let label = model.labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"));
        json!({"label": label, "score": score as f64})
    };
    let ranked = pgmld_ml::text_classification::ranked(&scores);
    match req.top_k {
        TopK::Best => ranked.into_iter().next().map_or(Json::Null, entry),
        TopK::Ranked(k) => {
            Json::Array(ranked.into_iter().take(k.unwrap_or(usize::MAX)).map(entry).collect())
        }
    }
}

/// One NOTICE per call naming the inputs truncation cut (the first few by position).
fn notice_truncated(ctx: &CallContext, model: &LoadedModel, scores: &[ClassScores]) {
    let cut: Vec<(usize, usize)> = scores
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.truncated_from.map(|n| (i + 1, n)))
        .collect();
    if cut.is_empty() {
        return;
    }
    let examples: Vec<String> =
        cut.iter().take(NOTICE_EXAMPLES).map(|(i, n)| format!("input {i}: {n} tokens")).collect();
    let more = if cut.len() > NOTICE_EXAMPLES {
        format!(", and {} more", cut.len() - NOTICE_EXAMPLES)
    } else {
        String::new()
    };
    let message = format!(
        "{} of {} inputs exceed model \"{}\"'s maximum of {} tokens and were truncated ({}{more})",
        cut.len(),
        scores.len(),
        model.name,
        model.max_length,
        examples.join(", ")
    );
    (ctx.notices)(Notice { severity: "NOTICE", message });
}
