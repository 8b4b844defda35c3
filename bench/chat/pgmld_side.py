"""The pgmld side of bench/chat, through SQL against a fresh release pgmld per measurement
(so VmHWM, the peak RSS of the whole daemon, is that workload's own).

- train: `SELECT * FROM pgml.tune(..., task => 'conversation', ...)` with psql over a fresh
  database holding the same rows; figures from `pgml.models.metrics` and `pgml.logs`.
- generate: `pgml.transform(task => '{"task": "conversational", ...}', inputs =>
  ARRAY[...]::jsonb[], args => '{"max_new_tokens": N, "return_usage": true}')` on one psycopg
  connection: one short warm-up call (loads the model), then the timed calls, each seen from
  the client."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import Pgmld, ensure_db, fresh_db, lit, measure_call, proc_cpu_s, proc_status  # noqa: E402

TABLE = "chat_pairs"
# The guide's column names (dataset_args maps them), so the bench also runs the guide's shape.
TABLE_COLUMNS = ("instruction", "input", "output")


def tune_hyperparams(settings):
    """pgml.tune's hyperparams for the same workload as the HF side (bench.py TRAIN)."""
    return {
        "training_args": {
            "learning_rate": settings["learning_rate"],
            "per_device_train_batch_size": settings["batch_size"],
            "per_device_eval_batch_size": settings["batch_size"],
            "max_steps": settings["max_steps"],
            "num_train_epochs": 1,
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "lr_scheduler_type": "linear",
            "optim": settings["optim"],
            "bf16": settings.get("bf16", False),
            "max_grad_norm": settings["max_grad_norm"],
            "logging_steps": settings["logging_steps"],
            "seed": settings["seed"],
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": False,
        },
        "dataset_args": dict(zip(("system_column", "user_column", "assistant_column"), TABLE_COLUMNS)),
        "lora_config": settings["lora_config"],
        "load_in_8bit": False,
        "max_seq_length": settings["max_seq_length"],
    }


def tune_sql(settings, model_path):
    """The pgml.tune call (guide-shaped: task, relation, model, test split, hyperparams)."""
    hp = json.dumps(tune_hyperparams(settings))
    return (
        f"SELECT * FROM pgml.tune('chat_bench', task => 'conversation', relation_name => '{TABLE}', "
        f"model_name => {lit(model_path)}, test_size => {settings['eval_rows']}, test_sampling => 'last', "
        f"hyperparams => {lit(hp)})"
    )


def first_number(metrics, *keys):
    """The first of `keys` present in the metrics (key names of pgml.tune's conversation
    metrics), with the key it came from; (None, None) when none is."""
    for k in keys:
        if isinstance(metrics.get(k), (int, float)):
            return metrics[k], k
    return None, None


def train(args, settings, workdir, rows_csv, env):
    """One pgml.tune conversation run on a fresh daemon; returns the measurements."""
    n_rows = settings["batch_size"] * settings["max_steps"] + settings["eval_rows"]
    # The guide's table shape: every column text NOT NULL.
    fresh_db(args, TABLE, ", ".join(c + " text NOT NULL" for c in TABLE_COLUMNS), rows_csv, n_rows)
    d = Pgmld(args, workdir, env)
    try:
        out, c = measure_call(d.proc.pid, lambda: d.psql(tune_sql(settings, args.model), check=False))
        row = out.splitlines()[-1].split("|") if out else []
        if not row or "successful" not in row:
            err = d.psql("SELECT logs FROM pgml.logs ORDER BY id DESC LIMIT 1", check=False)
            raise RuntimeError(f"pgml.tune did not succeed: {out[-2000:]!r}; last log: {err[-2000:]}; daemon log: {d.logf.name}")
        metrics = json.loads(d.psql("SELECT metrics FROM pgml.models ORDER BY id DESC LIMIT 1"))
        logs = [json.loads(x) for x in d.psql("SELECT logs FROM pgml.logs ORDER BY id").splitlines() if x]
        version = d.version
    finally:
        d.stop()
    runtime, _ = first_number(metrics, "train_runtime")
    tokens, tokens_key = first_number(metrics, "train_tokens", "tokens", "num_tokens", "train_num_tokens")
    tps, tps_key = first_number(metrics, "train_tokens_per_second", "tokens_per_second")
    return {
        "train_runtime": runtime,
        "reported_train_tokens": tokens,
        "reported_tokens_key": tokens_key,
        "reported_tokens_per_second": tps,
        "reported_tps_key": tps_key,
        "eval_loss": metrics.get("eval_loss"),
        "train_loss": metrics.get("train_loss"),
        "global_step": metrics.get("global_step", metrics.get("step")),
        "adapter_bytes": metrics.get("adapter_bytes"),
        "trainable_params": metrics.get("trainable_params"),
        "loss_log": [x["loss"] for x in logs if isinstance(x, dict) and isinstance(x.get("loss"), (int, float))],
        "wall_s": c.wall_s,
        "cpu_s": c.cpu_s,
        "rss_before_mib": c.before["VmRSS"] / 1024,
        "peak_rss_mib": c.after["VmHWM"] / 1024,
        "version": version,
        "metrics": metrics,
    }


