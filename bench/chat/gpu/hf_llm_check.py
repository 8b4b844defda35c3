"""The Hugging Face side of bench/chat/gpu: transformers + peft with the settings of
crates/pgmld-llm/examples/llm_check (pgml.tune's conversation defaults as bench/chat uses
them), one JSON line per measurement with the same keys ("side": "hf").

  hf_llm_check.py make-model --config-dir D --out O [--layers N] [--seed 0]
  hf_llm_check.py logits --model M --dump DIR --device cuda [--new-tokens 32]
  hf_llm_check.py train --model M --rows R.jsonl --device cuda --option fp32|bf16|gradient_checkpointing|
                        bf16_gradient_checkpointing --steps N [--logging-steps 5]
  hf_llm_check.py generate --model M --device cuda --dtype fp32|bf16 [--max-new-tokens 128] [--reps 3]

make-model builds a randomly initialised LlamaForCausalLM from the exported config.json
(fixed seed) and saves it (safetensors) with the tokenizer files, so both sides load the same
directory. Training uses transformers' Trainer (HF's usual path, what a user runs), with
peft's LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target q_proj/v_proj), batch 8,
max_seq_length 256, lr 2e-4, linear schedule without warmup, adamw_torch, max_grad_norm 1."""

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bench/chat: data.py (the row encoding bench/chat checks)

SYSTEM_PROMPT = "You are a friendly chat partner. Reply briefly and casually."
PROBE_USER = "Hi! What did you do last weekend? I went hiking in the mountains."
END_OF_TURN = "<|im_end|>"
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM",
        "target_modules": ["q_proj", "v_proj"]}
OPTIONS = {
    "fp32": {},
    "bf16": {"bf16": True},
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "bf16_gradient_checkpointing": {"bf16": True, "gradient_checkpointing": True},
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def emit(check, tag, device, **fields):
    """Prints one measurement as a JSON line."""
    print(json.dumps({"side": "hf", "check": check, "tag": tag, "device": device, **fields}), flush=True)


def versions():
    import torch
    import transformers
    from importlib.metadata import version

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": version("peft")}


def sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def device_of(torch, name):
    """`cuda` must mean a GPU: no silent CPU fallback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name!r}: expected cpu or cuda")
    return name


def probe_ids(tokenizer):
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PROBE_USER}]
    enc = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(enc if isinstance(enc, list) else enc["input_ids"])


def make_model(a):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(a.config_dir)
    if a.layers:
        config.num_hidden_layers = a.layers
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    model = LlamaForCausalLM(config)
    model.save_pretrained(a.out, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(a.config_dir, f), os.path.join(a.out, f))
    params = sum(p.numel() for p in model.parameters())
    emit("make_model", "make_model", "cpu", out=a.out, layers=config.num_hidden_layers, params=params,
         seconds=time.perf_counter() - t0, files=sorted(os.listdir(a.out)), versions=versions())


def load(a, dtype_name="fp32"):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    device = device_of(torch, a.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(device)
    return torch, tokenizer, model, device


def greedy(torch, model, ids, n, device):
    """Exactly n greedy tokens (EOS disabled) and the seconds the generate call took."""
    model.generation_config.eos_token_id = None
    x = torch.tensor([ids], device=device)
    with torch.inference_mode():
        sync(torch, device)
        t0 = time.perf_counter()
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                             do_sample=False, pad_token_id=0)
        sync(torch, device)
    return out[0, len(ids):].tolist(), time.perf_counter() - t0


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def logits(a):
    """HF logits and greedy tokens on the probe vs pgmld's CPU logits and tokens (--dump)."""
    from safetensors.torch import load_file

    with open(os.path.join(a.dump, "pgmld_probe.json")) as f:
        probe = json.load(f)
    ids = probe["prompt_ids"]
    want = load_file(os.path.join(a.dump, "pgmld_cpu_logits.safetensors"))["logits"].float()
    for dtype in ("fp32", "bf16"):
        torch, tokenizer, model, device = load(a, dtype)
        same_ids = probe_ids(tokenizer) == ids
        with torch.inference_mode():
            got = model(torch.tensor([ids], device=device)).logits[0].float().cpu()
        diff = (got - want).abs()
        emit("logits", "correctness", device, dtype=dtype, reference="pgmld cpu fp32", positions=len(ids),
             max_abs_diff=diff.max().item(), mean_abs_diff=diff.mean().item(), max_abs_logit=want.abs().max().item(),
             last_top1_agrees=bool(got[-1].argmax() == want[-1].argmax()), same_prompt_ids=same_ids)
        tokens, _ = greedy(torch, model, ids, a.new_tokens, device)
        for ref, ref_tokens in probe["greedy"].items():
            emit("greedy", "correctness", device, dtype=dtype, reference=f"pgmld {ref.replace('_', ' ')}",
                 new_tokens=a.new_tokens, same_prefix=common_prefix(tokens, ref_tokens),
                 same_positions=sum(x == y for x, y in zip(tokens, ref_tokens)))
        del model
        if device == "cuda":
            torch.cuda.empty_cache()


def read_rows(path, n):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()][:n]
    if len(rows) < n:
        raise SystemExit(f"{path} holds {len(rows)} rows, {n} needed")
    return [(r["system"], r["user"], r["assistant"]) for r in rows]


