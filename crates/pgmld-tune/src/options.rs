//! The arguments of one `pgml.tune` call, read and checked before anything runs.

use pgmld_sql::{Args, Value};
use pgmld_train::{TokenizerArgs, TrainingArgs};
use serde_json::{Map, Value as Json};

use crate::conversation::options::ConversationArgs;
use crate::error::{Result, TuneError};

/// What the model learns to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// One text → one class.
    TextClassification,
    /// Two texts → one class (entailment, paraphrase, ...).
    TextPairClassification,
    /// Chat fine-tuning of causal language models.
    Conversation,
}

impl Task {
    /// Every task name `pgml.tune` knows.
    pub const NAMES: &'static [&'static str] =
        &["text-classification", "text-pair-classification", "conversation"];

    /// Parses a task name (case-insensitive, `_` accepted for `-`).
    pub fn parse(s: &str) -> Result<Task> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "text-classification" => Ok(Task::TextClassification),
            "text-pair-classification" => Ok(Task::TextPairClassification),
            "conversation" => Ok(Task::Conversation),
            _ => Err(TuneError::bad(
                format!("unknown task \"{s}\""),
                format!("pgml.tune supports: {}.", Task::NAMES.join(", ")),
            )),
        }
    }

    /// The canonical name, as stored in `pgml.projects.task`.
    pub fn name(self) -> &'static str {
        match self {
            Task::TextClassification => "text-classification",
            Task::TextPairClassification => "text-pair-classification",
            Task::Conversation => "conversation",
        }
    }
}

/// How the test rows are chosen (`test_sampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// A seeded random sample.
    Random,
    /// The first rows in the relation's order.
    First,
    /// The last rows in the relation's order.
    Last,
    /// A seeded random sample taken per class, so each class keeps its share.
    Stratified,
}

impl Sampling {
    /// Parses `random`, `first`, `last` or `stratified`.
    pub fn parse(s: &str) -> Result<Sampling> {
        match s.trim().to_ascii_lowercase().as_str() {
            "random" => Ok(Sampling::Random),
            "first" => Ok(Sampling::First),
            "last" => Ok(Sampling::Last),
            "stratified" => Ok(Sampling::Stratified),
            _ => Err(TuneError::bad(
                format!("invalid test_sampling \"{s}\""),
                "Use random, first, last or stratified.",
            )),
        }
    }

    /// The name stored in `pgml.snapshots.test_sampling`.
    pub fn name(self) -> &'static str {
        match self {
            Sampling::Random => "random",
            Sampling::First => "first",
            Sampling::Last => "last",
            Sampling::Stratified => "stratified",
        }
    }
}

/// `hyperparams.dataset_args`: which columns hold the inputs and the class (classification)
/// or the turns of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetArgs {
    /// Text column (text-classification). Default `text`.
    pub text_column: String,
    /// First text of a pair. Default `text1`.
    pub text1_column: String,
    /// Second text of a pair. Default `text2`.
    pub text2_column: String,
    /// Class column. Default `y_column_name`, else `class`.
    pub class_column: String,
    /// Conversation: the system prompt column. Default `system`; when it is not named
    /// explicitly and the relation lacks it, the conversation has no system message.
    pub system_column: String,
    /// Conversation: the user's message column. Default `user`.
    pub user_column: String,
    /// Conversation: the assistant's reply column (what the model learns). Default `assistant`.
    pub assistant_column: String,
    /// The keys the call set, so a task can reject keys that are not its own and tell a
    /// default column from one the user named.
    pub given: Vec<String>,
}

