//! What a pgml function is to the interceptor: a signature to bind arguments against, a
//! result shape to splice, and an async body run with a [`CallContext`].

use crate::error::SqlError;
use crate::value::{SqlType, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One declared parameter of a pgml function.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Name usable with `name => value`.
    pub name: &'static str,
    /// Declared type; arguments are coerced to it.
    pub ty: SqlType,
    /// Value when the caller omits it; `None` makes the parameter required.
    pub default: Option<Value>,
}

impl ParamSpec {
    /// A required parameter.
    pub fn required(name: &'static str, ty: SqlType) -> Self {
        ParamSpec { name, ty, default: None }
    }
    /// An optional parameter with its default.
    pub fn optional(name: &'static str, ty: SqlType, default: Value) -> Self {
        ParamSpec { name, ty, default: Some(default) }
    }
}

/// What a call evaluates to, as seen from SQL.
#[derive(Debug, Clone)]
pub enum Returns {
    /// A single value of this type (`RETURNS jsonb`).
    Scalar(SqlType),
    /// A set of rows with these columns (`RETURNS TABLE(...)`).
    Table(Vec<(&'static str, SqlType)>),
    /// A set of values of this type (`RETURNS SETOF jsonb`), produced one by one as an
    /// [`Output::Stream`], so a plain `SELECT` of the call or a cursor over it can send each
    /// value to the client as soon as it exists.
    SetOf(SqlType),
}

/// A function's SQL-visible declaration.
#[derive(Debug, Clone)]
pub struct Signature {
    /// Unqualified name (`version`, `tune`).
    pub name: &'static str,
    /// Parameters in positional order.
    pub params: Vec<ParamSpec>,
    /// Result shape.
    pub returns: Returns,
}

impl Signature {
    /// `pgml.name(a type, b type DEFAULT ...)`, for messages and hints.
    pub fn display(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| match &p.default {
                None => format!("{} {}", p.name, p.ty.sql_name()),
                Some(d) => format!(
                    "{} {} DEFAULT {}",
                    p.name,
                    p.ty.sql_name(),
                    d.to_pg_text().map_or("NULL".to_string(), |t| format!("'{t}'"))
                ),
            })
            .collect();
        format!("pgml.{}({})", self.name, params.join(", "))
    }
}

/// Rows produced over time. Dropping the stream tells the producer to stop (the client
/// closed the cursor, cancelled, or went away).
pub type RowStream = Pin<Box<dyn futures_core::Stream<Item = Result<Vec<Value>, SqlError>> + Send>>;

/// The rows or value a call produced.
pub enum Output {
    /// For [`Returns::Scalar`].
    Scalar(Value),
    /// For [`Returns::Table`] (or a [`Returns::SetOf`] known at once): rows in column order.
    Rows(Vec<Vec<Value>>),
    /// For [`Returns::SetOf`]: one-column rows as they are produced.
    Stream(RowStream),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Scalar(v) => f.debug_tuple("Scalar").field(v).finish(),
            Output::Rows(r) => f.debug_tuple("Rows").field(r).finish(),
            Output::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// Severity and text of a message sent to the client while a call runs (progress).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// `INFO`, `NOTICE`, `WARNING`.
    pub severity: &'static str,
    /// The message text.
    pub message: String,
}

/// Where notices go; the proxy delivers them to the client between protocol messages.
pub type NoticeSink = Arc<dyn Fn(Notice) + Send + Sync>;

/// The role a call acts as, read from the caller's own session when the statement runs
/// (so a `SET ROLE` there counts). pgmld reads and writes user data only with this role's
/// privileges, which Postgres checks itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `current_user` of the calling session: the role user data is read and written as.
    pub role: String,
    /// Whether that role is a superuser: it may use every project and server file.
    pub superuser: bool,
    /// Whether it has the privileges of `pg_read_server_files` (superusers do): what
    /// `COPY ... FROM '<file>'` needs, and what pgmld asks before reading a server path.
    pub read_server_files: bool,
}

