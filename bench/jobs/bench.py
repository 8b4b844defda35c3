#!/usr/bin/env python3
"""The pgml.jobs queue: claim latency and throughput of tiny pgml.tune jobs, with one pgmld
that trains on its own threads (`local`) against a front-end that trains nothing and two
`pgmld worker` processes (`queue`), in the same run.

Driven by bench/jobs/run.sh (PYTHONPATH: .deps/bench and .deps/libtorch for `model`;
psycopg 3 from .deps/python, given as --client-path, for `run`). Subcommands:

  model OUT --tokenizer-dir DIR   the tiny BERT classifier every job fine-tunes (random
                                  weights, MiniLM's tokenizer files)
  run [options]                   both modes, one after the other; prints and writes the
                                  report, every measurement in --raw
  report RAW                      the report again from a run's --raw file

Per mode, in a database made fresh for it (--db, dropped and created again; dropped at the
end unless --keep-db):

  latency     --warmup jobs (not counted), then --m jobs submitted one at a time with
              pgml.tune(..., wait => false), each waited for (pgml.jobs polled directly on
              Postgres) and followed by --gap seconds, so every training thread is idle
              when the next one is submitted; latency = started_at - queued_at (database
              clock)
  throughput  --n jobs submitted back to back with wait => false from one session, then
              waited for until none is queued or running; jobs/s = n / (last finished_at -
              the database clock right before the first submit). Every job must have
              succeeded with attempts = 1 and there must be exactly n of them; the run fails
              otherwise.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import benchlib  # noqa: E402
from benchlib import (  # noqa: E402
    BUSY_JOBS,
    PgmldCluster,
    add_report_parser,
    add_run_args,
    direct,
    git_commit,
    imdb_by_class,
    lit,
    logger,
    machine,
    md_table,
    pgmld_env,
    utc_now,
    watched,
    write_json_atomic,
    write_report,
)

SECTION = "## Job queue: claim latency and throughput (CPU)"
MODES = ("local", "queue")
ROWS = 64  # training table: 32 negative and 32 positive IMDB reviews, alternating
HYPERPARAMS = {"training_args": {"max_steps": 1, "per_device_train_batch_size": 8}, "tokenizer_args": {"max_length": 32}}
TEST_SIZE = 0.25
BERT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=2)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
DONE = ("succeeded", "failed", "cancelled")

log = logger("jobs-bench")


# --- the model and the data ----------------------------------------------------------------


def make_model(out, tokenizer_dir, seed=0):
    """A BertForSequenceClassification of BERT's shape (random weights drawn under
    torch.manual_seed(seed), vocab_size of tokenizer_dir's config.json) saved as safetensors,
    with tokenizer_dir's tokenizer files copied in."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    with open(os.path.join(tokenizer_dir, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(vocab_size=vocab, **BERT))
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(out, name))
    params = sum(p.numel() for p in model.parameters())
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    json.dump({"parameters": params, "safetensors_bytes": size, "vocab_size": vocab}, open(os.path.join(out, "bench-model.json"), "w"))
    print(f"tiny BERT in {out}: {params:,} parameters, model.safetensors {size / 1e6:.1f} MB", file=sys.stderr)


def reviews(source_csv, n=ROWS):
    """n IMDB reviews, negative and positive alternating (file order within each class)."""
    neg, pos = imdb_by_class(source_csv)
    rows = [r for pair in zip(neg, pos) for r in ((pair[0], "negative"), (pair[1], "positive"))][:n]
    if len(rows) != n:
        raise RuntimeError(f"only {len(rows)} IMDB reviews in {source_csv}")
    return rows


# --- processes -----------------------------------------------------------------------------


class Mode(PgmldCluster):
    """The pgmld processes of one mode, started in args.db (fresh, with the table `reviews`):

    local  one pgmld with train_workers = 2 (train_devices cpu, torch_threads 2)
    queue  a front-end with train_workers = 0 (torch_threads 1; it runs no torch) and two
           `pgmld worker --devices cpu` (torch_threads 1 each, worker_databases = args.db,
           resume_jobs false), waited for until both are in args.db's pgml.workers

    Clients connect to self.front either way. stop() stops everything it started, workers
    first, also when the start failed half-way."""

    def __init__(self, args, workdir, mode):
        self.mode = mode
        if mode == "local":
            super().__init__(args, workdir, pgmld_env(train_workers=2, train_devices="cpu", torch_threads=2, resume_jobs="false"), log=log)
        else:
            wenv = pgmld_env(torch_threads=1, worker_databases=args.db, resume_jobs="false")
            workers = [(f"worker{i}", wenv) for i in (1, 2)]
            super().__init__(args, workdir, pgmld_env(train_workers=0, torch_threads=1, resume_jobs="false"), workers, log)


