//! Which files of a dataset repo hold which split: the rules of the Hugging Face `datasets`
//! library for repos without a loading script, as pure functions over repo-relative paths.
//!
//! Order of precedence, as in `datasets`:
//! 1. `README.md` YAML `configs:` (`config_name`, `data_files`, `data_dir`, `default`).
//! 2. Sharded names under `data/`: `data/{split}-00000-of-00003.parquet`; any split name.
//! 3. A split keyword in a directory name: `train/…`, `data/test/…`, `dev-set/…`.
//! 4. A split keyword in the file name: `train.csv`, `my-test_file.jsonl`, `valid1.json`.
//! 5. Everything is `train`.
//!
//! Keywords: train|training → `train`, validation|valid|dev|val → `validation`,
//! test|testing|eval|evaluation → `test`; delimited by `-`, `_`, `.`, space or a digit.
//! Once a rule finds a split, files that rule does not place are left out, as in `datasets`.
//! Only the most common format family (parquet, csv/tsv, json/jsonl) is kept.

use std::collections::{BTreeMap, BTreeSet};

use super::format::Format;

/// Files of one split, repo-relative, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitFiles {
    pub split: String,
    pub files: Vec<String>,
}

/// Why a repo's files could not be mapped to splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// No data file (after the subset/config selection).
    NoDataFiles,
    /// `subset` names no config (README `configs:`) and no top-level directory.
    UnknownSubset { subset: String, available: Vec<String> },
    /// The README declares several configs and none is the default.
    SubsetRequired { available: Vec<String> },
    /// The README's YAML `configs:` could not be read.
    BadConfig(String),
}

/// Files that `datasets` never treats as data, whatever their extension.
const FILES_TO_IGNORE: &[&str] = &[
    "README.md",
    "config.json",
    "dataset_info.json",
    "dataset_infos.json",
    "dummy_data.zip",
    "dataset_dict.json",
];

const SPLIT_KEYWORDS: &[(&str, &[&str])] = &[
    ("train", &["train", "training"]),
    ("validation", &["validation", "valid", "dev", "val"]),
    ("test", &["test", "testing", "eval", "evaluation"]),
];

const DEFAULT_SPLITS: &[&str] = &["train", "validation", "test"];

/// A config declared in the README's YAML front matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpec {
    pub name: String,
    /// `(split, patterns)` in declaration order; `None` when the config has no `data_files`.
    pub data_files: Option<Vec<(String, Vec<String>)>>,
    pub data_dir: Option<String>,
    pub default: bool,
}

/// Maps a repo's files to splits: README configs first, else the default patterns.
/// `subset` picks a README config or, without configs, a top-level directory
/// (then `data/{subset}/`), inside which the patterns apply.
pub fn resolve(
    files: &[String],
    readme: Option<&str>,
    subset: Option<&str>,
) -> Result<Vec<SplitFiles>, LayoutError> {
    let subset = subset.map(str::trim).filter(|s| !s.is_empty());
    let configs = match readme {
        Some(text) => parse_configs(text).map_err(LayoutError::BadConfig)?,
        None => Vec::new(),
    };
    if !configs.is_empty() {
        let config = pick_config(&configs, subset)?;
        return resolve_config(files, config);
    }
    match subset {
        None => infer_splits(files, ""),
        Some(subset) => {
            for base in [format!("{subset}/"), format!("data/{subset}/")] {
                if files.iter().any(|f| f.starts_with(&base) && is_data_file(f)) {
                    return infer_splits(files, &base);
                }
            }
            // a repo without data files (script datasets) goes to the parquet conversion
            // `default` is the name `datasets` gives a repo's only config.
            if subset == "default"
                || !files.iter().any(|f| is_data_file(f) && !is_hidden_or_special(f))
            {
                return infer_splits(files, "");
            }
            Err(LayoutError::UnknownSubset {
                subset: subset.to_string(),
                available: top_level_data_dirs(files),
            })
        }
    }
}

