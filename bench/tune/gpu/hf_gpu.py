"""The Hugging Face side of bench/tune/gpu: transformers.Trainer fine-tuning the same MiniLM
checkpoint on the same rows with the settings of tune_check (crates/pgmld-ml/examples/
tune_check.rs): lr 1e-4, batch 16 (eval 64), 1 epoch, warmup 10 %, weight decay 0.01,
max_length 128, seed 42, the Trainer's default optimizer (adamw_torch_fused). Prints one
JSON line with the Trainer's own train_samples_per_second and the eval accuracy. On a GPU or
a CPU (`bf16` is the Trainer's bf16=True on either).

With HF_PROFILE_TRACE set to a path, optimizer steps 2 to 1 + HF_PROFILE_STEPS (default 8)
run under torch.profiler and its Chrome trace is written there, for trace_summary.py to set
against the trace of tune_check's PGMLD_PROFILE_TRACE (the first step, which makes the
optimizer's state, is left out; so is evaluation).

    python3 hf_gpu.py MODEL_DIR CSV N_TRAIN N_EVAL [bf16] [tf32] [--tag NAME]
"""

import csv
import json
import os
import sys
import tempfile
import time

T0 = time.perf_counter()


def main():
    argv = sys.argv[1:]
    tag = ""
    if "--tag" in argv:
        i = argv.index("--tag")
        tag = argv[i + 1]
        del argv[i : i + 2]
    model_dir, csv_path, n_train, n_eval = argv[0], argv[1], int(argv[2]), int(argv[3])
    bf16, tf32 = "bf16" in argv[4:], "tf32" in argv[4:]

    import numpy as np
    import torch
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    transformers.logging.set_verbosity_error()
    csv.field_size_limit(1 << 30)
    with open(csv_path, newline="") as f:
        r = csv.reader(f)
        next(r)
        rows = [(t, int(y)) for t, y in r]
    train_rows, eval_rows = rows[:n_train], rows[n_train : n_train + n_eval]
    set_seed(42)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2, dtype=torch.float32)

    def encode(part):
        enc = tok([t for t, _ in part], truncation=True, max_length=128)
        return [{**{k: v[i] for k, v in enc.items()}, "labels": y} for i, (_, y) in enumerate(part)]

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, axis=-1) == p.label_ids).mean())}

    cuda = torch.cuda.is_available()
    fields = TrainingArguments.__dataclass_fields__
    extra = {"warmup_ratio": 0.1} if "warmup_ratio" in fields else {"warmup_steps": 0.1}
    if tf32 and cuda:
        extra["tf32"] = True
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-gpu."),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        num_train_epochs=1,
        learning_rate=1e-4,
        weight_decay=0.01,
        logging_steps=50,
        seed=42,
        bf16=bf16,
        save_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        **extra,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(train_rows),
        eval_dataset=encode(eval_rows),
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=accuracy,
        callbacks=profile_callback(torch, cuda),
    )
    out = trainer.train()
    ev = trainer.evaluate()
    m = out.metrics
    print(
        json.dumps(
            {
                "side": "hf",
                "tag": tag,
                "device": "cuda" if cuda else "cpu",
                "bf16": bf16,
                "tf32": tf32,
                "optim": getattr(args.optim, "value", str(args.optim)),
                "train_samples_per_second": m["train_samples_per_second"],
                "train_runtime": m["train_runtime"],
                "train_loss": m["train_loss"],
                "eval_accuracy": ev["eval_accuracy"],
                "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0,
                "script_s": time.perf_counter() - T0,
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            }
        ),
        flush=True,
    )


def profile_callback(torch, cuda):
    """A callback profiling optimizer steps 2 .. 1 + HF_PROFILE_STEPS when HF_PROFILE_TRACE is set."""
    path = os.environ.get("HF_PROFILE_TRACE")
    if not path:
        return []
    steps = int(os.environ.get("HF_PROFILE_STEPS", "8"))
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        prof = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
                self.prof = torch.profiler.profile(activities=acts, record_shapes=True)
                self.prof.__enter__()
            elif self.prof is not None and state.global_step == 1 + steps:
                if cuda:
                    torch.cuda.synchronize()
                self.prof.__exit__(None, None, None)
                self.prof.export_chrome_trace(path)
                self.prof = None

    return [Profile()]


if __name__ == "__main__":
    main()
