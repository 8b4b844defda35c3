"""Tables from bench/chat/gpu/run.sh's results.jsonl: correctness, LoRA training (pgmld vs
HF, ratio of medians), greedy generation, peak GPU memory per process.

  python3 bench/chat/gpu/report.py results.jsonl [--out report.md]

Lines: "side" pgmld / hf (the measurements, keyed by "check" and "tag") and runner (one per
process: "run" = the tag, rc, wall_s, nvidia-smi's gpu_peak_used_mib and the baseline before
the process started)."""

import argparse
import json
import statistics


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    rows.append({"side": "runner", "unreadable": line[:80]})
    return rows


def fmt(x, digits=1):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
            return f"{x:.2e}"
        if abs(x) < 10:
            return f"{x:.3g}"
        return f"{x:.{digits}f}"
    return str(x)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "–"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return out


def peak_of(runner, tag):
    r = runner.get(tag)
    if not r or not r.get("gpu_peak_used_mib"):
        return None
    return float(r["gpu_peak_used_mib"])


def report(rows):
    runner = {r["run"]: r for r in rows if r.get("side") == "runner" and "run" in r}
    meas = [r for r in rows if r.get("side") in ("pgmld", "hf")]
    lines = []
    errors = [r for r in rows if "error" in r]
    failed = [r for r in runner.values() if r.get("rc") not in (0, None)]
    skipped = [r["run"] for r in runner.values() if r.get("skipped")]
    unreadable = sum(1 for r in rows if "unreadable" in r)
    lines.append(f"processes: {len(runner)}, failed: {len(failed)} {[r['run'] for r in failed]}, skipped: {skipped}, "
                 f"unreadable lines: {unreadable}")
    for e in errors:
        lines.append(f"ERROR {e.get('side')}: {e['error']}")

    lines += ["", "## Correctness (same random-weight model; reference: pgmld on the CPU, fp32)", ""]
    logit_rows = [[r["side"], r["device"], r["dtype"], r["max_abs_diff"], r["mean_abs_diff"], r["max_abs_logit"],
                   r["last_top1_agrees"], r.get("same_prompt_ids", "–")] for r in meas if r.get("check") == "logits"]
    lines += table(["side", "device", "dtype", "max abs Δlogit", "mean abs Δlogit", "max abs logit", "top-1 agrees",
                    "same prompt ids"], logit_rows)
    lines.append("")
    greedy_rows = [[r["side"], r["device"], r["dtype"], r["reference"], f"{r['same_prefix']}/{r['new_tokens']}",
                    f"{r['same_positions']}/{r['new_tokens']}"] for r in meas if r.get("check") == "greedy"]
    lines += table(["side", "device", "dtype", "vs", "same first tokens", "same positions"], greedy_rows)

    lines += ["", "## LoRA training (r 8, q/v, batch 8, max_seq_length 256, lr 2e-4)", ""]
    trains = [r for r in meas if r.get("check") == "train"]
    keys = sorted({(r["device"], r["option"]) for r in trains}, key=lambda k: (k[0] != "cuda", k[1]))
    body = []
    for dev, opt in keys:
        side = {s: [r for r in trains if r["device"] == dev and r["option"] == opt and r["side"] == s] for s in ("pgmld", "hf")}
        tps = {s: [r["train_tokens_per_second"] for r in v] for s, v in side.items()}
        steady = {s: [r.get("steady_steps_per_second") for r in v] for s, v in side.items()}
        mem = {s: [peak_of(runner, r["tag"]) for r in v] for s, v in side.items()}
        loss = {s: (f"{fmt(v[0].get('loss_first'), 3)}→{fmt(v[0].get('loss_last'), 3)}" if v else "–") for s, v in side.items()}
        body.append([dev, opt, ", ".join(fmt(x, 0) for x in tps["pgmld"]) or "–", ", ".join(fmt(x, 0) for x in tps["hf"]) or "–",
                     ratio(median(tps["pgmld"]), median(tps["hf"])), ratio(median(steady["pgmld"]), median(steady["hf"])),
                     loss["pgmld"], loss["hf"], fmt(median(mem["pgmld"]), 0), fmt(median(mem["hf"]), 0),
                     fmt(median([r.get("max_memory_allocated_mib") for r in side["hf"]]), 0),
                     "/".join(str(v[0]["train_tokens"]) if v else "–" for v in side.values())])
    lines += table(["device", "option", "pgmld tokens/s", "HF tokens/s", "pgmld/HF (medians)", "steady steps/s ratio",
                    "loss pgmld", "loss HF", "GPU peak MiB pgmld", "GPU peak MiB HF", "HF max_allocated MiB",
                    "train tokens pgmld/HF"], body)

    lines += ["", "## Greedy generation (KV cache, no stop ids)", ""]
    gens = [r for r in meas if r.get("check") == "generate"]
    body = []
    for dev, dt in sorted({(r["device"], r["dtype"]) for r in gens}, key=lambda k: (k[0] != "cuda", k[1])):
        g = {s: [r for r in gens if r["device"] == dev and r["dtype"] == dt and r["side"] == s] for s in ("pgmld", "hf")}
        tps = {s: median([r["tokens_per_second"] for r in v]) for s, v in g.items()}
        same = "–"
        if g["pgmld"] and g["hf"]:
            a, b = g["pgmld"][0]["tokens"], g["hf"][0]["tokens"]
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            same = f"{n}/{min(len(a), len(b))}"
        body.append([dev, dt, tps["pgmld"], tps["hf"], ratio(tps["pgmld"], tps["hf"]), same,
                     fmt(median([peak_of(runner, r["tag"]) for r in g["pgmld"]]), 0),
                     fmt(median([peak_of(runner, r["tag"]) for r in g["hf"]]), 0),
                     g["pgmld"][0]["new_tokens"] if g["pgmld"] else None])
    lines += table(["device", "dtype", "pgmld tok/s", "HF tok/s", "pgmld/HF", "same tokens pgmld vs HF",
                    "GPU peak MiB pgmld", "GPU peak MiB HF", "new tokens"], body)

    rss = {r["tag"]: r["peak_rss_mib"] for r in rows if r.get("side") == "rss"}
    lines += ["", "## Processes", ""]
    lines += table(["run", "rc", "wall s", "GPU baseline MiB", "GPU peak MiB", "peak RSS MiB (maxrss.py)"],
                   [[r["run"], r.get("rc"), r.get("wall_s"), r.get("gpu_baseline_mib"), r.get("gpu_peak_used_mib"),
                     rss.get(r["run"])]
                    for r in runner.values() if not r.get("skipped")])
    versions = next((r["versions"] for r in meas if r.get("versions")), None)
    if versions:
        lines += ["", f"HF side: {versions}"]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--out")
    a = p.parse_args()
    text = report(load(a.results))
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
