"""sentence-transformers' own embeddings: the reference of tests/sentence.rs.

Run with the pinned Python environment of scripts/setup.sh (.deps/bench). Reads JSON on
stdin: {"model_dir": ..., "texts": [...], "normalize_embeddings": bool}; prints
{"embeddings": [[...], ...], "max_seq_length": n} (float32 values as JSON numbers).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def main():
    req = json.load(sys.stdin)
    out, sys.stdout = sys.stdout, sys.stderr
    torch.set_num_threads(2)
    model = SentenceTransformer(req["model_dir"], device="cpu")
    emb = model.encode(req["texts"], normalize_embeddings=req.get("normalize_embeddings", False))
    print(json.dumps({"embeddings": emb.tolist(), "max_seq_length": model.max_seq_length}), file=out)


if __name__ == "__main__":
    main()