impl Caller {
    /// A caller with no special privileges, for tests and calls pgmld makes for a role.
    pub fn plain(role: &str) -> Self {
        Caller { role: role.into(), superuser: false, read_server_files: false }
    }

    /// The 42501 for a server path this role may not read. It never says whether the path
    /// exists, so it cannot be used to probe the server's file system.
    pub fn server_files_denied(&self, what: &str) -> crate::error::SqlError {
        crate::error::SqlError::new(crate::error::codes::INSUFFICIENT_PRIVILEGE, format!("permission denied to read {what} from a server file"))
            .with_detail("Only roles with privileges of the \"pg_read_server_files\" role may read server files, as with COPY ... FROM '<file>'.")
            .with_hint("Load from the Hugging Face Hub, or ask an administrator for GRANT pg_read_server_files TO your role.")
    }
}

/// Everything a running call may need from its session.
#[derive(Clone)]
pub struct CallContext {
    /// Database the client is connected to.
    pub database: String,
    /// User the client authenticated as.
    pub user: String,
    /// The role the call acts as (see [`Caller`]).
    pub caller: Caller,
    /// Session id, for logs.
    pub session_id: u64,
    /// Sends progress to the client.
    pub notices: NoticeSink,
    /// Set when the client cancels (CancelRequest) or disconnects; long calls poll it.
    pub cancelled: Arc<AtomicBool>,
}

impl CallContext {
    /// A context whose notices go nowhere; for tests and internal calls.
    pub fn detached(database: &str, user: &str) -> Self {
        CallContext {
            database: database.into(),
            user: user.into(),
            caller: Caller::plain(user),
            session_id: 0,
            notices: Arc::new(|_| {}),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once the client asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Arguments after binding: every declared parameter by name, defaults filled in.
pub type Args = BTreeMap<&'static str, Value>;

/// The future a call returns.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Output, SqlError>> + Send>>;

/// The future of a per-row call: one scalar result per row, in row order.
pub type RowsFuture = Pin<Box<dyn Future<Output = Result<Vec<Value>, SqlError>> + Send>>;

/// A pgml function served by pgmld.
pub trait PgmlFunction: Send + Sync + 'static {
    /// The SQL declaration.
    fn signature(&self) -> &Signature;
    /// Runs the call.
    fn call(&self, ctx: CallContext, args: Args) -> CallFuture;

    /// Runs the call once per row of a query that uses it per row (arguments that read
    /// columns). The default calls [`PgmlFunction::call`] row by row; functions that can
    /// batch rows (one forward pass for many inputs) override it. Only scalar functions
    /// are called this way.
    fn call_rows(self: Arc<Self>, ctx: CallContext, rows: Vec<Args>) -> RowsFuture {
        Box::pin(async move {
            let mut out = Vec::with_capacity(rows.len());
            for args in rows {
                match self.call(ctx.clone(), args).await? {
                    Output::Scalar(v) => out.push(v),
                    Output::Rows(_) | Output::Stream(_) => {
                        return Err(SqlError::new(
                            crate::error::codes::FEATURE_NOT_SUPPORTED,
                            format!(
                                "pgml.{} returns rows and cannot be called per row",
                                self.signature().name
                            ),
                        ))
                    }
                }
            }
            Ok(out)
        })
    }
}

/// The functions pgmld serves, by unqualified lower-case name.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<&'static str, Arc<dyn PgmlFunction>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry with every built-in function of this crate.
    pub fn with_builtins() -> Self {
        let mut r = Registry::new();
        r.register(Arc::new(crate::functions::version::Version::new()));
        r
    }

    /// Adds (or replaces) a function.
    pub fn register(&mut self, f: Arc<dyn PgmlFunction>) {
        self.functions.insert(f.signature().name, f);
    }

    /// Looks a function up by unqualified name, case-insensitively.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn PgmlFunction>> {
        self.functions.get(name.to_ascii_lowercase().as_str())
    }

    /// Every signature, for the "supported functions" list in errors.
    pub fn supported(&self) -> Vec<String> {
        self.functions.values().map(|f| f.signature().display()).collect()
    }
}