/// Maps the files of the Hub's parquet conversion (revision `refs/convert/parquet`) to splits:
/// `{config}/{split}/0000.parquet` (`partial-{split}` when truncated), or the older
/// `{config}/{dataset}-{split}[-00000-of-00002].parquet`.
/// The config is `subset`, else `default`, else the only one.
pub fn resolve_parquet_conversion(
    files: &[String],
    subset: Option<&str>,
) -> Result<Vec<SplitFiles>, LayoutError> {
    let parquet: Vec<&String> = files.iter().filter(|f| f.ends_with(".parquet")).collect();
    let configs: BTreeSet<&str> =
        parquet.iter().filter_map(|f| f.split_once('/').map(|(c, _)| c)).collect();
    if configs.is_empty() {
        return Err(LayoutError::NoDataFiles);
    }
    let config = match subset.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) if configs.contains(s) => s.to_string(),
        Some(s) => {
            return Err(LayoutError::UnknownSubset {
                subset: s.to_string(),
                available: configs.iter().map(|c| c.to_string()).collect(),
            })
        }
        None if configs.contains("default") => "default".to_string(),
        None if configs.len() == 1 => configs.iter().next().unwrap().to_string(),
        None => {
            return Err(LayoutError::SubsetRequired {
                available: configs.iter().map(|c| c.to_string()).collect(),
            })
        }
    };
    let mut splits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in parquet {
        let Some(rest) = f.strip_prefix(&format!("{config}/")) else { continue };
        let split = match rest.split_once('/') {
            Some((dir, _)) => dir.strip_prefix("partial-").unwrap_or(dir).to_string(),
            None => {
                let stem = rest.trim_end_matches(".parquet");
                let stem = strip_shard_suffix(stem);
                stem.rsplit('-').next().unwrap_or(stem).to_string()
            }
        };
        if !split.is_empty() {
            splits.entry(split).or_default().push(f.clone());
        }
    }
    if splits.is_empty() {
        return Err(LayoutError::NoDataFiles);
    }
    Ok(ordered(splits))
}

/// `name-00000-of-00002` → `name`.
fn strip_shard_suffix(stem: &str) -> &str {
    let b = stem.as_bytes();
    // "-ddddd-of-ddddd" is 15 bytes
    if b.len() > 15 {
        let tail = &stem[stem.len() - 15..];
        let tb = tail.as_bytes();
        let digits = |r: std::ops::Range<usize>| tb[r].iter().all(u8::is_ascii_digit);
        if tb[0] == b'-' && digits(1..6) && &tail[6..10] == "-of-" && digits(10..15) {
            return &stem[..stem.len() - 15];
        }
    }
    stem
}

/// The split `datasets` gives a single path by its default patterns, if any: the sharded
/// `data/{split}-NNNNN-of-NNNNN` name, else a keyword in a directory name, else in the file name.
pub fn split_of_path(path: &str) -> Option<String> {
    if let Some(s) = sharded_split(path) {
        return Some(s);
    }
    keyword_split_in_dirs(path).or_else(|| keyword_split_in_filename(path)).map(str::to_string)
}

fn pick_config<'a>(
    configs: &'a [ConfigSpec],
    subset: Option<&str>,
) -> Result<&'a ConfigSpec, LayoutError> {
    let names = || configs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if let Some(s) = subset {
        return configs.iter().find(|c| c.name == s).ok_or_else(|| LayoutError::UnknownSubset {
            subset: s.to_string(),
            available: names(),
        });
    }
    if let Some(c) = configs.iter().find(|c| c.default) {
        return Ok(c);
    }
    if let Some(c) = configs.iter().find(|c| c.name == "default") {
        return Ok(c);
    }
    if configs.len() == 1 {
        return Ok(&configs[0]);
    }
    Err(LayoutError::SubsetRequired { available: names() })
}

