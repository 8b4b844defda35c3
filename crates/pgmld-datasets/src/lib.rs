//! `pgml.load_dataset`: Hugging Face datasets and local files (parquet, csv, tsv, json,
//! jsonl, gzip; told by name, kwargs or content) streamed into Postgres tables with COPY,
//! with a `split` column, atomic replacement and bounded memory.

mod error;
pub mod function;
pub mod hub;
pub mod load;
pub mod options;
pub mod pgtypes;
pub mod read;
pub mod server_path;
pub mod sniff;
pub mod source;

pub use error::DatasetError;
pub use function::LoadDataset;
pub use load::{Loaded, Loader};
