#!/usr/bin/env python3
"""pgmld ÷ pgbouncer per cell from run.sh's report, with a 95 % confidence interval.

    python3 bench/pgbench/ratios.py bench/pgbench/results.md [more reports of the same cells]

run.sh runs pgbouncer and pgmld next to each other in every round, so each round gives one
paired ratio; on a shared 2-CPU machine single rounds of one cell vary by ±20 % while the
pair moves together. Per cell this prints the geometric mean of the per-round ratios (TPS
and p99) and a bootstrap 95 % interval of it (10,000 resamples of the rounds, seeded, so
the same report prints the same figures). Several reports of the same cells are pooled.
"""

import math
import random
import re
import statistics
import sys

LINE = re.compile(r"^- (\d+) clients, (\w+), (\w+): TPS([\d. ]+); p99([\d. ]+)$")


def rounds(paths):
    """{(clients, mode): [((pgmld tps, p99), (pgbouncer tps, p99)) per round]} over all reports."""
    cells = {}
    for path in paths:
        per_report = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = LINE.match(line.strip())
                if not m:
                    continue
                clients, mode, target = int(m[1]), m[2], m[3]
                tps = [float(x) for x in m[4].split()]
                p99 = [float(x) for x in m[5].split()]
                per_report.setdefault((clients, mode), {})[target] = list(zip(tps, p99))
        for cell, targets in per_report.items():
            # Rounds pair up only within one report: a cell missing a target is left out.
            if "pgbouncer" in targets and "pgmld" in targets:
                pairs = cells.setdefault(cell, [])
                pairs.extend(zip(targets["pgmld"], targets["pgbouncer"]))
    return cells


def interval(logs, rng, resamples=10_000):
    """Geometric mean of exp(logs) and its bootstrap 95 % interval."""
    means = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(resamples))
    lo, hi = means[int(resamples * 0.025)], means[int(resamples * 0.975) - 1]
    return math.exp(statistics.fmean(logs)), math.exp(lo), math.exp(hi)


def main(paths):
    cells = rounds(paths)
    if not cells:
        sys.exit(f"no per-round lines with both pgbouncer and pgmld in {', '.join(paths)} (ROUNDS > 1?)")
    rng = random.Random(20261207)
    print("| clients | mode | rounds | TPS pgmld ÷ pgbouncer [95 % CI] | p99 pgmld ÷ pgbouncer [95 % CI] |")
    print("|---:|---|---:|---|---|")
    for (clients, mode), pairs in sorted(cells.items()):
        tps = [math.log(m[0] / b[0]) for m, b in pairs if m[0] > 0 and b[0] > 0]
        p99 = [math.log(m[1] / b[1]) for m, b in pairs if m[1] > 0 and b[1] > 0]
        row = [str(clients), mode, str(len(pairs))]
        for logs in (tps, p99):
            if logs:
                g, lo, hi = interval(logs, rng)
                row.append(f"{g:.3f} [{lo:.3f}–{hi:.3f}]")
            else:
                row.append("n/a")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
