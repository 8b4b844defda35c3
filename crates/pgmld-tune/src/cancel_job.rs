//! `pgml.cancel_job(job_id bigint) RETURNS text`: cancels a tune job from any session its
//! owner may open (a member of the owner's role, or a superuser, as for every project):
//! a queued job ends at once, a running one at its worker's next heartbeat (every 2 s),
//! whereupon the session that waits for it gets the cancel's 57014. Returns the job's
//! status after the request: `cancelled` (it was queued), `cancelling` (its worker stops
//! it), or how it had already ended.

use std::sync::Arc;

use pgmld_jobs::queue::CancelOutcome;
use pgmld_models::access;
use pgmld_sql::function::{CallFuture, ParamSpec};
use pgmld_sql::{
    Args, CallContext, Output, PgmlFunction, Returns, Signature, SqlError, SqlType, Value,
};

use crate::error::{Result, TuneError};
use crate::tuner::{info, Tuner};

/// The SQL function, bound to the [`Tuner`] whose connections it uses.
pub struct CancelJob {
    signature: Signature,
    tuner: Arc<Tuner>,
}

impl CancelJob {
    /// The function over `tuner`.
    pub fn new(tuner: Arc<Tuner>) -> Self {
        CancelJob {
            signature: Signature {
                name: "cancel_job",
                params: vec![ParamSpec::required("job_id", SqlType::Int8)],
                returns: Returns::Scalar(SqlType::Text),
            },
            tuner,
        }
    }
}

/// The `job_id` argument of pgml.cancel_job and pgml.wait_job (`function` names which).
pub(crate) fn job_id(args: &Args, function: &str) -> Result<i64> {
    match args.get("job_id") {
        Some(Value::Int(id)) => Ok(*id),
        Some(Value::Null) | None => {
            Err(TuneError::Null(format!("pgml.{function} job_id must not be NULL")))
        }
        Some(other) => Err(TuneError::bad(
            format!("job_id must be a bigint, got {}", other.describe()),
            "Pass the id of a row of pgml.jobs: SELECT id, status FROM pgml.jobs.",
        )),
    }
}

/// A job as the calling role may see it.
pub(crate) struct VisibleJob {
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Its model.
    pub model_id: Option<i64>,
    /// Its project's name.
    pub project: String,
}

/// Job `id` when the caller may use it (its owner's member, or a superuser); an unknown
/// job and another role's job read alike (22023), so ids cannot be probed.
pub(crate) async fn visible_job(tuner: &Tuner, ctx: &CallContext, id: i64) -> Result<VisibleJob> {
    let client = tuner.connector.shared(&ctx.database).await?;
    let row = client
        .query_opt(
            "SELECT j.owner::text, j.status, j.model_id, p.name FROM pgml.jobs j \
             JOIN pgml.projects p ON p.id = j.project_id WHERE j.id = $1",
            &[&id],
        )
        .await
        .map_err(|e| TuneError::pg("reading the job", e))?;
    let not_found = || {
        TuneError::bad(
            format!("job {id} does not exist, or your role may not use it"),
            "SELECT id, status, model_id FROM pgml.jobs lists the jobs of the projects you may use.",
        )
    };
    let Some(row) = row else { return Err(not_found()) };
    let owner: String = row.get(0);
    if !access::may_use(&client, &ctx.caller, &owner).await? {
        return Err(not_found());
    }
    Ok(VisibleJob { status: row.get(1), model_id: row.get(2), project: row.get(3) })
}

async fn cancel(tuner: &Tuner, ctx: &CallContext, id: i64) -> Result<String> {
    let VisibleJob { status, model_id, project } = visible_job(tuner, ctx, id).await?;
    let outcome = crate::submit::cancel(&tuner.connector, &tuner.jobs, &ctx.database, id).await?;
    let model =
        model_id.map(|m| format!(" (model {m} of project \"{project}\")")).unwrap_or_default();
    Ok(match outcome {
        CancelOutcome::Cancelled => {
            info(ctx, format!("job {id}{model} was queued: cancelled"));
            "cancelled".into()
        }
        CancelOutcome::Requested => {
            info(ctx, format!("job {id}{model} is running: its worker stops it within seconds"));
            "cancelling".into()
        }
        CancelOutcome::NotActive => {
            info(ctx, format!("job {id}{model} had already ended ({status})"));
            status
        }
    })
}

impl PgmlFunction for CancelJob {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn call(&self, ctx: CallContext, args: Args) -> CallFuture {
        let tuner = self.tuner.clone();
        Box::pin(async move {
            let id = job_id(&args, "cancel_job").map_err(SqlError::from)?;
            let status = cancel(&tuner, &ctx, id).await.map_err(SqlError::from)?;
            tracing::info!(job_id = id, status = %status, role = %ctx.caller.role, "pgml.cancel_job");
            Ok(Output::Scalar(Value::Text(status)))
        })
    }
}
