//! One model cache for every session: a model loads once (concurrent first callers wait
//! for the same load), stays on its worker thread while cached, and the least recently
//! used models leave when the weights in memory exceed the budget.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pgmld_llm::chat_model::ChatOptions;
use pgmld_metrics::Metrics;
use pgmld_ml::{
    ClassScores, ClassifyInput, ScoreFn, SentenceEncoder, TextClassifier, TextTokenizer,
};
use pgmld_models::ModelSource;
use tch::Device;
use tokio::sync::{oneshot, OnceCell};

use crate::chat_worker::{self, ChatHandle, ChatSource};
use crate::error::TransformError;
use crate::worker::{self, Batched, Batching, Request};

/// A model on its worker thread, with what callers need to shape results.
#[derive(Debug)]
pub struct LoadedModel {
    /// The name it was loaded under, for messages.
    pub name: String,
    /// Class names in id order.
    pub labels: Vec<String>,
    /// Longest input in tokens.
    pub max_length: usize,
    /// Scoring function when the caller names none.
    pub default_fn: ScoreFn,
    /// Bytes of weights.
    pub bytes: u64,
    /// The model's tokenizer, to sort a call's inputs by tokens before they are batched.
    pub tokenizer: Arc<TextTokenizer>,
    tx: std::sync::mpsc::Sender<Request<TextClassifier>>,
}

impl LoadedModel {
    /// Logits for `inputs`, computed on the model's thread (batched with other callers').
    pub async fn classify(
        &self,
        inputs: Vec<ClassifyInput>,
        cancelled: Arc<AtomicBool>,
    ) -> Result<Vec<ClassScores>, TransformError> {
        ask(&self.tx, &self.name, inputs, cancelled).await
    }
}

/// A sentence encoder on its worker thread (`pgml.embed`).
#[derive(Debug)]
pub struct LoadedEmbedder {
    /// The name it was loaded under, for messages.
    pub name: String,
    /// Bytes of weights.
    pub bytes: u64,
    tx: std::sync::mpsc::Sender<Request<SentenceEncoder>>,
}

impl LoadedEmbedder {
    /// One vector per text, computed on the model's thread (batched with other callers').
    pub async fn embed(
        &self,
        texts: Vec<String>,
        cancelled: Arc<AtomicBool>,
    ) -> Result<Vec<Vec<f32>>, TransformError> {
        ask(&self.tx, &self.name, texts, cancelled).await
    }
}

/// Sends `inputs` to a model's worker and awaits their outputs.
async fn ask<M: Batched>(
    tx: &std::sync::mpsc::Sender<Request<M>>,
    name: &str,
    inputs: Vec<M::Input>,
    cancelled: Arc<AtomicBool>,
) -> Result<Vec<M::Output>, TransformError> {
    let (reply, rx) = oneshot::channel();
    tx.send(Request { inputs, cancelled: cancelled.clone(), reply })
        .map_err(|_| TransformError::Internal(format!("the worker of model {name} stopped")))?;
    match rx.await {
        Ok(Ok(outputs)) => Ok(outputs),
        Ok(Err(message)) => Err(TransformError::Load { model: name.to_string(), message }),
        Err(_) if cancelled.load(Ordering::Relaxed) => Err(TransformError::Cancelled),
        Err(_) => {
            Err(TransformError::Internal(format!("the worker of model {name} dropped a request")))
        }
    }
}

/// What a cache slot holds: a classifier, a sentence encoder or a chat model, each on its
/// own thread.
#[derive(Debug, Clone)]
pub enum Cached {
    /// A text classifier.
    Classifier(Arc<LoadedModel>),
    /// A sentence encoder.
    Embedder(Arc<LoadedEmbedder>),
    /// A causal LM for conversational / text-generation calls.
    Chat(Arc<ChatHandle>),
}

impl Cached {
    /// Bytes of weights it keeps in memory.
    pub fn bytes(&self) -> u64 {
        match self {
            Cached::Classifier(m) => m.bytes,
            Cached::Embedder(m) => m.bytes,
            Cached::Chat(m) => m.bytes,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Cached::Classifier(_) => "a classifier",
            Cached::Embedder(_) => "a sentence encoder",
            Cached::Chat(_) => "a chat model",
        }
    }
}

struct Slot {
    cell: OnceCell<Cached>,
    last_used: AtomicU64,
}

