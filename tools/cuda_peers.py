#!/usr/bin/env python3
"""The reference side of `qat bench --device cuda`, on the same GPU in the
same run: a device copy, PyTorch's fused fake-quant kernels (per-channel
int4, per-tensor int8, and their backward), and cuBLAS FP16 GEMM at the
shapes of our packed products (4096 x 4096 weights, 1 and 256 columns).

Usage (on the GPU machine, after the Go side):
    python3 tools/cuda_peers.py [--values 67108864]
"""
import argparse
import time

import torch


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
    k = 4096
    w = torch.randn(rows, k, device=dev, dtype=torch.float16)
    for cols in (1, 256):
        a = torch.randn(k, cols, device=dev, dtype=torch.float16)
        row(f"cuBLAS FP16 GEMM {rows}x{k}, {cols} columns", 2 * (rows * k + k * cols),
            timed(lambda: w @ a, reps=200), 2.0 * rows * k * cols)


if __name__ == "__main__":
    main()
