"""Tiny random RoBERTa checkpoint + independent numpy reference logits (float64).

Usage: roberta_ref.py OUT_DIR LAYOUT < {"input_ids": [[...]], "attention_mask": [[...]]}
Writes OUT_DIR/config.json and OUT_DIR/model.safetensors (float32) and prints
{"logits": [[...]], "position_ids": [[...]]}, computed from the stored float32 weights with
HF RobertaForSequenceClassification semantics (modeling_roberta.py, eval mode): position
ids from create_position_ids_from_input_ids (padding-aware), BERT layers, and the
RobertaClassificationHead (dense + tanh on <s>, then out_proj).

LAYOUT names the checkpoint keys:
  seqcls  HF RobertaForSequenceClassification: roberta.*, classifier.dense.*, classifier.out_proj.*
  bare    encoder saved from a bare RobertaModel (no "roberta." prefix, with its pooler),
          plus masked-LM lm_head.* tensors and the classifier head
  mlm     HF RobertaForMaskedLM: roberta.* and lm_head.*, no classifier
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import save_file

CONFIG = {
    "model_type": "roberta",
    "architectures": ["RobertaForSequenceClassification"],
    "vocab_size": 60,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 20,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "absolute",
    "id2label": {"0": "neg", "1": "neu", "2": "pos"},
    "label2id": {"neg": 0, "neu": 1, "pos": 2},
}
erf = np.vectorize(math.erf)


def random_weights(cfg, seed=11):
    rng = np.random.default_rng(seed)
    d, h, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    w = {}

    def lin(name, i, o):
        w[name + ".weight"] = rng.normal(0, 1 / math.sqrt(i), (o, i))
        w[name + ".bias"] = rng.normal(0, 0.1, (o,))

    def ln(name):
        w[name + ".weight"] = 1 + rng.normal(0, 0.1, (d,))
        w[name + ".bias"] = rng.normal(0, 0.1, (d,))

    e = "roberta.embeddings."
    w[e + "word_embeddings.weight"] = rng.normal(0, 1, (v, d))
    w[e + "position_embeddings.weight"] = rng.normal(0, 1, (cfg["max_position_embeddings"], d))
    w[e + "token_type_embeddings.weight"] = rng.normal(0, 1, (cfg["type_vocab_size"], d))
    ln(e + "LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"roberta.encoder.layer.{i}."
        for m in ("query", "key", "value"):
            lin(p + "attention.self." + m, d, d)
        lin(p + "attention.output.dense", d, d)
        ln(p + "attention.output.LayerNorm")
        lin(p + "intermediate.dense", d, h)
        lin(p + "output.dense", h, d)
        ln(p + "output.LayerNorm")
    lin("roberta.pooler.dense", d, d)
    lin("classifier.dense", d, d)
    lin("classifier.out_proj", d, len(cfg["id2label"]))
    lin("lm_head.dense", d, d)
    ln("lm_head.layer_norm")
    lin("lm_head.decoder", d, v)
    w["lm_head.bias"] = w["lm_head.decoder.bias"]
    return {k: a.astype(np.float32) for k, a in w.items()}


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def position_ids(ids, pad):
    mask = (ids != pad).astype(np.int64)
    return np.cumsum(mask, axis=1) * mask + pad


def forward(w, cfg, ids, mask):
    ids, mask = np.array(ids), np.array(mask)
    b, s = ids.shape
    hid, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d = hid // nh
    lin = lambda x, p: x @ w[p + ".weight"].T + w[p + ".bias"]
    ln = lambda x, p: layer_norm(x, w[p + ".weight"], w[p + ".bias"], eps)
    pos = position_ids(ids, cfg["pad_token_id"])
    e = "roberta.embeddings."
    x = (w[e + "word_embeddings.weight"][ids]
         + w[e + "token_type_embeddings.weight"][np.zeros_like(ids)]
         + w[e + "position_embeddings.weight"][pos])
    x = ln(x, e + "LayerNorm")
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -np.inf)
    heads = lambda t: t.reshape(b, s, nh, d).transpose(0, 2, 1, 3)
    for i in range(cfg["num_hidden_layers"]):
        p = f"roberta.encoder.layer.{i}."
        q, k, v = (heads(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        sc = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        ctx = (sc @ v).transpose(0, 2, 1, 3).reshape(b, s, hid)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    head = np.tanh(lin(x[:, 0], "classifier.dense"))
    return lin(head, "classifier.out_proj"), pos


def main():
    out_dir, layout = sys.argv[1], sys.argv[2]
    req = json.load(sys.stdin)
    cfg = CONFIG
    w = random_weights(cfg)
    if layout == "seqcls":
        keep = {k: a for k, a in w.items() if not k.startswith(("lm_head", "roberta.pooler"))}
    elif layout == "bare":
        keep = {k.removeprefix("roberta."): a for k, a in w.items()}
    elif layout == "mlm":
        keep = {k: a for k, a in w.items() if not k.startswith(("classifier", "roberta.pooler"))}
    else:
        raise SystemExit(f"unknown layout {layout}")
    os.makedirs(out_dir, exist_ok=True)
    save_file(keep, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    w64 = {k: a.astype(np.float64) for k, a in w.items()}
    logits, pos = forward(w64, cfg, req["input_ids"], req["attention_mask"])
    json.dump({"logits": logits.tolist(), "position_ids": pos.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
