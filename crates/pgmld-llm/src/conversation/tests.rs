use super::*;
use tokenizers::Tokenizer;

/// A word-level tokenizer with ChatML's special tokens and a BOS post-processor.
fn tokenizer() -> ChatTokenizer {
    let words = [
        "[UNK]",
        "user",
        "assistant",
        "system",
        "hi",
        "there",
        "Beep",
        "boop",
        "!",
        "hello",
        "friend",
        "be",
        "nice",
        "#",
        ":",
        "User",
        "Assistant",
        "System",
        "{",
        "}",
        "ok",
    ];
    let mut vocab = serde_json::Map::new();
    for (i, w) in words.iter().enumerate() {
        vocab.insert((*w).to_string(), serde_json::json!(i + 3));
    }
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    for (id, t) in [(0, "<|im_start|>"), (1, "<|im_end|>"), (2, "<s>")] {
        vocab.insert(t.to_string(), serde_json::json!(id));
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<|im_start|>"), special(1, "<|im_end|>"), special(2, "<s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [2], "tokens": ["<s>"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let tok: Tokenizer = serde_json::from_value(json).unwrap();
    ChatTokenizer::new(tok, Some("<s>"), Some("<|im_end|>"), None).unwrap()
}

fn row(system: Option<&str>, user: &str, assistant: &str) -> ConversationRow {
    ConversationRow {
        system: system.map(str::to_string),
        user: user.into(),
        assistant: assistant.into(),
    }
}

fn chatml() -> PromptFormat {
    PromptFormat::ChatTemplate(ChatTemplate::chatml("<s>", "<|im_end|>"))
}

fn labelled(ex: &TokenizedExample) -> Vec<i64> {
    ex.labels.iter().copied().filter(|&l| l != IGNORE_INDEX).collect()
}

#[test]
fn chat_template_labels_only_the_reply_and_end_of_turn() {
    let tok = tokenizer();
    let r = row(Some("be nice"), "hi there", "Beep boop ! hello");
    let enc =
        encode_conversations(&[r], &tok, &chatml(), &ConversationArgs::default(), 2048).unwrap();
    let ex = &enc.examples[0];
    assert_eq!(ex.input_ids.len(), ex.labels.len());
    // The rendered text, tokenized without BOS (the template holds the special tokens).
    assert_eq!(ex.input_ids[0], tok.token_to_id("<|im_start|>").unwrap());
    let want = tok.encode("Beep boop ! hello <|im_end|>", false).unwrap();
    assert_eq!(labelled(ex), want);
    // Labels sit on those very tokens.
    for (id, label) in ex.input_ids.iter().zip(&ex.labels) {
        assert!(*label == IGNORE_INDEX || label == id);
    }
    assert_eq!(ex.num_label_tokens(), 5);
    assert_eq!((enc.truncated, enc.dropped), (0, 0));
}

#[test]
fn train_on_prompt_labels_every_token() {
    let tok = tokenizer();
    let args = ConversationArgs { train_on_prompt: true, ..Default::default() };
    let enc = encode_conversations(&[row(None, "hi", "ok")], &tok, &chatml(), &args, 2048).unwrap();
    let ex = &enc.examples[0];
    assert_eq!(ex.labels, ex.input_ids);
}

#[test]
fn prompt_template_fills_placeholders_once_and_ends_with_eos() {
    let tok = tokenizer();
    let format = PromptFormat::Template(
        "# System : {system} # User : {user} # Assistant : {assistant}".into(),
    );
    // A message that itself contains a placeholder is kept as written.
    let r = row(None, "hi {assistant}", "hello friend");
    let enc =
        encode_conversations(&[r], &tok, &format, &ConversationArgs::default(), 2048).unwrap();
    let ex = &enc.examples[0];
    assert_eq!(ex.input_ids[0], 2, "the tokenizer's BOS");
    assert_eq!(ex.labels[0], IGNORE_INDEX);
    let eos = tok.eos_token().unwrap().id;
    assert_eq!(*ex.input_ids.last().unwrap(), eos);
    let (hello, friend) = (tok.token_to_id("hello").unwrap(), tok.token_to_id("friend").unwrap());
    assert_eq!(labelled(ex), vec![hello, friend, eos]);
    let text = tok.decode(&ex.input_ids, true).unwrap();
    assert!(text.contains("hi { assistant }"), "{text}");

    let err = encode_conversations(
        &[row(None, "hi", "ok")],
        &tok,
        &PromptFormat::Template("{user} only".into()),
        &ConversationArgs::default(),
        2048,
    )
    .unwrap_err();
    assert!(err.to_string().contains("{assistant}"), "{err}");
}

#[test]
fn truncation_drops_rows_without_reply_tokens() {
    let tok = tokenizer();
    let rows = [
        row(None, "hi there hi there hi there hi there", "hello friend"),
        row(None, "hi", "hello"),
    ];
    let full =
        encode_conversations(&rows, &tok, &chatml(), &ConversationArgs::default(), 2048).unwrap();
    let long = full.examples[0].input_ids.len();
    let short = full.examples[1].input_ids.len();
    // Cut inside the first row's prompt: it has no label left and goes; the second fits.
    let args = ConversationArgs { max_seq_length: short, ..Default::default() };
    let enc = encode_conversations(&rows, &tok, &chatml(), &args, 2048).unwrap();
    assert_eq!((enc.examples.len(), enc.truncated, enc.dropped), (1, 1, 1));
    assert_eq!(enc.examples[0], full.examples[1]);
    // The model's positions bound the length too.
    let enc = encode_conversations(
        &rows,
        &tok,
        &chatml(),
        &ConversationArgs::default(),
        (long - 1) as i64,
    )
    .unwrap();
    assert_eq!((enc.truncated, enc.max_seq_length), (1, long - 1));
    assert_eq!(enc.examples[0].input_ids.len(), long - 1);
    let err = encode_conversations(&rows[..1], &tok, &chatml(), &args, 2048).unwrap_err();
    assert!(err.to_string().contains("no training row"), "{err}");
}

#[test]
fn packing_concatenates_whole_examples_and_keeps_labels() {
    let tok = tokenizer();
    let rows: Vec<ConversationRow> =
        (0..7).map(|i| row(None, &"hi ".repeat(i + 1), &"hello ".repeat(7 - i))).collect();
    let plain =
        encode_conversations(&rows, &tok, &chatml(), &ConversationArgs::default(), 2048).unwrap();
    let max = 40;
    let args = ConversationArgs { packing: true, max_seq_length: max, ..Default::default() };
    let packed = encode_conversations(&rows, &tok, &chatml(), &args, 2048).unwrap();
    assert!(packed.examples.len() < plain.examples.len());
    assert!(packed.examples.iter().all(|e| e.input_ids.len() <= max));
    let flat = |v: &[TokenizedExample]| -> (Vec<i64>, Vec<i64>) {
        (
            v.iter().flat_map(|e| e.input_ids.clone()).collect(),
            v.iter().flat_map(|e| e.labels.clone()).collect(),
        )
    };
    assert_eq!(flat(&packed.examples), flat(&plain.examples));
}
