"""pgmld ↔ Hugging Face peft: adapters load both ways and give the same logits.

For a tiny random Llama (no biases) and a tiny random Qwen2 (q/k/v biases, ``bias: all``):

1. transformers builds the base model and saves it (safetensors); peft wraps it with a LoRA
   whose A and B are random (``init_lora_weights=False``), saves the adapter and records
   the logits of a fixed prompt;
2. ``peft_roundtrip`` (the Rust example beside this file, pgmld-llm's own loader) loads that
   adapter, unmerged and merged, and writes its logits; then applies its own LoRA with random
   values, saves it in peft's format and writes those logits;
3. peft loads pgmld's adapter with ``PeftModel.from_pretrained`` and its logits are compared.

Every comparison must agree within 1e-4 (max abs, float32) and each adapter must move the
logits (so a silently ignored adapter fails). Needs torch, transformers, peft, safetensors:
``bench/chat/run.sh`` installs them into .deps/bench (lean torch + CUDA stand-ins); the GPU
machine has them. Usage::

    cargo build --release -p pgmld-llm --example peft_roundtrip
    python3 crates/pgmld-llm/examples/peft_roundtrip.py [--bin target/release/examples/peft_roundtrip]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

TOL = 1e-4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny(arch):
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rms_norm_eps=1e-5, tie_word_embeddings=True)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)), {"bias": "none"}
    return Qwen2ForCausalLM(Qwen2Config(**common)), {"bias": "all"}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def check(name, ours, theirs, base):
    diff = (ours - theirs).abs().max().item()
    moved = (theirs - base).abs().max().item()
    ok = diff < TOL and moved > 100 * TOL
    print(json.dumps({"check": name, "max_abs_diff": diff, "adapter_moves_logits_by": moved, "ok": ok}))
    return ok


def run(arch, binary, work):
    torch.manual_seed(0)
    model, extra = tiny(arch)
    model.eval()
    base_dir = os.path.join(work, "base")
    model.save_pretrained(base_dir, safe_serialization=True)
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(1))
    with open(os.path.join(work, "input_ids.json"), "w") as f:
        json.dump(ids[0].tolist(), f)
    base_logits = logits(model, ids)

    lora = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM", **extra)
    with open(os.path.join(work, "lora.json"), "w") as f:
        json.dump(lora, f)
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora))
    if extra["bias"] == "all":  # make the trainable biases differ from the base's too
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if n.endswith(".bias"):
                    p.add_(torch.randn_like(p) * 0.05)
    peft_model.eval()
    peft_model.save_pretrained(os.path.join(work, "peft_adapter"))
    peft_logits = logits(peft_model, ids)

    subprocess.run([binary, work], check=True)

    ok = check(f"{arch}: peft adapter in pgmld", load_file(os.path.join(work, "pgmld_logits_peft_adapter.safetensors"))["logits"],
               peft_logits, base_logits)
    ok &= check(f"{arch}: peft adapter in pgmld, merged",
                load_file(os.path.join(work, "pgmld_logits_peft_adapter_merged.safetensors"))["logits"], peft_logits, base_logits)

    fresh = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    ours_in_peft = PeftModel.from_pretrained(fresh, os.path.join(work, "pgmld_adapter"))
    ours_in_peft.eval()
    ok &= check(f"{arch}: pgmld adapter in peft", load_file(os.path.join(work, "pgmld_logits_own_adapter.safetensors"))["logits"],
                logits(ours_in_peft, ids), base_logits)
    return ok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=os.path.join(root, "target", "release", "examples", "peft_roundtrip"))
    args = parser.parse_args()
    ok = True
    for arch in ("llama", "qwen2"):
        with tempfile.TemporaryDirectory(prefix=f"peft-roundtrip-{arch}-") as work:
            ok &= run(arch, args.bin, work)
    print("peft round trip:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
