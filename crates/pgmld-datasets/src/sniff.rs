//! Telling a local file's format by its content, for files whose name says nothing
//! (`tweets_GroundTruth.txt`, `data`): parquet by its `PAR1` magic, JSON by a leading `[` or
//! `{`, and delimited text by the one delimiter among tab, comma, semicolon and pipe that
//! splits each of the first records into the same number of fields. Gzip is recognised by
//! its magic too, and its content sniffed.

use std::io::{BufReader, Read};
use std::path::Path;

use crate::hub::Format;

/// Bytes of (decompressed) content looked at.
const SAMPLE_BYTES: usize = 64 * 1024;
/// Records compared when looking for a delimiter.
const SAMPLE_RECORDS: usize = 20;
/// Delimiters tried, in the order that breaks ties.
pub const DELIMITERS: [u8; 4] = [b'\t', b',', b';', b'|'];

/// What the first bytes of a file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A format, and the delimiter when it is delimited text other than csv / tsv defaults.
    Format(Format, Option<u8>),
    /// Not a format pgmld reads: what it looks like (`a zip archive (.xlsx, .zip)`).
    Unsupported(String),
    /// Text whose format cannot be told: why.
    Undecided(String),
}

/// Whether `head` starts with the gzip magic.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Whether `head` starts with the parquet magic.
pub fn is_parquet(head: &[u8]) -> bool {
    head.starts_with(b"PAR1")
}

/// The first bytes of `path` (fewer when it is shorter).
pub fn head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Sniffs `path`; `gzip` says it is compressed (by name or magic).
pub fn sniff_file(path: &Path, gzip: bool) -> std::io::Result<Sniffed> {
    let raw = std::fs::File::open(path)?;
    let mut sample = Vec::with_capacity(SAMPLE_BYTES);
    let complete = if gzip {
        let r = flate2::read::MultiGzDecoder::new(BufReader::new(raw));
        read_sample(r, &mut sample)
    } else {
        read_sample(raw, &mut sample)
    };
    let complete = match complete {
        Ok(c) => c,
        // A corrupt or truncated stream: judge what came out of it.
        Err(_) if gzip && !sample.is_empty() => false,
        Err(e) => return Err(e),
    };
    Ok(sniff(&sample, complete, gzip))
}

/// Reads up to [`SAMPLE_BYTES`]; true when that was the whole content.
fn read_sample(r: impl Read, out: &mut Vec<u8>) -> std::io::Result<bool> {
    r.take(SAMPLE_BYTES as u64 + 1).read_to_end(out)?;
    let complete = out.len() <= SAMPLE_BYTES;
    out.truncate(SAMPLE_BYTES);
    Ok(complete)
}

/// Sniffs a sample of a file's content; `complete` says the sample is the whole file, so
/// its last record is whole; `gzip` that it came out of a gzip stream.
pub fn sniff(sample: &[u8], complete: bool, gzip: bool) -> Sniffed {
    if is_parquet(sample) {
        return if gzip {
            Sniffed::Unsupported("a gzip-compressed parquet file (parquet compresses its own pages: load it uncompressed)".into())
        } else {
            Sniffed::Format(Format::Parquet, None)
        };
    }
    if sample.starts_with(b"PK\x03\x04") {
        return Sniffed::Unsupported(
            "a zip archive (as .zip and .xlsx files are): unpack it, or save the sheet as csv"
                .into(),
        );
    }
    if sample.contains(&0) {
        return Sniffed::Undecided("it holds binary data (NUL bytes), not text".into());
    }
    let text = sample.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(sample);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Sniffed::Undecided("it is empty".into()),
        Some(b'[') => return Sniffed::Format(Format::Json, None),
        Some(b'{') => return Sniffed::Format(Format::JsonLines, None),
        Some(_) => {}
    }
    match delimiter(text, complete) {
        Ok(b'\t') => Sniffed::Format(Format::Tsv, None),
        Ok(b',') => Sniffed::Format(Format::Csv, None),
        Ok(d) => Sniffed::Format(Format::Csv, Some(d)),
        Err(why) => Sniffed::Undecided(why),
    }
}

/// The delimiter that splits every sampled record into the same number (≥ 2) of fields,
/// the most fields winning, then the order of [`DELIMITERS`]; else why none does.
fn delimiter(text: &[u8], complete: bool) -> Result<u8, String> {
    let mut best: Option<(u8, usize)> = None;
    let mut records_seen = 0;
    for d in DELIMITERS {
        let counts = field_separators(text, d, complete);
        records_seen = records_seen.max(counts.len());
        let Some(&first) = counts.first() else { continue };
        if first == 0 || counts.iter().any(|&c| c != first) {
            continue;
        }
        if best.is_none_or(|(_, n)| first > n) {
            best = Some((d, first));
        }
    }
    best.map(|(d, _)| d).ok_or_else(|| {
        format!(
            "no field delimiter (tab, comma, semicolon or pipe) splits each of its first {} into the same number of fields",
            match records_seen {
                1 => "line".to_string(),
                n => format!("{n} lines"),
            }
        )
    })
}

