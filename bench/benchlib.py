"""Helpers the benchmark scripts share: psql calls, free ports, process CPU time, and
writing a benchmark's own section of docs/benchmarks.md."""

import os
import re
import socket
import subprocess


def psql(args, sql, db, port, check=True):
    """Runs `sql` with psql against `args.pg_host`:`port` as `args.pg_user`; returns stdout."""
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", args.pg_host, "-p", str(port), "-U", args.pg_user, "-d", db, "-c", sql]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql -p {port} failed: {r.stderr.strip()}\n{sql}")
    return r.stdout.strip()


def direct(args, sql, db=None):
    """psql straight to Postgres (not through pgmld)."""
    return psql(args, sql, db or args.db, args.pg_port)


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


def write_section(path, heading, section):
    """Replaces the section that starts with `heading` (up to the next `## `) or appends it
    at the end, leaving every other section as it is."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
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
