//! The LISTEN/NOTIFY channels of the queue.
//!
//! NOTIFY is transactional and delivered in order per sending session, and its payload is
//! limited to 8000 bytes: messages are short JSON texts (a notice, a job id), never data.

use tokio_postgres::Client;

use crate::error::{pg, Result};

/// Wakes idle workers: a job was queued (payload: its id).
pub const QUEUED: &str = "pgml_jobs_queued";

/// Reaches a job's worker: a cancel was requested (payload: the job id).
pub const CANCEL: &str = "pgml_jobs_cancel";

/// The channel of one job: its progress notices and its end, for whichever session waits.
pub fn job_channel(job_id: i64) -> String {
    format!("pgml_job_{job_id}")
}

/// The longest payload NOTIFY accepts, less a margin for multi-byte characters cut short.
pub const MAX_PAYLOAD: usize = 7900;

/// Sends `payload` on `channel` (cut to [`MAX_PAYLOAD`] bytes at a character boundary).
pub async fn notify(client: &Client, channel: &str, payload: &str) -> Result<()> {
    let mut end = payload.len().min(MAX_PAYLOAD);
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    client
        .execute("SELECT pg_notify($1, $2)", &[&channel, &&payload[..end]])
        .await
        .map_err(pg("sending a notification"))?;
    Ok(())
}

/// `LISTEN` on `channel` (quoted: job channels are generated names).
pub async fn listen(client: &Client, channel: &str) -> Result<()> {
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
        .map_err(pg("listening for job notifications"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_channels_are_per_job() {
        assert_eq!(job_channel(42), "pgml_job_42");
        assert_ne!(job_channel(1), job_channel(11));
    }
}
