//! A new `pgml.tune` of a text (or text-pair) classifier up to its recorded model row:
//! the checks, the relation's rows, the split into examples and the base model; then
//! [`crate::lifecycle`] trains it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use pgmld_ml::Example;
use pgmld_sql::CallContext;
use serde_json::{json, Value as Json};
use tokio_postgres::Client;

use crate::data::{self, Relation};
use crate::error::{Result, TuneError};
use crate::lifecycle::{Fresh, RunData, Snapshot};
use crate::options::{Task, TuneRequest};
use crate::push::PushSetup;
use crate::tuner::{warning, Tuned, Tuner};
use pgmld_models::resolve;

use crate::{access, split};

/// The data split into examples, with the label names.
struct Prepared {
    labels: Vec<String>,
    train: Vec<Example>,
    eval: Vec<Example>,
    unseen: BTreeSet<String>,
    analysis: Json,
}

fn prepare(rel: &Relation, req: &TuneRequest) -> Result<Prepared> {
    if rel.rows.is_empty() {
        return Err(TuneError::Data(format!("relation {} has no rows to train on", rel.name)));
    }
    // Class keys for stratification, in first-seen order.
    let mut keys: HashMap<&str, usize> = HashMap::new();
    let classes: Vec<usize> = rel
        .rows
        .iter()
        .map(|r| {
            let n = keys.len();
            *keys.entry(r.class.as_str()).or_insert(n)
        })
        .collect();
    let s = split::split(&classes, req.test_size, req.test_sampling, req.training.seed)?;
    let labels =
        data::label_names(s.train.iter().map(|&i| rel.rows[i].class.as_str()), rel.integer_classes);
    if labels.len() < 2 {
        return Err(TuneError::Data(format!(
            "the training rows of {} have a single class ({}); classification needs at least two",
            rel.name,
            labels.first().map(String::as_str).unwrap_or("none")
        )));
    }
    let ids = data::label_ids(&labels);
    let example = |i: usize| {
        let r = &rel.rows[i];
        ids.get(r.class.as_str()).map(|&label| Example {
            text: r.text.clone(),
            text_pair: r.text_pair.clone(),
            label,
        })
    };
    let train: Vec<Example> = s.train.iter().filter_map(|&i| example(i)).collect();
    let mut unseen = BTreeSet::new();
    let mut eval = Vec::with_capacity(s.test.len());
    for &i in &s.test {
        match example(i) {
            Some(e) => eval.push(e),
            None => {
                unseen.insert(rel.rows[i].class.clone());
            }
        }
    }
    let analysis = json!({
        "rows": rel.rows.len(),
        "train_rows": train.len(),
        "test_rows": eval.len(),
        "test_rows_with_unseen_class": s.test.len() - eval.len(),
        "class_counts": data::class_counts(rel.rows.iter().map(|r| r.class.as_str())),
    });
    Ok(Prepared { labels, train, eval, unseen, analysis })
}

/// The checks a classification call passes before anything is read: its own dataset_args
/// keys, no conversation keys, and an optimizer the classifier trainer has (the 8-bit
/// AdamW variants are the conversation trainer's).
pub(crate) fn check_request(req: &TuneRequest, task: Task) -> Result<()> {
    req.dataset.check_task(task)?;
    req.conversation.reject_for(task.name())?;
    if req.training.optim.is_8bit() {
        return Err(TuneError::Unsupported {
            message: format!("training_args.optim \"{}\" is not supported for task {}", req.training.optim.name(), task.name()),
            hint: Some(
                "The 8-bit AdamW optimizers (adamw_bnb_8bit, adamw_8bit, paged_adamw_8bit) apply to task conversation; \
                 classifiers train with adamw_torch (the default) or adamw_hf."
                    .into(),
            ),
        });
    }
    Ok(())
}

impl Tuner {
    /// Runs a new classification tune for project `project_id` (found or created with
    /// `task`) on `client`; `push` uploads the model to the Hub.
    pub(crate) async fn run_classification(
        self: &Arc<Self>,
        client: Client,
        req: TuneRequest,
        ctx: &CallContext,
        (project_id, task): (i64, Task),
        push: Option<PushSetup>,
    ) -> Result<Tuned> {
        check_request(&req, task)?;
        let relation = req.relation_name.as_deref().ok_or_else(|| {
            TuneError::Null(
                "pgml.tune relation_name must name a table or view with the training data".into(),
            )
        })?;
        let model_name = req.model_name.clone().ok_or_else(|| {
            TuneError::Null("pgml.tune model_name must name a pretrained model (a Hugging Face id such as distilbert-base-uncased, a local directory, or a pgml project)".into())
        })?;
        let rel = access::read_as(
            &client,
            &ctx.caller.role,
            data::read(&client, relation, task, &req.dataset),
        )
        .await?;
        let prep = prepare(&rel, &req)?;
        if !prep.unseen.is_empty() {
            let list: Vec<&str> = prep.unseen.iter().map(String::as_str).collect();
            warning(
                ctx,
                format!(
                    "{} test rows have classes never seen in training ({}); they are left out of the evaluation",
                    prep.analysis["test_rows_with_unseen_class"], list.join(", ")
                ),
            );
        }
        let source =
            resolve::resolve(&client, &model_name, &ctx.caller, &self.hub, &self.work_dir).await?;
        let fresh = Fresh {
            project: (project_id, task),
            model_name,
            source,
            data: RunData::Classification {
                labels: prep.labels,
                train: Arc::new(prep.train),
                eval: Arc::new(prep.eval),
            },
            snapshot: Snapshot {
                relation: rel.name.clone(),
                y_column: req.dataset.class_column.clone(),
                columns: rel.columns.clone(),
                analysis: prep.analysis,
            },
            push,
            req,
        };
        self.run_fresh(client, ctx, fresh).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmld_sql::{Args, Value};

    fn request(hp: Json) -> TuneRequest {
        let args: Args =
            [("project_name", Value::Text("p".into())), ("hyperparams", Value::Json(hp))]
                .into_iter()
                .collect();
        TuneRequest::from_args(&args).unwrap()
    }

    #[test]
    fn eight_bit_optimizers_are_refused_by_name() {
        let e = check_request(
            &request(json!({"training_args": {"optim": "adamw_bnb_8bit"}})),
            Task::TextClassification,
        )
        .unwrap_err();
        assert!(
            matches!(&e, TuneError::Unsupported { hint: Some(h), .. } if h.contains("conversation")),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("\"adamw_bnb_8bit\"")
                && e.to_string().contains("text-classification"),
            "{e}"
        );
        check_request(
            &request(json!({"training_args": {"optim": "adamw_torch"}})),
            Task::TextPairClassification,
        )
        .unwrap();
        check_request(&request(json!({})), Task::TextClassification).unwrap();
    }
}
