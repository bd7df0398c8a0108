"""Decompresses a compressed-tensors export and compares it with the model.

argv: pairs of directories: a compressed-tensors export, an f32
--format hf export of the same model (its fake-quant weights). For every target of every
config group the weight is decompressed twice: with compressed-tensors' own
unpack_from_int32 (the function's source taken from
compressed-tensors/pack_quantized.py, verbatim upstream, and run here) and
with an independent decoding written below (bit fields for fp8, shifts for
the packed codes); both, times the group's scales, must equal the hf
export's weight bit for bit. Tensor dtypes and shapes are checked against
the compressors' compression_param_info. Exits non-zero naming the first
difference.
"""
import ast
import json
import math
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "I32": torch.int32, "I64": torch.int64, "I8": torch.int8,
          "F8_E4M3": torch.uint8}  # torch 1.13 has no float8: bytes, decoded below


def upstream_unpack():
    """unpack_from_int32 from compressed-tensors' pack_quantized.py."""
    path = os.path.join(HERE, "compressed-tensors", "pack_quantized.py")
    src = open(path).read()
    tree = ast.parse(src)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "unpack_from_int32")
    code = ast.get_source_segment(src, fn)
    from typing import Literal, Union
    env = {"torch": torch, "math": math, "Literal": Literal, "Union": Union}
    exec(code, env)
    return env["unpack_from_int32"]


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
        t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = (e["dtype"], t)
    return out


def read_dir(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(idx):
        return read_safetensors(os.path.join(d, "model.safetensors"))
    with open(idx) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for fn in files:
        out.update(read_safetensors(os.path.join(d, fn)))
    return out


def e4m3(b):
    """fp8 e4m3fn bytes to float32 from the bit fields."""
    b = b.numpy().astype(np.int64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> 3) & 15
    m = (b & 7).astype(np.float64)
    v = np.where(e == 0, m / 8 * 2.0 ** -6, (1 + m / 8) * np.exp2(e.astype(np.float64) - 7))
    v = np.where((e == 15) & (m == 7), np.nan, v)
    return torch.from_numpy((sign * v).astype(np.float32))


def mine_unpack(packed, bits, cols):
    """Codes from int32 words: code j of a word is bits j*bits.. up, minus 2^(bits-1)."""
    per = 32 // bits
    w = packed.numpy().astype(np.int64) & 0xFFFFFFFF
    shifts = np.arange(per) * bits
    u = (w[:, :, None] >> shifts[None, None, :]) & ((1 << bits) - 1)
    u = u.reshape(w.shape[0], -1)[:, :cols]
    return torch.from_numpy((u - (1 << (bits - 1))).astype(np.int8))


def expand(scale, rows, cols, args):
    s = scale.float()
    if args["strategy"] == "tensor":
        return s.reshape(1, 1).expand(rows, cols)
    g = cols // s.shape[1]
    return s.repeat_interleave(g, dim=1)


unpack = upstream_unpack()


def check(ct_dir, hf_dir):
    ct = read_dir(ct_dir)
    hf = read_dir(hf_dir)
    with open(os.path.join(ct_dir, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    n = 0
    for gname, g in qc["config_groups"].items():
        fmt = g["format"] or qc["format"]
        args = g["weights"]
        bits = args["num_bits"]
        for name in g["targets"]:
            want = hf[name + ".weight"][1]
            rows, cols = want.shape
            sdt, scale = ct[name + ".weight_scale"]
            assert sdt == "F32", (name, sdt)
            s = expand(scale, rows, cols, args)
            if fmt == "pack-quantized":
                pdt, packed = ct[name + ".weight_packed"]
                shdt, shape = ct[name + ".weight_shape"]
                per = 32 // bits
                assert pdt == "I32" and tuple(packed.shape) == (rows, math.ceil(cols / per)), (name, pdt, packed.shape)
                assert shdt == "I64" and shape.tolist() == [rows, cols], (name, shdt, shape)
                a = unpack(packed, bits, torch.Size(shape.tolist()))
                b = mine_unpack(packed, bits, cols)
                if not torch.equal(a, b):
                    sys.exit(f"{name}: upstream unpack_from_int32 and the independent unpacking differ")
                w = a.float() * s
            elif fmt == "int-quantized":
                wdt, q = ct[name + ".weight"]
                assert wdt == "I8" and tuple(q.shape) == (rows, cols), (name, wdt, q.shape)
                w = q.float() * s
            elif fmt == "float-quantized":
                wdt, q = ct[name + ".weight"]
                assert wdt == "F8_E4M3" and tuple(q.shape) == (rows, cols), (name, wdt, q.shape)
                w = e4m3(q) * s
            else:
                sys.exit(f"{gname}: format {fmt}")
            if not torch.equal(w, want):
                i = (w != want).nonzero()[0].tolist()
                sys.exit(f"{ct_dir}: {name}{i}: decompressed {w[tuple(i)].item()}, the model's fake-quant weight {want[tuple(i)].item()}")
            n += 1
    print(f"{ct_dir}: {n} linears decompress to the fake-quant weights bit for bit ({qc['format']})")


args = sys.argv[1:]
assert args and len(args) % 2 == 0, "want pairs of directories"
for i in range(0, len(args), 2):
    check(args[i], args[i + 1])
