//! The SQL migrations under the repository's `migrations/` folder, embedded at compile time
//! so the binary carries its schema and needs no files at run time.

/// One schema change, applied once per database inside its own transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Order and identity: recorded in `pgml.schema_migrations.version`; never reused.
    pub version: u32,
    /// Short name (the file name without number and extension), recorded for humans.
    pub name: &'static str,
    /// The SQL text, run as one batch.
    pub sql: &'static str,
}

/// Every migration, oldest first. Add new files here, and only at the end: versions must
/// grow strictly and an applied migration must never change.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "pgml_schema",
        sql: include_str!("../../../migrations/0001_pgml_schema.sql"),
    },
    Migration {
        version: 2,
        name: "tune_resume",
        sql: include_str!("../../../migrations/0002_tune_resume.sql"),
    },
    Migration {
        version: 3,
        name: "caller_privileges",
        sql: include_str!("../../../migrations/0003_caller_privileges.sql"),
    },
    Migration {
        version: 4,
        name: "deploy",
        sql: include_str!("../../../migrations/0004_deploy.sql"),
    },
    Migration {
        version: 5,
        name: "model_views",
        sql: include_str!("../../../migrations/0005_model_views.sql"),
    },
    Migration {
        version: 6,
        name: "base_model",
        sql: include_str!("../../../migrations/0006_base_model.sql"),
    },
    Migration {
        version: 7,
        name: "embed",
        sql: include_str!("../../../migrations/0007_embed.sql"),
    },
    Migration {
        version: 8,
        name: "job_queue",
        sql: include_str!("../../../migrations/0008_job_queue.sql"),
    },
    Migration {
        version: 9,
        name: "async_jobs",
        sql: include_str!("../../../migrations/0009_async_jobs.sql"),
    },
    Migration {
        version: 10,
        name: "data_parallel",
        sql: include_str!("../../../migrations/0010_data_parallel.sql"),
    },
];

/// Compile-time check of [`MIGRATIONS`]: versions grow strictly, start above zero and fit
/// the `integer` column they are recorded in.
const _: () = {
    let mut i = 0;
    while i < MIGRATIONS.len() {
        assert!(MIGRATIONS[i].version > 0 && MIGRATIONS[i].version <= i32::MAX as u32);
        assert!(i == 0 || MIGRATIONS[i].version > MIGRATIONS[i - 1].version);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_strictly_from_one() {
        let mut previous = 0;
        for m in MIGRATIONS {
            assert!(m.version > previous, "version {} out of order", m.version);
            previous = m.version;
        }
        assert_eq!(MIGRATIONS.first().map(|m| m.version), Some(1));
    }

    #[test]
    fn every_migration_has_a_name_and_sql() {
        for m in MIGRATIONS {
            assert!(!m.name.trim().is_empty());
            let statement =
                ["CREATE ", "ALTER ", "UPDATE ", "INSERT "].iter().any(|k| m.sql.contains(k));
            assert!(statement, "migration {} looks empty", m.version);
        }
    }

    #[test]
    fn first_migration_creates_the_pgml_tables() {
        let sql = MIGRATIONS[0].sql;
        for table in ["projects", "models", "deployments", "snapshots", "files", "logs", "jobs"] {
            assert!(sql.contains(&format!("CREATE TABLE pgml.{table} (")), "missing {table}");
        }
    }
}
