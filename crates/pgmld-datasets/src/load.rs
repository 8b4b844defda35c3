//! One load, end to end: find the files, settle the columns, stream rows into a staging
//! table with COPY, then swap it in atomically (or append in one transaction).
//!
//! Memory stays flat: a blocking thread reads one batch at a time and encodes it into
//! ~1 MB COPY chunks that cross a channel of four; the async side feeds them to COPY.

use crate::error::DatasetError;
use crate::hub::{self, DataFile};
use crate::options::{IfExists, LoadOptions};
use crate::pgtypes::{self, Column};
use crate::read::{self, TextOptions};
use crate::server_path;
use crate::source::{local_files, Declared, Source};
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures_util::SinkExt;
use pgmld_hub::HubConfig;
use pgmld_schema::{roles, staging};
use pgmld_sql::{CallContext, Notice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const CHUNK_BYTES: usize = 1 << 20;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What a successful load reports: `TABLE(table_name text, rows bigint)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Qualified, quoted where needed (`pgml.imdb`, `pgml."FinGPT/fingpt-sentiment-train"`).
    pub table_name: String,
    /// Rows written by this load.
    pub rows: u64,
}

/// Loads datasets for any database of the upstream.
pub struct Loader {
    /// pgmld's own connections (the database is chosen per call): the one connector pgmld
    /// built at startup.
    pub connector: std::sync::Arc<pgmld_upstream::Connector>,
    /// Hub endpoint, token, cache: the one configuration pgmld built at startup.
    pub hub: std::sync::Arc<HubConfig>,
    /// Directories local sources must lie in (config `dataset_dirs`); empty: anywhere the
    /// calling role may read server files.
    pub dataset_dirs: Vec<std::path::PathBuf>,
}

/// Messages from the reader thread.
enum Piece {
    Chunk(Bytes, u64),
    Failed(DatasetError),
}

impl Loader {
    /// Runs one `pgml.load_dataset` call.
    pub async fn load(&self, opts: LoadOptions, ctx: &CallContext) -> Result<Loaded, DatasetError> {
        let source = match Source::parse(&opts.source, ctx.caller.read_server_files) {
            Source::Local(path) => {
                Source::Local(server_path::allowed(&ctx.caller, &path, &self.dataset_dirs)?)
            }
            hub => hub,
        };
        let (schema_name, table) = source.table(opts.table.as_deref())?;
        let files = self.files(&source, &opts).await?;
        let text_opts = TextOptions { delimiter: opts.delimiter, header: opts.header };
        let (merged, cols, add_split) = {
            let files = files.clone();
            let wanted = opts.columns.clone();
            tokio::task::spawn_blocking(
                move || -> Result<(SchemaRef, Vec<Column>, bool), DatasetError> {
                    let schemas = files
                        .iter()
                        .map(|f| read::schema(f, text_opts))
                        .collect::<Result<Vec<_>, _>>()?;
                    let merged = read::merge(&schemas)?;
                    let cols = pgtypes::columns(&merged, wanted.as_deref())?;
                    let add_split = !merged.fields().iter().any(|f| f.name() == "split");
                    Ok((merged, cols, add_split))
                },
            )
            .await
            .map_err(|e| DatasetError::Internal(e.to_string()))??
        };
        // Everything below runs as the caller: Postgres checks creating, replacing and
        // appending, and the tables it creates are the caller's.
        let client = self.connect_as(ctx).await?;
        let target = format!("{}.{}", quote_ident(&schema_name), quote_ident(&table));
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&target])
            .await
            .map_err(|e| DatasetError::pg("checking the target table", e))?
            .get(0);
        if exists && opts.if_exists == IfExists::Error {
            return Err(DatasetError::TableExists(format!("table {target} already exists")));
        }
        // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
        // exists, so it only runs for a schema that is missing.
        let schema_missing: bool = client
            .query_one("SELECT to_regnamespace($1) IS NULL", &[&quote_ident(&schema_name)])
            .await
            .map_err(|e| DatasetError::pg("checking the target schema", e))?
            .get(0);
        if schema_missing {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(&schema_name)
                ))
                .await
                .map_err(|e| DatasetError::pg(format!("creating schema {schema_name}"), e))?;
        }
        let mut col_defs: Vec<String> =
            cols.iter().map(|c| format!("{} {}", quote_ident(&c.name), c.pg_type)).collect();
        let mut col_names: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
        if add_split {
            col_defs.push("split text".into());
            col_names.push("split".into());
        }
        let rows = if exists && opts.if_exists == IfExists::Append {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| DatasetError::pg("starting the append", e))?;
            let copied = self
                .copy(
                    &[&client],
                    &target,
                    &col_names,
                    files,
                    merged.clone(),
                    cols.clone(),
                    add_split,
                    text_opts,
                    &opts,
                    ctx,
                )
                .await;
            match copied {
                Ok(n) => {
                    client.batch_execute("COMMIT").await.map_err(|e| {
                        DatasetError::pg(format!("committing rows into {target}"), e)
                    })?;
                    n
                }
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(e);
                }
            }
        } else {
            // The lock marks the staging table as in use; a pgmld killed mid-load leaves a
            // table whose lock is free, which the next pgmld to use the database drops.
            let key = staging::new_key();
            staging::lock(&client, key)
                .await
                .map_err(|e| DatasetError::pg("locking the staging table", e))?;
            let staging = format!("{}.{}", quote_ident(&schema_name), staging::table_name(key));
            client
                .batch_execute(&format!(
                    "CREATE TABLE {staging} ({}); COMMENT ON TABLE {staging} IS '{}'",
                    col_defs.join(", "),
                    staging::STAGING_COMMENT
                ))
                .await
                .map_err(|e| DatasetError::pg(format!("creating {staging}"), e))?;
            let result = async {
                let second = self.connect_as(ctx).await?;
                let n = self
                    .copy(
                        &[&client, &second],
                        &staging,
                        &col_names,
                        files,
                        merged.clone(),
                        cols.clone(),
                        add_split,
                        text_opts,
                        &opts,
                        ctx,
                    )
                    .await?;
                swap_in(&client, &staging, &target, &table, exists).await?;
                Ok::<u64, DatasetError>(n)
            }
            .await;
            match result {
                Ok(n) => n,
                Err(e) => {
                    let _ = client.batch_execute(&format!("DROP TABLE IF EXISTS {staging}")).await;
                    return Err(e);
                }
            }
        };
        Ok(Loaded { table_name: target, rows })
    }

    async fn files(
        &self,
        source: &Source,
        opts: &LoadOptions,
    ) -> Result<Vec<DataFile>, DatasetError> {
        let files = match source {
            Source::Hub(id) => {
                if let Some(f) = opts.format {
                    return Err(DatasetError::invalid(
                        format!(
                            "kwargs \"format\" ({}) applies to local files, not to the Hugging Face dataset {id}",
                            f.name()
                        ),
                        "Drop \"format\": a Hub dataset's files are read by their names.",
                    ));
                }
                hub::fetch_dataset_files(
                    &self.hub,
                    id,
                    opts.subset.as_deref(),
                    opts.revision.as_deref(),
                    opts.split.as_deref(),
                )
                .await
                .map_err(|e| lang_pair_error(e, opts))?
            }
            Source::Local(path) => {
                if let Some(subset) = &opts.subset {
                    return Err(DatasetError::BadArgument(format!(
                        "subset \"{subset}\" (a Hub config: the subset argument, or kwargs name, subset, config_name, lang1 and lang2) applies to Hugging Face datasets, not to the local source {}",
                        path.display()
                    )));
                }
                let path = path.clone();
                let declared = Declared { format: opts.format, delimiter: opts.delimiter };
                let all = tokio::task::spawn_blocking(move || local_files(&path, declared))
                    .await
                    .map_err(|e| DatasetError::Internal(e.to_string()))??;
                match &opts.split {
                    None => all,
                    Some(s) => {
                        let kept: Vec<DataFile> =
                            all.iter().filter(|f| &f.split == s).cloned().collect();
                        if kept.is_empty() {
                            let mut have: Vec<&str> =
                                all.iter().map(|f| f.split.as_str()).collect();
                            have.dedup();
                            return Err(DatasetError::BadArgument(format!(
                                "split \"{s}\" is not in {}; it has: {}",
                                opts.source,
                                have.join(", ")
                            )));
                        }
                        kept
                    }
                }
            }
        };
        Ok(files)
    }

    /// A connection of pgmld's own to the call's database, acting as the calling role.
    async fn connect_as(&self, ctx: &CallContext) -> Result<tokio_postgres::Client, DatasetError> {
        let client = self.connector.connect(&ctx.database).await?;
        roles::set_role(&client, &ctx.caller.role)
            .await
            .map_err(|e| DatasetError::pg(roles::acting_as(&ctx.caller.role), e))?;
        Ok(client)
    }

    /// Streams every file into `table` with COPY over each of `clients` (chunks dealt in
    /// turn, so Postgres compresses and writes on several backends at once); returns the
    /// rows written.
    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        clients: &[&tokio_postgres::Client],
        table: &str,
        col_names: &[String],
        files: Vec<DataFile>,
        schema: SchemaRef,
        cols: Vec<Column>,
        add_split: bool,
        text_opts: TextOptions,
        opts: &LoadOptions,
        ctx: &CallContext,
    ) -> Result<u64, DatasetError> {
        let copy_sql = format!("COPY {table} ({}) FROM STDIN", col_names.join(", "));
        let mut lanes = Vec::with_capacity(clients.len());
        let mut lane_senders = Vec::with_capacity(clients.len());
        for client in clients {
            // lz4 compresses long texts several times faster than the default pglz (the
            // bottleneck on review-sized rows); servers without it keep their default.
            let _ = client.batch_execute("SET default_toast_compression = 'lz4'").await;
            let sink = client
                .copy_in::<_, Bytes>(&copy_sql)
                .await
                .map_err(|e| DatasetError::pg(format!("starting COPY into {table}"), e))?;
            let (ltx, mut lrx) = mpsc::channel::<Bytes>(2);
            lane_senders.push(ltx);
            lanes.push(async move {
                futures_util::pin_mut!(sink);
                while let Some(bytes) = lrx.recv().await {
                    sink.send(bytes).await?;
                }
                sink.finish().await
            });
        }
        let (tx, mut rx) = mpsc::channel::<Piece>(4);
        let limit = opts.limit;
        let cancelled = ctx.cancelled.clone();
        let reader = tokio::task::spawn_blocking(move || {
            read_all(files, schema, cols, add_split, text_opts, limit, cancelled, tx)
        });
        let dispatch = async move {
            let started = Instant::now();
            let mut last_report = Instant::now();
            let mut rows = 0u64;
            let mut turn = 0usize;
            while let Some(piece) = rx.recv().await {
                match piece {
                    Piece::Chunk(bytes, n) => {
                        rows = n;
                        if lane_senders[turn % lane_senders.len()].send(bytes).await.is_err() {
                            break; // that lane failed; its error is reported below
                        }
                        turn += 1;
                        if last_report.elapsed() >= PROGRESS_EVERY {
                            last_report = Instant::now();
                            progress(ctx, &opts.source, rows, started.elapsed());
                        }
                    }
                    Piece::Failed(e) => return Err(e),
                }
            }
            progress(ctx, &opts.source, rows, started.elapsed());
            Ok(rows)
        };
        // On a failure the lanes still finish what they got; the caller drops the staging
        // table or rolls the append back, so nothing half-written stays.
        let (rows, finished) = tokio::join!(dispatch, futures_util::future::join_all(lanes));
        let _ = reader.await;
        let rows = rows?;
        for r in finished {
            r.map_err(|e| DatasetError::pg(format!("COPY into {table}"), e))?;
        }
        Ok(rows)
    }
}

fn progress(ctx: &CallContext, source: &str, rows: u64, elapsed: Duration) {
    let rate = rows as f64 / elapsed.as_secs_f64().max(1e-3);
    (ctx.notices)(Notice {
        severity: "INFO",
        message: serde_json::json!({"load_dataset": source, "rows": rows, "rows_per_second": rate.round(), "elapsed_seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0}).to_string(),
    });
}

/// The reader thread: files → batches → COPY text chunks, stopping at `limit` rows, on
/// cancel, or when the receiver is gone.
#[allow(clippy::too_many_arguments)]
fn read_all(
    files: Vec<DataFile>,
    schema: SchemaRef,
    cols: Vec<Column>,
    add_split: bool,
    text_opts: TextOptions,
    limit: Option<u64>,
    cancelled: Arc<AtomicBool>,
    tx: mpsc::Sender<Piece>,
) {
    let result = (|| -> Result<(), DatasetError> {
        let mut rows = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + (1 << 16));
        for file in &files {
            // csv / json read with the merged schema; parquet keeps its own and is cast.
            let batches = read::batches(file, schema.clone(), text_opts)?;
            for batch in batches {
                if cancelled.load(Ordering::Relaxed) {
                    return Err(DatasetError::Cancelled);
                }
                let batch = batch.map_err(|e| {
                    DatasetError::Malformed(format!("cannot read {}: {e}", file.origin))
                })?;
                let mut n = batch.num_rows();
                if let Some(l) = limit {
                    n = n.min(l.saturating_sub(rows) as usize);
                }
                let split = if add_split { Some(file.split.as_str()) } else { None };
                pgtypes::encode_batch(&batch, &cols, split, n, &mut chunk)?;
                rows += n as u64;
                if chunk.len() >= CHUNK_BYTES {
                    let bytes = Bytes::from(std::mem::replace(
                        &mut chunk,
                        Vec::with_capacity(CHUNK_BYTES + (1 << 16)),
                    ));
                    if tx.blocking_send(Piece::Chunk(bytes, rows)).is_err() {
                        return Ok(());
                    }
                }
                if limit.is_some_and(|l| rows >= l) {
                    break;
                }
            }
            if limit.is_some_and(|l| rows >= l) {
                break;
            }
        }
        if !chunk.is_empty() || rows == 0 {
            let _ = tx.blocking_send(Piece::Chunk(Bytes::from(chunk), rows));
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = tx.blocking_send(Piece::Failed(e));
    }
}

/// Puts the loaded staging table in place of `target` in one transaction. Readers see the
/// old rows or the new ones. Views on the old table keep working: when some depend on it,
/// its rows are replaced in place instead of the table being dropped.
async fn swap_in(
    client: &tokio_postgres::Client,
    staging: &str,
    target: &str,
    table: &str,
    exists: bool,
) -> Result<(), DatasetError> {
    let tx = |e| DatasetError::pg(format!("replacing {target}"), e);
    client.batch_execute("BEGIN").await.map_err(tx)?;
    let result = async {
        let dependents: i64 = if exists {
            client
                .query_one(
                    "SELECT count(DISTINCT r.ev_class) FROM pg_depend d JOIN pg_rewrite r ON d.objid = r.oid \
                     WHERE d.refobjid = $1::text::regclass AND r.ev_class <> $1::text::regclass",
                    &[&target],
                )
                .await
                .map_err(tx)?
                .get(0)
        } else {
            0
        };
        if dependents == 0 {
            if exists {
                client.batch_execute(&format!("DROP TABLE {target}")).await.map_err(tx)?;
            }
            client
                .batch_execute(&format!("ALTER TABLE {staging} RENAME TO {}", quote_ident(table)))
                .await
                .map_err(tx)?;
        } else {
            let same: bool = client
                .query_one(
                    "SELECT array_agg((attname, atttypid) ORDER BY attnum) FILTER (WHERE attrelid = $1::text::regclass) \
                     IS NOT DISTINCT FROM array_agg((attname, atttypid) ORDER BY attnum) FILTER (WHERE attrelid = $2::text::regclass) \
                     FROM pg_attribute WHERE attrelid IN ($1::text::regclass, $2::text::regclass) AND attnum > 0 AND NOT attisdropped",
                    &[&target, &staging],
                )
                .await
                .map_err(tx)?
                .get(0);
            if !same {
                return Err(DatasetError::TableExists(format!(
                    "{target} has {dependents} dependent view(s) and the new data has other columns; drop the views or load into another table with kwargs => '{{\"table\": \"...\"}}'"
                )));
            }
            client
                .batch_execute(&format!("TRUNCATE {target}; INSERT INTO {target} SELECT * FROM {staging}; DROP TABLE {staging}"))
                .await
                .map_err(tx)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(tx),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// A config chosen by kwargs `lang1` / `lang2` that the dataset lacks: the configs it has,
/// and the pair the other way round when it has that one. Other errors pass unchanged.
fn lang_pair_error(e: pgmld_hub::HubError, opts: &LoadOptions) -> DatasetError {
    let (Some((l1, l2)), pgmld_hub::HubError::UnknownSubset { repo, subset, available }) =
        (&opts.lang_pair, &e)
    else {
        return e.into();
    };
    let reversed = format!("{l2}-{l1}");
    let hint = if available.contains(&reversed) {
        format!("Its config `{reversed}` holds this pair the other way round: pass lang1 \"{l2}\" and lang2 \"{l1}\".")
    } else {
        "Pass lang1 and lang2 of a pair it has, or name one of its configs with subset => '...'."
            .to_string()
    };
    DatasetError::invalid(
        format!(
            "dataset `{repo}` has no config `{subset}` for lang1 \"{l1}\" and lang2 \"{l2}\"; its configs: {}",
            pgmld_hub::short_list(available)
        ),
        hint,
    )
}

/// Quotes an identifier unless it is a plain lower-case name.
pub fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(quote_ident("imdb"), "imdb");
        assert_eq!(
            quote_ident("FinGPT/fingpt-sentiment-train"),
            "\"FinGPT/fingpt-sentiment-train\""
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
    }
}
