//! `pgml.wait_job(job_id bigint) RETURNS TABLE(status text, task text, algorithm text,
//! deployed bool)`: attaches to a tune job, typically one queued with `wait => false`:
//! relays its notices from whichever worker runs it, then returns the row `pgml.tune`
//! would have returned, or raises the error the job ended with. A job that has ended
//! already answers at once. Cancelling the wait (Ctrl-C) stops waiting; the job goes on
//! (`pgml.cancel_job` cancels it).

use std::sync::Arc;

use pgmld_sql::function::{CallFuture, ParamSpec};
use pgmld_sql::{Args, CallContext, PgmlFunction, Signature, SqlError, SqlType};

use crate::cancel_job::{job_id, visible_job};
use crate::error::Result;
use crate::function::{tune_columns, tune_row};
use crate::submit::OnInterrupt;
use crate::tuner::{Tuned, Tuner};

/// The SQL function, bound to the [`Tuner`] whose connections it uses.
pub struct WaitJob {
    signature: Signature,
    tuner: Arc<Tuner>,
}

impl WaitJob {
    /// The function over `tuner`.
    pub fn new(tuner: Arc<Tuner>) -> Self {
        WaitJob {
            signature: Signature {
                name: "wait_job",
                params: vec![ParamSpec::required("job_id", SqlType::Int8)],
                returns: tune_columns(),
            },
            tuner,
        }
    }
}

async fn wait(tuner: &Tuner, ctx: &CallContext, id: i64) -> Result<Tuned> {
    visible_job(tuner, ctx, id).await?;
    // Listening before the job's row is read: no end is missed between the two.
    let listener = tuner.listen_job(&ctx.database, id).await?;
    tuner.wait_job(ctx, id, listener, OnInterrupt::Detach).await
}

impl PgmlFunction for WaitJob {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, args: Args) -> CallFuture {
        let tuner = self.tuner.clone();
        Box::pin(async move {
            let id = job_id(&args, "wait_job").map_err(SqlError::from)?;
            let done = wait(&tuner, &ctx, id).await.map_err(SqlError::from)?;
            Ok(tune_row(done))
        })
    }
}
