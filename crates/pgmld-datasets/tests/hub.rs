//! `fetch_dataset_files` against a fake Hugging Face Hub (tests/support/hub.rs): the real
//! hf-hub client code, over HTTP on 127.0.0.1, into a real cache directory.

#[path = "../../../tests/support/hub.rs"]
mod hub;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use hub::FakeHub;
use pgmld_datasets::hub::{fetch_dataset_files, DataFile, Format};
use pgmld_hub::{HubConfig, HubError};

const README: &str = "---\nlicense: mit\ntask_categories:\n- text-classification\n---\n# Reviews\n";

fn parquet_bytes(ids: &[i64]) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let texts: Vec<String> = ids.iter().map(|i| format!("review {i}")).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(texts))],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

fn parquet_rows(path: &Path) -> usize {
    let f = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn cfg(hub: &FakeHub, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: hub.url.clone(),
        token: None,
        cache_dir: cache.to_path_buf(),
        offline: false,
    }
}

fn summary(files: &[DataFile]) -> Vec<(String, String, Format, bool)> {
    files
        .iter()
        .map(|f| {
            // origin: {endpoint}/datasets/{repo}/resolve/{revision}/{path}
            let (_, name) = f.origin.rsplit("/resolve/").next().unwrap().split_once('/').unwrap();
            let name = name.to_string();
            (f.split.clone(), name, f.format, f.gzip)
        })
        .collect()
}

/// The imdb layout: parquet shards under data/ with train, test and unsupervised splits.
fn imdb_like(root: &Path) {
    FakeHub::put(root, "acme/reviews", "main", "README.md", README);
    FakeHub::put(
        root,
        "acme/reviews",
        "main",
        ".gitattributes",
        "*.parquet filter=lfs diff=lfs merge=lfs -text\n",
    );
    FakeHub::put(
        root,
        "acme/reviews",
        "main",
        "data/train-00000-of-00001.parquet",
        parquet_bytes(&[1, 2, 3]),
    );
    FakeHub::put(
        root,
        "acme/reviews",
        "main",
        "data/test-00000-of-00001.parquet",
        parquet_bytes(&[4, 5]),
    );
    FakeHub::put(
        root,
        "acme/reviews",
        "main",
        "data/unsupervised-00000-of-00001.parquet",
        parquet_bytes(&[6]),
    );
}

