"""Unit tests of bench/chat's data preparation, SQL and result parsing and report, without
torch, transformers or a database:  python3 -m unittest discover -s bench/chat"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import data  # noqa: E402
import pgmld_side  # noqa: E402
import report  # noqa: E402


def turn(*texts):
    return [{"sender": "x", "text": t, "timestamp": ""} for t in texts]


class ChatMLTokenizer:
    """One token per character and one per ChatML marker: enough to check label masking."""

    def __init__(self):
        self.special = {"<|im_start|>": -1, "<|im_end|>": -2}

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        ids, i = [], 0
        while i < len(text):
            marker = next((k for k in self.special if text.startswith(k, i)), None)
            ids.append(self.special[marker] if marker else ord(text[i]))
            i += len(marker) if marker else 1
        return {"input_ids": ids}  # transformers 5's BatchEncoding shape


class DataTest(unittest.TestCase):
    def write_dataset(self, conversations):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({f"c{i}": {"messages": c} for i, c in enumerate(conversations)}, f)
        f.close()
        self.addCleanup(os.remove, f.name)
        return f.name

    def test_pairs_join_turns_do_not_overlap_and_keep_file_order(self):
        path = self.write_dataset([[turn("Hello", "how are you?"), turn("fine"), turn("cool"), turn("bye", "now"), turn("dangling")], [turn("a"), turn("b")]])
        rows = data.chitchat_pairs(path, 3)
        self.assertEqual(rows, [(data.SYSTEM_PROMPT, "Hello how are you?", "fine"), (data.SYSTEM_PROMPT, "cool", "bye now"), (data.SYSTEM_PROMPT, "a", "b")])

    def test_too_few_pairs_is_an_error(self):
        path = self.write_dataset([[turn("a"), turn("b")]])
        with self.assertRaisesRegex(ValueError, "only 1"):
            data.chitchat_pairs(path, 2)

    def test_csv_round_trip_keeps_quotes_commas_and_newlines(self):
        rows = [("s", 'he said "hi", then left', "line1\nline2"), ("s", "it's", "ok")]
        path = os.path.join(tempfile.mkdtemp(), "rows.csv")
        data.write_csv(rows, path)
        self.assertEqual(data.read_csv(path), rows)

    def test_labels_cover_the_reply_and_its_end_of_turn_only(self):
        tok = ChatMLTokenizer()
        ex = data.encode_example(tok, ("sys", "hi", "yo"), 1000, -2)
        labelled = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l != -100]
        self.assertEqual(labelled, [ord("y"), ord("o"), -2])  # no loss on the trailing newline
        self.assertEqual(len(ex["input_ids"]), len(ex["labels"]))

    def test_truncation_to_max_seq_length(self):
        ex = data.encode_example(ChatMLTokenizer(), ("sys", "hi", "a long reply"), 20, -2)
        self.assertEqual((len(ex["input_ids"]), len(ex["labels"])), (20, 20))


class PgmldSideTest(unittest.TestCase):
    def test_text_from_postgresml_and_usage_shapes(self):
        self.assertEqual(pgmld_side.completion_text(["Paris."]), "Paris.")
        usage = {"outputs": ["Paris."], "finish_reasons": ["stop"], "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}
        self.assertEqual(pgmld_side.completion_text(usage), "Paris.")
        self.assertEqual(pgmld_side.reported_usage(usage), 3)
        self.assertIsNone(pgmld_side.reported_usage(["Paris."]))
        with self.assertRaises(ValueError):
            pgmld_side.completion_text({"unexpected": 1})

    def test_hyperparams_match_the_hf_settings(self):
        s = bench.SETTINGS
        hp = pgmld_side.tune_hyperparams(s)
        ta = hp["training_args"]
        self.assertEqual((ta["per_device_train_batch_size"], ta["max_steps"], ta["learning_rate"], ta["optim"]), (s["batch_size"], s["max_steps"], s["learning_rate"], s["optim"]))
        self.assertEqual(hp["lora_config"], s["lora_config"])
        self.assertEqual(hp["max_seq_length"], s["max_seq_length"])
        self.assertEqual(hp["dataset_args"], {"system_column": "instruction", "user_column": "input", "assistant_column": "output"})

    def test_tune_sql_quotes_the_model_path(self):
        sql = pgmld_side.tune_sql(bench.SETTINGS, "/models/it's.gguf")
        self.assertIn("model_name => '/models/it''s.gguf'", sql)
        self.assertIn(f"test_size => {bench.SETTINGS['eval_rows']}", sql)
        hp = sql.split("hyperparams => '", 1)[1].rsplit("')", 1)[0]
        self.assertEqual(json.loads(hp.replace("''", "'")), pgmld_side.tune_hyperparams(bench.SETTINGS))


def measurement(**kw):
    base = {"rep": 1, "wall_s": 10.0, "cpu_s": 15.0, "peak_rss_mib": 1000.0, "load_before": [0.1, 0.2, 0.3], "load_after": [2.0, 1.0, 0.5], "load_max": 2.1}
    return dict(base, **kw)


class ReportTest(unittest.TestCase):
    def test_tokens_come_from_the_side_then_pgmld_metrics_then_hf(self):
        hf = [measurement(train_tokens=1000, train_runtime=10.0)]
        self.assertEqual(report.train_tokens(hf[0], hf), (1000, "counted in the collator"))
        reported = measurement(reported_train_tokens=990, reported_tokens_key="train_tokens", train_runtime=5.0)
        self.assertEqual(report.train_tokens(reported, hf)[0], 990)
        bare = measurement(train_runtime=5.0)
        self.assertEqual(report.train_tokens(bare, hf), (1000, "the HF side's count of the same rows"))
        self.assertEqual(report.train_tps(bare, hf), 200.0)

    def test_generation_tokens_per_second_is_the_median_call(self):
        m = measurement(calls=[{"s": 1.0, "completion_tokens": 10}, {"s": 2.0, "completion_tokens": 10}, {"s": 4.0, "completion_tokens": 10}])
        self.assertEqual(report.gen_tps(m), 5.0)

    def test_tables_give_ratios_of_pgmld_over_hf(self):
        raw = {
            "results": {
                "hf_train": [measurement(train_tokens=1000, train_runtime=10.0)],
                "pgmld_train": [measurement(train_runtime=5.0, peak_rss_mib=500.0)],
                "hf_generate": [measurement(calls=[{"s": 2.0, "completion_tokens": 20}], text="a", load_s=1.0, warmup_s=1.0)],
                "pgmld_generate": [measurement(calls=[{"s": 1.0, "completion_tokens": 20}], text="a", warmup_s=1.0)],
            }
        }
        head, runs = report.tables(raw)
        self.assertIn("| training tokens/s (unpadded tokens / train_runtime) | 100.0 | 200.0 | **2.00x** |", head)
        self.assertIn("| training peak RSS MiB (whole process) | 1,000 | 500 | **0.50x** |", head)
        self.assertIn("| generation tokens/s (greedy, client-seen) | 10.00 | 20.00 | **2.00x** |", head)
        self.assertIn("| same greedy text |  | yes |  |", head)
        self.assertEqual(runs.count("\n"), 1 + 4)
        self.assertIn("0.10/0.20/0.30 → 2.00/1.00/0.50 (max 2.10)", runs)

    def test_int8_generation_gets_its_own_rows(self):
        raw = {
            "results": {
                "hf_generate": [measurement(calls=[{"s": 2.0, "completion_tokens": 20}], text="once upon a time there", load_s=1.0, warmup_s=1.0)],
                "pgmld_generate_int8": [measurement(calls=[{"s": 1.25, "completion_tokens": 20}], text="once upon a day there", warmup_s=1.0, peak_rss_mib=400.0)],
            }
        }
        head, runs = report.tables(raw)
        self.assertIn("| generation tokens/s, pgmld `load_in_8bit` (int8 kernels) | 10.00 | 16.00 | **1.60x** |", head)
        self.assertIn("| generation peak RSS MiB, pgmld `load_in_8bit` | 1,000 | 400 | **0.40x** |", head)
        self.assertIn("before the first difference, `load_in_8bit` |  | 3 |  |", head)
        self.assertIn("| pgmld_generate_int8 | 16.00 tokens/s |", runs)


class MergeTest(unittest.TestCase):
    def write(self, raw):
        path = os.path.join(tempfile.mkdtemp(), "raw.json")
        with open(path, "w") as f:
            json.dump(raw, f)
        return path

    def test_runs_measured_apart_merge_side_by_side(self):
        a = self.write({"settings": {"x": 1}, "threads": 2, "command": "SIDES=hf_train run.sh", "results": {"hf_train": [{"rep": 1}]}})
        b = self.write({"settings": {"x": 1}, "threads": 2, "command": "SIDES=pgmld_train run.sh", "results": {"pgmld_train": [{"rep": 1}], "hf_train": [{"rep": 2}]}})
        merged = bench.merge_raw([a, b])
        self.assertEqual(merged["results"], {"hf_train": [{"rep": 1}, {"rep": 2}], "pgmld_train": [{"rep": 1}]})
        self.assertEqual(merged["command"], "SIDES=hf_train run.sh\nSIDES=pgmld_train run.sh")

    def test_other_settings_do_not_merge(self):
        a = self.write({"settings": {"x": 1}, "threads": 2, "command": "", "results": {}})
        b = self.write({"settings": {"x": 2}, "threads": 2, "command": "", "results": {}})
        with self.assertRaises(SystemExit):
            bench.merge_raw([a, b])


if __name__ == "__main__":
    unittest.main()