fn resolve_config(files: &[String], config: &ConfigSpec) -> Result<Vec<SplitFiles>, LayoutError> {
    let base =
        match config.data_dir.as_deref().map(|d| d.trim_matches('/')).filter(|d| !d.is_empty()) {
            Some(d) => format!("{d}/"),
            None => String::new(),
        };
    let Some(data_files) = &config.data_files else {
        return infer_splits(files, &base);
    };
    let candidates: Vec<&String> = files.iter().filter(|f| is_data_file(f)).collect();
    let mut out = Vec::new();
    for (split, patterns) in data_files {
        let mut matched = BTreeSet::new();
        for pattern in patterns {
            let full = format!("{base}{}", pattern.trim_start_matches("./"));
            let has_wildcards = full.contains(['*', '?', '[']);
            let matcher = globset::GlobBuilder::new(&full)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    LayoutError::BadConfig(format!(
                        "config `{}`: bad pattern `{pattern}`: {e}",
                        config.name
                    ))
                })?
                .compile_matcher();
            let skip_hidden = !pattern_mentions_hidden(&full);
            let dir_prefix = format!("{}/", full.trim_end_matches('/'));
            for f in &candidates {
                if skip_hidden && is_hidden_or_special(f) {
                    continue;
                }
                // a pattern without wildcards may also name a directory
                if matcher.is_match(f.as_str()) || (!has_wildcards && f.starts_with(&dir_prefix)) {
                    matched.insert((*f).clone());
                }
            }
        }
        if !matched.is_empty() {
            out.push(SplitFiles { split: split.clone(), files: matched.into_iter().collect() });
        }
    }
    let out = keep_majority_format(out);
    if out.is_empty() {
        return Err(LayoutError::NoDataFiles);
    }
    Ok(out)
}

fn pattern_mentions_hidden(pattern: &str) -> bool {
    is_hidden_or_special(pattern)
}

/// Default patterns applied to the files under `base` (`""` or `dir/`).
fn infer_splits(files: &[String], base: &str) -> Result<Vec<SplitFiles>, LayoutError> {
    let rel: Vec<(&str, &String)> = files
        .iter()
        .filter_map(|f| f.strip_prefix(base).map(|r| (r, f)))
        .filter(|(r, _)| is_data_file(r) && !is_hidden_or_special(r))
        .collect();
    // keep one format family, as `datasets` picks one builder module
    let family = majority_family(rel.iter().map(|(r, _)| *r));
    let rel: Vec<(&str, &String)> =
        rel.into_iter().filter(|(r, _)| Some(family_of(r)) == family).collect();
    if rel.is_empty() {
        return Err(LayoutError::NoDataFiles);
    }

    type Rule = fn(&str) -> Option<String>;
    let rules: [Rule; 3] = [
        sharded_split,
        |p| keyword_split_in_dirs(p).map(str::to_string),
        |p| keyword_split_in_filename(p).map(str::to_string),
    ];
    for rule in rules {
        let mut splits: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (r, full) in &rel {
            if let Some(split) = rule(r) {
                splits.entry(split).or_default().push((*full).clone());
            }
        }
        if !splits.is_empty() {
            let placed: usize = splits.values().map(Vec::len).sum();
            if placed < rel.len() {
                tracing::debug!(
                    left_out = rel.len() - placed,
                    "data files without a split are left out"
                );
            }
            return Ok(ordered(splits));
        }
    }
    let mut all: Vec<String> = rel.iter().map(|(_, f)| (*f).clone()).collect();
    all.sort();
    Ok(vec![SplitFiles { split: "train".into(), files: all }])
}

/// train, validation, test first, then the rest by name; files sorted.
fn ordered(mut splits: BTreeMap<String, Vec<String>>) -> Vec<SplitFiles> {
    let mut out = Vec::new();
    for d in DEFAULT_SPLITS {
        if let Some(mut files) = splits.remove(*d) {
            files.sort();
            out.push(SplitFiles { split: d.to_string(), files });
        }
    }
    for (split, mut files) in splits {
        files.sort();
        out.push(SplitFiles { split, files });
    }
    out
}

/// `data/{split}-00000-of-00001*.*` (relative to the base) → split.
fn sharded_split(rel: &str) -> Option<String> {
    let name = rel.strip_prefix("data/")?;
    if name.contains('/') {
        return None;
    }
    // find "-ddddd-of-ddddd"
    let b = name.as_bytes();
    for i in 1..b.len() {
        if b[i] != b'-' || b.len() < i + 15 {
            continue;
        }
        let t = &b[i..i + 15];
        let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
        if digits(1..6) && &t[6..10] == b"-of-" && digits(10..15) && name[i + 15..].contains('.') {
            let split = &name[..i];
            let ok = split
                .split('.')
                .all(|w| !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || c == '_'));
            return ok.then(|| split.to_string());
        }
    }
    None
}