def completion_text(result):
    """The assistant's text out of pgml.transform's conversational result: PostgresML's JSON
    array holding the text, or pgmld's `{"outputs": [...], "usage": {...}}` (args
    `return_usage`)."""
    r = result
    if isinstance(r, dict) and "outputs" in r:
        return completion_text(r["outputs"])
    while isinstance(r, list) and r:
        r = r[0]
    if isinstance(r, str):
        return r
    if isinstance(r, dict):
        for k in ("generated_text", "text", "content"):
            if isinstance(r.get(k), str):
                return r[k]
    raise ValueError(f"no text in pgml.transform's result {json.dumps(result)[:300]}")


def reported_usage(result):
    """completion_tokens when pgml.transform reports usage in its result (pgmld does with
    `"return_usage": true` in args), else None."""
    if isinstance(result, dict):
        usage = result.get("usage") or {}
        if isinstance(usage.get("completion_tokens"), int):
            return usage["completion_tokens"]
    return None


def generate(args, settings, workdir, env, load_in_8bit=False):
    """Warm-up + timed greedy generations through pgml.transform on a fresh daemon; with
    `load_in_8bit` the task asks for int8 weights (int8 kernels on the CPU)."""
    import psycopg
    from psycopg.types.json import Jsonb

    task = {"task": "conversational", "model": args.model}
    if load_in_8bit:
        task["load_in_8bit"] = True
    task = Jsonb(task)
    inputs = [Jsonb(m) for m in settings["prompt"]]
    sql = "SELECT pgml.transform(task => %s::jsonb, inputs => %s::jsonb[], args => %s::jsonb)"
    ensure_db(args)
    d = Pgmld(args, workdir, env)
    out = {"version": d.version}
    try:
        pid = d.proc.pid
        with psycopg.connect(host="127.0.0.1", port=d.port, user=args.pg_user, dbname=args.db, autocommit=True) as conn:
            time.sleep(1)
            out["rss_before_mib"] = proc_status(pid)["VmRSS"] / 1024
            t0 = time.perf_counter()
            conn.execute(sql, [task, inputs, Jsonb({"max_new_tokens": settings["warmup_tokens"]})]).fetchone()
            out["warmup_s"] = time.perf_counter() - t0
            out["rss_after_load_mib"] = proc_status(pid)["VmRSS"] / 1024
            calls = []
            c0 = proc_cpu_s(pid)
            for _ in range(settings["reps"]):
                t0 = time.perf_counter()
                (result,) = conn.execute(sql, [task, inputs, Jsonb({"max_new_tokens": settings["max_new_tokens"], "return_usage": True})]).fetchone()
                calls.append({"s": time.perf_counter() - t0, "completion_tokens": reported_usage(result)})
            out["calls_cpu_s"] = proc_cpu_s(pid) - c0
        out["result"] = result
        out["text"] = completion_text(result)
        out["calls"] = calls
        out["peak_rss_mib"] = proc_status(pid)["VmHWM"] / 1024
        out["cpu_s"] = proc_cpu_s(pid)
    finally:
        d.stop()
    return out
