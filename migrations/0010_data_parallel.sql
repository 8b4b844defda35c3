-- pgmld 0010: data-parallel jobs (#16): one tune trained by several workers at once.
--
-- A job asks for `world_size` ranks ("training_args": {"world_size": N}). The worker that
-- claims it is rank 0: it serves a c10d TCPStore on a free port, bumps `generation` and
-- publishes the store's address in `rendezvous`. Other workers with a free device of the
-- job's kind join that generation as ranks 1, 2, ... (a row in pgml.job_ranks, taken under
-- the job row's lock). Rank 0 closes the rendezvous once N ranks joined, or at the
-- rendezvous timeout with those that did: `rendezvous` is cleared and `ranks` says how
-- many train. The global batch stays per_device_train_batch_size x world_size whatever
-- `ranks` is. Rank 0 writes the checkpoints, logs and results; when a rank dies the
-- others' next collective fails, rank 0 puts the job back in the queue, and the next
-- generation resumes it from its last checkpoint with the workers then available (rank 0's
-- own death frees the job's lock, as for any job).
--
--   world_size   ranks the job asks for (1: an ordinary job)
--   generation   how many rendezvous the job has had; ranks of an older one stop
--   rendezvous   host:port of rank 0's store while ranks may join (NULL otherwise)
--   ranks        how many ranks train the current generation

ALTER TABLE pgml.jobs
    ADD COLUMN world_size integer NOT NULL DEFAULT 1 CHECK (world_size >= 1),
    ADD COLUMN generation integer NOT NULL DEFAULT 0,
    ADD COLUMN rendezvous text,
    ADD COLUMN ranks integer;

-- Workers looking for a rendezvous to join.
CREATE INDEX jobs_rendezvous_idx ON pgml.jobs (priority DESC, id) WHERE rendezvous IS NOT NULL;

-- Who trains each generation of a data-parallel job (rank 0 is the job's own worker, in
-- pgml.jobs).
CREATE TABLE pgml.job_ranks (
    job_id bigint NOT NULL REFERENCES pgml.jobs(id) ON DELETE CASCADE,
    generation integer NOT NULL,
    rank integer NOT NULL CHECK (rank >= 1),
    worker text NOT NULL,
    worker_host text NOT NULL,
    worker_pid integer NOT NULL,
    worker_device text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, generation, rank)
);
COMMENT ON TABLE pgml.job_ranks IS 'pgmld: the workers that joined each generation of a data-parallel pgml.tune job as ranks 1..N-1';
