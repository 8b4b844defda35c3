//! Hugging Face Hub access for `pgml.load_dataset`: resolves a dataset repo to local data files.
//!
//! What the `datasets` library does for repos without a loading script:
//! list the repo's files at a revision (default `main`), map data files (`.parquet`, `.csv`,
//! `.tsv`, `.json`, `.jsonl`, optionally `.gz`) to splits by the README's YAML `configs:` or the
//! default name patterns (see [`layout`]), and download them into the standard Hugging Face
//! cache (`$HF_HUB_CACHE`, `datasets--{owner}--{name}/snapshots/{commit}/…`, `refs/{revision}`).
//! Repos without data files of their own (script datasets) fall back to the Hub's parquet
//! conversion (revision `refs/convert/parquet`, files `{config}/{split}/NNNN.parquet`).
//!
//! Offline (`HF_HUB_OFFLINE=1`), only the cache is read. Online, when the Hub cannot be
//! reached, the cache is used if it holds the dataset (with a warning), as `datasets` does.
//!
//! This module holds the dataset logic only: listing, downloads, the cache lookup, repo ids
//! and errors are pgmld-hub's (`RemoteRepo`, `cache`, `RepoId`, `HubError`), shared with
//! model downloads. No message or log here contains the token.

mod format;
pub mod layout;

pub use format::Format;

use std::path::{Path, PathBuf};

use pgmld_hub::cache::{self, Snapshot};
use pgmld_hub::{short_list as list, HubConfig, HubError, RemoteRepo, RepoId};

use layout::{LayoutError, SplitFiles};

/// The revision of the Hub's automatic parquet conversion of a dataset.
pub const PARQUET_CONVERSION_REVISION: &str = "refs/convert/parquet";

/// One data file of a dataset, on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub split: String,
    /// Local file in the cache (a symlink into `blobs/` in the standard layout).
    pub path: PathBuf,
    pub format: Format,
    /// Gzip-compressed (`.gz`): decompress while reading.
    pub gzip: bool,
    /// Field delimiter of a csv / tsv file when it is not the format's default (sniffed or
    /// declared for a local file); kwargs `delimiter` still wins.
    pub delimiter: Option<u8>,
    /// Where it came from, for messages: the file's `resolve` URL on the hub.
    pub origin: String,
}

/// The split the `datasets` default patterns give one file by its (relative) path, `train`
/// when none: `data/test-00000-of-00001.parquet` → `test`, `dev/a.csv` → `validation`.
/// For local files; a hub repo is mapped as a whole by [`fetch_dataset_files`].
pub fn split_from_path(path: &str) -> String {
    layout::split_of_path(&path.replace('\\', "/")).unwrap_or_else(|| "train".to_string())
}

/// Resolves a dataset repo to local data files, downloading into the cache (or cache only
/// when offline). `subset` picks a README config or a top-level directory; `revision` is a
/// branch, tag or commit (default `main`); `split` keeps one split.
pub async fn fetch_dataset_files(
    cfg: &HubConfig,
    repo: &str,
    subset: Option<&str>,
    revision: Option<&str>,
    split: Option<&str>,
) -> Result<Vec<DataFile>, HubError> {
    let id = RepoId::dataset(repo)?;
    let req = Request {
        cfg,
        id: &id,
        subset: subset.map(str::trim).filter(|s| !s.is_empty()),
        revision: revision.map(str::trim).filter(|r| !r.is_empty()).unwrap_or("main"),
        split: split.map(str::trim).filter(|s| !s.is_empty()),
    };
    cache::check_revision(&id, req.revision)?;
    if cfg.offline {
        return req.offline();
    }
    match req.online().await {
        Err(err @ HubError::Network { .. }) => match req.offline() {
            Ok(files) => {
                tracing::warn!(repo = %id.full, error = %err, "the Hub is unreachable; using the cached files");
                Ok(files)
            }
            Err(_) => Err(err),
        },
        other => other,
    }
}

/// One dataset asked for: the repo at a revision, with an optional subset and split.
struct Request<'a> {
    cfg: &'a HubConfig,
    id: &'a RepoId,
    subset: Option<&'a str>,
    revision: &'a str,
    split: Option<&'a str>,
}

