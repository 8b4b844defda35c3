use super::*;
use crate::gguf::test_support::{smollm2_path, temp_dir};
use crate::gguf::GgufFile;

/// SmolLM2-Instruct's template (tokenizer_config.json `chat_template`).
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const FRANCE_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

fn user(text: &str) -> ChatMessage {
    ChatMessage::new("user", text)
}

#[test]
fn smollm2_chatml_renders_exactly() {
    let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
    let msgs = [user("What is the capital of France?")];
    assert_eq!(t.render(&msgs, true).unwrap(), FRANCE_PROMPT);
    assert_eq!(
        t.render(&msgs, false).unwrap(),
        FRANCE_PROMPT.trim_end_matches("<|im_start|>assistant\n")
    );
    // An explicit system message replaces the default one.
    let with_system = [ChatMessage::new("system", "Be brief."), user("Hi")];
    assert_eq!(
        t.render(&with_system, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn smollm2_gguf_ships_the_same_template() {
    let Some(path) = smollm2_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let source =
        file.get_str("tokenizer.chat_template").expect("SmolLM2's GGUF carries its template");
    let t = ChatTemplate::new(source, "<|im_start|>", "<|im_end|>").unwrap();
    assert_eq!(t.render(&[user("What is the capital of France?")], true).unwrap(), FRANCE_PROMPT);
}

#[test]
fn python_string_methods_loop_controls_and_whitespace_control() {
    // Llama-2-style: strip(), startswith(), bos/eos, loop controls, and block tags on
    // their own lines that trim_blocks/lstrip_blocks remove.
    let source = "{{ bos_token }}\n{% for m in messages %}\n    {% if m.content.startswith('skip') %}{% continue %}{% endif %}\n    [{{ m.role|upper }}] {{ m.content.strip() }}{{ eos_token }}\n{% endfor %}\n";
    let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
    let out = t
        .render(&[user("  hi  "), user("skip me"), ChatMessage::new("assistant", "yo")], false)
        .unwrap();
    assert_eq!(out, "<s>\n    [USER] hi</s>\n    [ASSISTANT] yo</s>\n");
}

#[test]
fn raise_exception_becomes_a_template_error() {
    let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}ok";
    let t = ChatTemplate::new(source, "", "").unwrap();
    assert_eq!(t.render(&[user("x")], false).unwrap(), "ok");
    let err = t.render(&[ChatMessage::new("assistant", "x")], false).unwrap_err();
    assert!(matches!(&err, Error::Template(m) if m.contains("must start with a user")), "{err}");
    // Syntax errors surface at compile time.
    assert!(matches!(ChatTemplate::new("{% for %}", "", ""), Err(Error::Template(_))));
}

#[test]
fn tojson_matches_python_json_dumps() {
    let t =
        ChatTemplate::new("{{ messages[0]|tojson }}|{{ {'k': [1, 2]}|tojson(indent=2) }}", "", "")
            .unwrap();
    let out = t.render(&[user("é <b> & 'q'")], false).unwrap();
    assert_eq!(
        out,
        "{\"role\": \"user\", \"content\": \"é <b> & 'q'\"}|{\n  \"k\": [\n    1,\n    2\n  ]\n}"
    );
}

#[test]
fn assistant_spans_cover_replies_and_end_of_turn() {
    let t = ChatTemplate::chatml("", "<|im_end|>");
    let msgs = [
        ChatMessage::new("system", "sys"),
        user("Capital of France?"),
        ChatMessage::new("assistant", "Paris."),
        user("And Italy?"),
        ChatMessage::new("assistant", "Rome."),
    ];
    let r = t.render_with_assistant_spans(&msgs).unwrap();
    assert_eq!(r.text, t.render(&msgs, false).unwrap());
    let spans: Vec<&str> = r.assistant_spans.iter().map(|s| &r.text[s.clone()]).collect();
    assert_eq!(spans, ["Paris.<|im_end|>", "Rome.<|im_end|>"]);
}

#[test]
fn assistant_spans_fall_back_to_searching_the_text() {
    // SmolLM2's template inserts a default system prompt only when rendering a
    // conversation, so the empty prefix before a leading assistant message is not a
    // prefix of the whole; the span is found by its text.
    let t = ChatTemplate::new(SMOLLM2, "", "<|im_end|>").unwrap();
    let msgs = [
        ChatMessage::new("assistant", "Hello!"),
        user("Hi"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    let r = t.render_with_assistant_spans(&msgs).unwrap();
    assert_eq!(r.assistant_spans.len(), 2);
    for s in &r.assistant_spans {
        assert_eq!(&r.text[s.clone()], "Hello!<|im_end|>");
    }
    assert!(r.assistant_spans[0].end <= r.assistant_spans[1].start);
}

#[test]
fn template_sources_from_configs_and_directories() {
    assert_eq!(template_from_config(&serde_json::json!("{{x}}")).as_deref(), Some("{{x}}"));
    let named = serde_json::json!([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]);
    assert_eq!(template_from_config(&named).as_deref(), Some("D"));
    assert_eq!(template_from_config(&serde_json::json!(null)), None);

    let dir = temp_dir("tmpl-dir");
    assert_eq!(template_source_from_hf_dir(&dir).unwrap(), None);
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"chat_template": "from-config"}"#)
        .unwrap();
    assert_eq!(template_source_from_hf_dir(&dir).unwrap().as_deref(), Some("from-config"));
    std::fs::write(dir.join("chat_template.jinja"), "from-jinja").unwrap();
    assert_eq!(template_source_from_hf_dir(&dir).unwrap().as_deref(), Some("from-jinja"));
}

#[test]
fn strftime_formats_dates_like_python() {
    // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
    let t = 1_721_999_109;
    assert_eq!(strftime_at(t, "%d %b %Y"), "26 Jul 2024");
    assert_eq!(
        strftime_at(t, "%A %B %d, %y %H:%M:%S %j %% %q"),
        "Friday July 26, 24 13:05:09 208 % %q"
    );
    assert_eq!(strftime_at(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
    assert_eq!(strftime_at(951_782_400, "%Y-%m-%d %j"), "2000-02-29 060");
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
    let year: i64 = t.render(&[], false).unwrap().parse().unwrap();
    assert!(year >= 2024);
}
