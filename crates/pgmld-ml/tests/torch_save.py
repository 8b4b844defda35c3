"""Writes checkpoint files as `torch.save` and `transformers` do, without torch.

torch.save pickles (protocol 2) a state dict (an OrderedDict with a `_metadata` attribute)
whose tensors reduce to `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks)`, each storage pickled as the persistent id
`('storage', torch.FloatStorage, key, 'cpu', numel)`. Zip format (PyTorch >= 1.6):
archive/data.pkl, archive/byteorder, archive/data/<key>, archive/version. Legacy format:
pickles of the magic number, protocol version, sys info, the state dict (persistent ids
with a sixth `None` view field) and the sorted storage keys, then per storage an int64
element count and the raw bytes. Here fake `torch` modules stand in so that `pickle`
writes the same GLOBAL names.

Usage:
  torch_save.py bin SRC_DIR DST_DIR zip|legacy
      SRC_DIR/model.safetensors -> DST_DIR/pytorch_model.bin (+ config.json). Matrices are
      stored transposed (stride (1, rows)), biases packed into one storage at offsets, and
      `tied.weight` shares the word-embedding storage, as tied weights do.
  torch_save.py shard SRC_DIR DST_DIR safetensors|bin N
      SRC_DIR/model.safetensors -> N shards + model.safetensors.index.json or
      pytorch_model.bin.index.json (+ config.json).
  torch_save.py dtypes DST_DIR
      DST_DIR/pytorch_model.bin with float16, bfloat16, float64, int64 and bool storages,
      offsets, strides and a shared storage; DST_DIR/expected.safetensors holds the same
      tensors (float32 for the floating ones, values exactly representable).
"""
import collections
import io
import json
import os
import pickle
import shutil
import struct
import sys
import types
import zipfile

import numpy as np
from safetensors.numpy import load_file, save_file

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

STORAGE_TYPES = {}
for _name, _dtype in [("FloatStorage", "<f4"), ("HalfStorage", "<f2"), ("BFloat16Storage", "bf16"),
                      ("DoubleStorage", "<f8"), ("LongStorage", "<i8"), ("BoolStorage", "?")]:
    _cls = type(_name, (), {"__module__": "torch"})
    setattr(torch, _name, _cls)
    STORAGE_TYPES[_dtype] = _cls