/// How many times `d` separates fields in each of the first records of `text`, as the
/// csv readers see it: a `"` that opens a field quotes it (delimiters and line breaks
/// inside count for nothing, `""` is a quote); elsewhere quotes are plain characters.
/// Blank lines are skipped; a last record cut off by the sample's end is left out unless it
/// is the only one.
fn field_separators(text: &[u8], d: u8, complete: bool) -> Vec<usize> {
    let mut counts = Vec::new();
    let mut count = 0;
    let mut field_start = true;
    let mut in_quotes = false;
    let mut empty_record = true;
    let mut i = 0;
    while i < text.len() && counts.len() < SAMPLE_RECORDS {
        let b = text[i];
        i += 1;
        if in_quotes {
            if b == b'"' {
                if text.get(i) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
            continue;
        }
        match b {
            b'\n' | b'\r' => {
                if b == b'\r' && text.get(i) == Some(&b'\n') {
                    i += 1;
                }
                if !empty_record {
                    counts.push(count);
                }
                count = 0;
                field_start = true;
                empty_record = true;
                continue;
            }
            b'"' if field_start => in_quotes = true,
            _ if b == d => {
                count += 1;
                field_start = true;
                empty_record = false;
                continue;
            }
            _ => {}
        }
        field_start = false;
        empty_record = false;
    }
    let cut_off = i >= text.len() && !empty_record && counts.len() < SAMPLE_RECORDS;
    if cut_off && (complete || counts.is_empty()) {
        counts.push(count);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Sniffed {
        sniff(text.as_bytes(), true, false)
    }

    #[test]
    fn magic_numbers_and_json() {
        assert_eq!(sniff(b"PAR1\x15\x04", false, false), Sniffed::Format(Format::Parquet, None));
        assert!(matches!(sniff(b"PAR1\x15\x04", false, true), Sniffed::Unsupported(_)));
        assert!(
            matches!(sniff(b"PK\x03\x04rest", false, false), Sniffed::Unsupported(m) if m.contains("xlsx"))
        );
        assert!(
            matches!(sniff(b"a,b\x00c", true, false), Sniffed::Undecided(m) if m.contains("binary"))
        );
        assert_eq!(s("  \n[{\"a\": 1}]"), Sniffed::Format(Format::Json, None));
        assert_eq!(s("\u{feff}{\"a\": 1}\n{\"a\": 2}\n"), Sniffed::Format(Format::JsonLines, None));
        assert!(matches!(s(" \n\n"), Sniffed::Undecided(m) if m.contains("empty")));
        assert!(is_gzip(&[0x1f, 0x8b, 8]) && !is_gzip(b"a,b"));
    }

    #[test]
    fn delimiters_by_consistent_field_counts() {
        // Tweets: tab-separated, commas and quotes inside the text.
        let tweets = "1\t0.75\tI love it, really\n2\t-1\tsay \"no\", then, go\n3\t0\tok\n";
        assert_eq!(s(tweets), Sniffed::Format(Format::Tsv, None));
        assert_eq!(s("a,b,c\n1,2,3\n"), Sniffed::Format(Format::Csv, None));
        assert_eq!(s("a;b\r\n1;2\r\n"), Sniffed::Format(Format::Csv, Some(b';')));
        assert_eq!(s("a|b|c\n1|2|3"), Sniffed::Format(Format::Csv, Some(b'|')));
        // Quoted fields hold delimiters and line breaks.
        let quoted = "text,label\n\"one, two\nthree\",1\n\"say \"\"hi\"\", ok\",0\n";
        assert_eq!(s(quoted), Sniffed::Format(Format::Csv, None));
        // Both consistent: the one giving more fields wins; ties go to tab.
        assert_eq!(s("a,b;c;d\n1,2;3;4\n"), Sniffed::Format(Format::Csv, Some(b';')));
        assert_eq!(s("a\tb,c\n1\t2,3\n"), Sniffed::Format(Format::Tsv, None));
        // One line of prose, or ragged rows: undecided, and the reason says why.
        let Sniffed::Undecided(why) = s("just some words\n") else { panic!() };
        assert!(why.contains("first line") && why.contains("tab, comma"), "{why}");
        let Sniffed::Undecided(why) = s("a,b\n1,2,3\nx\n") else { panic!() };
        assert!(why.contains("first 3 lines"), "{why}");
    }

    #[test]
    fn a_record_cut_off_by_the_sample_is_not_judged() {
        // The last line is cut short (the sample is not the whole file).
        assert_eq!(sniff(b"a,b,c\n1,2,3\n4,5", false, false), Sniffed::Format(Format::Csv, None));
        // Whole file: the short last line counts, and breaks consistency.
        assert!(matches!(sniff(b"a,b,c\n1,2,3\n4,5", true, false), Sniffed::Undecided(_)));
        // Only a part of one long record: judged on what there is.
        assert_eq!(sniff(b"a\tb\tc", false, false), Sniffed::Format(Format::Tsv, None));
    }

    #[test]
    fn only_the_first_records_count() {
        let mut text = String::new();
        for i in 0..SAMPLE_RECORDS {
            text.push_str(&format!("{i}\tx\n"));
        }
        text.push_str("ragged\tline\tlater\n");
        assert_eq!(s(&text), Sniffed::Format(Format::Tsv, None));
    }

    #[test]
    fn files_and_gzip_streams() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("t.txt");
        std::fs::write(&plain, "id\tscore\n1\t0.5\n").unwrap();
        assert_eq!(sniff_file(&plain, false).unwrap(), Sniffed::Format(Format::Tsv, None));
        let gz = dir.path().join("t.dat");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, b"a;b\n1;2\n").unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        assert!(is_gzip(&head(&gz, 4).unwrap()));
        assert_eq!(sniff_file(&gz, true).unwrap(), Sniffed::Format(Format::Csv, Some(b';')));
        assert!(sniff_file(&dir.path().join("missing"), false).is_err());
    }
}
