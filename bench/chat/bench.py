#!/usr/bin/env python3
"""LoRA fine-tuning and chat generation on CPU: pgmld (SQL) against Hugging Face
transformers + peft, the same GGUF model, data and settings, in one run.

Driven by bench/chat/run.sh, which installs the Python side into .deps/bench, builds the CUDA
stand-ins that let Python import the lean torch of .deps/libtorch (bench/tune/bench.py stubs)
and sets PYTHONPATH / LD_LIBRARY_PATH. Subcommands:

  rows OUT_CSV [--dataset J] [--rows N]   the conversation rows (system,user,assistant)
  hf-train | hf-generate --settings S ...  one Hugging Face workload in its own process (JSON out)
  run [options]                            the whole comparison; prints and writes the report
  report RAW                               the report again from a run's raw JSON

Workloads (both sides, SmolLM2-135M-Instruct from the same Q4_1 GGUF file, dequantised to f32,
THREADS torch threads):
  train     LoRA (r 8, alpha 16, dropout 0.05, q_proj + v_proj, bias none) on chitchat pairs
            under a fixed system prompt, chat template, loss on the replies only, max_seq_length
            256, batch 8, STEPS steps over exactly STEPS x 8 rows (one epoch, so both sides see
            the same tokens whatever their batch order), AdamW (adamw_torch) lr 2e-4 linear, seed
            42; then eval_loss on 16 more rows. Tokens/s = real (unpadded) tokens of the training
            batches / train_runtime.
  generate  greedy (do_sample false) completion of one fixed chat prompt, max_new_tokens
            MAX_NEW_TOKENS, after one 8-token warm-up call; GEN_REPS timed calls, median.
"""

import time

T_PROCESS = time.perf_counter()

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import data  # noqa: E402
from benchlib import (  # noqa: E402
    ROOT,
    add_report_parser,
    add_run_args,
    git_commit,
    logger,
    machine,
    run_json,
    thread_env,
    utc_now,
    watched,
    write_json_atomic,
)

SIDES = ("hf_train", "pgmld_train", "hf_generate", "pgmld_generate", "pgmld_generate_int8")
SETTINGS = {
    "batch_size": 8,
    "max_steps": 16,
    "eval_rows": 16,
    "max_seq_length": 256,
    "learning_rate": 2e-4,
    "optim": "adamw_torch",
    "bf16": False,  # bfloat16 autocast on both sides (--bf16)
    "max_grad_norm": 1.0,
    "seed": 42,
    "logging_steps": 4,
    "end_of_turn": "<|im_end|>",
    "lora_config": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM", "target_modules": ["q_proj", "v_proj"]},
    "max_new_tokens": 128,
    "warmup_tokens": 8,
    "reps": 3,
    "prompt": [
        {"role": "system", "content": data.SYSTEM_PROMPT},
        {"role": "user", "content": "Write a detailed story about a lighthouse keeper who befriends a whale."},
    ],
}


log = logger("chat-bench")


def settings_for(a):
    """SETTINGS with the command line's overrides."""
    s = copy.deepcopy(SETTINGS)
    for key, value in (("max_steps", a.steps), ("batch_size", a.batch_size), ("max_new_tokens", a.max_new_tokens), ("reps", a.gen_reps)):
        if value:
            s[key] = value
    s["bf16"] = bool(getattr(a, "bf16", False))
    return s


def n_rows(s):
    return s["batch_size"] * s["max_steps"] + s["eval_rows"]