class Storage:
    """A flat typed buffer: `data` holds the raw little-endian bytes."""

    def __init__(self, dtype, data, numel):
        self.cls, self.data, self.numel = STORAGE_TYPES[dtype], data, numel


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce_ex__(self, proto):
        args = (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


def storage_of(array, dtype):
    """Storage holding `array` (any shape, C order) as `dtype`; bf16 truncates float32."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if dtype == "bf16":
        data = (flat.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    else:
        data = flat.astype(dtype).tobytes()
    return Storage(dtype, data, flat.size)


def contiguous(array, dtype="<f4"):
    return Tensor(storage_of(array, dtype), 0, array.shape, c_strides(array.shape))


def c_strides(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.insert(0, acc)
        acc *= n
    return strides


def pickle_state_dict(state, legacy):
    keys = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, Storage):
                return None
            key = keys.setdefault(id(obj), (str(len(keys)), obj))[0]
            pid = ("storage", obj.cls, key, "cpu", obj.numel)
            return pid + (None,) if legacy else pid

    sd = collections.OrderedDict(state)
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(sd)
    storages = {key: s for key, s in keys.values()}
    return buf.getvalue(), storages


def save(state, path, legacy=False):
    data, storages = pickle_state_dict(state, legacy)
    if not legacy:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", data)
            z.writestr("archive/byteorder", "little")
            for key in sorted(storages):
                z.writestr(f"archive/data/{key}", storages[key].data)
            z.writestr("archive/version", "3\n")
            z.writestr("archive/.data/serialization_id", "0123456789")
        return
    with open(path, "wb") as f:
        f.write(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(data)
        keys = sorted(storages)
        f.write(pickle.dumps(keys, protocol=2))
        for key in keys:
            f.write(struct.pack("<q", storages[key].numel))
            f.write(storages[key].data)


def copy_config(src, dst):
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))


def cmd_bin(src, dst, fmt):
    copy_config(src, dst)
    w = load_file(os.path.join(src, "model.safetensors"))
    state = {}
    biases = [k for k in w if w[k].ndim == 1]
    packed = storage_of(np.concatenate([w[k] for k in biases]), "<f4")
    offset = 0
    for k, a in w.items():
        if a.ndim == 1:
            state[k] = Tensor(packed, offset, a.shape, [1])
            offset += a.size
        elif a.ndim == 2:
            # Stored column-major: the storage holds a.T in C order.
            state[k] = Tensor(storage_of(a.T, "<f4"), 0, a.shape, [1, a.shape[0]])
        else:
            state[k] = contiguous(a)
    emb = next(k for k in w if k.endswith("word_embeddings.weight"))
    state["tied.weight"] = Tensor(state[emb].storage, 0, w[emb].shape, state[emb].stride)
    save(state, os.path.join(dst, "pytorch_model.bin"), legacy=(fmt == "legacy"))


def cmd_shard(src, dst, kind, n):
    copy_config(src, dst)
    w = load_file(os.path.join(src, "model.safetensors"))
    names = sorted(w)
    ext = "safetensors" if kind == "safetensors" else "bin"
    stem = "model" if kind == "safetensors" else "pytorch_model"
    weight_map = {}
    for i in range(n):
        part = names[i::n]
        fname = f"{stem}-{i + 1:05d}-of-{n:05d}.{ext}"
        if kind == "safetensors":
            save_file({k: w[k] for k in part}, os.path.join(dst, fname))
        else:
            save({k: contiguous(w[k]) for k in part}, os.path.join(dst, fname))
        weight_map.update({k: fname for k in part})
    index = {"metadata": {"total_size": sum(a.nbytes for a in w.values())},
             "weight_map": weight_map}
    with open(os.path.join(dst, f"{stem}.{ext}.index.json"), "w") as f:
        json.dump(index, f, indent=2)


def cmd_dtypes(dst):
    os.makedirs(dst, exist_ok=True)
    rng = np.random.default_rng(3)
    # Values exactly representable in float16 and bfloat16 (few mantissa bits).
    vals = (rng.integers(-64, 64, size=(4, 6)) / 16).astype(np.float32)
    state, expected = {}, {}
    for name, dtype in [("half", "<f2"), ("bf16", "bf16"), ("double", "<f8")]:
        state[name] = contiguous(vals, dtype)
        expected[name] = vals
    base = storage_of(np.arange(40, dtype=np.float32), "<f4")
    state["offset_view"] = Tensor(base, 5, [2, 3], [3, 1])
    expected["offset_view"] = np.arange(5, 11, dtype=np.float32).reshape(2, 3)
    state["strided_view"] = Tensor(base, 1, [3, 4], [1, 8])
    expected["strided_view"] = np.array([[1 + r + 8 * c for c in range(4)] for r in range(3)],
                                        dtype=np.float32)
    state["shared"] = Tensor(base, 0, [40], [1])
    expected["shared"] = np.arange(40, dtype=np.float32)
    longs = np.array([[3, -1, 2 ** 40], [0, 7, -2 ** 35]], dtype=np.int64)
    state["long"] = contiguous(longs, "<i8")
    expected["long"] = longs
    mask = np.array([True, False, True, True])
    state["bool"] = contiguous(mask, "?")
    expected["bool"] = mask
    state["scalar"] = Tensor(storage_of(np.array([2.5], np.float32), "<f4"), 0, [], [])
    expected["scalar"] = np.array(2.5, dtype=np.float32)
    save(state, os.path.join(dst, "pytorch_model.bin"))
    save_file(expected, os.path.join(dst, "expected.safetensors"))


def main():
    cmd = sys.argv[1]
    if cmd == "bin":
        cmd_bin(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "shard":
        cmd_shard(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif cmd == "dtypes":
        cmd_dtypes(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
