"""Tiny random DistilBERT checkpoint + independent numpy reference logits (float64).

Usage: distilbert_ref.py OUT_DIR LAYOUT < {"input_ids": [[...]], "attention_mask": [[...]]}
Writes OUT_DIR/config.json and OUT_DIR/model.safetensors (float32) and prints
{"logits": [[...]]}, computed from the stored float32 weights with HF
DistilBertForSequenceClassification semantics (modeling_distilbert.py, eval mode).

LAYOUT names the checkpoint keys:
  seqcls  HF DistilBertForSequenceClassification: distilbert.*, pre_classifier.*, classifier.*
  bare    encoder saved from a bare DistilBertModel (no "distilbert." prefix), plus the
          masked-LM tensors (vocab_transform, vocab_layer_norm, vocab_projector) and the head
  mlm     HF DistilBertForMaskedLM: distilbert.* and the masked-LM tensors, no head
  sinusoidal  prints {"table": create_sinusoidal_embeddings(n_pos, dim)} for the config in
          stdin ({"n_pos": .., "dim": ..}) and writes nothing
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import save_file

CONFIG = {
    "model_type": "distilbert",
    "architectures": ["DistilBertForSequenceClassification"],
    "vocab_size": 50,
    "dim": 32,
    "n_layers": 2,
    "n_heads": 4,
    "hidden_dim": 48,
    "activation": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "max_position_embeddings": 24,
    "seq_classif_dropout": 0.2,
    "initializer_range": 0.02,
    "sinusoidal_pos_embds": False,
    "pad_token_id": 0,
    "id2label": {"0": "a", "1": "b", "2": "c"},
    "label2id": {"a": 0, "b": 1, "c": 2},
}
EPS = 1e-12
erf = np.vectorize(math.erf)


def random_weights(cfg, seed=7):
    rng = np.random.default_rng(seed)
    d, h, v, n = cfg["dim"], cfg["hidden_dim"], cfg["vocab_size"], len(cfg["id2label"])
    w = {}

    def lin(name, i, o):
        w[name + ".weight"] = rng.normal(0, 1 / math.sqrt(i), (o, i))
        w[name + ".bias"] = rng.normal(0, 0.1, (o,))

    def ln(name):
        w[name + ".weight"] = 1 + rng.normal(0, 0.1, (d,))
        w[name + ".bias"] = rng.normal(0, 0.1, (d,))

    w["distilbert.embeddings.word_embeddings.weight"] = rng.normal(0, 1, (v, d))
    w["distilbert.embeddings.position_embeddings.weight"] = rng.normal(
        0, 1, (cfg["max_position_embeddings"], d))
    ln("distilbert.embeddings.LayerNorm")
    for i in range(cfg["n_layers"]):
        p = f"distilbert.transformer.layer.{i}."
        for m in ("q_lin", "k_lin", "v_lin", "out_lin"):
            lin(p + "attention." + m, d, d)
        ln(p + "sa_layer_norm")
        lin(p + "ffn.lin1", d, h)
        lin(p + "ffn.lin2", h, d)
        ln(p + "output_layer_norm")
    lin("pre_classifier", d, d)
    lin("classifier", d, n)
    lin("vocab_transform", d, d)
    ln("vocab_layer_norm")
    lin("vocab_projector", d, v)
    return {k: a.astype(np.float32) for k, a in w.items()}


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def forward(w, cfg, ids, mask):
    ids, mask = np.array(ids), np.array(mask)
    b, s = ids.shape
    dim, nh = cfg["dim"], cfg["n_heads"]
    d = dim // nh
    lin = lambda x, p: x @ w[p + ".weight"].T + w[p + ".bias"]
    ln = lambda x, p: layer_norm(x, w[p + ".weight"], w[p + ".bias"])
    x = (w["distilbert.embeddings.word_embeddings.weight"][ids]
         + w["distilbert.embeddings.position_embeddings.weight"][np.arange(s)][None])
    x = ln(x, "distilbert.embeddings.LayerNorm")
    heads = lambda t: t.reshape(b, s, nh, d).transpose(0, 2, 1, 3)
    for i in range(cfg["n_layers"]):
        p = f"distilbert.transformer.layer.{i}."
        q = heads(lin(x, p + "attention.q_lin")) / math.sqrt(d)
        k = heads(lin(x, p + "attention.k_lin"))
        v = heads(lin(x, p + "attention.v_lin"))
        sc = q @ k.transpose(0, 1, 3, 2)
        sc = np.where(mask[:, None, None, :] == 0, np.finfo(np.float64).min, sc)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        ctx = (sc @ v).transpose(0, 2, 1, 3).reshape(b, s, dim)
        sa = ln(lin(ctx, p + "attention.out_lin") + x, p + "sa_layer_norm")
        hdn = lin(sa, p + "ffn.lin1")
        if cfg["activation"] == "gelu":
            hdn = 0.5 * hdn * (1.0 + erf(hdn / math.sqrt(2.0)))
        else:
            hdn = np.maximum(hdn, 0)
        x = ln(lin(hdn, p + "ffn.lin2") + sa, p + "output_layer_norm")
    pooled = np.maximum(lin(x[:, 0], "pre_classifier"), 0)
    return lin(pooled, "classifier")


def sinusoidal(n_pos, dim):
    enc = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)]
                    for pos in range(n_pos)])
    out = np.zeros((n_pos, dim))
    out[:, 0::2] = np.sin(enc[:, 0::2])
    out[:, 1::2] = np.cos(enc[:, 1::2])
    return out


def main():
    out_dir, layout = sys.argv[1], sys.argv[2]
    req = json.load(sys.stdin)
    if layout == "sinusoidal":
        json.dump({"table": sinusoidal(req["n_pos"], req["dim"]).tolist()}, sys.stdout)
        return
    cfg = CONFIG
    w = random_weights(cfg)
    mlm = ("vocab_transform", "vocab_layer_norm", "vocab_projector")
    head = ("pre_classifier", "classifier")
    if layout == "seqcls":
        keep = {k: a for k, a in w.items() if not k.startswith(mlm)}
    elif layout == "bare":
        keep = {k.removeprefix("distilbert."): a for k, a in w.items()}
    elif layout == "mlm":
        keep = {k: a for k, a in w.items() if not k.startswith(head)}
    else:
        raise SystemExit(f"unknown layout {layout}")
    os.makedirs(out_dir, exist_ok=True)
    save_file(keep, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    w64 = {k: a.astype(np.float64) for k, a in w.items()}
    logits = forward(w64, cfg, req["input_ids"], req["attention_mask"])
    json.dump({"logits": logits.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
