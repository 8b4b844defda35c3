//! The SQL side of pgmld's interception: spot `pgml.*` calls, bind their arguments to the
//! function's signature, evaluate them, and splice the results into the client's original
//! statement so the upstream Postgres runs the rest of it with its own semantics.

pub mod analyze;
pub mod cursor;
mod error;
pub mod extension;
pub mod function;
pub mod functions;
pub mod output;
pub mod params;
pub mod plan;
pub mod rowwise;
pub mod streaming;
pub mod value;

pub use error::{codes, SqlError};
pub use extension::{create_pgml_extension, CreateExtension};
pub use function::{
    Args, CallContext, Caller, Notice, Output, PgmlFunction, Registry, Returns, RowStream,
    RowsFuture, Signature,
};
pub use params::Param;
pub use plan::Plan;
pub use rowwise::{builtin_type_name, next_row_block, RowBlock, RowCall, SourceColumn, SourceRow};
pub use streaming::{CursorCommand, CursorDecl, StreamForm};
pub use value::{parse_bool, SqlType, Value};
