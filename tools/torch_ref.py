#!/usr/bin/env python3
"""PyTorch reference for qat's Llama: loads the weights and token batch the Go
side wrote (safetensors with Hugging Face names), runs an independent PyTorch
implementation of the Hugging Face Llama forward (RMSNorm, rotate-half RoPE,
grouped-query causal attention, SwiGLU, tied or separate lm_head), and writes
the logits, the loss and every parameter's gradient back as safetensors.

    python3 tools/torch_ref.py DIR     # reads DIR/{config.json,model.safetensors,batch.safetensors}
                                       # writes DIR/torch_out.safetensors

Only torch and numpy are needed (Debian: python3-torch, python3-numpy); the
safetensors format is parsed here by hand (8-byte length, JSON header, data).
"""
import json, math, struct, sys
import numpy as np
import torch
import torch.nn.functional as F

DT = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64}


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        lo, hi = v["data_offsets"]
        a = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=DT[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(a.copy())
    return out


def save(path, tensors):
    hdr, blobs, off = {}, [], 0
    for k, t in tensors.items():
        a = t.detach().contiguous().numpy().astype(np.float32)
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def forward(c, P, ids):
    B, T = ids.shape
    d, H, KV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, eps = d // H, c["rms_norm_eps"]
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    ang = torch.cat([ang, ang], dim=-1)
    cos, sin = ang.cos().float(), ang.sin().float()
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = P["model.embed_tokens.weight"][ids]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = (h @ P[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ P[p + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ P[p + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)   # Hugging Face repeat_kv: head h reads kv head h // (H/KV)
        v = v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd) + mask
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
        x = x + y @ P[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = h @ P[p + "mlp.gate_proj.weight"].T
        u = h @ P[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(g) * u) @ P[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if c["tie_word_embeddings"] else P["lm_head.weight"]
    return x @ head.T


def main(d):
    torch.set_num_threads(1)
    c = json.load(open(f"{d}/config.json"))
    P = load(f"{d}/model.safetensors")
    for t in P.values():
        t.requires_grad_(True)
    batch = load(f"{d}/batch.safetensors")
    ids, tg = batch["ids"].long(), batch["targets"].long()
    logits = forward(c, P, ids)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tg.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"logits": logits, "loss": loss.reshape(1)}
    out.update({"grad." + k: t.grad for k, t in P.items()})
    out.update({"weight." + k: t for k, t in P.items()})  # as PyTorch read them, for a bit-exact check
    save(f"{d}/torch_out.safetensors", out)
    print(f"torch {torch.__version__}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1])
