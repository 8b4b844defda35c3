#!/usr/bin/env python3
"""Accuracy over seeds: pgml.tune (pgmld) against transformers.Trainer, the same fine-tune
with the same seeds, interleaved (hf s1, pgmld s1, pgmld s2, hf s2, ...).

Run by bench/tune/run.sh when SEEDS is set (it installs the Python side and sets
PYTHONPATH / LD_LIBRARY_PATH). One seed changes the fresh head's draw, the batch order and
the dropout masks on each side; the two sides draw them with different generators, so a
seed pairs runs but does not make them equal: the comparison is of the means.

Workloads (MiniLM-L6 with a fresh head, max_length 128, batch 16, eval batch 32, lr 1e-4,
linear schedule with 10 % warmup, weight decay 0.01: bench.py's settings):
  imdb       bench.py's IMDB setup: 2,000 balanced reviews train, the next 500 evaluate,
             1 epoch (2 classes)
  chitchat9  chitchat-dataset's conversations, labelled with the prompt that started them,
             for the 9 prompts with the most conversations: 110 per prompt train and 40
             evaluate (990 / 360, classes interleaved), 2 epochs (9 classes)
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from benchlib import logger, machine, thread_env, utc_now, watched, write_csv_atomic, write_json_atomic, write_report  # noqa: E402

log = logger("tune-seeds")
SECTION = "## pgml.tune vs Hugging Face Trainer: accuracy over seeds (CPU)"


def prepare_imdb(args, out_csv):
    bench.prepare(args.source_csv, out_csv)
    return (bench.TRAIN_ROWS, bench.TEST_ROWS), 1


def prepare_chitchat9(args, out_csv, train_per_class=110, test_per_class=40):
    """Conversations (every message, in order, one per line) labelled by their prompt."""
    with open(args.chitchat_json) as f:
        convs = json.load(f)
    by_prompt = collections.defaultdict(list)
    for cid in sorted(convs):
        c = convs[cid]
        if c.get("prompt"):
            text = "\n".join(m["text"] for turn in c["messages"] for m in turn)
            by_prompt[c["prompt"]].append(text)
    prompts = sorted(by_prompt, key=lambda p: (-len(by_prompt[p]), p))[:9]
    train, test = [], []
    for i in range(train_per_class + test_per_class):
        part = train if i < train_per_class else test
        part += [(by_prompt[p][i], p) for p in prompts]
    write_csv_atomic(out_csv, ["text", "class"], train + test)
    return (len(train), len(test)), 2


WORKLOADS = {"imdb": prepare_imdb, "chitchat9": prepare_chitchat9}


def run(args):
    workdir = tempfile.mkdtemp(prefix="tune-seeds.")
    env = thread_env(args.threads)
    raw = {"command": args.command, "machine": machine(), "threads": args.threads, "workloads": {}}
    for name in args.workloads.split(","):
        data_csv = os.path.join(workdir, f"{name}.csv")
        rows, epochs = WORKLOADS[name](args, data_csv)
        results = raw["workloads"][name] = {"rows": rows, "epochs": epochs, "hf": [], "pgmld": []}
        for i, seed in enumerate(args.seeds):
            for who in ["hf", "pgmld"] if i % 2 == 0 else ["pgmld", "hf"]:
                measure = bench.measure_hf if who == "hf" else bench.measure_pgmld
                m, _ = watched(args, log, lambda: measure(args, workdir, data_csv, env, seed=seed, rows=rows, epochs=epochs))
                keep = {k: m.get(k) for k in ("eval_accuracy", "eval_f1", "eval_loss", "train_loss", "train_runtime", "global_step")}
                keep.update(seed=seed, finished=utc_now())
                results[who].append(keep)
                log(f"{name} seed {seed} {who}: acc {keep['eval_accuracy']:.4f}, f1 {keep['eval_f1']:.4f}, train loss {keep['train_loss']:.4f}")
                if args.raw:
                    write_json_atomic(args.raw, raw, indent=1)
    report(args, raw)


def stats(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def report(args, raw):
    lines = []
    lines.append(f"Command: `{raw['command']}`; {raw['machine']}; {raw['threads']} threads per side.")
    lines.append("")
    lines.append("| workload | metric | HF Trainer mean ± sd | pgmld mean ± sd | pgmld − HF (points) |")
    lines.append("|---|---|---|---|---|")
    tables = []
    for name, w in raw["workloads"].items():
        for metric in ("eval_accuracy", "eval_f1"):
            h = [r[metric] for r in w["hf"]]
            p = [r[metric] for r in w["pgmld"]]
            if not h or not p:
                continue
            (hm, hs), (pm, ps) = stats(h), stats(p)
            label = "accuracy" if metric == "eval_accuracy" else "macro F1"
            lines.append(f"| {name} | {label} | {hm:.4f} ± {hs:.4f} | {pm:.4f} ± {ps:.4f} | {100 * (pm - hm):+.2f} |")
        t = [f"**{name}** ({w['rows'][0]} train / {w['rows'][1]} eval rows, {w['epochs']} epoch(s)), per seed:", ""]
        t.append("| seed | HF accuracy | pgmld accuracy | HF macro F1 | pgmld macro F1 | HF train loss | pgmld train loss |")
        t.append("|---|---|---|---|---|---|---|")
        by_seed = {r["seed"]: r for r in w["pgmld"]}
        for r in w["hf"]:
            q = by_seed.get(r["seed"])
            if q:
                t.append(
                    f"| {r['seed']} | {r['eval_accuracy']:.4f} | {q['eval_accuracy']:.4f} | {r['eval_f1']:.4f} | "
                    f"{q['eval_f1']:.4f} | {r['train_loss']:.4f} | {q['train_loss']:.4f} |"
                )
        tables += t + [""]
    text = "\n".join(lines + [""] + tables)
    print(text)
    write_report(SECTION, text, out=getattr(args, "out", ""), doc=args.doc, notes=getattr(args, "notes", ""), log=log)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--source-csv", required=True)
    p.add_argument("--chitchat-json", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3, 4, 5])
    p.add_argument("--workloads", default="imdb,chitchat9")
    bench.add_run_args(p, db="tune_bench", command="SEEDS=1,2,3,4,5 bench/tune/run.sh", max_load=1.5)
    p = sub.add_parser("report")
    p.add_argument("raw")
    p.add_argument("--out", default="")
    p.add_argument("--doc", default="")
    p.add_argument("--notes", default="")
    a = ap.parse_args()
    if a.cmd == "report":
        with open(a.raw) as f:
            report(a, json.load(f))
    else:
        run(a)


if __name__ == "__main__":
    main()
