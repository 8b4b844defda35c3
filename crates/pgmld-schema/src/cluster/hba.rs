//! The private cluster's `pg_hba.conf`, rewritten on every start so it always matches the
//! options.

use crate::SchemaError;
use std::path::Path;

/// Builds `pg_hba.conf`: the `extra` lines first (first match wins in Postgres), then local
/// socket, IPv4 and IPv6 loopback lines for all databases and replication with `auth`.
pub(crate) fn contents(
    extra: &[String],
    auth: &str,
    data_dir: &Path,
) -> Result<String, SchemaError> {
    let bad = |message: String| SchemaError::Cluster { data_dir: data_dir.to_path_buf(), message };
    if auth.is_empty() || auth.contains(char::is_whitespace) {
        return Err(bad(format!("auth_default {auth:?} is not one pg_hba.conf method")));
    }
    let mut out =
        String::from("# Written by pgmld at every start; edit pgmld's options instead.\n");
    for line in extra {
        if line.contains(['\n', '\r']) {
            return Err(bad(format!("hba entry {line:?} spans several lines")));
        }
        out.push_str(line.trim());
        out.push('\n');
    }
    for database in ["all", "replication"] {
        out.push_str(&format!("local {database} all {auth}\n"));
        out.push_str(&format!("host {database} all 127.0.0.1/32 {auth}\n"));
        out.push_str(&format!("host {database} all ::1/128 {auth}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_lines_come_first_then_loopback_defaults() {
        let extra = vec!["host all all 127.0.0.1/32 scram-sha-256".to_string()];
        let text = contents(&extra, "trust", Path::new("/d")).expect("hba");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "host all all 127.0.0.1/32 scram-sha-256");
        assert!(lines.contains(&"local all all trust"));
        assert!(lines.contains(&"host all all 127.0.0.1/32 trust"));
        assert!(lines.contains(&"host all all ::1/128 trust"));
    }

    #[test]
    fn injected_lines_and_bad_methods_are_refused() {
        assert!(contents(&["a\nb".to_string()], "trust", Path::new("/d")).is_err());
        assert!(contents(&[], "trust\nhost", Path::new("/d")).is_err());
        assert!(contents(&[], "", Path::new("/d")).is_err());
    }
}
