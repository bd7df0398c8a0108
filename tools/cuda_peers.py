#!/usr/bin/env python3
"""The reference side of `qat bench --device cuda`, on the same GPU in the
same run: a device copy, PyTorch's fused fake-quant kernels (per-channel
int4, per-tensor int8, and their backward), cuBLAS FP16 GEMM at the
shapes of our packed products (4096 x 4096 weights, 1 and 256 columns),
and a Llama training step (forward + backward, fp32 and w4a8 fake quant)
at the tiny and small configs in tokens/s.

Usage (on the GPU machine, after the Go side):
    python3 tools/cuda_peers.py [--values 67108864]
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

CONFIGS = {  # configs/tiny.yaml and configs/small.yaml
    "tiny": dict(vocab=4096, d=256, layers=4, heads=4, ffn=704, seq=128, batch=8),
    "small": dict(vocab=8192, d=512, layers=8, heads=8, ffn=1376, seq=256, batch=8),
}


def rms_norm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def fq_w(w):  # int4 per channel, symmetric minmax (w4a8's weights)
    s = (w.detach().abs().amax(1) / 8).clamp_min(1.1920929e-07)
    return torch.fake_quantize_per_channel_affine(w, s, torch.zeros_like(s, dtype=torch.int32), 0, -8, 7)


def fq_a(x):  # int8 per token, asymmetric minmax (w4a8's activations)
    x2 = x.reshape(-1, x.shape[-1])
    with torch.no_grad():
        lo, hi = x2.amin(1).clamp(max=0), x2.amax(1).clamp(min=0)
        s = ((hi - lo) / 255).clamp_min(1.1920929e-07)
        z = (-torch.round(lo / s)).clamp(0, 255).to(torch.int32)
    return torch.fake_quantize_per_channel_affine(x2, s, z, 0, 0, 255).reshape(x.shape)


def llama_step(c, quant, dev):
    """Times forward + backward of a Llama (tied embeddings) on random tokens."""
    d, H, hd = c["d"], c["heads"], c["d"] // c["heads"]
    g = torch.Generator(device=dev).manual_seed(1)
    P = {"embed": torch.randn(c["vocab"], d, device=dev, generator=g) * 0.02, "norm": torch.ones(d, device=dev)}
    for l in range(c["layers"]):
        for n, shape in [("q", (d, d)), ("k", (d, d)), ("v", (d, d)), ("o", (d, d)),
                         ("gate", (c["ffn"], d)), ("up", (c["ffn"], d)), ("down", (d, c["ffn"]))]:
            P[f"{l}.{n}"] = torch.randn(*shape, device=dev, generator=g) * 0.02
        P[f"{l}.n1"], P[f"{l}.n2"] = torch.ones(d, device=dev), torch.ones(d, device=dev)
    for t in P.values():
        t.requires_grad_(True)
    B, T = c["batch"], c["seq"]
    ids = torch.randint(0, c["vocab"], (B, T), device=dev, generator=g)
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
    ang = torch.outer(torch.arange(T, device=dev, dtype=torch.float32), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def lin(x, w):
        return F.linear(fq_a(x), fq_w(w)) if quant else F.linear(x, w)

    def rope(x):
        x1, x2 = x.chunk(2, -1)
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def step():
        x = P["embed"][ids]
        for l in range(c["layers"]):
            h = rms_norm(x, P[f"{l}.n1"])
            q = rope(lin(h, P[f"{l}.q"]).view(B, T, H, hd).transpose(1, 2))
            k = rope(lin(h, P[f"{l}.k"]).view(B, T, H, hd).transpose(1, 2))
            v = lin(h, P[f"{l}.v"]).view(B, T, H, hd).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
            x = x + lin(y, P[f"{l}.o"])
            h = rms_norm(x, P[f"{l}.n2"])
            x = x + lin(F.silu(lin(h, P[f"{l}.gate"])) * lin(h, P[f"{l}.up"]), P[f"{l}.down"])
        logits = rms_norm(x, P["norm"]) @ P["embed"].T
        loss = F.cross_entropy(logits.view(-1, c["vocab"]), ids.view(-1))
        loss.backward()

    sec = timed(step, reps=10)
    return B * T / sec


def timed(fn, reps=50):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", type=int, default=1 << 26)
    n = ap.parse_args().values
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; {n} values")
    rows = 4096
    x = torch.randn(rows, n // rows, device=dev)
    y = torch.empty_like(x)
    scale = torch.full((rows,), 0.4, device=dev)
    zero = torch.zeros(rows, dtype=torch.int32, device=dev)
    print(f"{'kernel':44s} {'MB/call':>10s} {'us/call':>10s} {'GB/s':>9s} {'of copy':>9s} {'TFLOP/s':>9s}")
    copy_gbs = None

    def row(name, nbytes, sec, flops=0.0):
        nonlocal copy_gbs
        gbs = nbytes / sec / 1e9
        if copy_gbs is None:
            copy_gbs = gbs
        tf = f"{flops / sec / 1e12:.1f}" if flops else ""
        print(f"{name:44s} {nbytes / 1e6:10.1f} {sec * 1e6:10.1f} {gbs:9.0f} {100 * gbs / copy_gbs:8.0f}% {tf:>9s}")

    row("copy (yardstick)", 8 * n, timed(lambda: y.copy_(x)))
    row("torch fake_quantize_per_channel int4", 8 * n,
        timed(lambda: torch.fake_quantize_per_channel_affine(x, scale, zero, 0, -8, 7)))
    row("torch fake_quantize_per_tensor int8", 8 * n,
        timed(lambda: torch.fake_quantize_per_tensor_affine(x, 0.05, 0, -128, 127)))
    xg = x.clone().requires_grad_(True)
    out = torch.fake_quantize_per_channel_affine(xg, scale, zero, 0, -8, 7)
    g = torch.ones_like(out)
    # forward + backward through the fused op (the backward is its mask)
    row("torch fake quant per channel fwd+bwd", 17 * n,
        timed(lambda: torch.autograd.grad(torch.fake_quantize_per_channel_affine(xg, scale, zero, 0, -8, 7), xg, g)))
    s_l = torch.full((1,), 0.4, device=dev, requires_grad=True)
    z_l = torch.zeros(1, device=dev)
    row("torch learnable (LSQ) per tensor fwd+bwd", 16 * n,
        timed(lambda: torch.autograd.grad(
            torch._fake_quantize_learnable_per_tensor_affine(xg, s_l, z_l, -8, 7, 1.0), (xg, s_l), g)))
    for name, c in CONFIGS.items():
        for quant in (False, True):
            tps = llama_step(c, quant, dev)
            print(f"torch training step {name} {'w4a8' if quant else 'fp32'}: {tps:.0f} tokens/s (forward + backward)")
    k = 4096
    w = torch.randn(rows, k, device=dev, dtype=torch.float16)
    for cols in (1, 256):
        a = torch.randn(k, cols, device=dev, dtype=torch.float16)
        row(f"cuBLAS FP16 GEMM {rows}x{k}, {cols} columns", 2 * (rows * k + k * cols),
            timed(lambda: w @ a, reps=200), 2.0 * rows * k * cols)


if __name__ == "__main__":
    main()