#[tokio::test]
async fn parquet_splits_under_data_then_offline_from_the_same_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hub-root");
    imdb_like(&root);
    let cache = tmp.path().join("cache");
    let hub = FakeHub::start(root.clone());
    let cfg = cfg(&hub, &cache);

    let files = fetch_dataset_files(&cfg, "acme/reviews", None, None, None).await.unwrap();
    assert_eq!(
        summary(&files),
        vec![
            ("train".into(), "data/train-00000-of-00001.parquet".into(), Format::Parquet, false),
            ("test".into(), "data/test-00000-of-00001.parquet".into(), Format::Parquet, false),
            (
                "unsupervised".into(),
                "data/unsupervised-00000-of-00001.parquet".into(),
                Format::Parquet,
                false
            ),
        ]
    );
    assert_eq!(
        files[0].origin,
        format!("{}/datasets/acme/reviews/resolve/main/data/train-00000-of-00001.parquet", hub.url)
    );
    // standard cache layout: refs/main → snapshots/{commit}/… → blobs/…
    let repo_cache = cache.join("datasets--acme--reviews");
    let commit = std::fs::read_to_string(repo_cache.join("refs/main")).unwrap();
    assert_eq!(commit.len(), 40);
    assert_eq!(
        files[0].path,
        repo_cache.join("snapshots").join(&commit).join("data/train-00000-of-00001.parquet")
    );
    assert!(std::fs::symlink_metadata(&files[0].path).unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read(&files[1].path).unwrap(),
        std::fs::read(root.join("acme/reviews/data/test-00000-of-00001.parquet")).unwrap()
    );
    assert_eq!(
        [parquet_rows(&files[0].path), parquet_rows(&files[1].path), parquet_rows(&files[2].path)],
        [3, 2, 1]
    );

    // what was fetched: the info, README.md, then each parquet file through its LFS redirect
    let reqs = hub.requests();
    assert_eq!(reqs[0], "GET /api/datasets/acme/reviews/revision/main");
    assert!(
        reqs.contains(&"HEAD /datasets/acme/reviews/resolve/main/README.md".to_string()),
        "{reqs:#?}"
    );
    for split in ["train", "test", "unsupervised"] {
        let p = format!("data/{split}-00000-of-00001.parquet");
        assert!(
            reqs.contains(&format!("HEAD /datasets/acme/reviews/resolve/main/{p}")),
            "{reqs:#?}"
        );
        assert!(
            reqs.contains(&format!("GET /datasets/acme/reviews/resolve/main/{p}")),
            "{reqs:#?}"
        );
        assert!(reqs.contains(&format!("GET /cdn/acme/reviews/{commit}/{p}")), "{reqs:#?}");
    }
    assert!(!reqs.iter().any(|r| r.contains(".gitattributes")), "{reqs:#?}");

    // one split
    let test =
        fetch_dataset_files(&cfg, "acme/reviews", None, Some("main"), Some("test")).await.unwrap();
    assert_eq!(test.len(), 1);
    assert_eq!(test[0], files[1]);
    let err = fetch_dataset_files(&cfg, "acme/reviews", None, None, Some("validation"))
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::UnknownSplit { .. }), "{err}");
    assert!(
        err.to_string().contains("acme/reviews")
            && err.to_string().contains("train, test, unsupervised"),
        "{err}"
    );

    // a second fetch downloads nothing again
    hub.clear_requests();
    let again = fetch_dataset_files(&cfg, "acme/reviews", None, None, None).await.unwrap();
    assert_eq!(again, files);
    assert!(!hub.requests().iter().any(|r| r.starts_with("GET /cdn/")), "{:#?}", hub.requests());

    // hub gone: offline from the same cache gives the same files, without a request
    hub.stop();
    let offline = HubConfig { offline: true, ..cfg.clone() };
    let cached = fetch_dataset_files(&offline, "acme/reviews", None, None, None).await.unwrap();
    assert_eq!(cached, files);
    assert_eq!(parquet_rows(&cached[0].path), 3);
    let cached_test =
        fetch_dataset_files(&offline, "acme/reviews", None, None, Some("test")).await.unwrap();
    assert_eq!(cached_test, test);
    // online but unreachable: the cache is used too
    let fallback = fetch_dataset_files(&cfg, "acme/reviews", None, None, None).await.unwrap();
    assert_eq!(fallback, files);

    // offline with an empty cache: the error names the dataset and the cache path
    let empty = tmp.path().join("empty-cache");
    let err = fetch_dataset_files(
        &HubConfig { cache_dir: empty.clone(), ..offline.clone() },
        "acme/reviews",
        None,
        None,
        None,
    )
    .await
    .unwrap_err();
    let HubError::Offline { ref cache_path, .. } = err else { panic!("{err}") };
    assert_eq!(cache_path, &empty.join("datasets--acme--reviews/refs/main"));
    let msg = err.to_string();
    assert!(
        msg.contains("acme/reviews")
            && msg.contains(&empty.display().to_string())
            && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );

    // online, unreachable, nothing cached: a network error naming the URL
    let err = fetch_dataset_files(
        &HubConfig { cache_dir: empty, ..cfg.clone() },
        "acme/reviews",
        None,
        None,
        None,
    )
    .await
    .unwrap_err();
    let HubError::Network { ref url, .. } = err else { panic!("{err}") };
    assert_eq!(url, &format!("{}/api/datasets/acme/reviews/revision/main", hub.url));
    assert!(err.to_string().contains(url.as_str()), "{err}");
}

