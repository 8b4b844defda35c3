"""bench/tune/gpu's table from results.jsonl: per option, pgmld's and HF's train samples/s
(every run, then the ratio of the medians), eval accuracy and peak GPU memory (the
cuda_graphs options are pgmld alone, set against HF's fp32 / bf16 runs); the plugins and
their GPU tests; the eager and graphed loss curves without dropout; and the world_size-1
group run (issue #16).

    python3 report.py results.jsonl
"""

import json
import statistics
import sys


def samples_per_second(d):
    """The trainer's own figure: tune_check nests it under "train", hf_gpu.py does not."""
    return (d.get("train") or d).get("train_samples_per_second")


def accuracy(d):
    return (d.get("eval") or d).get("eval_accuracy")


# The HF run a pgmld-only option is compared with.
HF_OPTION = {"graphs": "fp32", "bf16graphs": "bf16"}


def graphs(d):
    """tune_check's cuda_graphs stats as "staged/captured/replays", or "-"."""
    g = d.get("cuda_graphs")
    return f"{g['staged_steps']}/{g['captured']}/{g['replays']}" if g else "-"


def table(lines):
    runs = [d for d in lines if d.get("side") in ("pgmld", "hf")]
    options = list(dict.fromkeys(d["option"] for d in runs))
    out = [
        "| option | pgmld samples/s | HF Trainer samples/s | pgmld / HF (medians) | eval accuracy pgmld / HF | peak GPU MiB pgmld / HF | graphs: staged/captured/replays |",
        "|---|---|---|---:|---|---|---|",
    ]
    for opt in options:
        cells = {}
        for side in ("pgmld", "hf"):
            want = HF_OPTION.get(opt, opt) if side == "hf" else opt
            ok = [d for d in runs if d["option"] == want and d["side"] == side and d.get("rc") == 0]
            sps = [samples_per_second(d) for d in ok if samples_per_second(d)]
            cells[side] = (
                sps,
                [accuracy(d) for d in ok if accuracy(d) is not None],
                [d.get("gpu_peak_used_mib", 0) for d in ok],
            )
        (ps, pa, pm), (hs, ha, hm) = cells["pgmld"], cells["hf"]
        ratio = f"{statistics.median(ps) / statistics.median(hs):.2f}x" if ps and hs else "-"
        fmt = lambda xs, f: ", ".join(f.format(x) for x in xs) or "-"
        g = ", ".join(graphs(d) for d in runs if d["option"] == opt and d["side"] == "pgmld" and d.get("rc") == 0) or "-"
        out.append(
            f"| {opt} | {fmt(ps, '{:.0f}')} | {fmt(hs, '{:.0f}')} | {ratio} | "
            f"{fmt(pa, '{:.3f}')} / {fmt(ha, '{:.3f}')} | {fmt(pm, '{}')} / {fmt(hm, '{}')} | {g} |"
        )
    return out


def curves(lines):
    """Without dropout the eager and the graphed run see the same batches and masks: their
    logged losses (every 10 steps) and final metrics should agree to rounding."""
    runs = {d.get("option"): d for d in lines if d.get("side") == "curve"}
    eager, graphed = runs.get("nodrop"), runs.get("nodrop graphs")
    if not eager or not graphed:
        return []
    a, b = eager.get("losses") or [], graphed.get("losses") or []
    worst = max((abs(x - y) / max(abs(x), 1e-3) for x, y in zip(a, b)), default=float("nan"))
    acc = lambda d: (d.get("eval") or {}).get("eval_accuracy")
    return [
        f"- no dropout, eager vs cuda_graphs (rc {eager.get('rc')} / {graphed.get('rc')}; graphs {graphs(graphed)}): "
        f"{len(a)} / {len(b)} logged losses, largest relative difference {worst:.2e}; "
        f"eval accuracy {acc(eager)} / {acc(graphed)}; samples/s {samples_per_second(eager) or 0:.0f} / {samples_per_second(graphed) or 0:.0f}"
    ]


def plugins(lines):
    out = []
    for d in lines:
        if d.get("side") != "plugins":
            continue
        if "built" in d:
            out.append(f"- plugin {d.get('run')} built: {d.get('built')} ({d.get('bytes', 0)} bytes)")
        else:
            out.append(
                f"- {d.get('run')}: rc {d.get('rc')}, {d.get('passed')} passed, {d.get('failed')} failed"
                + (f"; {d['line']}" if d.get("line") else "")
            )
    return out


def group(lines):
    """The group-of-one run beside the first plain fp32 run: same data, seed and global batch,
    so the losses should agree (an all-reduce over one rank changes nothing)."""
    plain = next((d for d in lines if d.get("side") == "pgmld" and d.get("option") == "fp32" and d.get("rc") == 0), None)
    out = []
    for d in lines:
        if d.get("side") != "group":
            continue
        if d.get("skipped"):
            continue
        loss = (d.get("train") or {}).get("train_loss")
        base = ((plain or {}).get("train") or {}).get("train_loss")
        out.append(
            f"- world_size-1 group ({d.get('group') or 'not formed'}): rc {d.get('rc')}, "
            f"{samples_per_second(d) or 0:.0f} samples/s, eval accuracy {accuracy(d)}, train_loss {loss}"
            + (f" (plain fp32 run: {base})" if base is not None else "")
        )
    return out


def main():
    with open(sys.argv[1]) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    skipped = [d["run"] for d in lines if d.get("skipped")]
    failed = [d["run"] for d in lines if d.get("side") in ("pgmld", "hf") and d.get("rc") != 0]
    print("\n".join(table(lines) + [""] + plugins(lines) + curves(lines) + group(lines)))
    if skipped:
        print(f"- skipped (time budget): {', '.join(skipped)}")
    if failed:
        print(f"- failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