fn is_sep(c: char) -> bool {
    matches!(c, '-' | '.' | '_' | ' ') || c.is_ascii_digit()
}

/// Whether `name` holds `kw` delimited as the `datasets` patterns want: at the start or after
/// a separator, and then followed by a separator (`need_after`) or, when allowed, the end.
fn has_keyword(name: &str, kw: &str, end_ok: bool) -> bool {
    let mut from = 0;
    while let Some(pos) = name[from..].find(kw) {
        let start = from + pos;
        let end = start + kw.len();
        let before_ok = start == 0 || name[..start].chars().next_back().is_some_and(is_sep);
        let after_ok = match name[end..].chars().next() {
            None => end_ok,
            Some(c) => is_sep(c),
        };
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
        while !name.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

fn keyword_split(name: &str, end_ok: bool) -> Option<&'static str> {
    SPLIT_KEYWORDS
        .iter()
        .find(|(_, kws)| kws.iter().any(|kw| has_keyword(name, kw, end_ok)))
        .map(|(split, _)| *split)
}

/// `**/{kw}/**`, `**/{kw}[sep]*/**`, `**/*[sep]{kw}/**`, `**/*[sep]{kw}[sep]*/**`.
fn keyword_split_in_dirs(rel: &str) -> Option<&'static str> {
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    parts.into_iter().find_map(|d| keyword_split(d, true))
}

/// `**/{kw}[sep]*`, `**/*[sep]{kw}[sep]*` on the file name.
fn keyword_split_in_filename(rel: &str) -> Option<&'static str> {
    keyword_split(rel.rsplit('/').next().unwrap_or(rel), false)
}

fn is_data_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !FILES_TO_IGNORE.contains(&name) && Format::from_path(std::path::Path::new(name)).is_some()
}

/// Hidden (`.x`) or special (`__x`) files and directories, which `datasets` skips.
fn is_hidden_or_special(path: &str) -> bool {
    path.split('/')
        .any(|p| (p.starts_with('.') && p.chars().any(|c| c != '.')) || p.starts_with("__"))
}

/// `datasets` builder families: parquet, csv (csv, tsv), json (json, jsonl).
fn family_of(path: &str) -> u8 {
    match Format::from_path(std::path::Path::new(path)).map(|(f, _)| f) {
        Some(Format::Parquet) => 0,
        Some(Format::JsonLines) | Some(Format::Json) => 1,
        Some(Format::Csv) | Some(Format::Tsv) => 2,
        None => 9,
    }
}

/// The most common family; ties go to parquet, then json, then csv.
fn majority_family<'a>(paths: impl Iterator<Item = &'a str>) -> Option<u8> {
    let mut counts = [0usize; 3];
    for p in paths {
        let f = family_of(p) as usize;
        if f < 3 {
            counts[f] += 1;
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))?;
    (counts[best] > 0).then_some(best as u8)
}

fn keep_majority_format(splits: Vec<SplitFiles>) -> Vec<SplitFiles> {
    let family = majority_family(splits.iter().flat_map(|s| s.files.iter().map(String::as_str)));
    splits
        .into_iter()
        .filter_map(|mut s| {
            s.files.retain(|f| Some(family_of(f)) == family);
            (!s.files.is_empty()).then_some(s)
        })
        .collect()
}

/// Top-level directories holding data files: the subsets a repo without configs offers.
fn top_level_data_dirs(files: &[String]) -> Vec<String> {
    let dirs: BTreeSet<String> = files
        .iter()
        .filter(|f| is_data_file(f) && !is_hidden_or_special(f))
        .filter_map(|f| f.split_once('/').map(|(d, _)| d.to_string()))
        .collect();
    dirs.into_iter().collect()
}

/// The YAML front matter of a dataset card (`README.md`), if any.
fn front_matter(readme: &str) -> Option<&str> {
    let text = readme.strip_prefix('\u{feff}').unwrap_or(readme);
    let rest = text.strip_prefix("---")?;
    let rest = rest.strip_prefix("\r\n").or_else(|| rest.strip_prefix('\n'))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some(&rest[..offset]);
        }
        offset += line.len();
    }
    None
}