# --- Postgres --------------------------------------------------------------------------------


def connect(args, port, host=None):
    import psycopg

    return psycopg.connect(host=host or args.pg_host, port=port, user=args.pg_user, dbname=args.db, autocommit=True)


def fresh_bench_db(args, rows):
    """args.db dropped and created again, with `reviews (text, class)` holding rows."""
    direct(args, f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)", db="postgres")
    direct(args, f"CREATE DATABASE {args.db}", db="postgres")
    with connect(args, args.pg_port) as c:
        c.execute("CREATE TABLE reviews (text text NOT NULL, class text NOT NULL)")
        with c.cursor().copy("COPY reviews (text, class) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        n = c.execute("SELECT count(*) FROM reviews").fetchone()[0]
    if n != len(rows):
        raise RuntimeError(f"reviews has {n} rows, {len(rows)} expected")


def tune_sql(project, model_dir):
    return (
        f"SELECT status FROM pgml.tune({lit(project)}, task => 'text-classification', relation_name => 'reviews', "
        f"model_name => {lit(model_dir)}, hyperparams => {lit(json.dumps(HYPERPARAMS))}, test_size => {TEST_SIZE}, "
        f"automatic_deploy => false, wait => false)"
    )


def submit(conn, project, model_dir):
    """One pgml.tune(..., wait => false) on conn; raises unless it answers `queued`."""
    status = conn.execute(tune_sql(project, model_dir)).fetchone()[0]
    if status != "queued":
        raise RuntimeError(f"pgml.tune({project!r}, wait => false) returned {status!r}, not 'queued'")


# Each job of a phase, as the checks and the report need it (times as epoch seconds).
JOBS_SQL = """SELECT j.id, p.name, j.status, j.attempts, j.worker_pid, j.model_id, m.status, j.error,
       extract(epoch FROM j.queued_at)::float8, extract(epoch FROM j.started_at)::float8,
       extract(epoch FROM j.finished_at)::float8
  FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id LEFT JOIN pgml.models m ON m.id = j.model_id
 WHERE p.name LIKE %s ORDER BY j.id"""
JOB_KEYS = ("id", "project", "status", "attempts", "worker_pid", "model_id", "model_status", "error", "queued_at", "started_at", "finished_at")


mode_logs = []  # the logs of the running mode's processes, for error messages


def jobs(watch, prefix):
    """The jobs of the projects named prefix*, as dicts of JOB_KEYS."""
    like = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
    return [dict(zip(JOB_KEYS, r)) for r in watch.execute(JOBS_SQL, (like,)).fetchall()]


def wait_done(watch, prefix, expected, timeout, poll, mode):
    """Polls pgml.jobs (directly on Postgres) until `expected` jobs of projects `prefix*`
    exist and none is queued or running; returns their rows. Raises after `timeout` s."""
    deadline = time.time() + timeout
    while True:
        rows = jobs(watch, prefix)
        if len(rows) >= expected and all(r["status"] in DONE for r in rows):
            return rows
        if time.time() > deadline:
            states = {}
            for r in rows:
                states[r["status"]] = states.get(r["status"], 0) + 1
            raise RuntimeError(f"{mode}: {prefix}* jobs not done after {timeout} s: {len(rows)} of {expected} exist, by status {states}; see {', '.join(mode_logs)}")
        time.sleep(poll)



def check_jobs(rows, expected, mode, phase, pids):
    """Every job succeeded once, exactly `expected` of them, each with a model of its own,
    run by one of `pids`; raises (loudly) otherwise."""
    problems = []
    if len(rows) != expected:
        problems.append(f"{len(rows)} jobs, {expected} submitted")
    bad = [r for r in rows if r["status"] != "succeeded" or r["attempts"] != 1 or r["model_status"] != "successful"]
    for r in bad[:10]:
        problems.append(f"job {r['id']} ({r['project']}): status {r['status']}, attempts {r['attempts']}, model {r['model_status']}, error {r['error']!r}")
    if len(bad) > 10:
        problems.append(f"... and {len(bad) - 10} more such jobs")
    if len({r["model_id"] for r in rows}) != len(rows):
        problems.append("two jobs share a model")
    if len({r["project"] for r in rows}) != len(rows):
        problems.append("a project has more than one job")
    strangers = sorted({r["worker_pid"] for r in rows} - set(pids))
    if strangers:
        problems.append(f"jobs ran on pids {strangers}, none of this mode's pgmld processes {sorted(pids)}")
    if problems:
        raise RuntimeError(f"{mode} {phase}: a job did not run exactly once:\n  " + "\n  ".join(problems))


def per_worker(rows, pids):
    """{role: jobs it ran} over this mode's processes (those that ran none included)."""
    out = {role: 0 for role in pids.values()}
    for r in rows:
        role = pids.get(r["worker_pid"], f"pid {r['worker_pid']}")
        out[role] = out.get(role, 0) + 1
    return out


# --- measurements ------------------------------------------------------------------------------


def measure_latency(args, mode, conn, watch, prefix, count, model_dir):
    """`count` jobs one at a time, each waited for and followed by args.gap s of quiet."""
    out = []
    for i in range(1, count + 1):
        time.sleep(args.gap)
        project = f"{prefix}{i:04d}"
        t0 = time.time()
        submit(conn, project, model_dir)
        t1 = time.time()
        (r,) = wait_done(watch, project, 1, args.timeout, 0.02, mode)
        r.update(call_start=t0, call_end=t1)
        out.append(r)
    return out


def measure_throughput(args, mode, conn, watch, prefix, model_dir, m):
    """args.n jobs submitted back to back on conn, then waited for."""
    cpu0 = m.cpu_s()
    t0 = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
    c0 = time.time()
    for i in range(1, args.n + 1):
        submit(conn, f"{prefix}{i:04d}", model_dir)
    submitted = time.time() - c0
    rows = wait_done(watch, prefix, args.n, args.timeout, 0.25, mode)
    cpu1 = m.cpu_s()
    return {"first_submit": t0, "submit_s": submitted, "jobs": rows, "pgmld_cpu_s": {k: cpu1[k] - cpu0[k] for k in cpu0}}


def quantile(xs, q):
    """The q-quantile of xs (0 <= q <= 1), linear between the closest ranks (numpy's default)."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = q * (len(s) - 1)
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(res):
    """The figures of one mode's measurements (added to res)."""
    lat = res["latency"]["jobs"]
    ms = [1000 * (r["started_at"] - r["queued_at"]) for r in lat]
    after = [1000 * (r["started_at"] - r["call_end"]) for r in lat]
    call = [1000 * (r["call_end"] - r["call_start"]) for r in lat]
    tp = res["throughput"]
    rows = tp["jobs"]
    wall = max(r["finished_at"] for r in rows) - tp["first_submit"]
    run_s = [r["finished_at"] - r["started_at"] for r in rows]
    res["summary"] = {
        "latency_n": len(ms),
        "latency_p50_ms": quantile(ms, 0.5),
        "latency_p99_ms": quantile(ms, 0.99),
        "latency_max_ms": max(ms),
        "latency_min_ms": min(ms),
        "after_return_p50_ms": quantile(after, 0.5),
        "after_return_max_ms": max(after),
        "call_p50_ms": quantile(call, 0.5),
        "latency_per_worker": res["latency"]["per_worker"],
        "n": len(rows),
        "wall_s": wall,
        "jobs_per_s": len(rows) / wall,
        "submit_s": tp["submit_s"],
        "run_p50_s": quantile(run_s, 0.5),
        "queue_wait_p50_ms": 1000 * quantile([r["started_at"] - r["queued_at"] for r in rows], 0.5),
        "queue_wait_max_ms": 1000 * max(r["started_at"] - r["queued_at"] for r in rows),
        "per_worker": tp["per_worker"],
        "pgmld_cpu_s": sum(tp["pgmld_cpu_s"].values()),
    }
    return res["summary"]


def run_mode(args, workdir, mode, model_dir, rows):
    """Both measurements of one mode, in a fresh args.db; the processes stopped after."""
    fresh_bench_db(args, rows)
    m = Mode(args, workdir, mode)
    mode_logs[:] = m.logs()
    res = {"mode": mode, "version": m.front.version, "pids": {str(k): v for k, v in m.pids().items()}}
    try:
        pids = m.pids()
        with connect(args, m.front.port, host="127.0.0.1") as conn, connect(args, args.pg_port) as watch:
            # Not counted: the first job(s) after the start (new connections, first model load
            # of the process that runs them).
            if args.warmup:
                warm = measure_latency(args, mode, conn, watch, f"{mode}_warm_", args.warmup, model_dir)
                check_jobs(warm, args.warmup, mode, "warm-up", pids)
            lat, seen = watched_busy(args, lambda: measure_latency(args, mode, conn, watch, f"{mode}_lat_", args.m, model_dir))
            check_jobs(lat, args.m, mode, "latency", pids)
            res["latency"] = {"jobs": lat, "per_worker": per_worker(lat, pids), **seen_dict(seen)}
            tp, seen = watched_busy(args, lambda: measure_throughput(args, mode, conn, watch, f"{mode}_tp_", model_dir, m))
            check_jobs(tp["jobs"], args.n, mode, "throughput", pids)
            tp["per_worker"] = per_worker(tp["jobs"], pids)
            res["throughput"] = {**tp, **seen_dict(seen)}
    except BaseException:
        log(f"{mode}: logs in {', '.join(m.logs())}")
        raise
    finally:
        m.stop()
    res["finished"] = utc_now()
    return res


def watched_busy(args, measure):
    """benchlib.watched, with the other jobs seen right before and after the measurement
    added to those its Monitor sampled (every 5 s: a short measurement gets no sample)."""
    before = benchlib.busy()
    m, seen = watched(args, log, measure)
    seen.busy = sorted(set(seen.busy) | set(before) | set(benchlib.busy()))
    return m, seen


def seen_dict(seen):
    return {
        "load_before": seen.load_before[0],
        "load_after": seen.load_after[0],
        "load_max": seen.load_max,
        "busy": seen.busy,
        "machine_cpu_s": seen.machine_cpu_s,
        "elapsed_s": seen.elapsed_s,
        "waited_s": seen.waited_s,
    }


def not_measured_binary(bin_path):
    """benchlib.busy without the patterns that the measured binary's own path matches
    (target/debug/pgmld is no other engineer's job)."""
    own = tuple(p for p in BUSY_JOBS if p in bin_path)
    if not own:
        return
    keep = tuple(p for p in BUSY_JOBS if p not in own)
    default_busy = benchlib.busy
    benchlib.busy = lambda patterns=keep: default_busy(patterns)


def run(args):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally blocks stop what was started
    not_measured_binary(args.pgmld_bin)
    workdir = tempfile.mkdtemp(prefix="jobs-bench.")
    model_dir = os.path.join(workdir, "tiny-bert")
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "model", model_dir, "--tokenizer-dir", args.tokenizer_dir], stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"making the model failed:\n{r.stderr[-4000:]}")
    log(r.stderr.strip().splitlines()[-1])
    model = json.load(open(os.path.join(model_dir, "bench-model.json")))
    rows = reviews(args.source_csv)
    raw = {"command": args.command, "machine": machine(), "commit": git_commit(), "n": args.n, "m": args.m, "warmup": args.warmup, "gap_s": args.gap, "model": model, "results": {}}
    try:
        for mode in args.modes.split(","):
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
            log(f"{mode}: {args.warmup} warm-up + {args.m} latency jobs, then {args.n} throughput jobs")
            res = run_mode(args, workdir, mode, model_dir, rows)
            s = summarize(res)
            raw["results"][mode] = res
            raw["pg_version"] = direct(args, "SHOW server_version", db="postgres")
            save_raw(args, raw)
            log(
                f"{mode}: {s['jobs_per_s']:.2f} jobs/s ({s['n']} in {s['wall_s']:.1f} s), claim latency p50 {s['latency_p50_ms']:.0f} ms, "
                f"p99 {s['latency_p99_ms']:.0f} ms, max {s['latency_max_ms']:.0f} ms; jobs per process {s['per_worker']}"
            )
    except BaseException:
        log(f"kept {workdir} (logs, model); measurements so far in {args.raw or '(no --raw)'}")
        raise
    finally:
        if not args.keep_db:
            try:
                direct(args, f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)", db="postgres")
            except Exception as e:
                log(f"dropping {args.db}: {e}")
    report(args, raw)
    shutil.rmtree(workdir, ignore_errors=True)


