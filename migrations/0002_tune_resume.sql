-- pgmld 0002: resumable pgml.tune jobs.
--
--   * jobs.request: the pgml.tune call as parsed (arguments and hyperparams, never a token),
--     enough to run the job again after pgmld restarts;
--   * jobs.checkpoint_step: the optimizer step of the model's latest complete checkpoint,
--     stored in pgml.files under checkpoint/ (trainer_state.json marks it complete), with
--     the run's training data as checkpoint/dataset.jsonl; NULL when there is none.
-- A running job's owner holds a session-level advisory lock on (0x70676d6c, job id), so a
-- 'running' row whose lock can be taken was orphaned by a crash.

ALTER TABLE pgml.jobs
    ADD COLUMN request jsonb,
    ADD COLUMN checkpoint_step bigint;

-- The startup scan for orphaned jobs.
CREATE INDEX jobs_active_idx ON pgml.jobs (id) WHERE status IN ('queued', 'running');
