#!/usr/bin/env python3
"""Hugging Face checkpoint fixtures with reference outputs, for qat's import
and model tests (layers/hf_test.go).

    /usr/bin/python3 tools/hf_fixture.py OUT ARCH[=TOKDIR] ... [--seed N]

writes one fixture per ARCH into OUT/ARCH (one process: torch loads once).

ARCH is one of
    llama2   LlamaForCausalLM, Llama 2 style: untied lm_head, no head_dim key,
             rope_scaling null, multi-head attention
    llama3   LlamaForCausalLM, Llama 3.2 style: rope_scaling of type llama3,
             head_dim != hidden_size / num_attention_heads, tied embeddings,
             grouped-query attention
    mistral  MistralForCausalLM: grouped-query attention, head_dim !=
             hidden/heads (Mistral-Nemo style), sliding_window, untied
    qwen2    Qwen2ForCausalLM: q/k/v biases, tied embeddings

OUT receives what a Hugging Face model directory holds: config.json (the
real keys of that architecture), generation_config.json, bf16 weights in two
shards (model-00001-of-00002.safetensors, ...) with
model.safetensors.index.json, and tokenizer.json / tokenizer_config.json
copied from TOKDIR (without one, a small byte-level BPE tokenizer is
written). vocab_size is the tokenizer's (its largest id + 1).

It also writes OUT/ARCH/reference.safetensors: for a fixed batch of token ids
("ids", I32 (B, T)), the logits ("logits", F32 (B, T, vocab)) and the
next-token loss ("loss", F32 (1), Hugging Face's shifted labels: position t
predicts ids[t+1], the last position predicts nothing), computed in float64
from the bf16 weights, and the loss's gradient with respect to every weight
("grad." + its Hugging Face name, F32), and RoPE's inverse frequencies
("inv_freq", F32) as transformers computes them (with rope_scaling, also
"inv_freq.llama3.2": those of Llama 3.2 1B's RoPE).

The model below is written from the semantics of transformers'
modeling_llama.py, modeling_mistral.py, modeling_qwen2.py and
modeling_rope_utils.py (LlamaRMSNorm, rotate_half / apply_rotary_pos_emb,
repeat_kv, eager attention with scaling head_dim**-0.5, LlamaMLP, the
rope_init_fn "default" and "llama3"); it shares no code with qat or with
tools/torch_ref.py. Only torch and numpy are needed; the safetensors files
are written by hand (8-byte header length, JSON header, raw bytes).
"""
import argparse, json, math, os, shutil, struct
import numpy as np
import torch

B, T = 2, 16  # the reference batch

ARCHS = {
    "llama2": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "tie_word_embeddings": False,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "transformers_version": "4.45.0",
    },
    "llama3": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        # Llama 3.2's factor and band factors; the original context is small
        # so that all three bands (kept, blended, divided) turn within the
        # batch's 16 positions.
        "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64, "rope_type": "llama3"},
        "tie_word_embeddings": True,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0",
    },
    "mistral": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False,
        "hidden_act": "silu", "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "transformers_version": "4.45.0",
    },
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": None, "tie_word_embeddings": True,
        "use_sliding_window": False, "sliding_window": 512, "max_window_layers": 2,
        "hidden_act": "silu", "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16", "transformers_version": "4.45.0",
    },
}


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, raw little-endian bytes)."""
    hdr, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, (dt, shape, raw) in tensors.items():
        hdr[k] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def bf16_bytes(t):
    return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().astype("<i2").tobytes()


def f32_entry(t):
    a = t.detach().to(torch.float32).contiguous().numpy().astype("<f4")
    return ("F32", a.shape, a.tobytes())


# ---------------------------------------------------------------- tokenizer

def tokenizer_vocab(path):
    """The largest id the tokenizer can produce, plus one."""
    t = json.load(open(path, encoding="utf-8"))
    ids = list(t["model"]["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]
    return max(ids) + 1


def write_byte_tokenizer(out):
    """A byte-level BPE tokenizer.json with 256 byte tokens and two specials."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): i for i, c in enumerate(cs)}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": 256, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True},
                            {"id": 257, "content": "</s>", "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []}}
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"))
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 2048,
               "tokenizer_class": "PreTrainedTokenizerFast"}, open(os.path.join(out, "tokenizer_config.json"), "w"))


# ---------------------------------------------------------------- the model

def head_dim(c):
    # transformers: getattr(config, "head_dim", None) or hidden // heads
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def rope_inv_freq(c):
    """rope_init_fn: "default" or "llama3", in float32 as transformers."""
    dim = head_dim(c)
    base = c["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    rs = c.get("rope_scaling")
    if rs is None:
        return inv_freq
    assert rs.get("rope_type", rs.get("type")) == "llama3", rs
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths: divided by factor; short: kept; between: blended
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, blended, scaled)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def linear(x, P, name):
    y = x @ P[name + ".weight"].T
    if name + ".bias" in P:
        y = y + P[name + ".bias"]
    return y


