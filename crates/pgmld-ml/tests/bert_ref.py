"""Independent numpy reference for BERT's last_hidden_state (float64).

Usage: bert_ref.py MODEL_DIR < {"texts": [...], "input_ids": [[...]], "attention_mask": [[...]],
"token_type_ids": [[...]]}. Prints {"input_ids": ids from the Python `tokenizers` package for the
same texts (padded to the longest), "last_hidden_state": forward of the GIVEN ids}.
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def forward(w, cfg, ids, mask, types):
    ids, mask, types = np.array(ids), np.array(mask), np.array(types)
    b, s = ids.shape
    hid, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d = hid // nh
    lin = lambda x, p: x @ w[p + ".weight"].T + w[p + ".bias"]
    ln = lambda x, p: layer_norm(x, w[p + ".weight"], w[p + ".bias"], eps)
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][np.arange(s)][None]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = ln(x, "embeddings.LayerNorm")
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -np.inf)
    heads = lambda t: t.reshape(b, s, nh, d).transpose(0, 2, 1, 3)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (heads(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        sc = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        ctx = (sc @ v).transpose(0, 2, 1, 3).reshape(b, s, hid)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        assert cfg["hidden_act"] == "gelu"
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    return x


def main():
    model_dir = sys.argv[1]
    req = json.load(sys.stdin)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    raw = load_file(os.path.join(model_dir, "model.safetensors"))
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items()}
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(128)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    ids = [e.ids for e in tok.encode_batch(req["texts"])]
    out = forward(w, cfg, req["input_ids"], req["attention_mask"], req["token_type_ids"])
    json.dump({"input_ids": ids, "last_hidden_state": out.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