#[tokio::test]
async fn csv_tsv_gzip_files_named_after_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    FakeHub::put(&root, "acme/csvs", "main", "train.csv", "id,text\n1,a\n2,b\n");
    FakeHub::put(&root, "acme/csvs", "main", "validation.tsv", "id\ttext\n3\tc\n");
    FakeHub::put(&root, "acme/csvs", "main", "test.csv.gz", gzip(b"id,text\n4,d\n"));
    FakeHub::put(&root, "acme/csvs", "main", "notes.txt", "not data");
    let hub = FakeHub::start(root.clone());
    let cache = tmp.path().join("cache");
    let files =
        fetch_dataset_files(&cfg(&hub, &cache), "acme/csvs", None, None, None).await.unwrap();
    assert_eq!(
        summary(&files),
        vec![
            ("train".into(), "train.csv".into(), Format::Csv, false),
            ("validation".into(), "validation.tsv".into(), Format::Tsv, false),
            ("test".into(), "test.csv.gz".into(), Format::Csv, true),
        ]
    );
    assert_eq!(std::fs::read_to_string(&files[0].path).unwrap(), "id,text\n1,a\n2,b\n");
    assert_eq!(std::fs::read(&files[2].path).unwrap(), gzip(b"id,text\n4,d\n"));
    // plain files are served directly (no redirect), the .gz one through the CDN
    let reqs = hub.requests();
    assert!(
        reqs.contains(&"GET /datasets/acme/csvs/resolve/main/train.csv".to_string()),
        "{reqs:#?}"
    );
    assert!(
        !reqs.iter().any(|r| r.starts_with("GET /cdn/acme/csvs/") && r.ends_with("train.csv")),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /cdn/acme/csvs/") && r.ends_with("test.csv.gz")),
        "{reqs:#?}"
    );
    assert!(!reqs.iter().any(|r| r.contains("notes.txt")), "{reqs:#?}");
}

#[tokio::test]
async fn subsets_as_directories_and_readme_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    FakeHub::put(&root, "acme/multi", "main", "en/train-00000-of-00001.jsonl", "{\"t\":\"hi\"}\n");
    FakeHub::put(&root, "acme/multi", "main", "en/test-00000-of-00001.jsonl", "{\"t\":\"yo\"}\n");
    FakeHub::put(&root, "acme/multi", "main", "fr/train.jsonl", "{\"t\":\"salut\"}\n");
    let configured = "---\nconfigs:\n- config_name: small\n  data_files:\n  - split: train\n    path: parts/a-*.json\n  - split: holdout\n    path: parts/z.json\n- config_name: big\n  default: true\n  data_dir: big\n---\n";
    FakeHub::put(&root, "acme/configured", "main", "README.md", configured);
    FakeHub::put(&root, "acme/configured", "main", "parts/a-1.json", "[{\"x\":1}]");
    FakeHub::put(&root, "acme/configured", "main", "parts/a-2.json", "[{\"x\":2}]");
    FakeHub::put(&root, "acme/configured", "main", "parts/z.json", "[{\"x\":3}]");
    FakeHub::put(&root, "acme/configured", "main", "big/train.jsonl", "{\"x\":4}\n");
    let hub = FakeHub::start(root);
    let cache = tmp.path().join("cache");
    let cfg = cfg(&hub, &cache);

    let en = fetch_dataset_files(&cfg, "acme/multi", Some("en"), None, None).await.unwrap();
    assert_eq!(
        summary(&en),
        vec![
            ("train".into(), "en/train-00000-of-00001.jsonl".into(), Format::JsonLines, false),
            ("test".into(), "en/test-00000-of-00001.jsonl".into(), Format::JsonLines, false),
        ]
    );
    let fr = fetch_dataset_files(&cfg, "acme/multi", Some("fr"), None, None).await.unwrap();
    assert_eq!(
        summary(&fr),
        vec![("train".into(), "fr/train.jsonl".into(), Format::JsonLines, false)]
    );
    let err = fetch_dataset_files(&cfg, "acme/multi", Some("de"), None, None).await.unwrap_err();
    let HubError::UnknownSubset { ref available, .. } = err else { panic!("{err}") };
    assert_eq!(available, &vec!["en".to_string(), "fr".to_string()]);
    assert!(err.to_string().contains("acme/multi"), "{err}");

    // README configs: the default one, then a named one with its own split names
    let big = fetch_dataset_files(&cfg, "acme/configured", None, None, None).await.unwrap();
    assert_eq!(
        summary(&big),
        vec![("train".into(), "big/train.jsonl".into(), Format::JsonLines, false)]
    );
    let small =
        fetch_dataset_files(&cfg, "acme/configured", Some("small"), None, None).await.unwrap();
    assert_eq!(
        summary(&small),
        vec![
            ("train".into(), "parts/a-1.json".into(), Format::Json, false),
            ("train".into(), "parts/a-2.json".into(), Format::Json, false),
            ("holdout".into(), "parts/z.json".into(), Format::Json, false),
        ]
    );
    let err =
        fetch_dataset_files(&cfg, "acme/configured", Some("en"), None, None).await.unwrap_err();
    assert!(err.to_string().contains("small, big"), "{err}");

    // offline, the cached README still drives the configs
    hub.stop();
    let offline = HubConfig { offline: true, ..cfg.clone() };
    assert_eq!(
        fetch_dataset_files(&offline, "acme/configured", Some("small"), None, None).await.unwrap(),
        small
    );
    assert_eq!(
        fetch_dataset_files(&offline, "acme/multi", Some("fr"), None, None).await.unwrap(),
        fr
    );
}

