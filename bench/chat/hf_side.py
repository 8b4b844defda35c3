"""The Hugging Face side of bench/chat, each workload in its own Python process (so its peak
RSS is its own): what a user would otherwise run on CPU.

- train: transformers + peft LoRA fine-tune of the GGUF model with Trainer (the settings of
  bench.py's TRAIN), then evaluate().
- generate: greedy `model.generate` after a chat-template prompt (bench.py's GENERATE)."""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import HF_CPU_TRAINING_ARGS  # noqa: E402


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(model_path, threads):
    """torch with `threads` threads, then the tokenizer and the f32 model from the GGUF file
    (transformers dequantises it, as pgmld does); returns (torch, transformers, tokenizer,
    model, timings)."""
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    t1 = time.perf_counter()
    rss_import = _rss_mib()
    directory, gguf_file = os.path.split(os.path.abspath(model_path))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    t2 = time.perf_counter()
    timings = {"import_s": t1 - t0, "load_s": t2 - t1, "rss_after_import_mib": rss_import, "rss_after_load_mib": _rss_mib()}
    return torch, transformers, tokenizer, model, timings


def _versions(torch, transformers):
    from importlib.metadata import version

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": version("peft"), "gguf": version("gguf"), "tokenizers": version("tokenizers")}


def _drop_gguf_marker(torch, model):
    """transformers 5 keeps a GGUF "quantizer" on a model read from a GGUF file even when it
    dequantised every weight (as here: no `kernels` package), and Trainer refuses to train a
    model with that quantizer. The weights are plain f32 nn.Linear / nn.Embedding then, as
    after save_pretrained + from_pretrained of the dequantised model, so the marker is dropped
    once that is checked."""
    packed = [n for n, m in model.named_modules() if any(p.dtype != torch.float32 for p in m.parameters(recurse=False))]
    linears = {type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__}
    if packed or linears != {"Linear"}:
        raise RuntimeError(f"the GGUF model is not plain f32 after loading: {packed[:3]} {sorted(linears)}")
    model.hf_quantizer.remove_quantization_config(model)


def train(a, settings, rows_train, rows_eval):
    """LoRA fine-tune with peft + Trainer; returns the measurements as a dict."""
    from data import encode_example

    torch, transformers, tokenizer, model, out = _load(a.model, a.threads)
    _drop_gguf_marker(torch, model)
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(settings["seed"])
    t0 = time.perf_counter()
    eot = tokenizer.convert_tokens_to_ids(settings["end_of_turn"])
    train_ds = [encode_example(tokenizer, r, settings["max_seq_length"], eot) for r in rows_train]
    eval_ds = [encode_example(tokenizer, r, settings["max_seq_length"], eot) for r in rows_eval]
    out["tokenize_s"] = time.perf_counter() - t0
    lora = settings["lora_config"]
    model = get_peft_model(model, LoraConfig(**lora))
    trainable, total = model.get_nb_trainable_parameters()
    args = TrainingArguments(
        output_dir=a.workdir,
        per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=settings["batch_size"],
        max_steps=settings["max_steps"],
        learning_rate=settings["learning_rate"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        optim=settings["optim"],
        bf16=settings.get("bf16", False),  # on the CPU: torch.autocast("cpu", dtype=torch.bfloat16)
        max_grad_norm=settings["max_grad_norm"],
        logging_steps=settings["logging_steps"],
        seed=settings["seed"],
        **HF_CPU_TRAINING_ARGS,
        remove_unused_columns=False,
    )
    counted = {"tokens": 0, "padded": 0, "batches": 0}

    class CountingCollator(DataCollatorForSeq2Seq):
        """Pads like DataCollatorForSeq2Seq (labels with -100) and counts the real and the
        padded tokens of every training batch."""

        def __call__(self, features, return_tensors=None):
            batch = super().__call__(features, return_tensors)
            if model.training:
                counted["tokens"] += int(batch["attention_mask"].sum())
                counted["padded"] += batch["input_ids"].numel()
                counted["batches"] += 1
            return batch

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=CountingCollator(tokenizer, padding=True, label_pad_token_id=-100),
    )
    rss_before_train = _rss_mib()
    t_train = time.perf_counter()
    result = trainer.train()
    t_eval = time.perf_counter()
    metrics = trainer.evaluate()
    t_end = time.perf_counter()
    adapter_dir = os.path.join(a.workdir, "hf-adapter")
    model.save_pretrained(adapter_dir)
    adapter_bytes = sum(os.path.getsize(os.path.join(adapter_dir, f)) for f in os.listdir(adapter_dir))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    tm = result.metrics
    out.update(
        train_runtime=tm["train_runtime"],
        train_call_s=t_eval - t_train,
        eval_call_s=t_end - t_eval,
        train_loss=tm["train_loss"],
        global_step=result.global_step,
        eval_loss=metrics["eval_loss"],
        train_tokens=counted["tokens"],
        train_padded_tokens=counted["padded"],
        train_batches=counted["batches"],
        rows_cut_at_max_seq_length=sum(len(e["input_ids"]) >= settings["max_seq_length"] for e in train_ds),
        loss_log=[h["loss"] for h in trainer.state.log_history if "loss" in h],
        trainable_params=trainable,
        total_params=total,
        adapter_bytes=adapter_bytes,
        rss_before_train_mib=rss_before_train,
        peak_rss_mib=ru.ru_maxrss / 1024,
        cpu_s=ru.ru_utime + ru.ru_stime,
        threads=torch.get_num_threads(),
        versions=_versions(torch, transformers),
    )
    out["train_tokens_per_second"] = out["train_tokens"] / out["train_runtime"]
    return out


def generate(a, settings, prompt_messages):
    """Greedy generation: one short warm-up call, then `settings["reps"]` timed calls of
    `model.generate(max_new_tokens=N, do_sample=False)` under inference_mode."""
    torch, transformers, tokenizer, model, out = _load(a.model, a.threads)
    enc = tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = enc["input_ids"]
    n = settings["max_new_tokens"]
    calls = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, attention_mask=enc["attention_mask"], max_new_tokens=settings["warmup_tokens"], do_sample=False)
        out["warmup_s"] = time.perf_counter() - t0
        for _ in range(settings["reps"]):
            t0 = time.perf_counter()
            gen = model.generate(ids, attention_mask=enc["attention_mask"], max_new_tokens=n, do_sample=False)
            calls.append({"s": time.perf_counter() - t0, "completion_tokens": int(gen.shape[1] - ids.shape[1])})
    new = gen[0, ids.shape[1] :].tolist()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.update(
        calls=calls,
        prompt_tokens=int(ids.shape[1]),
        completion_ids=new,
        text=tokenizer.decode(new, skip_special_tokens=True),
        peak_rss_mib=ru.ru_maxrss / 1024,
        cpu_s=ru.ru_utime + ru.ru_stime,
        threads=torch.get_num_threads(),
        versions=_versions(torch, transformers),
    )
    return out


def count_tokens(model_path, texts):
    """Token counts of `texts` (no special tokens added) with the GGUF file's tokenizer."""
    from transformers import AutoTokenizer

    directory, gguf_file = os.path.split(os.path.abspath(model_path))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def main(a, settings, load_rows):
    """Entry point of `bench.py hf-train|hf-generate`: runs one workload, writes JSON."""
    if a.cmd == "hf-train":
        rows = load_rows()
        n_train = settings["batch_size"] * settings["max_steps"]
        result = train(a, settings, rows[:n_train], rows[n_train:])
    else:
        result = generate(a, settings, settings["prompt"])
    with open(a.result, "w") as f:
        json.dump(result, f)
