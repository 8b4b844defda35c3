"""transformers.Trainer + peft LoRA, step by step: the reference of tests/lora_parity.rs.

Run with the pinned Python environment of scripts/setup.sh (.deps/bench: transformers, peft,
gguf and their dependencies; torch = the lean .deps/libtorch wheel, the same libtorch_cpu.so
pgmld links). Reads one JSON request on stdin:

  model         the GGUF file (transformers dequantises it to f32, as pgmld does)
  rows          [system, user, assistant] conversations: the first n_train train, the rest
                evaluate; encoded as bench/chat encodes them for the Trainer (chat template,
                loss on the reply and its end-of-turn token)
  n_train, max_seq_length, end_of_turn, threads
  lora          peft LoraConfig fields (r, lora_alpha, lora_dropout, target_modules)
  args          TrainingArguments fields (learning_rate, max_steps, warmup_steps,
                weight_decay, max_grad_norm, lr_scheduler_type, per_device_train_batch_size)
  runs          one training run each (one process: Python and the model load once):
    seed        seeds peft's adapter initialisation and the Trainer (its dropout masks)
    init_dir    where peft's freshly initialised adapter is saved (save_pretrained), so that
                pgmld starts from identical adapter weights
    batches     the batch order, as lists of training-row indices (pgmld's epoch order)

Prints JSON: input_ids and labels (per row, as the Trainer sees them), base_eval_loss (the
model without adapter) and, per run, losses and grad_norms (one per optimizer step) and
eval_loss (trainer.evaluate() after training, all evaluation rows in one batch, so that it
is the mean over the evaluation set's label tokens, as pgmld reports it).
"""

import copy
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../../bench/chat"))
sys.path.insert(0, os.path.join(HERE, "../../../bench"))
sys.path.insert(0, os.path.join(HERE, "../../pgmld-ml/tests"))

import torch  # noqa: E402
from data import encode_example  # noqa: E402  (bench/chat/data.py)
from hf_trainer_ref import fixed_order_trainer, step_args  # noqa: E402  (the classifier's reference)
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.utils import logging as hf_logging  # noqa: E402


def load(path):
    """The tokenizer and the f32 model from the GGUF file, ready for Trainer (see
    bench/chat/hf_side.py: the dequantised model keeps a GGUF marker Trainer refuses)."""
    directory, gguf_file = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return tokenizer, model


def targs(req, run, output_dir):
    return step_args(
        req["args"],
        run["seed"],
        output_dir,
        per_device_eval_batch_size=len(req["rows"]),
        remove_unused_columns=False,
    )


def train(req, run, base, tokenizer, train_ds, eval_ds):
    """One LoRA run over the given batch order; what it did, step by step."""
    set_seed(run["seed"])
    model = get_peft_model(copy.deepcopy(base), LoraConfig(task_type="CAUSAL_LM", **req["lora"]))
    model.save_pretrained(run["init_dir"])
    losses, grad_norms = [], []
    micro = {"sum": 0.0, "n": 0}

    FixedOrderTrainer = fixed_order_trainer(train_ds, run["batches"], micro)

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            losses.append(micro["sum"] / max(micro["n"], 1))
            micro["sum"], micro["n"] = 0.0, 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "grad_norm" in logs:
                grad_norms.append(logs["grad_norm"])

    trainer = FixedOrderTrainer(
        model=model,
        args=targs(req, run, os.path.join(run["init_dir"], "trainer")),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[Recorder()],
    )
    trainer.train()
    return {"losses": losses, "grad_norms": grad_norms, "eval_loss": trainer.evaluate()["eval_loss"]}


def main():
    req = json.load(sys.stdin)
    # Trainer prints its logs to stdout; the reply alone goes there.
    out, sys.stdout = sys.stdout, sys.stderr
    hf_logging.set_verbosity_error()
    torch.set_num_threads(req.get("threads", 2))
    tokenizer, base = load(req["model"])
    eot = tokenizer.convert_tokens_to_ids(req["end_of_turn"])
    encoded = [encode_example(tokenizer, tuple(r), req["max_seq_length"], eot) for r in req["rows"]]
    n = req["n_train"]
    train_ds, eval_ds = encoded[:n], encoded[n:]
    base_trainer = Trainer(
        model=base,
        args=targs(req, {"seed": 0}, os.path.join(req["runs"][0]["init_dir"], "base")),
        eval_dataset=eval_ds,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
    )
    base_eval_loss = base_trainer.evaluate()["eval_loss"]
    runs = [train(req, run, base, tokenizer, train_ds, eval_ds) for run in req["runs"]]
    reply = {
        "input_ids": [e["input_ids"] for e in encoded],
        "labels": [e["labels"] for e in encoded],
        "base_eval_loss": base_eval_loss,
        "runs": runs,
    }
    print(json.dumps(reply), file=out)


if __name__ == "__main__":
    main()