impl Request<'_> {
    fn repo(&self) -> String {
        self.id.full.clone()
    }

    fn file_url(&self, revision: &str, path: &str) -> String {
        self.id.file_url(&self.cfg.endpoint, revision, path)
    }

    async fn online(&self) -> Result<Vec<DataFile>, HubError> {
        let remote = RemoteRepo::open(self.cfg, self.id, self.revision)?;
        let (_, files) = remote.list_files(self.revision).await?;
        let readme = match files.iter().any(|f| f == "README.md") {
            true => {
                let readme = ["README.md".to_string()];
                let p = remote.download_all(self.revision, &readme, &files).await?.remove(0);
                Some(std::fs::read_to_string(&p).map_err(|e| HubError::Cache {
                    kind: self.id.kind,
                    repo: self.repo(),
                    path: p.clone(),
                    message: e.to_string(),
                })?)
            }
            false => None,
        };
        let (revision, splits) = match self.resolve(&files, readme.as_deref()) {
            Ok(splits) => (self.revision, splits),
            Err(LayoutError::NoDataFiles) if self.revision == "main" => {
                tracing::info!(repo = %self.id.full, "no data files in the repo; using the Hub's parquet conversion");
                let conv = match remote.list_files(PARQUET_CONVERSION_REVISION).await {
                    Ok((_, conv)) => conv,
                    Err(HubError::RevisionNotFound { .. } | HubError::NotFound { .. }) => {
                        return Err(HubError::NoDataFiles { repo: self.repo(), files })
                    }
                    Err(e) => return Err(e),
                };
                match layout::resolve_parquet_conversion(&conv, self.subset) {
                    Ok(splits) => (PARQUET_CONVERSION_REVISION, splits),
                    Err(LayoutError::NoDataFiles) => {
                        return Err(HubError::NoDataFiles { repo: self.repo(), files })
                    }
                    Err(e) => return Err(self.layout_error(e, &files)),
                }
            }
            Err(e) => return Err(self.layout_error(e, &files)),
        };
        let splits = self.keep_split(splits).map_err(|available| HubError::UnknownSplit {
            repo: self.repo(),
            split: self.split.unwrap_or_default().to_string(),
            available,
        })?;
        let wanted: Vec<(String, String)> = splits
            .into_iter()
            .flat_map(|s| s.files.into_iter().map(move |f| (s.split.clone(), f)))
            .collect();
        let paths: Vec<String> = wanted.iter().map(|(_, f)| f.clone()).collect();
        let paths = remote.download_all(revision, &paths, &files).await?;
        let out: Vec<DataFile> = wanted
            .iter()
            .zip(paths)
            .map(|((split, f), local)| self.data_file(split, f, local, revision))
            .collect();
        tracing::info!(repo = %self.id.full, revision, files = out.len(), "dataset files ready");
        Ok(out)
    }

    /// The splits of the files of `self.revision` (the conversion revision has its own layout).
    fn resolve(
        &self,
        files: &[String],
        readme: Option<&str>,
    ) -> Result<Vec<SplitFiles>, LayoutError> {
        if self.revision == PARQUET_CONVERSION_REVISION {
            layout::resolve_parquet_conversion(files, self.subset)
        } else {
            layout::resolve(files, readme, self.subset)
        }
    }

    fn data_file(&self, split: &str, repo_path: &str, local: PathBuf, revision: &str) -> DataFile {
        // layout only yields paths with a known format
        let (format, gzip) =
            Format::from_path(Path::new(repo_path)).unwrap_or((Format::Parquet, false));
        DataFile {
            split: split.to_string(),
            path: local,
            format,
            gzip,
            delimiter: None,
            origin: self.file_url(revision, repo_path),
        }
    }

    /// Keeps the requested split; `Err` lists the available ones.
    fn keep_split(&self, splits: Vec<SplitFiles>) -> Result<Vec<SplitFiles>, Vec<String>> {
        let Some(want) = self.split else { return Ok(splits) };
        let available: Vec<String> = splits.iter().map(|s| s.split.clone()).collect();
        let kept: Vec<SplitFiles> = splits.into_iter().filter(|s| s.split == want).collect();
        if kept.is_empty() {
            Err(available)
        } else {
            Ok(kept)
        }
    }

    fn layout_error(&self, e: LayoutError, files: &[String]) -> HubError {
        let repo = self.repo();
        match e {
            LayoutError::NoDataFiles => HubError::NoDataFiles { repo, files: files.to_vec() },
            LayoutError::UnknownSubset { subset, available } => {
                HubError::UnknownSubset { repo, subset, available }
            }
            LayoutError::SubsetRequired { available } => {
                HubError::SubsetRequired { repo, available }
            }
            LayoutError::BadConfig(message) => HubError::BadConfig { repo, message },
        }
    }

    /// The cached snapshot of `revision` and its files.
    fn cached_snapshot(&self, revision: &str) -> Result<(PathBuf, Vec<String>), HubError> {
        let Snapshot { dir, files } = cache::cached_snapshot(self.cfg, self.id, revision)?;
        Ok((dir, files))
    }

    fn offline(&self) -> Result<Vec<DataFile>, HubError> {
        let (snapshot, files) = self.cached_snapshot(self.revision)?;
        let readme = std::fs::read_to_string(snapshot.join("README.md")).ok();
        let offline_err =
            |detail: String, path: PathBuf| cache::offline(self.id, self.revision, path, detail);
        let (revision, dir, splits) = match self.resolve(&files, readme.as_deref()) {
            Ok(splits) => (self.revision, snapshot, splits),
            Err(LayoutError::NoDataFiles) if self.revision == "main" => {
                let (conv_dir, conv) =
                    self.cached_snapshot(PARQUET_CONVERSION_REVISION).map_err(|_| {
                        offline_err("no data files are cached for it".into(), snapshot.clone())
                    })?;
                match layout::resolve_parquet_conversion(&conv, self.subset) {
                    Ok(splits) => (PARQUET_CONVERSION_REVISION, conv_dir, splits),
                    Err(LayoutError::NoDataFiles) => {
                        return Err(offline_err("no data files are cached for it".into(), conv_dir))
                    }
                    Err(LayoutError::UnknownSubset { subset, available }) => {
                        return Err(offline_err(
                            format!(
                                "subset `{subset}` is not cached (cached: {})",
                                list(&available)
                            ),
                            conv_dir,
                        ))
                    }
                    Err(e) => return Err(self.layout_error(e, &conv)),
                }
            }
            Err(LayoutError::NoDataFiles) => {
                return Err(offline_err("no data files are cached for it".into(), snapshot))
            }
            Err(LayoutError::UnknownSubset { subset, available }) if readme.is_none() => {
                return Err(offline_err(
                    format!("subset `{subset}` is not cached (cached: {})", list(&available)),
                    snapshot,
                ))
            }
            Err(e) => return Err(self.layout_error(e, &files)),
        };
        let splits = self.keep_split(splits).map_err(|available| {
            offline_err(
                format!(
                    "split `{}` is not cached (cached: {})",
                    self.split.unwrap_or_default(),
                    list(&available)
                ),
                dir.clone(),
            )
        })?;
        let out: Vec<DataFile> = splits
            .iter()
            .flat_map(|s| s.files.iter().map(move |f| (s.split.as_str(), f)))
            .map(|(split, f)| self.data_file(split, f, dir.join(f), revision))
            .collect();
        tracing::info!(repo = %self.id.full, revision, files = out.len(), "dataset files from the cache");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgmld_hub::cache::testing;
    use pgmld_hub::RepoKind;

    #[test]
    fn formats_from_names() {
        let f = |n: &str| Format::from_path(Path::new(n));
        assert_eq!(f("data/train-00000-of-00001.parquet"), Some((Format::Parquet, false)));
        assert_eq!(f("a.CSV"), Some((Format::Csv, false)));
        assert_eq!(f("a.tsv.gz"), Some((Format::Tsv, true)));
        assert_eq!(f("a.json"), Some((Format::Json, false)));
        assert_eq!(f("a.jsonl.gz"), Some((Format::JsonLines, true)));
        assert_eq!(f("a.ndjson"), Some((Format::JsonLines, false)));
        assert_eq!(f("a.txt"), None);
        assert_eq!(f("gz"), None);
        assert_eq!(f(".gz"), None);
    }

    /// A dataset cache laid out by hand (see `pgmld_hub::cache::testing::fake_cache`).
    fn fake_cache(root: &Path, repo: &str, revision: &str, commit: &str, files: &[(&str, &str)]) {
        testing::fake_cache(root, RepoKind::Dataset, repo, Some(revision), commit, files);
    }

    use testing::offline_config as offline_cfg;

    #[tokio::test]
    async fn offline_with_empty_cache_names_the_cache_path() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = offline_cfg(cache.path());
        let err = fetch_dataset_files(&cfg, "o/n", None, None, None).await.unwrap_err();
        let HubError::Offline { ref cache_path, .. } = err else { panic!("{err}") };
        assert_eq!(cache_path, &cache.path().join("datasets--o--n/refs/main"));
        let msg = err.to_string();
        assert!(msg.contains("o/n") && msg.contains(&cache.path().display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn offline_reads_the_cached_snapshot() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "a".repeat(40);
        fake_cache(
            cache.path(),
            "o/n",
            "main",
            &commit,
            &[("README.md", "# x\n"), ("data/train.csv", "a\n1\n"), ("data/test.csv.gz", "")],
        );
        let cfg = offline_cfg(cache.path());
        let files = fetch_dataset_files(&cfg, "o/n", None, None, None).await.unwrap();
        let got: Vec<(&str, Format, bool)> =
            files.iter().map(|f| (f.split.as_str(), f.format, f.gzip)).collect();
        assert_eq!(got, vec![("train", Format::Csv, false), ("test", Format::Csv, true)]);
        assert_eq!(
            files[0].path,
            cache.path().join(format!("datasets--o--n/snapshots/{commit}/data/train.csv"))
        );
        assert_eq!(std::fs::read_to_string(&files[0].path).unwrap(), "a\n1\n");
        assert_eq!(files[0].origin, "http://hub.invalid/datasets/o/n/resolve/main/data/train.csv");

        // a split that is not cached
        let err =
            fetch_dataset_files(&cfg, "o/n", None, None, Some("validation")).await.unwrap_err();
        assert!(matches!(err, HubError::Offline { .. }), "{err}");
        assert!(err.to_string().contains("cached: train, test"), "{err}");
        // another revision
        let err = fetch_dataset_files(&cfg, "o/n", None, Some("v2"), None).await.unwrap_err();
        let HubError::Offline { cache_path, .. } = err else { panic!() };
        assert!(cache_path.ends_with("datasets--o--n/refs/v2"));
    }

    #[tokio::test]
    async fn offline_uses_a_cached_parquet_conversion() {
        let cache = tempfile::tempdir().unwrap();
        fake_cache(cache.path(), "o/script", "main", &"b".repeat(40), &[("script.py", "")]);
        fake_cache(
            cache.path(),
            "o/script",
            "refs/convert/parquet",
            &"c".repeat(40),
            &[("default/train/0000.parquet", ""), ("default/test/0000.parquet", "")],
        );
        let cfg = offline_cfg(cache.path());
        let files = fetch_dataset_files(&cfg, "o/script", None, None, Some("test")).await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].split, "test");
        assert_eq!(files[0].format, Format::Parquet);
        assert!(files[0]
            .origin
            .ends_with("/resolve/refs%2Fconvert%2Fparquet/default/test/0000.parquet"));

        let err =
            fetch_dataset_files(&cfg, "o/script", Some("other"), None, None).await.unwrap_err();
        assert!(matches!(err, HubError::Offline { .. }), "{err}");
    }

    #[tokio::test]
    async fn offline_subset_dirs() {
        let cache = tempfile::tempdir().unwrap();
        fake_cache(
            cache.path(),
            "o/multi",
            "main",
            &"d".repeat(40),
            &[("en/train.jsonl", "{}\n"), ("fr/train.jsonl", "{}\n")],
        );
        let cfg = offline_cfg(cache.path());
        let files = fetch_dataset_files(&cfg, "o/multi", Some("fr"), None, None).await.unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].path.ends_with("fr/train.jsonl"));
        assert_eq!(files[0].format, Format::JsonLines);
        let err = fetch_dataset_files(&cfg, "o/multi", Some("de"), None, None).await.unwrap_err();
        assert!(err.to_string().contains("subset `de` is not cached (cached: en, fr)"), "{err}");
    }

    #[test]
    fn messages_name_the_dataset() {
        let errs = [
            HubError::NotFound {
                kind: RepoKind::Dataset,
                repo: "o/n".into(),
                tried: "http://h/api/datasets/o/n/revision/main".into(),
            },
            HubError::Unauthorized {
                kind: RepoKind::Dataset,
                repo: "o/n".into(),
                url: "http://h/x".into(),
                token_sent: true,
            },
            HubError::NoDataFiles { repo: "o/n".into(), files: vec!["README.md".into()] },
            HubError::UnknownSplit {
                repo: "o/n".into(),
                split: "dev".into(),
                available: vec!["train".into()],
            },
        ];
        for e in errs {
            assert!(e.to_string().contains("`o/n`"), "{e}");
        }
    }
}
