"""Unit tests of bench/benchlib.py (and bench/lib.sh's argument handling), without a database,
pgmld or the Python side's packages:  python3 bench/test_benchlib.py"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402


def tmpdir(test):
    d = tempfile.mkdtemp()
    test.addCleanup(subprocess.run, ["rm", "-rf", d])
    return d


class TableTest(unittest.TestCase):
    def test_mib_rounds_kb_to_whole_mib_with_separators(self):
        self.assertEqual(benchlib.mib(1024), "1")
        self.assertEqual(benchlib.mib(1536), "2")
        self.assertEqual(benchlib.mib(1_500_000), "1,465")

    def test_md_table_header_alignment_and_rows(self):
        lines = benchlib.md_table(["metric", "HF", "pgmld", "pgmld / HF"], "lrrr", [("a", "1.0", "2.0", "**2.00x**"), ("b", 3, 4.5, "")])
        self.assertEqual(
            lines,
            [
                "| metric | HF | pgmld | pgmld / HF |",
                "|---|---:|---:|---:|",
                "| a | 1.0 | 2.0 | **2.00x** |",
                "| b | 3 | 4.5 |  |",
            ],
        )

    def test_md_row_is_the_f_string_the_benches_wrote_before(self):
        a, b, c, d = "x", "1,465", "", "0.87x"
        self.assertEqual(benchlib.md_row((a, b, c, d)), f"| {a} | {b} | {c} | {d} |")


class ReportFileTest(unittest.TestCase):
    DOC = "# Benchmarks\n\n## One\n\none\n\n## Two\n\nold two\n\n## Three\n\nthree\n"

    def write(self, text):
        path = os.path.join(tmpdir(self), "doc.md")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_write_section_replaces_only_its_section(self):
        path = self.write(self.DOC)
        benchlib.write_section(path, "## Two", "## Two\n\nnew two\n")
        self.assertEqual(benchlib.read_text(path), "# Benchmarks\n\n## One\n\none\n\n## Two\n\nnew two\n\n## Three\n\nthree\n")

    def test_write_section_replaces_the_last_section_and_appends_a_new_one(self):
        path = self.write(self.DOC)
        benchlib.write_section(path, "## Three", "## Three\n\nnew three\n\n\n")
        benchlib.write_section(path, "## Four", "## Four\n\nfour")
        self.assertEqual(benchlib.read_text(path), "# Benchmarks\n\n## One\n\none\n\n## Two\n\nold two\n\n## Three\n\nnew three\n\n## Four\n\nfour\n")

    def test_write_section_starts_a_missing_file(self):
        path = os.path.join(tmpdir(self), "new.md")
        benchlib.write_section(path, "## X", "## X\n\nx\n")
        self.assertEqual(benchlib.read_text(path), "# Benchmarks\n\n## X\n\nx\n")

    def test_write_report_writes_the_page_and_the_section_with_notes(self):
        d = tmpdir(self)
        out, doc, notes = (os.path.join(d, n) for n in ("results.md", "doc.md", "notes.md"))
        with open(doc, "w") as f:
            f.write(self.DOC)
        with open(notes, "w") as f:
            f.write("\n### Notes\n\nwhy\n\n")
        logged = []
        benchlib.write_report("## Two", "body\n", out, doc, notes, logged.append)
        self.assertEqual(benchlib.read_text(out), "# Two\n\nbody\n")
        self.assertIn("## Two\n\nbody\n\n### Notes\n\nwhy\n\n## Three", benchlib.read_text(doc))
        self.assertEqual(logged, [f"wrote {out}", f"wrote section to {doc}"])

    def test_write_report_skips_empty_paths_and_missing_notes(self):
        d = tmpdir(self)
        doc = os.path.join(d, "doc.md")
        benchlib.write_report("## Two", "body\n", "", doc, os.path.join(d, "no-notes.md"))
        self.assertEqual(benchlib.read_text(doc), "# Benchmarks\n\n## Two\n\nbody\n")
        self.assertEqual(os.listdir(d), ["doc.md"])

    def test_write_json_atomic(self):
        path = os.path.join(tmpdir(self), "raw.json")
        benchlib.write_json_atomic(path, {"b": [1, 2], "a": "x"}, indent=1)
        self.assertEqual(benchlib.read_text(path), json.dumps({"b": [1, 2], "a": "x"}, indent=1))
        self.assertFalse(os.path.exists(path + ".tmp"))


class DataTest(unittest.TestCase):
    def test_csv_round_trip_with_huge_fields(self):
        path = os.path.join(tmpdir(self), "rows.csv")
        rows = [("1", 'say "hi", then\nleave'), ("2", "x" * 200_000)]
        benchlib.write_csv_atomic(path, ["id", "text"], rows)
        self.assertEqual(benchlib.read_csv_rows(path), [list(r) for r in rows])

    def test_imdb_by_class_keeps_imdb_rows_in_file_order_up_to_the_limit(self):
        path = os.path.join(tmpdir(self), "mr.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label", "source"])
            w.writerows([("n1<br />a", 0, "imdb"), ("other", 1, "rotten"), ("p1", 1, "imdb"), ("n2", 0, "imdb"), ("p2", 1, "imdb")])
        self.assertEqual(benchlib.imdb_by_class(path), (["n1 a", "n2"], ["p1", "p2"]))
        self.assertEqual(benchlib.imdb_by_class(path, limit=3), (["n1 a", "n2"], ["p1"]))

    def test_lit_doubles_quotes(self):
        self.assertEqual(benchlib.lit("it's"), "'it''s'")

    def test_thread_env(self):
        env = benchlib.thread_env(3, HF_HUB_OFFLINE="1")
        self.assertEqual((env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["HF_HUB_OFFLINE"]), ("3", "3", "1"))
        self.assertEqual(env["PATH"], os.environ["PATH"])


class ProcessTest(unittest.TestCase):
    def test_proc_status_and_cpu_of_this_process(self):
        st = benchlib.proc_status(os.getpid())
        self.assertEqual(set(st), {"VmRSS", "VmHWM", "Threads"})
        self.assertGreater(st["VmRSS"], 0)
        self.assertGreaterEqual(benchlib.proc_cpu_s(os.getpid()), 0)

    def test_measure_call_times_the_call_against_a_process(self):
        result, c = benchlib.measure_call(os.getpid(), lambda: sum(range(10_000)), settle=0)
        self.assertEqual(result, sum(range(10_000)))
        self.assertGreaterEqual(c.wall_s, 0)
        self.assertGreaterEqual(c.cpu_s, 0)
        self.assertIn("VmHWM", c.after)

    def test_busy_finds_a_running_pattern_but_not_itself(self):
        p = subprocess.Popen(["sleep", "31.4159"])
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        self.assertEqual(benchlib.busy(("sleep 31.4159", "no-such-job-7f3a/")), ["sleep 31.4159"])

    def test_watched_reports_what_it_saw(self):
        args = types.SimpleNamespace(wait_idle=0, max_load=1.0)
        m, w = benchlib.watched(args, lambda msg: None, lambda: {"x": 1})
        self.assertEqual(m, {"x": 1})
        self.assertEqual((w.waited_s, w.busy, w.loads), (0, [], []))
        self.assertEqual(w.load_max, w.load_after[0])
        self.assertEqual(len(w.load_before), 3)
        self.assertGreaterEqual(w.machine_cpu_s, 0)

    def test_run_json_returns_the_result_or_the_log(self):
        d = tmpdir(self)
        res, logf = os.path.join(d, "r.json"), os.path.join(d, "log")
        ok = [sys.executable, "-c", f"import json; print('working'); json.dump({{'a': 1}}, open({res!r}, 'w'))"]
        m, wall = benchlib.run_json(ok, logf, res, None, "side")
        self.assertEqual(m, {"a": 1})
        self.assertGreaterEqual(wall, 0)
        self.assertEqual(benchlib.read_text(logf), "working\n")
        with self.assertRaisesRegex(RuntimeError, r"(?s)side failed \(3\):\n.*boom"):
            benchlib.run_json([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], logf, res, None, "side")

    def test_stop_proc_terminates_then_kills_a_process_that_ignores_sigterm(self):
        p = subprocess.Popen(["sleep", "60"])
        benchlib.stop_proc(p, 5)
        self.assertEqual(p.returncode, -15)
        stubborn = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('on', flush=True); time.sleep(60)"]
        p = subprocess.Popen(stubborn, stdout=subprocess.PIPE, text=True)
        p.stdout.readline()  # SIGTERM ignored from here on
        said = []
        benchlib.stop_proc(p, 0.2, said.append)
        p.stdout.close()
        self.assertEqual(p.returncode, -9)
        self.assertEqual(said, [f"pid {p.pid} still running 0.2s after SIGTERM: SIGKILL"])
        benchlib.stop_proc(p, 0.2, said.append)  # already ended: nothing to do
        self.assertEqual(len(said), 1)

    def test_pgmld_env_sets_pgmld_settings_and_drops_knobs(self):
        old = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(old)))
        os.environ.pop("RUST_LOG", None)
        os.environ["PGMLD_BIN"] = "/x/pgmld"
        env = benchlib.pgmld_env(train_workers=0, worker_databases="db", resume_jobs="false")
        self.assertEqual(
            (env["RUST_LOG"], env["PGMLD_TRAIN_WORKERS"], env["PGMLD_WORKER_DATABASES"], env["PGMLD_RESUME_JOBS"], env["PGMLD_BIN"]),
            ("info", "0", "db", "false", "/x/pgmld"),
        )
        os.environ["RUST_LOG"] = "debug"
        env = benchlib.pgmld_env(drop=("PGMLD_BIN",), torch_threads=2)
        self.assertEqual((env["RUST_LOG"], env["PGMLD_TORCH_THREADS"], "PGMLD_BIN" in env), ("debug", "2", False))
        self.assertEqual(env["PATH"], os.environ["PATH"])

    def test_pgmld_worker_starts_once_ready_and_stops(self):
        d = tmpdir(self)
        fake = os.path.join(d, "pgmld")
        with open(fake, "w") as f:
            f.write('#!/bin/sh\necho "starting $*"; sleep 0.3; echo "pgmld worker 1.0 ready (pid $$)"; exec sleep 60\n')
        os.chmod(fake, 0o755)
        args = types.SimpleNamespace(pgmld_bin=fake, pg_user="u", pg_host="h", pg_port=5433)
        w = benchlib.PgmldWorker(args, d, "w1", dict(os.environ))
        self.addCleanup(w.stop)
        self.assertEqual(w.cmd[:5], [fake, "--upstream", "postgres://u@h:5433/postgres", "--data-dir", w.cmd[4]])
        self.assertEqual(w.cmd[5:], ["--metrics-listen", "", "worker", "--devices", "cpu"])
        self.assertTrue(os.path.isdir(w.cmd[4]) and os.path.basename(w.cmd[4]).startswith("w1-data."))
        self.assertEqual((w.logpath, w.pid), (os.path.join(d, "w1.log"), w.proc.pid))
        self.assertIn("pgmld worker 1.0 ready", benchlib.read_text(w.logpath))
        w.stop()
        self.assertEqual(w.proc.returncode, -15)
        with open(fake, "w") as f:
            f.write("#!/bin/sh\nexit 7\n")
        with self.assertRaisesRegex(RuntimeError, r"w2 exited with 7; see .*w2\.log"):
            benchlib.PgmldWorker(args, d, "w2", dict(os.environ))

    def test_wait_registered_polls_pgml_workers(self):
        answers = iter(["", "11", "11\n12\n13"])
        seen = []
        orig = benchlib.direct
        self.addCleanup(setattr, benchlib, "direct", orig)
        benchlib.direct = lambda args, sql, db=None: (seen.append(sql), next(answers))[1]
        benchlib.wait_registered(None, [11, 12])
        self.assertEqual(seen, ["SELECT pid FROM pgml.workers"] * 3)
        benchlib.direct = lambda args, sql, db=None: "11"
        with self.assertRaisesRegex(RuntimeError, r"workers \[12\] not in pgml.workers after 0 s \(seen \[11\]\)"):
            benchlib.wait_registered(None, [11, 12], timeout=0)


class HfArgsTest(unittest.TestCase):
    def test_hf_warmup_and_grouping_for_both_transformers_generations(self):
        self.assertEqual(benchlib.hf_warmup_and_grouping({"warmup_ratio": 0, "group_by_length": 0}, 0.1), {"warmup_ratio": 0.1, "group_by_length": True})
        self.assertEqual(benchlib.hf_warmup_and_grouping({"warmup_steps": 0}, 0.1), {"warmup_steps": 0.1, "train_sampling_strategy": "group_by_length"})


class CommandLineTest(unittest.TestCase):
    def options(self, p):
        return [a.option_strings[0] if a.option_strings else a.dest for a in p._actions if a.dest != "help"]

    def test_run_args_order_and_defaults(self):
        p = argparse.ArgumentParser()
        benchlib.add_run_args(p, db="x_bench", command="bench/x/run.sh", max_load=1.5)
        self.assertEqual(
            self.options(p),
            ["--threads", "--db", "--pg-host", "--pg-port", "--pg-user", "--wait-idle", "--max-load", "--out", "--doc", "--notes", "--command", "--raw"],
        )
        a = p.parse_args([])
        self.assertEqual(
            (a.threads, a.db, a.pg_host, a.pg_port, a.pg_user, a.wait_idle, a.max_load, a.out, a.doc, a.notes, a.command, a.raw),
            (2, "x_bench", "127.0.0.1", 5432, "postgres", 0, 1.5, "", "", "", "bench/x/run.sh", ""),
        )

    def test_run_args_without_the_optional_groups(self):
        p = argparse.ArgumentParser()
        benchlib.add_run_args(p, db="y", command="c", threads=False, out=False, raw=False)
        self.assertEqual(self.options(p), ["--db", "--pg-host", "--pg-port", "--pg-user", "--doc", "--notes", "--command"])

    def test_report_parser(self):
        ap = argparse.ArgumentParser()
        sub = ap.add_subparsers(dest="cmd")
        benchlib.add_report_parser(sub)
        a = ap.parse_args(["report", "raw.json", "--out", "o.md", "--pg-port", "5433"])
        self.assertEqual((a.raw, a.out, a.doc, a.pg_port), ("raw.json", "o.md", "", 5433))
        ap = argparse.ArgumentParser()
        sub = ap.add_subparsers(dest="cmd")
        p = benchlib.add_report_parser(sub, nargs="+", pg=False)
        self.assertEqual(self.options(p), ["raw", "--out", "--doc", "--notes"])
        self.assertEqual(ap.parse_args(["report", "a.json", "b.json"]).raw, ["a.json", "b.json"])


class LibShTest(unittest.TestCase):
    """bench/lib.sh's knob handling, in bash."""

    def bash(self, script, **env):
        r = subprocess.run(
            ["bash", "-c", f'set -euo pipefail; ROOT={HERE}/..; source {HERE}/lib.sh; {script}'],
            capture_output=True,
            text=True,
            env=dict({"PATH": os.environ["PATH"]}, **env),
            cwd=tmpdir(self),
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_bench_init_records_what_the_caller_set_then_applies_defaults(self):
        out = self.bash(
            'bench_init t bench/t/run.sh REPS=1 SIDES=a,b OUT EMPTY= MAX=9; printf "%s|%s|%s|%s|%s|%s\\n" "$INVOCATION" "$REPS" "$SIDES" "${OUT-unset}" "$EMPTY" "$MAX"',
            REPS="3",
            OUT="",
            MAX="",
        )
        self.assertEqual(out, "REPS=3 OUT='' MAX='' bench/t/run.sh|3|a,b|||9\n")

    def test_bench_path_is_absolute_from_the_callers_directory_or_the_default(self):
        out = self.bash('printf "%s\\n" "$(bench_path REL /d)" "$(bench_path ABS /d)" "$(bench_path NONE /d)" "$(bench_path EMPTY /d)"', REL="x/y", ABS="/abs", EMPTY="")
        cwd, rest = out.split("/x/y\n", 1)
        self.assertTrue(cwd.startswith("/"))
        self.assertEqual(rest, "/abs\n/d\n/d\n")


if __name__ == "__main__":
    unittest.main()
