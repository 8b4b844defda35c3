//! `CREATE EXTENSION pgml`: PostgresML's set-up scripts and guides start with it. With
//! pgmld the pgml schema is pgmld's (migrations it applies itself), not an extension's, so
//! the statement is answered by pgmld: it makes sure the schema is there and reports
//! success, where the upstream would say the extension is not available (0A000 / 58P01).

use sqlparser::ast::{Ident, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// What a `CREATE EXTENSION pgml` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateExtension {
    /// `IF NOT EXISTS`: Postgres answers an existing extension with a NOTICE, not an error.
    pub if_not_exists: bool,
    /// `SCHEMA name`, folded as Postgres folds it: pgmld serves pgml in schema `pgml` only.
    pub schema: Option<String>,
    /// `VERSION 'x'`: pgmld has one version, its own; the answer names it.
    pub version: Option<String>,
}

/// An identifier as Postgres folds it: unquoted names are lower-cased.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

/// `Some` when `sql` is one `CREATE EXTENSION` of `pgml`; every other statement (other
/// extensions included) is the upstream's. Only text starting with CREATE and mentioning
/// pgml is parsed.
pub fn create_pgml_extension(sql: &str) -> Option<CreateExtension> {
    let head = sql.trim_start().get(..6)?;
    if !head.eq_ignore_ascii_case("create") || !crate::analyze::mentions_pgml(sql) {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::CreateExtension(ce)] = statements.as_slice() else { return None };
    (folded(&ce.name) == "pgml").then(|| CreateExtension {
        if_not_exists: ce.if_not_exists,
        schema: ce.schema.as_ref().map(folded),
        version: ce.version.as_ref().map(|v| v.value.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_create_extension_of_pgml_is_recognised() {
        let plain = create_pgml_extension("CREATE EXTENSION pgml").expect("plain");
        assert!(!plain.if_not_exists);
        let ine = create_pgml_extension("  create extension if not exists PGML;").expect("ine");
        assert!(ine.if_not_exists);
        let full =
            create_pgml_extension("CREATE EXTENSION pgml WITH SCHEMA \"Other\" VERSION '2.10'")
                .expect("options");
        assert_eq!(full.schema.as_deref(), Some("Other"));
        assert_eq!(full.version.as_deref(), Some("2.10"));
        assert_eq!(
            create_pgml_extension("CREATE EXTENSION \"PGML\""),
            None,
            "quoted: another name"
        );
        assert_eq!(create_pgml_extension("CREATE EXTENSION vector"), None);
        assert_eq!(create_pgml_extension("CREATE TABLE pgml_x (a int)"), None);
        assert_eq!(create_pgml_extension("SELECT pgml.version()"), None);
        assert_eq!(create_pgml_extension("CREATE EXTENSION pgml; SELECT 1"), None, "one statement");
    }
}