#[tokio::test]
async fn unknown_repo_and_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    imdb_like(&root);
    let hub = FakeHub::start(root);
    let cfg = cfg(&hub, &tmp.path().join("cache"));

    let err = fetch_dataset_files(&cfg, "nobody/nothing", None, None, None).await.unwrap_err();
    let HubError::NotFound { ref tried, .. } = err else { panic!("{err}") };
    let url = format!("{}/api/datasets/nobody/nothing/revision/main", hub.url);
    assert_eq!(tried, &url);
    assert!(err.to_string().contains("nobody/nothing") && err.to_string().contains(&url), "{err}");

    let err = fetch_dataset_files(&cfg, "acme/reviews", None, Some("v9"), None).await.unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
    assert!(err.to_string().contains("v9") && err.to_string().contains("/revision/v9"), "{err}");

    let err = fetch_dataset_files(&cfg, "a/b/c", None, None, None).await.unwrap_err();
    assert!(matches!(err, HubError::InvalidRepo { .. }), "{err}");
}

#[tokio::test]
async fn token_protected_repo() {
    const TOKEN: &str = "hf_fake_secret_token_42";
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    imdb_like(&root);
    let hub = FakeHub::start(root).with_token(TOKEN);
    let cache = tmp.path().join("cache");

    let err = fetch_dataset_files(&cfg(&hub, &cache), "acme/reviews", None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("acme/reviews") && err.to_string().contains("HF_TOKEN"),
        "{err}"
    );

    let wrong = "hf_wrong_token_value";
    let with_wrong = HubConfig { token: Some(wrong.into()), ..cfg(&hub, &cache) };
    let err = fetch_dataset_files(&with_wrong, "acme/reviews", None, None, None).await.unwrap_err();
    let HubError::Unauthorized { token_sent, .. } = &err else { panic!("{err}") };
    assert!(token_sent);
    assert!(!format!("{err} {err:?}").contains(wrong), "{err:?}");

    let with_token = HubConfig { token: Some(TOKEN.into()), ..cfg(&hub, &cache) };
    assert!(!format!("{with_token:?}").contains(TOKEN));
    let files =
        fetch_dataset_files(&with_token, "acme/reviews", None, None, Some("train")).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(parquet_rows(&files[0].path), 3);
    // the token goes in a header, never into a URL
    assert!(!hub.requests().iter().any(|r| r.contains(TOKEN)));
}