/// The shared cache.
pub struct ModelCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    budget_bytes: u64,
    batching: Batching,
    device: Device,
    metrics: Arc<Metrics>,
    clock: AtomicU64,
}

impl ModelCache {
    /// An empty cache holding at most `budget_bytes` of weights (one model always fits,
    /// whatever its size), running models on `device`.
    pub fn new(
        budget_bytes: u64,
        batching: Batching,
        device: Device,
        metrics: Arc<Metrics>,
    ) -> Self {
        ModelCache {
            slots: Mutex::new(HashMap::new()),
            budget_bytes,
            batching,
            device,
            metrics,
            clock: AtomicU64::new(0),
        }
    }

    /// The device models run on.
    pub fn device(&self) -> Device {
        self.device
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The text classifier cached under `key`, loading it from the directory `fetch`
    /// produces when absent (running its forward passes under bfloat16 autocast when
    /// `bf16`: give such a model a key of its own). Concurrent callers with one key share
    /// one load.
    pub async fn get_or_load<F, Fut>(
        &self,
        key: &str,
        name: &str,
        bf16: bool,
        fetch: F,
    ) -> Result<Arc<LoadedModel>, TransformError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ModelSource, TransformError>>,
    {
        let init = || async {
            let source = fetch().await?;
            self.load(name, source, bf16).await.map(Cached::Classifier)
        };
        match self.get_or_init(key, init).await? {
            Cached::Classifier(m) => Ok(m),
            other => Err(wrong_entry(key, &other)),
        }
    }

    /// The sentence encoder cached under `key`, loading it from the directory `fetch`
    /// produces when absent.
    pub async fn get_or_load_embedder<F, Fut>(
        &self,
        key: &str,
        name: &str,
        fetch: F,
    ) -> Result<Arc<LoadedEmbedder>, TransformError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ModelSource, TransformError>>,
    {
        let init = || async {
            let source = fetch().await?;
            let info = |_: &SentenceEncoder| ();
            let load_error = |e: pgmld_ml::Error| TransformError::Load {
                model: name.into(),
                message: e.to_string(),
            };
            let ((), bytes, tx) =
                self.start_worker(name, source, SentenceEncoder::load, info, load_error).await?;
            let m = LoadedEmbedder { name: name.to_string(), bytes, tx };
            Ok(Cached::Embedder(Arc::new(m)))
        };
        match self.get_or_init(key, init).await? {
            Cached::Embedder(m) => Ok(m),
            other => Err(wrong_entry(key, &other)),
        }
    }

    /// The chat model cached under `key`, loading what `fetch` points at when absent
    /// (quantised to int8 when `load_in_8bit`).
    pub async fn get_or_load_chat<F, Fut>(
        &self,
        key: &str,
        name: &str,
        load_in_8bit: bool,
        fetch: F,
    ) -> Result<Arc<ChatHandle>, TransformError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ChatSource, TransformError>>,
    {
        let init = || async {
            let source = fetch().await?;
            let opts = ChatOptions { device: self.device, kind: None, load_in_8bit };
            let handle = chat_worker::start(name, source, opts, self.metrics.clone()).await?;
            self.metrics.model_loads.inc();
            Ok(Cached::Chat(Arc::new(handle)))
        };
        match self.get_or_init(key, init).await? {
            Cached::Chat(m) => Ok(m),
            other => Err(wrong_entry(key, &other)),
        }
    }

    async fn get_or_init<F, Fut>(&self, key: &str, init: F) -> Result<Cached, TransformError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached, TransformError>>,
    {
        let slot = {
            let mut slots = self.lock();
            slots
                .entry(key.to_string())
                .or_insert_with(|| {
                    Arc::new(Slot { cell: OnceCell::new(), last_used: AtomicU64::new(0) })
                })
                .clone()
        };
        slot.last_used.store(self.clock.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        let mut loaded_here = false;
        let result = slot
            .cell
            .get_or_try_init(|| {
                loaded_here = true;
                init()
            })
            .await
            .cloned();
        match &result {
            Err(_) => {
                let mut slots = self.lock();
                if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot) && s.cell.get().is_none()) {
                    slots.remove(key);
                }
            }
            Ok(_) if loaded_here => self.evict(key),
            Ok(_) => {}
        }
        result
    }

