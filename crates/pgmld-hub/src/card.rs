//! The model card (`README.md`) pushed with a model: YAML front matter the Hub reads
//! (`library_name`, `pipeline_tag`, `base_model`, `tags`), then what was trained on what, how,
//! and how well. Secrets never reach it: the training arguments come serialised, which leaves
//! `hub_token` out.

use serde_json::Value as Json;

/// What a card says about one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// The pgml project.
    pub project: String,
    /// The task name (`text-classification`, `text-pair-classification`, `conversation`).
    pub task: String,
    /// The base model as named in the call (`model_name`).
    pub base_model: String,
    /// Where the base model was found (`Hugging Face Hub …`, `local directory …`, …).
    pub base_origin: String,
    /// The training relation.
    pub relation: String,
    /// Class names by id (none for a conversation adapter).
    pub labels: Vec<String>,
    /// Train and test row counts, when known.
    pub rows: Option<(usize, usize)>,
    /// Training arguments as stored (no secrets), tokenizer arguments and the split.
    pub setup: Vec<(String, Json)>,
    /// The latest evaluation and training metrics, when known.
    pub metrics: Vec<(String, Json)>,
    /// The Hub repo the card goes to (`namespace/name`), for the usage examples.
    pub repo_id: Option<String>,
}

/// A value for a double-quoted YAML scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    Json::String(s.to_string()).to_string()
}

