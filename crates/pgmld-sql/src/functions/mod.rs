//! Built-in pgml functions, one file each.

pub mod version;