impl DatasetArgs {
    /// Keys of the classification tasks.
    pub const CLASSIFICATION_KEYS: &'static [&'static str] =
        &["text_column", "text1_column", "text2_column", "class_column"];
    /// Keys of the conversation task.
    pub const CONVERSATION_KEYS: &'static [&'static str] =
        &["system_column", "user_column", "assistant_column"];
    const KEYS: &'static [&'static str] = &[
        "text_column",
        "text1_column",
        "text2_column",
        "class_column",
        "system_column",
        "user_column",
        "assistant_column",
    ];

    /// Whether the call named `key` explicitly.
    pub fn is_given(&self, key: &str) -> bool {
        self.given.iter().any(|k| k == key)
    }

    /// Rejects keys that belong to another task than `task` (22023, naming the key and the
    /// task's own keys).
    pub fn check_task(&self, task: Task) -> Result<()> {
        let own = match task {
            Task::Conversation => Self::CONVERSATION_KEYS,
            _ => Self::CLASSIFICATION_KEYS,
        };
        match self.given.iter().find(|k| !own.contains(&k.as_str())) {
            Some(k) => Err(TuneError::bad(
                format!("dataset_args key \"{k}\" does not apply to task {}", task.name()),
                format!("Task {} reads dataset_args {}.", task.name(), own.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn parse(v: Option<&Json>, y_column: Option<&str>) -> Result<DatasetArgs> {
        let empty = Map::new();
        let obj = match v {
            None | Some(Json::Null) => &empty,
            Some(Json::Object(o)) => o,
            Some(other) => {
                return Err(TuneError::bad(
                    format!("hyperparams.dataset_args must be a JSON object, got {other}"),
                    "Example: {\"dataset_args\": {\"text_column\": \"text\", \"class_column\": \"class\"}}",
                ))
            }
        };
        if let Some(k) = obj.keys().find(|k| !Self::KEYS.contains(&k.as_str())) {
            return Err(TuneError::bad(
                format!("unknown dataset_args key \"{k}\""),
                format!("Supported keys: {}.", Self::KEYS.join(", ")),
            ));
        }
        let get = |k: &str, default: &str| -> Result<String> {
            match obj.get(k) {
                None | Some(Json::Null) => Ok(default.to_string()),
                Some(Json::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(other) => Err(TuneError::bad(
                    format!("dataset_args.{k} must be a column name, got {other}"),
                    "Pass the column name as a JSON string.",
                )),
            }
        };
        let mut given: Vec<String> =
            obj.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.clone()).collect();
        given.sort();
        Ok(DatasetArgs {
            text_column: get("text_column", "text")?,
            text1_column: get("text1_column", "text1")?,
            text2_column: get("text2_column", "text2")?,
            class_column: get("class_column", y_column.unwrap_or("class"))?,
            system_column: get("system_column", "system")?,
            user_column: get("user_column", "user")?,
            assistant_column: get("assistant_column", "assistant")?,
            given,
        })
    }
}

/// Where the test rows come from: a fraction of the rows or a row count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TestSize {
    /// `0 ≤ f < 1` of the rows (rounded down, as HF / PostgresML).
    Fraction(f64),
    /// Exactly this many rows.
    Rows(usize),
}

/// Everything one `pgml.tune` call asked for.
#[derive(Debug, Clone)]
pub struct TuneRequest {
    /// Project to create or add a model to.
    pub project_name: String,
    /// The task; `None` means the existing project's.
    pub task: Option<Task>,
    /// Table or view holding the data; `None` is an error once the task is known.
    pub relation_name: Option<String>,
    /// Pretrained model to start from.
    pub model_name: Option<String>,
    /// Trainer settings.
    pub training: TrainingArgs,
    /// Tokenizer settings.
    pub tokenizer: TokenizerArgs,
    /// Input and class columns.
    pub dataset: DatasetArgs,
    /// Held-out share or count.
    pub test_size: TestSize,
    /// How held-out rows are picked.
    pub test_sampling: Sampling,
    /// Deploy the model when it beats the deployed one.
    pub automatic_deploy: bool,
    /// Copy the relation into a snapshot table.
    pub materialize_snapshot: bool,
    /// `hyperparams` as stored in `pgml.models`: tokens removed.
    pub stored_hyperparams: Json,
    /// `training_args.resume_from_checkpoint`: go on with the project's latest interrupted
    /// model from its checkpoint instead of starting a new one.
    pub resume_from_checkpoint: bool,
    /// The call as stored in `pgml.jobs.request` (arguments and hyperparams without tokens
    /// or `resume_from_checkpoint`): [`TuneRequest::from_stored`] reads it back.
    pub stored_request: Json,
    /// The conversation task's hyperparameters (LoRA, 8-bit loading, prompt, sequence
    /// length); defaults when the call gave none.
    pub conversation: ConversationArgs,
    /// Block until the job ends (`wait`, default true; never stored: a worker runs the
    /// job whatever the caller does meanwhile).
    pub wait: bool,
    /// The job's priority and device kind (`hyperparams.priority`, `hyperparams.device`).
    pub placement: crate::placement::Placement,
}

fn text(args: &Args, name: &str) -> Option<String> {
    match args.get(name) {
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Keys whose values are secrets and never stored.
const SECRET_KEYS: &[&str] = &["hub_token", "token", "use_auth_token"];

/// The JSON type of `v` (`an array`, `a string`), for errors that must not echo values:
/// hyperparams may hold a token.
fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// `hyperparams` without secrets, at any depth.
pub fn redact(v: &Json) -> Json {
    match v {
        Json::Object(o) => Json::Object(
            o.iter()
                .filter(|(k, _)| !SECRET_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), redact(v)))
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

impl TuneRequest {
    /// Reads the bound arguments of a call.
    pub fn from_args(args: &Args) -> Result<TuneRequest> {
        let project_name =
            text(args, "project_name").filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                TuneError::Null("pgml.tune project_name must not be NULL or empty".into())
            })?;
        let task = text(args, "task").map(|t| Task::parse(&t)).transpose()?;
        let hyperparams = match args.get("hyperparams") {
            Some(Value::Json(j)) => j.clone(),
            Some(Value::Null) | None => Json::Object(Map::new()),
            Some(other) => {
                return Err(TuneError::Malformed(format!(
                    "hyperparams must be jsonb, got {}",
                    other.describe().split(' ').next().unwrap_or("another type")
                )))
            }
        };
        let hp = match &hyperparams {
            Json::Object(o) => o,
            other => {
                return Err(TuneError::bad(
                    format!("hyperparams must be a JSON object, got {}", json_kind(other)),
                    "Example: '{\"training_args\": {...}, \"dataset_args\": {...}}'",
                ))
            }
        };
        const HP_KEYS: &[&str] = &["training_args", "dataset_args", "tokenizer_args"];
        let known = |k: &str| {
            HP_KEYS.contains(&k)
                || ConversationArgs::KEYS.contains(&k)
                || crate::placement::KEYS.contains(&k)
        };
        if let Some(k) = hp.keys().find(|k| !known(k)) {
            return Err(TuneError::bad(
                format!("unknown hyperparams key \"{k}\""),
                format!(
                    "Supported keys: {}, {}; for task conversation also {}.",
                    HP_KEYS.join(", "),
                    crate::placement::KEYS.join(", "),
                    ConversationArgs::KEYS.join(", ")
                ),
            ));
        }
        let conversation = ConversationArgs::parse(hp)?;
        let mut placement = crate::placement::Placement::parse(hp)?;
        let mut training_json = hp.get("training_args").cloned().unwrap_or(Json::Null);
        let resume_from_checkpoint = take_resume_flag(&mut training_json)?;
        let training = TrainingArgs::from_json(&training_json).map_err(TuneError::from)?;
        // Bounded by validation (MAX_WORLD_SIZE).
        placement.world_size = training.world_size as i32;
        let tokenizer = TokenizerArgs::from_json(hp.get("tokenizer_args").unwrap_or(&Json::Null))
            .map_err(TuneError::from)?;
        let y_column = text(args, "y_column_name");
        let dataset = DatasetArgs::parse(hp.get("dataset_args"), y_column.as_deref())?;
        let test_size = match args.get("test_size") {
            Some(Value::Float(f)) => parse_test_size(*f)?,
            Some(Value::Int(i)) => parse_test_size(*i as f64)?,
            Some(Value::Null) | None => TestSize::Fraction(0.25),
            Some(other) => {
                return Err(TuneError::bad(
                    format!("invalid test_size {other:?}"),
                    "Pass a number.",
                ))
            }
        };
        let test_sampling = match text(args, "test_sampling") {
            Some(s) => Sampling::parse(&s)?,
            None => Sampling::Stratified,
        };
        let flag = |name: &str, default: bool| match args.get(name) {
            Some(Value::Bool(b)) => *b,
            _ => default,
        };
        let mut request_hp = hyperparams.clone();
        if let Some(Json::Object(t)) = request_hp.get_mut("training_args") {
            t.remove(RESUME_KEY);
        }
        let mut stored_request = Map::new();
        for (name, value) in args {
            if STORED_ARGS.contains(name) && *name != "hyperparams" {
                stored_request.insert(name.to_string(), value_json(value));
            }
        }
        stored_request.insert("hyperparams".into(), redact(&request_hp));
        Ok(TuneRequest {
            project_name,
            task,
            relation_name: text(args, "relation_name").filter(|s| !s.trim().is_empty()),
            model_name: text(args, "model_name").filter(|s| !s.trim().is_empty()),
            training,
            tokenizer,
            dataset,
            test_size,
            test_sampling,
            automatic_deploy: flag("automatic_deploy", true),
            wait: flag("wait", true),
            materialize_snapshot: flag("materialize_snapshot", false),
            stored_hyperparams: redact(&hyperparams),
            resume_from_checkpoint,
            stored_request: Json::Object(stored_request),
            conversation,
            placement,
        })
    }

    /// Reads back a request stored in `pgml.jobs.request` by [`TuneRequest::from_args`]
    /// (never with a token, nor `resume_from_checkpoint`).
    pub fn from_stored(stored: &Json) -> Result<TuneRequest> {
        let obj = stored.as_object().ok_or_else(|| {
            TuneError::Internal(format!("pgml.jobs.request is not a JSON object: {stored}"))
        })?;
        let mut args = Args::new();
        for name in STORED_ARGS {
            let value = match obj.get(*name) {
                None | Some(Json::Null) => Value::Null,
                Some(Json::Bool(b)) => Value::Bool(*b),
                Some(Json::String(s)) => Value::Text(s.clone()),
                Some(Json::Number(n)) => match n.as_i64() {
                    Some(i) => Value::Int(i),
                    None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                Some(other) if *name == "hyperparams" => Value::Json(other.clone()),
                Some(other) => {
                    return Err(TuneError::Internal(format!("pgml.jobs.request.{name} is {other}")))
                }
            };
            if value != Value::Null {
                args.insert(*name, value);
            }
        }
        TuneRequest::from_args(&args)
    }
}

/// The arguments of a call kept in `pgml.jobs.request`.
const STORED_ARGS: &[&str] = &[
    "project_name",
    "task",
    "relation_name",
    "y_column_name",
    "model_name",
    "hyperparams",
    "test_size",
    "test_sampling",
    "automatic_deploy",
    "materialize_snapshot",
];

/// HF's `resume_from_checkpoint` (a `Trainer.train` argument, accepted in training_args).
const RESUME_KEY: &str = "resume_from_checkpoint";

/// Removes `resume_from_checkpoint` from a training_args object: `true` resumes, `false` or
/// null does not; a checkpoint path is not supported (22023).
fn take_resume_flag(training: &mut Json) -> Result<bool> {
    let Json::Object(o) = training else { return Ok(false) };
    match o.remove(RESUME_KEY) {
        None | Some(Json::Null) | Some(Json::Bool(false)) => Ok(false),
        Some(Json::Bool(true)) => Ok(true),
        Some(other) => Err(TuneError::bad(
            format!("training_args.resume_from_checkpoint must be true or false, got {other}"),
            "pgml.tune resumes the project's latest interrupted model from its checkpoint in pgml.files; \
             pass \"resume_from_checkpoint\": true.",
        )),
    }
}

/// A bound argument as JSON, for `pgml.jobs.request`.
fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Text(s) => Json::String(s.clone()),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        Value::Bool(b) => Json::Bool(*b),
        Value::Json(j) => redact(j),
        Value::Array(a) => Json::Array(a.iter().map(value_json).collect()),
    }
}

/// `test_size` ≤ 1 is a fraction (< 1), above 1 a whole row count.
pub fn parse_test_size(v: f64) -> Result<TestSize> {
    let hint = "Use a fraction in [0, 1) such as 0.2, or a whole number of rows greater than 1.";
    if !v.is_finite() || v < 0.0 {
        return Err(TuneError::bad(format!("test_size {v} is out of range"), hint));
    }
    if v < 1.0 {
        return Ok(TestSize::Fraction(v));
    }
    if v == 1.0 {
        return Err(TuneError::bad("test_size 1 would leave no training rows", hint));
    }
    if v.fract() != 0.0 {
        return Err(TuneError::bad(
            format!("test_size {v} is above 1 but not a whole row count"),
            hint,
        ));
    }
    Ok(TestSize::Rows(v as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(pairs: &[(&'static str, Value)]) -> Args {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn parses_the_guide_call() {
        let a = args(&[
            ("project_name", Value::Text("imdb_review_sentiment".into())),
            ("task", Value::Text("text-classification".into())),
            ("relation_name", Value::Text("pgml.imdb_train_view".into())),
            ("model_name", Value::Text("distilbert-base-uncased".into())),
            ("test_size", Value::Float(0.2)),
            ("test_sampling", Value::Text("last".into())),
            (
                "hyperparams",
                Value::Json(
                    json!({"training_args": {"learning_rate": 2e-5, "num_train_epochs": 20,
                    "weight_decay": 0.01, "hub_token": "hf_secret", "push_to_hub": true},
                    "dataset_args": {"text_column": "text", "class_column": "class"}}),
                ),
            ),
        ]);
        let r = TuneRequest::from_args(&a).unwrap();
        assert_eq!(r.task, Some(Task::TextClassification));
        assert_eq!(r.test_size, TestSize::Fraction(0.2));
        assert_eq!(r.test_sampling, Sampling::Last);
        assert_eq!(r.training.learning_rate, 2e-5);
        assert!(r.training.push_to_hub);
        assert_eq!(r.training.hub_token.as_ref().map(|s| s.0.as_str()), Some("hf_secret"));
        assert!(!r.stored_hyperparams.to_string().contains("hf_secret"));
        assert!(!format!("{r:?}").contains("hf_secret"));
        assert_eq!(r.dataset.class_column, "class");
        assert!(r.automatic_deploy && !r.materialize_snapshot);
    }

    #[test]
    fn rejects_bad_values_by_name() {
        assert!(Task::parse("regression").unwrap_err().to_string().contains("regression"));
        assert!(Sampling::parse("middle").unwrap_err().to_string().contains("middle"));
        for bad in [-0.1, 1.0, 2.5, f64::NAN] {
            assert!(parse_test_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_test_size(0.0).unwrap(), TestSize::Fraction(0.0));
        assert_eq!(parse_test_size(100.0).unwrap(), TestSize::Rows(100));
        let base = |hp: Json| {
            TuneRequest::from_args(&args(&[
                ("project_name", Value::Text("p".into())),
                ("hyperparams", Value::Json(hp)),
            ]))
        };
        let e = base(json!({"training_args": {"num_epochs": 3}})).unwrap_err();
        assert!(
            e.to_string().contains("num_epochs") && e.to_string().contains("num_train_epochs"),
            "{e}"
        );
        assert!(base(json!({"dataset_args": {"txt": "a"}}))
            .unwrap_err()
            .to_string()
            .contains("txt"));
        assert!(base(json!({"trainig_args": {}}))
            .unwrap_err()
            .to_string()
            .contains("trainig_args"));
        assert!(base(json!([1])).is_err());
        assert!(base(json!({"tokenizer_args": {"max_len": 3}}))
            .unwrap_err()
            .to_string()
            .contains("max_len"));
        let y = TuneRequest::from_args(&args(&[
            ("project_name", Value::Text("p".into())),
            ("y_column_name", Value::Text("label".into())),
        ]))
        .unwrap();
        assert_eq!(y.dataset.class_column, "label");
        assert!(TuneRequest::from_args(&args(&[("project_name", Value::Null)])).is_err());
    }

    #[test]
    fn requests_are_stored_without_tokens_and_read_back() {
        let a = args(&[
            ("project_name", Value::Text("p".into())),
            ("relation_name", Value::Text("reviews".into())),
            ("model_name", Value::Text("bert".into())),
            ("test_size", Value::Float(0.2)),
            ("automatic_deploy", Value::Bool(false)),
            (
                "hyperparams",
                Value::Json(
                    json!({"training_args": {"max_steps": 7, "hub_token": "hf_secret", "push_to_hub": true,
                    "resume_from_checkpoint": false}, "dataset_args": {"class_column": "label"}}),
                ),
            ),
        ]);
        let r = TuneRequest::from_args(&a).unwrap();
        assert!(!r.resume_from_checkpoint);
        let stored = r.stored_request.to_string();
        assert!(
            !stored.contains("hf_secret") && !stored.contains("resume_from_checkpoint"),
            "{stored}"
        );
        let back = TuneRequest::from_stored(&r.stored_request).unwrap();
        assert_eq!(back.training.max_steps, 7);
        assert!(back.training.push_to_hub && back.training.hub_token.is_none());
        assert_eq!((back.test_size, back.automatic_deploy), (TestSize::Fraction(0.2), false));
        assert_eq!(back.relation_name.as_deref(), Some("reviews"));
        assert_eq!(back.dataset.class_column, "label");
        assert_eq!(back.stored_request, r.stored_request);

        let resume = |v: Json| {
            TuneRequest::from_args(&args(&[
                ("project_name", Value::Text("p".into())),
                (
                    "hyperparams",
                    Value::Json(json!({"training_args": {"resume_from_checkpoint": v}})),
                ),
            ]))
        };
        assert!(resume(json!(true)).unwrap().resume_from_checkpoint);
        let e = resume(json!("out/checkpoint-500")).unwrap_err();
        assert!(e.to_string().contains("resume_from_checkpoint"), "{e}");
    }

    #[test]
    fn redaction_is_deep() {
        let v = json!({"training_args": {"hub_token": "x", "a": [{"token": "y"}], "b": 1}});
        assert_eq!(redact(&v), json!({"training_args": {"a": [{}], "b": 1}}));
    }
}
