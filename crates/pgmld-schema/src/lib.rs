//! pgmld's own tables and where they live.
//!
//! * [`MIGRATIONS`]: the SQL files of the repository's `migrations/` folder, embedded in the
//!   binary; [`migrate`] applies the missing ones to a database under an advisory lock, so
//!   several pgmld processes may start at once.
//! * [`Migrator`]: migrates each database of the upstream server once per process, on first
//!   use.
//! * [`EmbeddedCluster`]: a private Postgres cluster started from the system's binaries when
//!   no upstream answers ([`is_reachable`] tells).

mod cluster;
mod error;
mod migrate;
mod migrations;
mod migrator;
mod net;
pub mod roles;
pub mod staging;
mod url;

#[cfg(test)]
mod testdb;

pub use cluster::{find_bin_dir, ClusterOptions, EmbeddedCluster};
pub use error::SchemaError;
pub use migrate::{migrate, migrate_upstream, MIGRATION_LOCK_KEY};
pub use migrations::{Migration, MIGRATIONS};
pub use migrator::Migrator;
pub use net::is_reachable;
pub use url::url_with_database;