/// Text for a markdown table cell: no `|` or line breaks.
fn cell(v: &Json) -> String {
    let s = match v {
        Json::String(s) => s.clone(),
        Json::Null => "null".into(),
        other => other.to_string(),
    };
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

impl ModelCard {
    /// The Hub id of the base model, when it came from the Hub.
    fn hub_base(&self) -> Option<&str> {
        self.base_origin.starts_with("Hugging Face Hub").then_some(self.base_model.as_str())
    }

    /// The base model in prose: a link for a Hub model; no local paths.
    fn base_text(&self) -> String {
        match self.hub_base() {
            Some(id) => format!("[{id}](https://huggingface.co/{id})"),
            None if self.base_origin.starts_with("local directory")
                || self.base_origin.starts_with("local GGUF file") =>
            {
                let name = std::path::Path::new(self.base_model.trim_end_matches('/'))
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("a local checkpoint (`{name}`)")
            }
            None => format!("`{}` ({})", self.base_model, self.base_origin),
        }
    }

    /// Whether the card is a conversation tune's LoRA adapter (peft, text generation).
    fn is_adapter(&self) -> bool {
        self.task == "conversation"
    }

    /// The card's markdown, front matter first.
    pub fn render(&self) -> String {
        let (library, pipeline) = match self.is_adapter() {
            true => ("peft", "text-generation"),
            false => ("transformers", "text-classification"),
        };
        let mut s = format!("---\nlibrary_name: {library}\npipeline_tag: {pipeline}\n");
        if let Some(id) = self.hub_base() {
            s.push_str(&format!("base_model: {}\n", yaml_str(id)));
        }
        s.push_str("tags:\n- pgmld\n- pgml.tune\n");
        s.push_str(&format!("- {}\n", yaml_str(&self.task)));
        if self.is_adapter() {
            s.push_str("- lora\n");
        }
        s.push_str("---\n\n");
        s.push_str(&format!("# {}\n\n", self.project.replace('\n', " ")));
        let what = match self.is_adapter() {
            true => "A LoRA adapter (conversation)".to_string(),
            false => format!("A {} model", self.task),
        };
        s.push_str(&format!(
            "{what} fine-tuned from {} by pgmld's `pgml.tune` ([PostgresML](https://postgresml.org)'s \
             fine-tuning API) for project `{}`, on the Postgres relation `{}`",
            self.base_text(),
            self.project,
            self.relation
        ));
        match self.rows {
            Some((train, test)) => {
                s.push_str(&format!(" ({train} training rows, {test} test rows).\n\n"))
            }
            None => s.push_str(".\n\n"),
        }
        if !self.labels.is_empty() {
            s.push_str("## Labels\n\n| id | label |\n|---|---|\n");
            for (i, l) in self.labels.iter().enumerate() {
                s.push_str(&format!("| {i} | {} |\n", cell(&Json::String(l.clone()))));
            }
            s.push('\n');
        }
        s.push_str("## Training\n\n| setting | value |\n|---|---|\n");
        for (k, v) in &self.setup {
            s.push_str(&format!("| {k} | {} |\n", cell(v)));
        }
        if !self.metrics.is_empty() {
            s.push_str("\n## Results\n\n| metric | value |\n|---|---|\n");
            for (k, v) in &self.metrics {
                s.push_str(&format!("| {k} | {} |\n", cell(v)));
            }
        }
        let repo = self.repo_id.as_deref().unwrap_or("<this repo>");
        if self.is_adapter() {
            s.push_str(&format!(
                "\n## Use\n\n```python\nfrom peft import AutoPeftModelForCausalLM\n\nmodel = \
                 AutoPeftModelForCausalLM.from_pretrained(\"{repo}\")\n```\n\nor, through pgmld:\n\n```sql\n\
                 SELECT pgml.transform(task => '{{\"task\": \"conversational\", \"model\": \"{repo}\"}}'::jsonb, \
                 inputs => ARRAY['{{\"role\": \"user\", \"content\": \"…\"}}'::jsonb]);\n```\n"
            ));
            return s;
        }
        s.push_str(&format!(
            "\n## Use\n\n```python\nfrom transformers import pipeline\n\nclassifier = pipeline(\"text-classification\", \
             model=\"{repo}\")\n```\n\nor, through pgmld:\n\n```sql\nSELECT pgml.transform(task => \
             '{{\"task\": \"text-classification\", \"model\": \"{repo}\"}}'::jsonb, inputs => ARRAY['…']);\n```\n"
        ));
        s
    }
}

/// `(key, value)` pairs of a JSON object, in its order; nothing for other values.
pub fn pairs(v: &Json) -> Vec<(String, Json)> {
    v.as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn card() -> ModelCard {
        ModelCard {
            project: "imdb sentiment".into(),
            task: "text-classification".into(),
            base_model: "distilbert/distilbert-base-uncased".into(),
            base_origin: "Hugging Face Hub distilbert/distilbert-base-uncased".into(),
            relation: "pgml.imdb_train_view".into(),
            labels: vec!["negative".into(), "pos|itive".into()],
            rows: Some((80, 20)),
            setup: pairs(
                &json!({"learning_rate": 2e-5, "num_train_epochs": 3.0, "push_to_hub": true}),
            ),
            metrics: pairs(&json!({"eval_f1": 0.9, "eval_accuracy": 0.91})),
            repo_id: Some("alice/imdb_sentiment".into()),
        }
    }

    #[test]
    fn front_matter_and_sections() {
        let text = card().render();
        let (front, body) = text.strip_prefix("---\n").unwrap().split_once("\n---\n").unwrap();
        assert!(
            front.contains("library_name: transformers\npipeline_tag: text-classification\n"),
            "{front}"
        );
        assert!(front.contains("base_model: \"distilbert/distilbert-base-uncased\""), "{front}");
        assert!(front.contains("tags:\n- pgmld\n"), "{front}");
        assert!(body.contains("# imdb sentiment"));
        assert!(body.contains("`pgml.imdb_train_view` (80 training rows, 20 test rows)"), "{body}");
        assert!(body.contains("| 1 | pos\\|itive |"), "{body}");
        assert!(
            body.contains("| learning_rate | 0.00002 |")
                || body.contains("| learning_rate | 2e-5 |"),
            "{body}"
        );
        assert!(body.contains("## Results") && body.contains("| eval_f1 | 0.9 |"), "{body}");
        assert!(
            body.contains("pipeline(\"text-classification\", model=\"alice/imdb_sentiment\")"),
            "{body}"
        );
        assert!(
            body.contains(
                r#"'{"task": "text-classification", "model": "alice/imdb_sentiment"}'::jsonb"#
            ),
            "{body}"
        );
    }

    #[test]
    fn conversation_adapters_get_a_peft_card_without_labels() {
        let c = ModelCard {
            task: "conversation".into(),
            base_model: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            base_origin: "Hugging Face Hub HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            labels: vec![],
            metrics: pairs(&json!({"eval_loss": 1.25, "perplexity": 3.49})),
            repo_id: Some("alice/beep".into()),
            ..card()
        };
        let text = c.render();
        let (front, body) = text.strip_prefix("---\n").unwrap().split_once("\n---\n").unwrap();
        assert!(front.contains("library_name: peft\npipeline_tag: text-generation\n"), "{front}");
        assert!(
            front.contains("base_model: \"HuggingFaceTB/SmolLM2-135M-Instruct\"")
                && front.contains("- \"conversation\"\n- lora"),
            "{front}"
        );
        assert!(body.contains("A LoRA adapter (conversation) fine-tuned from [HuggingFaceTB/SmolLM2-135M-Instruct]"), "{body}");
        assert!(!body.contains("## Labels") && body.contains("| eval_loss | 1.25 |"), "{body}");
        assert!(
            body.contains("AutoPeftModelForCausalLM.from_pretrained(\"alice/beep\")"),
            "{body}"
        );
        assert!(
            body.contains(r#"'{"task": "conversational", "model": "alice/beep"}'::jsonb"#),
            "{body}"
        );
        assert!(!body.contains("pipeline(\"text-classification\""), "{body}");
    }

    #[test]
    fn local_bases_stay_private_and_metrics_are_optional() {
        let c = ModelCard {
            base_model: "/srv/models/tiny-bert/".into(),
            base_origin: "local directory /srv/models/tiny-bert/".into(),
            metrics: vec![],
            ..card()
        };
        let text = c.render();
        assert!(!text.contains("base_model:") && !text.contains("/srv/models"), "{text}");
        assert!(text.contains("a local checkpoint (`tiny-bert`)"), "{text}");
        let gguf = ModelCard {
            base_model: "/srv/llm/SmolLM2.Q4_1.gguf".into(),
            base_origin: "local GGUF file /srv/llm/SmolLM2.Q4_1.gguf".into(),
            ..card()
        };
        let gguf_text = gguf.render();
        assert!(
            !gguf_text.contains("/srv/llm")
                && gguf_text.contains("a local checkpoint (`SmolLM2.Q4_1.gguf`)"),
            "{gguf_text}"
        );
        assert!(!text.contains("## Results"));
    }
}
