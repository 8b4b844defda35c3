-- pgmld 0008: pgml.jobs is the queue that every pgmld on this upstream shares (#16).
--
-- A job row is queued first. Any pgmld with training capacity claims the oldest queued
-- job of the highest priority that its devices can run (SELECT ... FOR UPDATE SKIP
-- LOCKED), takes the job's session-level advisory lock (0x70676d6c, job id) on the
-- connection that runs it, and beats heartbeat_at while it runs. A 'running' row whose
-- lock is free lost its worker (killed, connection lost); one whose heartbeat is older
-- than the lease has a hung worker, whose connection is terminated. Either goes back to
-- 'queued', and the worker that claims it next resumes it from its last checkpoint.
--
--   priority             higher runs first; first in, first out within a priority
--   device               the device kind the job asks for: any, cpu or cuda
--   queued_at            when it was last queued (a takeover queues it again)
--   worker_host, worker_pid, worker_device   who runs it, on which device
--   eta_seconds          the worker's estimate of the time left
--   cancel_requested_at  set by a cancel (Ctrl-C, a disconnect, pgml.cancel_job); the
--                        worker stops the job at its next poll
--   attempts             how many times a worker has started it
--   result               what the job returned (for a tune: status, task, algorithm,
--                        deployed)
--   error_code, error_hint   the SQLSTATE and hint of a failed job's error, so that the
--                        caller, wherever the job ran, gets the error the worker got

ALTER TABLE pgml.jobs
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN device text NOT NULL DEFAULT 'any' CHECK (device IN ('any', 'cpu', 'cuda')),
    ADD COLUMN queued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ADD COLUMN worker_host text,
    ADD COLUMN worker_pid integer,
    ADD COLUMN worker_device text,
    ADD COLUMN eta_seconds real,
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN result jsonb,
    ADD COLUMN error_code text,
    ADD COLUMN error_hint text;

UPDATE pgml.jobs SET queued_at = created_at;

-- The claim: the first queued job by priority, then age.
CREATE INDEX jobs_claim_idx ON pgml.jobs (priority DESC, id) WHERE status = 'queued';

-- pgml.cancel_job: cancels a job from any session its owner (or a member of the owner's
-- role, or a superuser) opens: a queued job at once, a running one at its worker's next
-- heartbeat. Returns the job's status after the request. As for the entries of 0003,
-- pgmld serves the calls; called on the upstream directly it raises 0A000.
CREATE FUNCTION pgml.cancel_job(job_id bigint)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgml.served_by_pgmld('cancel_job');
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION pgml.cancel_job(bigint) IS 'pgmld: cancels a pgml.tune job (queued: at once; running: at its next heartbeat)';