def loadavg():
    """`uptime`'s three load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def measure_hf(a, side, s, workdir, rows_csv, env):
    """Runs `bench.py hf-train|hf-generate` in a fresh Python process; returns its JSON."""
    settings_file = os.path.join(workdir, "settings.json")
    with open(settings_file, "w") as f:
        json.dump(s, f)
    res, logf = os.path.join(workdir, f"{side}.json"), os.path.join(workdir, f"{side}.log")
    cmd = [sys.executable, os.path.abspath(__file__), side.replace("_", "-"), "--settings", settings_file, "--rows-csv", rows_csv, "--model", a.model, "--threads", str(a.threads), "--workdir", workdir, "--result", res]
    m, wall = run_json(cmd, logf, res, env, side)
    m["wall_s"] = wall
    m["process_cpu_s"] = m["cpu_s"]
    return m


def measure(a, side, s, workdir, rows_csv, env):
    """One measurement after waiting for a quiet machine, with the load averages before and
    after and the CPU other processes took meanwhile."""
    import pgmld_side

    def one():
        if side == "pgmld_train":
            m = pgmld_side.train(a, s, workdir, rows_csv, env)
            m["process_cpu_s"] = m["cpu_s"]
        elif side.startswith("pgmld_generate"):
            m = pgmld_side.generate(a, s, workdir, env, load_in_8bit=side.endswith("_int8"))
            m["process_cpu_s"] = m["cpu_s"]
        else:
            m = measure_hf(a, side, s, workdir, rows_csv, env)
        return m

    m, w = watched(a, log, one)
    if side.startswith("pgmld_generate"):
        count_completion_tokens(a, m, workdir, env)
    la0 = [round(x, 2) for x in w.load_before]
    m.update(load_before=la0, load_after=loadavg(), load_max=max(w.loads, default=os.getloadavg()[0]), busy=w.busy, waited_s=w.waited_s)
    m["other_cpu_s"] = max(0.0, w.machine_cpu_s - m["process_cpu_s"])
    m["finished"] = utc_now()
    m["pgmld_commit"] = git_commit()
    return m


def count_completion_tokens(a, m, workdir, env):
    """When pgml.transform reports no token counts, counts the returned text's tokens with the
    same (HF, GGUF) tokenizer, in a separate process after the measurement."""
    if all(c.get("completion_tokens") for c in m["calls"]):
        return
    texts = os.path.join(workdir, "texts.json")
    with open(texts, "w") as f:
        json.dump([m["text"]], f)
    res = os.path.join(workdir, "counts.json")
    cmd = [sys.executable, os.path.abspath(__file__), "hf-count", "--texts", texts, "--model", a.model, "--result", res]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"hf-count failed: {r.stderr[-3000:]}")
    (n,) = json.load(open(res))
    m["counted_tokens"] = n
    for c in m["calls"]:
        c["completion_tokens"] = c.get("completion_tokens") or n


def run(a):
    import report

    s = settings_for(a)
    workdir = tempfile.mkdtemp(prefix="chat-bench.")
    rows_csv = os.path.join(workdir, "rows.csv")
    data.write_csv(data.chitchat_pairs(a.dataset, n_rows(s)), rows_csv)
    env = thread_env(a.threads, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    sides = [x for x in a.sides.split(",") if x]
    unknown = set(sides) - set(SIDES)
    if unknown:
        sys.exit(f"unknown sides {sorted(unknown)}; known: {', '.join(SIDES)}")
    results = {x: [] for x in sides}
    raw = {"settings": s, "threads": a.threads, "command": a.command, "model": a.model, "machine": machine(), "results": results}
    try:
        for rep in range(a.reps):
            for side in sides if rep % 2 == 0 else sides[::-1]:
                m = measure(a, side, s, workdir, rows_csv, env)
                m["rep"] = rep + 1
                results[side].append(m)
                log(f"rep {rep + 1} {side}: {report.summary(side, m)}")
                save_raw(a, raw)
    except BaseException:
        log(f"kept {workdir} (logs); measurements so far in {a.raw or '(no --raw)'}")
        raise
    report.write(a, raw)
    shutil.rmtree(workdir, ignore_errors=True)


def save_raw(a, raw):
    """Every measurement, for `bench.py report`."""
    if a.raw:
        write_json_atomic(a.raw, raw, indent=1)


def merge_raw(paths):
    """One raw record out of several runs' (e.g. the HF sides and the pgmld sides measured
    apart): their measurements side by side; the settings must be the same."""
    raws = [json.load(open(p)) for p in paths]
    merged = copy.deepcopy(raws[0])
    for p, r in zip(paths[1:], raws[1:]):
        if r["settings"] != merged["settings"] or r["threads"] != merged["threads"]:
            sys.exit(f"{p} was measured with other settings than {paths[0]}")
        for side, runs in r["results"].items():
            merged["results"].setdefault(side, []).extend(runs)
        merged["command"] += "\n" + r["command"]
    return merged


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("rows")
    p.add_argument("out_csv")
    p.add_argument("--dataset", default=os.path.join(ROOT, ".deps/data/chitchat_dataset/dataset.json"))
    p.add_argument("--rows", type=int, default=n_rows(SETTINGS))
    for name in ("hf-train", "hf-generate"):
        p = sub.add_parser(name)
        p.add_argument("--settings", required=True)
        p.add_argument("--rows-csv", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--workdir", required=True)
        p.add_argument("--result", required=True)
    p = sub.add_parser("hf-count", help="token counts of texts (JSON list) with the GGUF's tokenizer")
    p.add_argument("--texts", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--result", required=True)
    p = sub.add_parser("run")
    p.add_argument("--model", required=True, help="the GGUF file both sides load")
    p.add_argument("--dataset", required=True, help="chitchat dataset.json")
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--client-path", default="", help="where psycopg 3 is (.deps/python)")
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=0)
    p.add_argument("--gen-reps", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast on both sides")
    add_run_args(p, db="chat_bench", command="bench/chat/run.sh", max_load=1.0)
    add_report_parser(sub, help="write the report again from runs' --raw files (sides merged)", nargs="+", pg=False)
    a = ap.parse_args()
    if a.cmd == "rows":
        data.write_csv(data.chitchat_pairs(a.dataset, a.rows), a.out_csv)
    elif a.cmd == "hf-count":
        import hf_side

        with open(a.texts) as f:
            counts = hf_side.count_tokens(a.model, json.load(f))
        with open(a.result, "w") as f:
            json.dump(counts, f)
    elif a.cmd in ("hf-train", "hf-generate"):
        import hf_side

        with open(a.settings) as f:
            s = json.load(f)
        hf_side.main(a, s, lambda: data.read_csv(a.rows_csv))
    elif a.cmd == "report":
        import report

        report.write(a, merge_raw(a.raw))
    else:
        if a.client_path:
            sys.path.append(a.client_path)
        run(a)


if __name__ == "__main__":
    main()