/// Parses the `configs:` of a dataset card's YAML front matter (empty when there is none).
pub fn parse_configs(readme: &str) -> Result<Vec<ConfigSpec>, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let Some(yaml) = front_matter(readme) else { return Ok(Vec::new()) };
    let docs = YamlLoader::load_from_str(yaml)
        .map_err(|e| format!("README.md front matter is not valid YAML: {e}"))?;
    let Some(doc) = docs.first() else { return Ok(Vec::new()) };
    let configs = &doc["configs"];
    let list = match configs {
        Yaml::BadValue | Yaml::Null => return Ok(Vec::new()),
        Yaml::Array(a) => a,
        _ => return Err("README.md `configs` must be a list".into()),
    };
    fn strings(v: &Yaml, what: &str) -> Result<Vec<String>, String> {
        match v {
            Yaml::String(s) => Ok(vec![s.clone()]),
            Yaml::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{what}: expected a path or a list of paths"))
                })
                .collect(),
            _ => Err(format!("{what}: expected a path or a list of paths")),
        }
    }
    let scalar = |v: &Yaml| -> Option<String> {
        match v {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Integer(i) => Some(i.to_string()),
            Yaml::Real(r) => Some(r.clone()),
            Yaml::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    };
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        if c.as_hash().is_none() {
            return Err(format!("README.md `configs[{i}]` must be a mapping"));
        }
        let name = scalar(&c["config_name"]).unwrap_or_else(|| "default".to_string());
        let what = format!("README.md config `{name}` data_files");
        let data_files = match &c["data_files"] {
            Yaml::BadValue | Yaml::Null => None,
            Yaml::String(_) => Some(vec![("train".to_string(), strings(&c["data_files"], &what)?)]),
            Yaml::Array(items) if items.iter().all(|x| x.as_hash().is_some()) => {
                let mut v: Vec<(String, Vec<String>)> = Vec::new();
                for item in items {
                    let split = scalar(&item["split"])
                        .ok_or_else(|| format!("{what}: an entry has no `split`"))?;
                    if v.iter().any(|(s, _)| *s == split) {
                        return Err(format!("{what}: split `{split}` is listed twice"));
                    }
                    v.push((split, strings(&item["path"], &what)?));
                }
                Some(v)
            }
            Yaml::Array(_) => Some(vec![("train".to_string(), strings(&c["data_files"], &what)?)]),
            Yaml::Hash(h) => {
                let mut v = Vec::new();
                for (k, val) in h {
                    let split = scalar(k).ok_or_else(|| format!("{what}: bad split name"))?;
                    v.push((split, strings(val, &what)?));
                }
                Some(v)
            }
            _ => return Err(format!("{what}: unsupported form")),
        };
        out.push(ConfigSpec {
            name,
            data_files,
            data_dir: scalar(&c["data_dir"]),
            default: c["default"].as_bool().unwrap_or(false),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn splits(r: &[SplitFiles]) -> Vec<(&str, Vec<&str>)> {
        r.iter().map(|s| (s.split.as_str(), s.files.iter().map(String::as_str).collect())).collect()
    }

    #[test]
    fn split_of_single_paths() {
        let cases = [
            ("data/train-00000-of-00001.parquet", Some("train")),
            ("data/unsupervised-00000-of-00001.parquet", Some("unsupervised")),
            ("data/test-00001-of-00002-abcdef.parquet", Some("test")),
            ("train.csv", Some("train")),
            ("test.jsonl.gz", Some("test")),
            ("valid.json", Some("validation")),
            ("dev.tsv", Some("validation")),
            ("data/my_dataset-train.csv", Some("train")),
            ("imdb-test-00000.parquet", Some("test")),
            ("train/part1.csv", Some("train")),
            ("data/validation/0.parquet", Some("validation")),
            ("dev-set/a.csv", Some("validation")),
            ("testing1.csv", Some("test")),
            ("latest.csv", None),
            ("trainer.csv", None),
            ("contest/a.csv", None),
            ("data.csv", None),
            ("unsupervised.csv", None),
        ];
        for (path, want) in cases {
            assert_eq!(split_of_path(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn sharded_names_under_data_win() {
        let f = files(&[
            "README.md",
            ".gitattributes",
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/test-00000-of-00001.parquet",
            "data/unsupervised-00000-of-00001.parquet",
        ]);
        let r = resolve(&f, None, None).unwrap();
        assert_eq!(
            splits(&r),
            vec![
                (
                    "train",
                    vec!["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
                ),
                ("test", vec!["data/test-00000-of-00001.parquet"]),
                ("unsupervised", vec!["data/unsupervised-00000-of-00001.parquet"]),
            ]
        );
    }

    #[test]
    fn keywords_in_file_names_and_dirs() {
        let r = resolve(&files(&["train.csv", "test.csv", "dev.csv", "notes.txt"]), None, None)
            .unwrap();
        assert_eq!(
            splits(&r),
            vec![
                ("train", vec!["train.csv"]),
                ("validation", vec!["dev.csv"]),
                ("test", vec!["test.csv"])
            ]
        );

        // directories win over file names; files outside split dirs are left out
        let r = resolve(
            &files(&["train/a.jsonl", "train/b.jsonl", "test/test.jsonl", "extra.jsonl"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            splits(&r),
            vec![
                ("train", vec!["train/a.jsonl", "train/b.jsonl"]),
                ("test", vec!["test/test.jsonl"])
            ]
        );
    }

    #[test]
    fn no_split_means_train_and_majority_format() {
        let r = resolve(
            &files(&["a.csv", "b.csv.gz", "meta.json", "README.md", "dataset_infos.json"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(splits(&r), vec![("train", vec!["a.csv", "b.csv.gz"])]);
        assert_eq!(
            resolve(&files(&["README.md", "model.bin"]), None, None),
            Err(LayoutError::NoDataFiles)
        );
    }

    #[test]
    fn hidden_and_special_paths_are_skipped() {
        let r = resolve(&files(&[".cache/train.csv", "__pycache__/x.csv", "data.csv"]), None, None)
            .unwrap();
        assert_eq!(splits(&r), vec![("train", vec!["data.csv"])]);
    }

    #[test]
    fn subset_selects_a_top_level_directory() {
        let f = files(&[
            "en/train-00000-of-00001.parquet",
            "en/test-00000-of-00001.parquet",
            "fr/train.parquet",
            "data/de/train.csv",
        ]);
        let r = resolve(&f, None, Some("en")).unwrap();
        assert_eq!(
            splits(&r),
            vec![
                ("train", vec!["en/train-00000-of-00001.parquet"]),
                ("test", vec!["en/test-00000-of-00001.parquet"])
            ]
        );
        let r = resolve(&f, None, Some("fr")).unwrap();
        assert_eq!(splits(&r), vec![("train", vec!["fr/train.parquet"])]);
        let r = resolve(&f, None, Some("de")).unwrap();
        assert_eq!(splits(&r), vec![("train", vec!["data/de/train.csv"])]);
        assert_eq!(
            resolve(&f, None, Some("es")),
            Err(LayoutError::UnknownSubset {
                subset: "es".into(),
                available: vec!["data".into(), "en".into(), "fr".into()]
            })
        );
        // `default` means the whole repo when no directory is named so
        assert!(resolve(&files(&["train.csv"]), None, Some("default")).is_ok());
        // no data files at all: not a subset question (the caller tries the parquet conversion)
        assert_eq!(
            resolve(&files(&["script.py"]), None, Some("plain")),
            Err(LayoutError::NoDataFiles)
        );
    }

    const README: &str = "---\nlicense: mit\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: \"main/train-*\"\n  - split: test\n    path:\n    - main/eval.csv\n- config_name: small\n  data_dir: tiny\n  default: false\n- config_name: one\n  data_files: extra/*.csv\n---\n# Card\n";

    #[test]
    fn readme_configs_are_honoured() {
        let cfgs = parse_configs(README).unwrap();
        assert_eq!(cfgs.len(), 3);
        assert_eq!(cfgs[0].name, "default");
        assert_eq!(cfgs[1].data_dir.as_deref(), Some("tiny"));
        let f = files(&[
            "README.md",
            "main/train-0.csv",
            "main/train-1.csv",
            "main/eval.csv",
            "tiny/train.csv",
            "tiny/validation.csv",
            "extra/x.csv",
            "extra/sub/y.csv",
        ]);
        let r = resolve(&f, Some(README), None).unwrap();
        assert_eq!(
            splits(&r),
            vec![
                ("train", vec!["main/train-0.csv", "main/train-1.csv"]),
                ("test", vec!["main/eval.csv"])
            ]
        );
        let r = resolve(&f, Some(README), Some("small")).unwrap();
        assert_eq!(
            splits(&r),
            vec![("train", vec!["tiny/train.csv"]), ("validation", vec!["tiny/validation.csv"])]
        );
        let r = resolve(&f, Some(README), Some("one")).unwrap();
        assert_eq!(splits(&r), vec![("train", vec!["extra/x.csv"])]);
        assert_eq!(
            resolve(&f, Some(README), Some("nope")),
            Err(LayoutError::UnknownSubset {
                subset: "nope".into(),
                available: vec!["default".into(), "small".into(), "one".into()]
            })
        );
    }

    #[test]
    fn several_configs_without_default_need_a_subset() {
        let readme =
            "---\nconfigs:\n- config_name: a\n  data_files: a/*.csv\n- config_name: b\n  data_files: b/*.csv\n---\n";
        let f = files(&["a/1.csv", "b/1.csv"]);
        assert_eq!(
            resolve(&f, Some(readme), None),
            Err(LayoutError::SubsetRequired { available: vec!["a".into(), "b".into()] })
        );
        let readme = "---\nconfigs:\n- config_name: a\n  data_files: a/*.csv\n- config_name: b\n  default: true\n  data_files: {validation: b/*.csv}\n---\n";
        assert_eq!(
            splits(&resolve(&f, Some(readme), None).unwrap()),
            vec![("validation", vec!["b/1.csv"])]
        );
    }

    #[test]
    fn readme_without_configs_or_front_matter_is_ignored() {
        let f = files(&["train.csv"]);
        for readme in ["# Title\n", "---\nlicense: mit\n---\n", "---\n---\n"] {
            assert_eq!(
                splits(&resolve(&f, Some(readme), None).unwrap()),
                vec![("train", vec!["train.csv"])]
            );
        }
        assert!(matches!(
            resolve(&f, Some("---\nconfigs: [\n---\n"), None),
            Err(LayoutError::BadConfig(_))
        ));
    }

    #[test]
    fn parquet_conversion_layout() {
        let f = files(&[
            ".gitattributes",
            "default/train/0000.parquet",
            "default/train/0001.parquet",
            "default/partial-test/0000.parquet",
            "default/unsupervised/0000.parquet",
            "other/train/0000.parquet",
        ]);
        let r = resolve_parquet_conversion(&f, None).unwrap();
        assert_eq!(
            splits(&r),
            vec![
                ("train", vec!["default/train/0000.parquet", "default/train/0001.parquet"]),
                ("test", vec!["default/partial-test/0000.parquet"]),
                ("unsupervised", vec!["default/unsupervised/0000.parquet"]),
            ]
        );
        let r = resolve_parquet_conversion(&f, Some("other")).unwrap();
        assert_eq!(splits(&r), vec![("train", vec!["other/train/0000.parquet"])]);
        assert!(matches!(
            resolve_parquet_conversion(&f, Some("x")),
            Err(LayoutError::UnknownSubset { .. })
        ));
        let legacy = files(&[
            "plain_text/imdb-train.parquet",
            "plain_text/imdb-test-00000-of-00002.parquet",
        ]);
        let r = resolve_parquet_conversion(&legacy, None).unwrap();
        assert_eq!(
            splits(&r),
            vec![
                ("train", vec!["plain_text/imdb-train.parquet"]),
                ("test", vec!["plain_text/imdb-test-00000-of-00002.parquet"])
            ]
        );
        assert_eq!(
            resolve_parquet_conversion(&files(&[".gitattributes"]), None),
            Err(LayoutError::NoDataFiles)
        );
    }
}
