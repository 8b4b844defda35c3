//! Errors raised while loading the configuration.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or names an unknown field.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file that was tried.
        path: PathBuf,
        /// What the TOML reader said.
        source: toml::de::Error,
    },
    /// A `PGMLD_*` variable or the merged result does not fit the schema.
    #[error("invalid configuration ({origin}): {message}")]
    Invalid {
        /// Where the bad value came from (file, environment variable, flag).
        origin: String,
        /// What is wrong with it.
        message: String,
    },
}