def train(a):
    from data import encode_example

    torch, tokenizer, model, device = load(a)
    if a.option not in OPTIONS:
        raise SystemExit(f"--option {a.option!r}: expected one of {', '.join(OPTIONS)} (8-bit options are pgmld only)")
    opt = OPTIONS[a.option]
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments, set_seed

    set_seed(42)
    batch = 8
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    rows = read_rows(a.rows, a.steps * batch)
    train_ds = [encode_example(tokenizer, r, 256, eot) for r in rows]
    model = get_peft_model(model, LoraConfig(**LORA))
    trainable, _ = model.get_nb_trainable_parameters()
    args = TrainingArguments(
        output_dir=a.workdir, per_device_train_batch_size=batch, max_steps=a.steps, learning_rate=2e-4,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, optim="adamw_torch", max_grad_norm=1.0,
        logging_steps=a.logging_steps, seed=42, eval_strategy="no", save_strategy="no", report_to="none",
        use_cpu=device == "cpu", disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
        bf16=opt.get("bf16", False), gradient_checkpointing=opt.get("gradient_checkpointing", False),
        # With peft's frozen base the non-reentrant variant needs no input grads (peft's advice).
        **({"gradient_checkpointing_kwargs": {"use_reentrant": False}} if opt.get("gradient_checkpointing") else {}),
    )
    counted = {"tokens": 0}
    times = []  # (step, loss, seconds since train start) of each loss log
    t0 = [0.0]

    class Collator(DataCollatorForSeq2Seq):
        """Pads like DataCollatorForSeq2Seq (labels -100) and counts the real tokens."""

        def __call__(self, features, return_tensors=None):
            out = super().__call__(features, return_tensors)
            counted["tokens"] += int(out["attention_mask"].sum())
            return out

    class LogTimes(TrainerCallback):
        """Time of each loss log (the trainer has synced to read the loss by then)."""

        def on_train_begin(self, args, state, control, **kw):
            t0[0] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                times.append((state.global_step, logs["loss"], time.perf_counter() - t0[0]))

    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      data_collator=Collator(tokenizer, padding=True, label_pad_token_id=-100), callbacks=[LogTimes()])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train()
    sync(torch, device)
    steady = None
    if len(times) >= 2 and times[-1][2] > times[0][2]:
        steady = (times[-1][0] - times[0][0]) / (times[-1][2] - times[0][2])
    tm = result.metrics
    emit("train", a.tag or a.option, device, option=a.option, steps=result.global_step, batch_size=batch,
         train_runtime=tm["train_runtime"], train_tokens_per_second=counted["tokens"] / tm["train_runtime"],
         train_samples_per_second=tm["train_samples_per_second"], steady_steps_per_second=steady,
         tokens_per_step=counted["tokens"] / max(result.global_step, 1),
         train_tokens=counted["tokens"], loss_first=times[0][1] if times else None,
         loss_last=times[-1][1] if times else None, loss_log=[t[1] for t in times], train_loss=tm["train_loss"],
         gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16, optim="adamw_torch",
         trainable_params=trainable,
         max_memory_allocated_mib=torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
         threads=torch.get_num_threads(), versions=versions())


def generate(a):
    torch, tokenizer, model, device = load(a, a.dtype)
    ids = probe_ids(tokenizer)
    greedy(torch, model, ids, 8, device)
    calls, tokens = [], []
    for _ in range(max(a.reps, 1)):
        tokens, s = greedy(torch, model, ids, a.max_new_tokens, device)
        calls.append(s)
    median = sorted(calls)[len(calls) // 2]
    emit("generate", a.tag or "generate", device, dtype=a.dtype, prompt_tokens=len(ids), new_tokens=len(tokens),
         calls_s=calls, median_s=median, tokens_per_second=len(tokens) / median, tokens=tokens,
         max_memory_allocated_mib=torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
         threads=torch.get_num_threads(), versions=versions())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--config-dir", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--layers", type=int, default=0)
    m.add_argument("--seed", type=int, default=0)
    for name in ("logits", "train", "generate"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--device", default="cuda")
        s.add_argument("--tag", default="")
        s.add_argument("--threads", type=int, default=0)
        if name == "logits":
            s.add_argument("--dump", required=True)
            s.add_argument("--new-tokens", type=int, default=32)
        if name == "train":
            s.add_argument("--rows", required=True)
            s.add_argument("--option", default="fp32")
            s.add_argument("--steps", type=int, default=20)
            s.add_argument("--logging-steps", type=int, default=5)
            s.add_argument("--workdir", default="/tmp/hf_llm_check")
        if name == "generate":
            s.add_argument("--dtype", default="fp32")
            s.add_argument("--max-new-tokens", type=int, default=128)
            s.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    if getattr(a, "threads", 0):
        import torch

        torch.set_num_threads(a.threads)
    {"make-model": make_model, "logits": logits, "train": train, "generate": generate}[a.cmd](a)


if __name__ == "__main__":
    main()