#[tokio::test]
async fn parquet_conversion_when_the_repo_has_no_data_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    FakeHub::put(&root, "acme/scripted", "main", "README.md", "# scripted\n");
    FakeHub::put(&root, "acme/scripted", "main", "scripted.py", "# a loading script\n");
    let conv = "refs/convert/parquet";
    FakeHub::put(
        &root,
        "acme/scripted",
        conv,
        "default/train/0000.parquet",
        parquet_bytes(&[1, 2]),
    );
    FakeHub::put(&root, "acme/scripted", conv, "default/train/0001.parquet", parquet_bytes(&[3]));
    FakeHub::put(
        &root,
        "acme/scripted",
        conv,
        "default/unsupervised/0000.parquet",
        parquet_bytes(&[4]),
    );
    FakeHub::put(&root, "acme/scripted", conv, "plain/test/0000.parquet", parquet_bytes(&[5]));
    FakeHub::put(&root, "acme/empty", "main", "README.md", "# nothing\n");
    FakeHub::put(&root, "acme/empty", "main", "weights.bin", "x");
    let hub = FakeHub::start(root);
    let cfg = cfg(&hub, &tmp.path().join("cache"));

    let files = fetch_dataset_files(&cfg, "acme/scripted", None, None, None).await.unwrap();
    assert_eq!(
        summary(&files),
        vec![
            ("train".into(), "default/train/0000.parquet".into(), Format::Parquet, false),
            ("train".into(), "default/train/0001.parquet".into(), Format::Parquet, false),
            (
                "unsupervised".into(),
                "default/unsupervised/0000.parquet".into(),
                Format::Parquet,
                false
            ),
        ]
    );
    assert!(files[0].origin.contains("/resolve/refs%2Fconvert%2Fparquet/"), "{}", files[0].origin);
    assert_eq!(parquet_rows(&files[1].path), 1);
    assert!(hub.requests().contains(
        &"GET /api/datasets/acme/scripted/revision/refs%2Fconvert%2Fparquet".to_string()
    ));
    let plain =
        fetch_dataset_files(&cfg, "acme/scripted", Some("plain"), None, None).await.unwrap();
    assert_eq!(
        summary(&plain),
        vec![("test".into(), "plain/test/0000.parquet".into(), Format::Parquet, false)]
    );

    // the conversion named as the revision
    let named = fetch_dataset_files(&cfg, "acme/scripted", None, Some(conv), Some("unsupervised"))
        .await
        .unwrap();
    assert_eq!(named, files[2..].to_vec());

    let err = fetch_dataset_files(&cfg, "acme/empty", None, None, None).await.unwrap_err();
    let HubError::NoDataFiles { files: ref listed, .. } = err else { panic!("{err}") };
    assert_eq!(listed, &vec!["README.md".to_string(), "weights.bin".to_string()]);
    assert!(err.to_string().contains("acme/empty"), "{err}");

    // offline: the cached conversion is found again
    hub.stop();
    let offline = HubConfig { offline: true, ..cfg.clone() };
    assert_eq!(
        fetch_dataset_files(&offline, "acme/scripted", None, None, None).await.unwrap(),
        files
    );
}

/// The fake hub itself, over a raw socket from a plain #[test]: the headers hf-hub relies on.
#[test]
fn fake_hub_speaks_the_hub_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    FakeHub::put(&root, "o/n", "main", "dir/a.csv", "0123456789");
    let hub = FakeHub::start(root.clone());
    let addr = hub.url.trim_start_matches("http://").to_string();
    let raw = |req: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.to_ascii_lowercase()
    };

    let head = raw("HEAD /datasets/o/n/resolve/main/dir/a.csv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    for h in ["content-length: 10", "etag: \"", "x-repo-commit: ", "accept-ranges: bytes"] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    let range = raw(
        "GET /datasets/o/n/resolve/main/dir/a.csv HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\nConnection: close\r\n\r\n",
    );
    assert!(
        range.starts_with("http/1.1 206")
            && range.contains("content-range: bytes 2-4/10")
            && range.ends_with("\r\n\r\n234"),
        "{range}"
    );
    let tree = raw("GET /api/datasets/o/n/tree/main?recursive=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(tree.contains("\"path\":\"dir\"") && tree.contains("\"path\":\"dir/a.csv\""), "{tree}");
    let missing = raw("GET /api/datasets/o/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        missing.starts_with("http/1.1 404")
            && missing.contains("x-error-code: reponotfound")
            && missing.contains("{\"error\":\"repository not found\"}"),
        "{missing}"
    );
    let entry = raw(
        "HEAD /datasets/o/n/resolve/main/nope.csv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        entry.starts_with("http/1.1 404")
            && entry.contains("x-error-code: entrynotfound")
            && entry.contains("x-repo-commit"),
        "{entry}"
    );
    assert_eq!(hub.requests().len(), 5);

    hub.stop();
    assert!(std::net::TcpStream::connect(&addr).is_err(), "port still open after stop()");
    let _: PathBuf = hub.root.clone();
}