def save_raw(args, raw):
    if args.raw:
        write_json_atomic(args.raw, raw, indent=1)


# --- the report --------------------------------------------------------------------------------


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def workers_cell(per):
    return ", ".join(f"{role} {n}" for role, n in per.items())


def report(args, raw):
    R = raw["results"]
    for res in R.values():
        if "summary" not in res:
            summarize(res)
    have = [m for m in MODES if m in R]
    S = {m: R[m]["summary"] for m in have}
    both = len(have) == 2
    L, Q = S.get("local"), S.get("queue")

    def row(label, key, fmt, rat=True):
        cells = [label] + [fmt.format(S[m][key]) for m in have]
        if both:
            cells.append(ratio(Q[key], L[key]) if rat else "")
        return cells

    n, m_ = raw["n"], raw["m"]
    rows = [
        row(f"**throughput, jobs/s** ({n} jobs, first submit → last finished_at)", "jobs_per_s", "**{:.2f}**"),
        row("wall s, first submit → last finished_at", "wall_s", "{:.1f}"),
        row(f"submit s ({n} calls with wait => false, one session)", "submit_s", "{:.1f}"),
        row("job run time p50 s (started_at → finished_at)", "run_p50_s", "{:.2f}"),
        row("queued_at → started_at p50 ms (throughput jobs)", "queue_wait_p50_ms", "{:,.0f}"),
        row("queued_at → started_at max ms (throughput jobs)", "queue_wait_max_ms", "{:,.0f}"),
        row("pgmld CPU s during throughput (all pgmld processes)", "pgmld_cpu_s", "{:.1f}"),
        row(f"**claim latency p50 ms** ({m_} jobs, queued_at → started_at)", "latency_p50_ms", "**{:.0f}**"),
        row("claim latency p99 ms", "latency_p99_ms", "{:.0f}"),
        row("claim latency max ms", "latency_max_ms", "{:.0f}"),
        row("claim latency min ms", "latency_min_ms", "{:.0f}"),
        row("pgml.tune(wait => false) call p50 ms (client)", "call_p50_ms", "{:.0f}"),
        row("started_at − call returned, p50 ms", "after_return_p50_ms", "{:.0f}", rat=False),
    ]
    tp_workers = [f"jobs run per process ({n} throughput jobs)"] + [workers_cell(S[m]["per_worker"]) for m in have] + ([""] if both else [])
    lat_workers = [f"jobs run per process ({m_} latency jobs)"] + [workers_cell(S[m]["latency_per_worker"]) for m in have] + ([""] if both else [])
    once = ["every job succeeded, attempts = 1, one model each"] + ["yes" for _ in have] + ([""] if both else [])
    heads = {"local": "local (1 pgmld, train_workers 2)", "queue": "queue (front-end + 2 workers)"}
    header = ["metric"] + [heads[m] for m in have] + (["queue / local"] if both else [])
    table = "\n".join(md_table(header, "l" + "r" * (len(header) - 1), rows + [tp_workers, lat_workers, once]))

    runs = ["| mode | measurement | load avg before → after (max) | machine CPU s | elapsed s | other jobs seen |", "|---|---|---|---:|---:|---|"]
    for mode in have:
        for what in ("latency", "throughput"):
            w = R[mode][what]
            runs.append(f"| {mode} | {what} | {w['load_before']:.2f} → {w['load_after']:.2f} ({w['load_max']:.2f}) | {w['machine_cpu_s']:.0f} | {w['elapsed_s']:.0f} | {', '.join(w['busy']) or '-'} |")
    busy_all = sorted({b for mode in have for what in ("latency", "throughput") for b in R[mode][what]["busy"]})
    load_note = ""
    if busy_all:
        load_note = f" Other engineers' jobs ran on the same cores during the run (seen: {', '.join(f'`{b}`' for b in busy_all)}); the last table says when."
    first = R[have[0]]
    model = raw["model"]
    now = R[have[-1]].get("finished") or utc_now()
    body = f"""`bench/jobs/run.sh` measures the `pgml.jobs` queue with tiny `pgml.tune` jobs, in two
modes one after the other in the same run, each in a database made fresh for it:

- **local**: one pgmld with `PGMLD_TRAIN_WORKERS=2 PGMLD_TRAIN_DEVICES=cpu
  PGMLD_TORCH_THREADS=2`: it runs its own clients' jobs on its two training threads,
  claiming a job directly in the calling session when a thread is free.
- **queue**: a front-end with `PGMLD_TRAIN_WORKERS=0` (trains nothing) and two `pgmld
  worker --devices cpu` processes (`PGMLD_TORCH_THREADS=1` each,
  `PGMLD_WORKER_DATABASES=<bench db>`, `PGMLD_RESUME_JOBS=false`, a data directory each),
  which claim the queued jobs. Two torch threads in all in both modes.

The job: `pgml.tune('<project>', task => 'text-classification', relation_name =>
'reviews', model_name => '<tiny BERT>', hyperparams => '{json.dumps(HYPERPARAMS)}',
test_size => {TEST_SIZE}, automatic_deploy => false, wait => false)`, each with a project of its
own, over a table of {ROWS} IMDB reviews (balanced). The model is a `BertForSequenceClassification`
with random weights (hidden 32, 1 layer, 2 heads, intermediate 64, {model['parameters']:,}
parameters, {model['safetensors_bytes'] / 1e6:.1f} MB of safetensors, most of it the
{model['vocab_size']:,}-token embedding of MiniLM's tokenizer, whose files it carries), made by
`bench.py model` for the run. So a job is one optimizer step of batch 8 at 32 tokens plus an
evaluation of 16 rows: what is measured is the queue and a job's fixed costs, not training.

- **Throughput**: {n} jobs submitted back to back from one session (psycopg through the
  client-facing pgmld), then waited for by polling `pgml.jobs` directly on Postgres;
  jobs/s = {n} / (the last `finished_at` − the database clock right before the first
  submit). Every job must have succeeded with `attempts = 1`, with a model of its own, on
  one of the mode's processes, and there must be exactly {n}: the run fails otherwise.
- **Claim latency**: {raw.get('warmup', 0)} warm-up job(s) (not counted), then {m_} jobs
  submitted one at a time, each waited for and followed by {raw.get('gap_s', 0):g} s of quiet,
  so that both training threads are idle at every submit; latency = `started_at −
  queued_at` of `pgml.jobs` (both the database clock). p99 interpolates between the
  closest ranks; with {m_} jobs it sits near the maximum. "started_at − call returned"
  compares `started_at` with the client's clock when `pgml.tune(..., wait => false)`
  returned (same machine, same clock).

Run: {now}, {raw['machine']}; PostgreSQL {raw.get('pg_version', '?')} on the same machine;
{first['version']}, commit {raw['commit']}.{load_note}

```sh
{raw['command']}
```

{table}

Ratios are queue ÷ local. Load and other jobs during each measurement:

{chr(10).join(runs)}
"""
    print(table)
    print()
    print("\n".join(runs))
    write_report(SECTION, body, args.out, args.doc, args.notes, log)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("model", help="make the tiny BERT classifier the jobs fine-tune")
    p.add_argument("out")
    p.add_argument("--tokenizer-dir", required=True, help="MiniLM's model directory: tokenizer files and vocab_size")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run")
    p.add_argument("--source-csv", required=True)
    p.add_argument("--tokenizer-dir", required=True)
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--client-path", default="", help="where psycopg 3 is (.deps/python)")
    p.add_argument("--modes", default="local,queue")
    p.add_argument("--n", type=int, default=200, help="throughput jobs per mode")
    p.add_argument("--m", type=int, default=40, help="latency jobs per mode")
    p.add_argument("--warmup", type=int, default=1, help="jobs before the latency ones, not counted")
    p.add_argument("--gap", type=float, default=0.5, help="seconds between a latency job's end and the next submit")
    p.add_argument("--timeout", type=int, default=3600, help="seconds a phase's jobs may take to end")
    p.add_argument("--keep-db", action="store_true", help="leave --db in place at the end")
    add_run_args(p, db="jobs_bench", command="bench/jobs/run.sh", max_load=1.5, threads=False)
    add_report_parser(sub, pg=False)
    a = ap.parse_args()
    if a.cmd == "model":
        make_model(a.out, a.tokenizer_dir, a.seed)
    elif a.cmd == "report":
        report(a, json.load(open(a.raw)))
    else:
        if a.client_path:
            sys.path.append(a.client_path)
        a.pgmld_bin = os.path.abspath(a.pgmld_bin)
        run(a)


if __name__ == "__main__":
    main()
