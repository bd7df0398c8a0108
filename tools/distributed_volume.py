#!/usr/bin/env python3
"""The communication of a data-parallel step on paper (docs/distributed.md
includes its output): bytes each process sends per micro-batch for the
small, base and TinyLlama-1.1B shapes, and the expected scaling to 8 and 64
processes on 25 and 200 Gb/s networks.

Model parameters come from the formula layers.Config.Params uses (embedding,
per layer q/k/v/o, gate/up/down and two norms, final norm, head when
untied). The compute of a step is 6 P tokens FLOPs at --gflops per
process (an assumption, given on the command line and printed), shared
evenly by the processes; the reduction moves 2 (N-1)/N of the fp32
gradient through each process's link (reduce-scatter + all-gather, as
engine/dp does and as a ring all-reduce would), without overlap with
the backward pass, plus --latency-us per message step.

  /usr/bin/python3 tools/distributed_volume.py [--gflops 1000] [--latency-us 20]
"""
import argparse

SHAPES = [  # name, vocab, dim, layers, heads, kv_heads, ffn, tied, global batch in tokens (8 x 256 for the small shapes; TinyLlama pretraining 1024 x 2048 is past one node, 64 x 2048 a fine-tune)
    ("small shape (configs/small.yaml)", 8192, 512, 8, 8, 8, 1376, True, 8 * 256),
    ("base shape (configs/base.yaml)", 8192, 768, 12, 12, 12, 2048, True, 8 * 256),
    ("TinyLlama-1.1B", 32000, 2048, 22, 32, 4, 5632, False, 64 * 2048),
]


def params(vocab, dim, layers, heads, kv, ffn, tied):
    hd = dim // heads
    per = dim * heads * hd + 2 * dim * kv * hd + heads * hd * dim + 3 * dim * ffn + 2 * dim
    return vocab * dim * (1 if tied else 2) + layers * per + dim


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gflops", type=float, default=1000, help="sustained GFLOP/s of one process")
    ap.add_argument("--latency-us", type=float, default=20, help="latency of one message step")
    a = ap.parse_args()
    print(f"Assumed: {a.gflops:g} GFLOP/s per process, {a.latency_us:g} us per message step, no overlap of the reduction with the backward pass.\n")
    print("| model | parameters | gradient (fp32) | sent per process, 8 / 64 processes | + ZeRO-1 weight all-gather | tokens per step |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for name, v, d, l, h, kv, f, tied, tok in SHAPES:
        p = params(v, d, l, h, kv, f, tied)
        g = 4 * p
        sent = [2 * (n - 1) / n * g for n in (8, 64)]
        zero = [(n - 1) / n * g for n in (8, 64)]
        print(f"| {name} | {p/1e6:.1f}M | {g/1e6:.1f} MB | {sent[0]/1e6:.1f} / {sent[1]/1e6:.1f} MB | {zero[0]/1e6:.1f} / {zero[1]/1e6:.1f} MB | {tok} |")
        rows.append((name, p, g, tok))
    print("\nExpected speed-up over one process (fixed global batch; step = compute / N + reduction):\n")
    print("| model | network | 8 processes | 64 processes | reduction time at 64 |")
    print("|---|---|---:|---:|---:|")
    for name, p, g, tok in rows:
        t1 = 6 * p * tok / (a.gflops * 1e9)
        for gbps in (25, 200):
            bw = gbps * 1e9 / 8
            out = []
            for n in (8, 64):
                comm = 2 * (n - 1) / n * g / bw + 2 * (n - 1) * a.latency_us * 1e-6
                out.append((t1 / (t1 / n + comm), comm))
            print(f"| {name} | {gbps} Gb/s | {out[0][0]:.1f}x | {out[1][0]:.1f}x | {out[1][1]*1e3:.1f} ms |")


if __name__ == "__main__":
    main()