    async fn load(
        &self,
        name: &str,
        source: ModelSource,
        bf16: bool,
    ) -> Result<Arc<LoadedModel>, TransformError> {
        let info = |m: &TextClassifier| {
            (m.labels().to_vec(), m.max_length(), m.default_score_fn(), m.tokenizer())
        };
        let load_error = |e: pgmld_ml::Error| match e {
            pgmld_ml::Error::Unsupported(m)
                if m.contains("no trained text-classification head") =>
            {
                TransformError::WrongTask {
                    message: format!("model \"{name}\" is not a text-classification model"),
                    detail: m,
                    hint: crate::error::CLASSIFY_HINT.into(),
                }
            }
            e => TransformError::Load { model: name.to_string(), message: e.to_string() },
        };
        let load = move |dir: &std::path::Path, device| {
            TextClassifier::load(dir, device).map(|m| m.with_bf16(bf16))
        };
        let ((labels, max_length, default_fn, tokenizer), bytes, tx) =
            self.start_worker(name, source, load, info, load_error).await?;
        Ok(Arc::new(LoadedModel {
            name: name.to_string(),
            labels,
            max_length,
            default_fn,
            bytes,
            tokenizer,
            tx,
        }))
    }

    /// Loads a model on a thread of its own, which then serves it ([`worker::serve`]);
    /// returns what `info` reads off the loaded model, its weight bytes and the thread's
    /// request channel.
    async fn start_worker<M: Batched, I: Send + 'static>(
        &self,
        name: &str,
        source: ModelSource,
        load: impl FnOnce(&std::path::Path, Device) -> pgmld_ml::Result<M> + Send + 'static,
        info: impl FnOnce(&M) -> I + Send + 'static,
        load_error: impl FnOnce(pgmld_ml::Error) -> TransformError,
    ) -> Result<(I, u64, std::sync::mpsc::Sender<Request<M>>), TransformError> {
        let (tx, rx) = std::sync::mpsc::channel::<Request<M>>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (device, batching, metrics) = (self.device, self.batching, self.metrics.clone());
        let thread_name = format!(
            "pgmld-model-{}",
            name.chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect::<String>()
        );
        let started = Instant::now();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    load(&source.dir, device)
                }));
                drop(source); // an extracted pgml.files copy is no longer needed
                match loaded {
                    Ok(Ok(model)) => {
                        let bytes = model.bytes();
                        if ready_tx.send(Ok((info(&model), bytes))).is_ok() {
                            worker::serve(model, rx, batching, metrics);
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Err(_) => {
                        let _ = ready_tx
                            .send(Err(pgmld_ml::Error::Unsupported("loading panicked".into())));
                    }
                }
            })
            .map_err(|e| TransformError::Internal(format!("starting a model thread: {e}")))?;
        let (info, bytes) = match ready_rx.await {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => return Err(load_error(e)),
            Err(_) => {
                return Err(TransformError::Internal(format!("the loader of model {name} stopped")))
            }
        };
        self.metrics.model_loads.inc();
        tracing::info!(
            model = name,
            ms = started.elapsed().as_millis() as u64,
            mib = bytes / (1 << 20),
            "loaded model into the inference cache"
        );
        Ok((info, bytes, tx))
    }

    /// Drops least recently used models (never `keep`) until the weights fit the budget.
    fn evict(&self, keep: &str) {
        let mut slots = self.lock();
        let mut total: u64 = slots.values().filter_map(|s| s.cell.get()).map(Cached::bytes).sum();
        while total > self.budget_bytes {
            let victim = slots
                .iter()
                .filter(|(k, s)| k.as_str() != keep && s.cell.get().is_some())
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(slot) = slots.remove(&victim) {
                let bytes = slot.cell.get().map_or(0, Cached::bytes);
                total -= bytes;
                tracing::info!(
                    model = victim,
                    mib = bytes / (1 << 20),
                    "evicted model from the inference cache"
                );
            }
        }
        self.metrics
            .models_cached
            .set(slots.values().filter(|s| s.cell.get().is_some()).count() as i64);
        self.metrics.model_cache_bytes.set(total as i64);
    }

    /// Keys of the models loaded now, for tests and logs.
    pub fn loaded(&self) -> Vec<String> {
        let slots = self.lock();
        let mut keys: Vec<String> =
            slots.iter().filter(|(_, s)| s.cell.get().is_some()).map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys
    }
}

fn wrong_entry(key: &str, entry: &Cached) -> TransformError {
    TransformError::Internal(format!("cache entry {key} is {}", entry.kind()))
}
