"""Hugging Face transformers.Trainer, step by step: the reference of tests/trainer_parity.rs.

Run with the pinned Python environment of scripts/setup.sh (.deps/bench: transformers and
its dependencies, torch = the lean .deps/libtorch wheel, the same libtorch_cpu.so pgmld
links). Reads one JSON request on stdin:

  model_dir     a checkpoint (config.json, weights, tokenizer.json)
  texts, labels the training examples
  num_labels, max_length, dropout (bool), threads
  args          TrainingArguments fields (learning_rate, weight_decay, warmup_steps,
                lr_scheduler_type, max_steps, max_grad_norm, per_device_train_batch_size)
  runs          one training run each (one process, so Python starts once):
    seed        seeds the fresh head and the Trainer (its dropout masks)
    init_dir    where to write the model as it starts: the checkpoint with a freshly
                initialised classification head, config.json with the dropout asked for,
                and the tokenizer files, so that pgmld starts from identical weights
    batches     the batch order, as lists of example indices (pgmld's epoch order for this
                seed, so both sides see the same batches in the same order)
    dump_dir, dump_steps  optimizer steps after which to write every parameter to
                <dump_dir>/step<N>.safetensors
    bf16        (optional) the Trainer's bf16=True: bfloat16 autocast on the CPU

Prints JSON: input_ids (per example, HF's tokenizer) and, per run, losses (one per optimizer
step: the step's loss as computed, before any logging average), grad_norms (pre-clip, as
Trainer logs them), learning_rates (the rate each step used) and batch_heads (the second
token of every row of every batch, to check the order).
"""

import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging as hf_logging  # noqa: E402

TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]


def fresh_model(req, seed):
    """The checkpoint with a classification head drawn as transformers draws it."""
    set_seed(seed)
    cfg = AutoConfig.from_pretrained(req["model_dir"], num_labels=req["num_labels"])
    if not req["dropout"]:
        cfg.hidden_dropout_prob = 0.0
        cfg.attention_probs_dropout_prob = 0.0
        cfg.classifier_dropout = 0.0
    return AutoModelForSequenceClassification.from_pretrained(req["model_dir"], config=cfg)


class FixedBatches:
    """A batch sampler that yields the given batches in the given order."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter([list(b) for b in self.batches])

    def __len__(self):
        return len(self.batches)


def step_args(a, seed, output_dir, **extra):
    """TrainingArguments for a step-by-step comparison: the request's `args` (learning_rate,
    weight_decay, warmup_steps, lr_scheduler_type, max_steps, max_grad_norm,
    per_device_train_batch_size), a log every step, no saving or evaluation on the way, on
    the CPU in this process; `extra` adds fields. Shared with
    crates/pgmld-llm/tests/peft_trainer_ref.py."""
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=a["per_device_train_batch_size"],
        learning_rate=a["learning_rate"],
        weight_decay=a["weight_decay"],
        warmup_steps=a["warmup_steps"],
        lr_scheduler_type=a["lr_scheduler_type"],
        max_steps=a["max_steps"],
        max_grad_norm=a["max_grad_norm"],
        optim="adamw_torch",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )


def fixed_order_trainer(data, batches, micro, on_batch=None):
    """A Trainer class that trains on `batches` of `data` in that order, and adds each
    training micro-batch's loss to `micro` ("sum", "n"), calling `on_batch(inputs)` too.
    Shared with crates/pgmld-llm/tests/peft_trainer_ref.py."""

    class FixedOrderTrainer(Trainer):
        def get_train_dataloader(self):
            loader = DataLoader(data, batch_sampler=FixedBatches(batches), collate_fn=self.data_collator)
            return self.accelerator.prepare(loader)

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            out = super().compute_loss(model, inputs, return_outputs, **kwargs)
            loss = out[0] if return_outputs else out
            if model.training:
                micro["sum"] += loss.detach().item()
                micro["n"] += 1
                if on_batch is not None:
                    on_batch(inputs)
            return out

    return FixedOrderTrainer


def train(req, run, tokenizer, data):
    """One Trainer run over the given batch order; what it did, step by step."""
    model = fresh_model(req, run["seed"])
    init_dir = run["init_dir"]
    model.save_pretrained(init_dir)
    for name in TOKENIZER_FILES:
        src = os.path.join(req["model_dir"], name)
        if os.path.exists(src):
            shutil.copy(src, init_dir)
    losses, batch_heads, grad_norms, lrs = [], [], [], []
    micro = {"sum": 0.0, "n": 0}

    FixedOrderTrainer = fixed_order_trainer(
        data, run["batches"], micro, lambda inputs: batch_heads.append(inputs["input_ids"][:, 1].tolist())
    )

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            losses.append(micro["sum"] / max(micro["n"], 1))
            micro["sum"], micro["n"] = 0.0, 0
            step = state.global_step
            if step in run.get("dump_steps", []):
                params = {
                    k: v.detach().clone().contiguous()
                    for k, v in kwargs["model"].state_dict().items()
                }
                save_file(params, os.path.join(run["dump_dir"], f"step{step}.safetensors"))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "grad_norm" in logs:
                grad_norms.append(logs["grad_norm"])
                lrs.append(logs["learning_rate"])

    targs = step_args(
        req["args"], run["seed"], os.path.join(run["dump_dir"], "trainer"), bf16=run.get("bf16", False)
    )
    trainer = FixedOrderTrainer(
        model=model,
        args=targs,
        train_dataset=data,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Recorder()],
    )
    trainer.train()
    return {
        "losses": losses,
        "grad_norms": grad_norms,
        "learning_rates": lrs,
        "batch_heads": batch_heads,
    }


def main():
    req = json.load(sys.stdin)
    # Trainer prints its logs to stdout; the reply alone goes there.
    out, sys.stdout = sys.stdout, sys.stderr
    hf_logging.set_verbosity_error()
    torch.set_num_threads(req.get("threads", 2))
    tokenizer = AutoTokenizer.from_pretrained(req["model_dir"])
    enc = tokenizer(req["texts"], truncation=True, max_length=req["max_length"])
    data = [
        {
            "input_ids": enc["input_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "token_type_ids": enc["token_type_ids"][i],
            "labels": req["labels"][i],
        }
        for i in range(len(req["texts"]))
    ]
    runs = [train(req, run, tokenizer, data) for run in req["runs"]]
    print(json.dumps({"input_ids": enc["input_ids"], "runs": runs}), file=out)


if __name__ == "__main__":
    main()
