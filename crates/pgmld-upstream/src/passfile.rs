//! libpq's password file (`PGPASSFILE`, else `~/.pgpass`): lines of
//! `host:port:database:user:password`, `*` matching anything in the first four fields, `\`
//! escaping `:` and `\`, `#` starting a comment; the first matching line wins. As libpq
//! does, a file that others may read is ignored with a warning.

use std::path::Path;

/// One line of a password file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// host, port, database, user: `None` is `*`.
    fields: [Option<String>; 4],
    password: String,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("fields", &self.fields)
            .field("password", &crate::REDACTED)
            .finish()
    }
}

/// The password of the first entry matching the connection, as libpq picks it.
pub(crate) fn lookup<'a>(
    entries: &'a [Entry],
    host: &str,
    port: &str,
    database: &str,
    user: &str,
) -> Option<&'a str> {
    let wanted = [host, port, database, user];
    entries
        .iter()
        .find(|e| e.fields.iter().zip(wanted).all(|(f, w)| f.as_deref().is_none_or(|f| f == w)))
        .map(|e| e.password.as_str())
}

/// Reads the file at `path`: nothing when it does not exist; a warning and nothing when it
/// is not a plain file or group/others may access it (libpq's rule).
pub(crate) fn load(path: &Path) -> Vec<Entry> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    if !meta.is_file() {
        tracing::warn!(path = %path.display(), "password file is not a plain file; ignored");
        return Vec::new();
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less; ignored"
        );
        return Vec::new();
    }
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the password file: {e}; ignored");
            Vec::new()
        }
    }
}

/// Parses a password file's text; lines with fewer than five fields are skipped.
pub(crate) fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Entry> {
    let mut fields: Vec<Option<String>> = Vec::with_capacity(4);
    let mut rest = line;
    for _ in 0..4 {
        if let Some(after) = rest.strip_prefix("*:") {
            fields.push(None);
            rest = after;
            continue;
        }
        let (value, after) = field(rest)?;
        fields.push(Some(value));
        rest = after;
    }
    // The password runs to the next unescaped `:` or the end of the line.
    let password = match field(rest) {
        Some((p, _)) => p,
        None => unescape(rest),
    };
    let fields: [Option<String>; 4] = fields.try_into().ok()?;
    Some(Entry { fields, password })
}

/// One `:`-terminated field, unescaped, and what follows its `:`; `None` when no `:` ends it.
fn field(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, n)) => value.push(n),
                None => value.push('\\'),
            },
            ':' => return Some((value, &s[i + 1..])),
            c => value.push(c),
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_line_wins_with_wildcards() {
        let entries = parse(
            "# comment\n\
             db.example:5432:app:alice:first\n\
             *:5432:*:alice:second\n\
             *:*:*:*:fallback\n",
        );
        assert_eq!(entries.len(), 3);
        assert_eq!(lookup(&entries, "db.example", "5432", "app", "alice"), Some("first"));
        assert_eq!(lookup(&entries, "db.example", "5432", "other", "alice"), Some("second"));
        assert_eq!(lookup(&entries, "h", "6000", "x", "bob"), Some("fallback"));
        assert_eq!(lookup(&parse("h:1:d:u:p\n"), "h", "2", "d", "u"), None);
    }

    #[test]
    fn escapes_and_odd_lines() {
        let entries =
            parse("h\\:x:5432:d\\\\b:u:pa\\:ss\\\\w:ignored\r\nshort:line\n\n*:*:*:u:trailing\\");
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(lookup(&entries, "h:x", "5432", "d\\b", "u"), Some("pa:ss\\w"));
        assert_eq!(lookup(&entries, "any", "1", "d", "u"), Some("trailing\\"));
        // A `*` that is only the start of a field is literal.
        let e = parse("*x:*:*:*:p\n");
        assert_eq!(lookup(&e, "*x", "1", "d", "u"), Some("p"));
        assert_eq!(lookup(&e, "y", "1", "d", "u"), None);
        // An empty password is a password.
        assert_eq!(lookup(&parse("*:*:*:*:\n"), "h", "1", "d", "u"), Some(""));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let e = parse("h:1:d:u:hunter2\n");
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[test]
    fn loose_permissions_and_missing_files_give_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgmld-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path).is_empty());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&load(&path), "h", "1", "d", "u"), Some("pw"));
        assert!(load(&dir.join("missing")).is_empty());
        assert!(load(&dir).is_empty(), "a directory is not a password file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
