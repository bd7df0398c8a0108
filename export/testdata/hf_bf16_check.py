"""Checks bf16 and f16 Hugging Face exports against torch's own rounding.

argv: the f32 export's directory, then bf16 or f16 exports' directories.
All are read with a safetensors reader written here (the header's JSON and
the data's offsets), through model.safetensors.index.json when there is
one. Every tensor must equal torch.tensor(f32).to(its dtype) bit for bit
(torch rounds to nearest, ties to even). Exits non-zero naming the first
tensor that differs.
"""
import json
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        buf = bytearray(data[a:b])
        t = torch.frombuffer(buf, dtype=DTYPES[e["dtype"]]) if b > a else torch.empty(0, dtype=DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"])
    return out


def read_dir(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(idx):
        return read_safetensors(os.path.join(d, "model.safetensors")), 1
    with open(idx) as f:
        index = json.load(f)
    files = sorted(set(index["weight_map"].values()))
    out = {}
    for fn in files:
        for name, t in read_safetensors(os.path.join(d, fn)).items():
            assert index["weight_map"][name] == fn, (name, fn)
            out[name] = t
    total = sum(t.numel() * t.element_size() for t in out.values())
    assert index["metadata"]["total_size"] == total, (index["metadata"], total)
    return out, len(files)


f32, _ = read_dir(sys.argv[1])
for d in sys.argv[2:]:
    low, shards = read_dir(d)
    assert set(f32) == set(low), set(f32) ^ set(low)
    n = 0
    for name, t in f32.items():
        got = low[name]
        want = t.to(got.dtype)
        if got.dtype not in (torch.bfloat16, torch.float16) or got.shape != want.shape:
            sys.exit(f"{d}: {name}: {got.dtype} {tuple(got.shape)}, want bfloat16 or float16 {tuple(want.shape)}")
        if not torch.equal(got.view(torch.int16), want.view(torch.int16)):
            bad = (got.view(torch.int16) != want.view(torch.int16)).nonzero()[0].tolist()
            sys.exit(f"{d}: {name}{bad}: {got[tuple(bad)].item()}, torch rounds {t[tuple(bad)].item()} to {want[tuple(bad)].item()}")
        n += t.numel()
    print(f"{d}: {len(f32)} tensors, {n} values in {shards} shards: torch's {got.dtype} rounding bit for bit")
