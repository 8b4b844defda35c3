//! `pgml.version()`: which pgmld answers, so users can tell it from the extension.

use crate::function::{Args, CallContext, CallFuture, Output, PgmlFunction, Returns, Signature};
use crate::value::{SqlType, Value};

/// `pgml.version() RETURNS text`: pgmld's version, e.g. `pgmld 0.1.0`.
pub struct Version {
    signature: Signature,
}

impl Version {
    /// The function with its signature.
    pub fn new() -> Self {
        Version {
            signature: Signature {
                name: "version",
                params: vec![],
                returns: Returns::Scalar(SqlType::Text),
            },
        }
    }
}

impl Default for Version {
    fn default() -> Self {
        Self::new()
    }
}

impl PgmlFunction for Version {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, _ctx: CallContext, _args: Args) -> CallFuture {
        Box::pin(async {
            Ok(Output::Scalar(Value::Text(format!("pgmld {}", env!("CARGO_PKG_VERSION")))))
        })
    }
}