def forward(c, P, ids, inv_freq):
    Bn, Tn = ids.shape
    H, KV, hd = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c)
    eps = c["rms_norm_eps"]
    # LlamaRotaryEmbedding.forward: inv_freq (float32) times positions,
    # then cos/sin of cat(freqs, freqs); here in float64 from the float32
    # inv_freq
    pos = torch.arange(Tn, dtype=torch.float64)
    freqs = pos[:, None] * inv_freq.to(torch.float64)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]  # (1, 1, T, hd)
    mask = torch.full((Tn, Tn), float("-inf"), dtype=torch.float64).triu(1)
    h = P["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, P[p + "input_layernorm.weight"], eps)
        q = linear(x, P, p + "self_attn.q_proj").view(Bn, Tn, H, hd).transpose(1, 2)
        k = linear(x, P, p + "self_attn.k_proj").view(Bn, Tn, KV, hd).transpose(1, 2)
        v = linear(x, P, p + "self_attn.v_proj").view(Bn, Tn, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # repeat_kv: kv head j serves query heads j*g .. j*g+g-1
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(2, 3)) * hd ** -0.5 + mask
        att = torch.softmax(att, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(Bn, Tn, H * hd)
        h = h + linear(o, P, p + "self_attn.o_proj")
        x = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        g = linear(x, P, p + "mlp.gate_proj")
        u = linear(x, P, p + "mlp.up_proj")
        h = h + linear(torch.nn.functional.silu(g) * u, P, p + "mlp.down_proj")
    h = rms_norm(h, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if c["tie_word_embeddings"] else P["lm_head.weight"]
    return h @ head.T


def causal_lm_loss(logits, ids):
    # ForCausalLMLoss: labels are the ids shifted left, the last position
    # ignored, mean over the counted positions
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


def weight_shapes(c, V):
    d, H, KV, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], head_dim(c)
    f = c["intermediate_size"]
    bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
    s = {"model.embed_tokens.weight": (V, d)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = (d,)
        s[p + "self_attn.q_proj.weight"] = (H * hd, d)
        s[p + "self_attn.k_proj.weight"] = (KV * hd, d)
        s[p + "self_attn.v_proj.weight"] = (KV * hd, d)
        if bias:
            s[p + "self_attn.q_proj.bias"] = (H * hd,)
            s[p + "self_attn.k_proj.bias"] = (KV * hd,)
            s[p + "self_attn.v_proj.bias"] = (KV * hd,)
        s[p + "self_attn.o_proj.weight"] = (d, H * hd)
        s[p + "post_attention_layernorm.weight"] = (d,)
        s[p + "mlp.gate_proj.weight"] = (f, d)
        s[p + "mlp.up_proj.weight"] = (f, d)
        s[p + "mlp.down_proj.weight"] = (d, f)
    s["model.norm.weight"] = (d,)
    if not c["tie_word_embeddings"]:
        s["lm_head.weight"] = (V, d)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("archs", nargs="+", help="ARCH or ARCH=TOKDIR (a directory with tokenizer.json and tokenizer_config.json)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    for spec in a.archs:
        arch, _, tok = spec.partition("=")
        if arch not in ARCHS:
            ap.error(f"unknown architecture {arch!r}: want one of {', '.join(sorted(ARCHS))}")
        fixture(os.path.join(a.out, arch), arch, tok, a.seed)


def fixture(out, arch, tokdir, seed):
    os.makedirs(out, exist_ok=True)
    if tokdir:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(tokdir, f), os.path.join(out, f))
    else:
        write_byte_tokenizer(out)
    V = tokenizer_vocab(os.path.join(out, "tokenizer.json"))
    c = dict(ARCHS[arch], vocab_size=V)
    json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=2)
    gen = {"bos_token_id": c["bos_token_id"], "eos_token_id": c["eos_token_id"], "do_sample": True,
           "temperature": 0.6, "top_p": 0.9, "transformers_version": c["transformers_version"]}
    json.dump(gen, open(os.path.join(out, "generation_config.json"), "w"), indent=2)

    g = torch.Generator().manual_seed(seed)
    shapes = weight_shapes(c, V)
    W = {}  # bf16 weights
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            w = 1 + 0.2 * torch.randn(shape, generator=g)  # away from 1: their gradients matter
        elif name.endswith(".bias"):
            w = 0.5 * torch.randn(shape, generator=g)  # Qwen2's biases are large
        elif name == "model.embed_tokens.weight" or name == "lm_head.weight":
            w = 0.1 * torch.randn(shape, generator=g)  # logits of order 1
        else:
            w = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        W[name] = w.to(torch.bfloat16)

    # two shards, in the order transformers saves (the dict's)
    names = list(W)
    half = len(names) // 2
    index = {"metadata": {"total_size": sum(W[n].numel() * 2 for n in names)}, "weight_map": {}}
    for k, part in enumerate((names[:half], names[half:])):
        fn = f"model-{k + 1:05d}-of-00002.safetensors"
        write_safetensors(os.path.join(out, fn), {n: ("BF16", W[n].shape, bf16_bytes(W[n])) for n in part})
        for n in part:
            index["weight_map"][n] = fn
    json.dump(index, open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=2)

    # the reference: float64 from the bf16 values
    P = {n: w.to(torch.float64).requires_grad_(True) for n, w in W.items()}
    ids = torch.randint(0, V, (B, T), generator=g)
    inv_freq = rope_inv_freq(c)
    logits = forward(c, P, ids, inv_freq)
    loss = causal_lm_loss(logits, ids)
    loss.backward()
    ref = {"ids": ("I32", ids.shape, ids.to(torch.int32).numpy().astype("<i4").tobytes()),
           "logits": f32_entry(logits), "loss": f32_entry(loss.reshape(1)), "inv_freq": f32_entry(inv_freq)}
    for n, p in P.items():
        ref["grad." + n] = f32_entry(p.grad)
    if c.get("rope_scaling"):
        # Llama 3.2 1B's own RoPE (head_dim 64, original context 8192), whose
        # bands turn far beyond the batch
        real = {"head_dim": 64, "rope_theta": 500000.0, "rope_scaling": {
            "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
        ref["inv_freq.llama3.2"] = f32_entry(rope_inv_freq(real))
    write_safetensors(os.path.join(out, "reference.safetensors"), ref)
    print(f"{arch}: vocab {V}, loss {loss.item():.6f}, {len(W)} tensors in 2 shards")


if __name__ == "__main__":
    main()
