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

    /usr/bin/python3 tools/hf_fixture.py logits DIR IDS OUT [DIR IDS OUT ...]

reads the Hugging Face model directory DIR (any: qat's `export --format hf`
or one this script wrote) as transformers' from_pretrained builds the
model, and writes OUT (safetensors) with its logits ("logits", F32 (B, T,
vocab)) for the ids ("ids", I32 (B, T)) of the safetensors file IDS (a
reference.safetensors serves), computed in float64 from the stored values
widened exactly (transformers would compute in float32 or torch_dtype:
the function is the same, the rounding not), and the special ids
transformers sees: "bos_token_id" and "eos_token_id" of config.json,
"tokenizer_bos_id" and "tokenizer_eos_id" (tokenizer_config.json's
bos_token / eos_token looked up in tokenizer.json, as
convert_tokens_to_ids), "generation_bos_token_id" (I32 (1)) and
"generation_eos_token_ids" (I32 (n)) of generation_config.json; -1 for
none. config.json is read by its Hugging Face key names with the defaults
of LlamaConfig, MistralConfig and Qwen2Config for a key left out
(architectures, model_type, head_dim, rope_scaling, attention_bias /
mlp_bias, Qwen2's q/k/v biases, tie_word_embeddings, ...); a setting this
model does not compute (another architecture, activation or rope_scaling
type, a sliding window shorter than the batch) is an error. The weights
are model.safetensors, or without it the shards of
model.safetensors.index.json, in F32, F16 or BF16, loaded strictly: a
tensor the model lacks, a parameter no file holds, a wrong shape, a
malformed file, a shard holding a tensor the index puts elsewhere, or one
the index names that no shard holds is an error naming it. Each triple is
independent: an error is printed as "DIR: message" and the next triple
read; the exit status is 2 when any failed. (A first argument "logits"
selects this mode: a fixture OUT directory cannot be called that.)

The model below is written from the semantics of transformers'
modeling_llama.py, modeling_mistral.py, modeling_qwen2.py and
modeling_rope_utils.py (LlamaRMSNorm, rotate_half / apply_rotary_pos_emb,
repeat_kv, eager attention with scaling head_dim**-0.5, LlamaMLP, the
rope_init_fn "default" and "llama3"); it shares no code with qat or with
tools/torch_ref.py. Only torch and numpy are needed; the safetensors files
are written by hand (8-byte header length, JSON header, raw bytes).
"""
import argparse, json, math, os, shutil, struct, sys
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


# ---------------------------------------------------------------- reading a directory

class LoadError(Exception):
    pass


ST_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "I32": ("<i4", 4), "I64": ("<i8", 8)}


def read_safetensors(path):
    """name -> float64 or int64 torch tensor, checked as the safetensors
    library checks a file: a header within the file, entries with known
    dtypes whose byte ranges match their shapes and tile the data exactly,
    no name twice."""
    def no_dups(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise LoadError(f"{path}: header names {k!r} twice")
            d[k] = v
        return d
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise LoadError(f"{path}: {len(raw)} bytes, not a safetensors file")
    n = struct.unpack("<Q", raw[:8])[0]
    if n > len(raw) - 8:
        raise LoadError(f"{path}: header of {n} bytes in a file of {len(raw)}")
    hdr = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=no_dups)
    data = raw[8 + n:]
    hdr.pop("__metadata__", None)
    out, spans = {}, []
    for name, e in hdr.items():
        if e.get("dtype") not in ST_DTYPES:
            raise LoadError(f"{path}: {name}: dtype {e.get('dtype')!r}, want one of {', '.join(ST_DTYPES)}")
        np_dt, size = ST_DTYPES[e["dtype"]]
        shape, (a, b) = e["shape"], e["data_offsets"]
        if b - a != size * math.prod(shape) or not 0 <= a <= b <= len(data):
            raise LoadError(f"{path}: {name}: data_offsets {[a, b]} for {e['dtype']} {shape} in {len(data)} data bytes")
        spans.append((a, b))
        v = np.frombuffer(data[a:b], dtype=np_dt)
        if e["dtype"] == "BF16":  # the upper half of a float32: widened exactly
            v = (v.astype(np.uint32) << 16).view(np.float32)
        t = torch.from_numpy(v.astype(np.int64 if e["dtype"][0] == "I" else np.float64))
        out[name] = t.reshape(shape)
    end = 0
    for a, b in sorted(spans):
        if a != end:
            raise LoadError(f"{path}: the tensors' data leaves bytes {end}..{a} unused or overlaps")
        end = b
    if end != len(data):
        raise LoadError(f"{path}: {len(data) - end} data bytes past the last tensor")
    return out


# the model classes transformers builds for each architecture, with the
# defaults of their configuration classes (transformers 4.45) for the keys
# a config.json may leave out
HF_CLASSES = {
    "LlamaForCausalLM": ("llama", {"num_key_value_heads": None, "head_dim": None, "hidden_act": "silu",
                                   "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
                                   "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
                                   "bos_token_id": 1, "eos_token_id": 2}),
    "MistralForCausalLM": ("mistral", {"num_key_value_heads": 8, "head_dim": None, "hidden_act": "silu",
                                       "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
                                       "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2}),
    "Qwen2ForCausalLM": ("qwen2", {"num_key_value_heads": 32, "hidden_act": "silu", "rms_norm_eps": 1e-6,
                                   "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
                                   "use_sliding_window": False, "sliding_window": 4096,
                                   "bos_token_id": None, "eos_token_id": None}),
}


def hf_config(path, T):
    """config.json as the model class reads it: the dict forward() takes
    (head_dim resolved, rope_scaling None or llama3) and the biases the
    modules have."""
    raw = json.load(open(path, encoding="utf-8"))
    archs = raw.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in HF_CLASSES:
        raise LoadError(f"{path}: architectures {archs!r}, want one of {sorted(HF_CLASSES)}")
    model_type, defaults = HF_CLASSES[archs[0]]
    if raw.get("model_type") != model_type:
        raise LoadError(f"{path}: model_type {raw.get('model_type')!r} for {archs[0]}, want {model_type!r}")
    c = dict(defaults)
    c.update(raw)
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if not isinstance(raw.get(k), int) or raw[k] <= 0:
            raise LoadError(f"{path}: {k} {raw.get(k)!r}, want a positive integer")
    if c["num_key_value_heads"] is None:
        c["num_key_value_heads"] = c["num_attention_heads"]
    # getattr(config, "head_dim", None) or hidden // heads, as the
    # attention modules read it (Qwen2's since transformers' 4.48
    # attention refactor; before, always hidden // heads)
    c["head_dim"] = head_dim(c)
    if c["hidden_act"] != "silu":
        raise LoadError(f"{path}: hidden_act {c['hidden_act']!r}: this model computes silu")
    rs = c.get("rope_scaling")
    if rs is not None:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "default":
            c["rope_scaling"] = None
        elif kind != "llama3":
            raise LoadError(f"{path}: rope_scaling type {kind!r}: this model computes default and llama3")
    window = None
    if model_type == "mistral":
        window = c["sliding_window"]
    elif model_type == "qwen2" and c["use_sliding_window"]:
        window = c["sliding_window"]
    if window is not None and T > window:
        raise LoadError(f"{path}: sliding_window {window} is shorter than the batch's {T} positions")
    # the modules' biases: LlamaAttention's attention_bias is on q, k, v and
    # o; Qwen2's q/k/v always, o never; Mistral's none
    if model_type == "llama":
        attn_bias = ("q_proj", "k_proj", "v_proj", "o_proj") if c["attention_bias"] else ()
        mlp_bias = c["mlp_bias"]
    elif model_type == "qwen2":
        attn_bias, mlp_bias = ("q_proj", "k_proj", "v_proj"), False
    else:
        attn_bias, mlp_bias = (), False
    return c, attn_bias, mlp_bias


def hf_param_shapes(c, attn_bias, mlp_bias):
    """The state dict of the model class: name -> shape."""
    d, V, f = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    H, KV, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    outs = {"q_proj": (H * hd, d), "k_proj": (KV * hd, d), "v_proj": (KV * hd, d), "o_proj": (d, H * hd)}
    mlp = {"gate_proj": (f, d), "up_proj": (f, d), "down_proj": (d, f)}
    s = {"model.embed_tokens.weight": (V, d)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = (d,)
        s[p + "post_attention_layernorm.weight"] = (d,)
        for m, shape in outs.items():
            s[p + "self_attn." + m + ".weight"] = shape
            if m in attn_bias:
                s[p + "self_attn." + m + ".bias"] = (shape[0],)
        for m, shape in mlp.items():
            s[p + "mlp." + m + ".weight"] = shape
            if mlp_bias:
                s[p + "mlp." + m + ".bias"] = (shape[0],)
    s["model.norm.weight"] = (d,)
    if not c["tie_word_embeddings"]:
        s["lm_head.weight"] = (V, d)
    return s


def hf_state_dict(d):
    """The tensors of d's weights: model.safetensors, else the index's
    shards (transformers' order of preference), each checked against the
    index."""
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    ip = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(ip):
        raise LoadError(f"{d}: neither model.safetensors nor model.safetensors.index.json")
    wm = json.load(open(ip, encoding="utf-8")).get("weight_map")
    if not isinstance(wm, dict) or not wm:
        raise LoadError(f"{ip}: no weight_map")
    P = {}
    for fn in sorted(set(wm.values())):
        if os.path.basename(fn) != fn:
            raise LoadError(f"{ip}: shard {fn!r} is not a file of the directory")
        for name, t in read_safetensors(os.path.join(d, fn)).items():
            if wm.get(name) != fn:
                raise LoadError(f"{d}/{fn}: holds {name}, which the index puts in {wm.get(name)!r}")
            P[name] = t
    for name, fn in wm.items():
        if name not in P:
            raise LoadError(f"{ip}: {name} is not in {fn}")
    return P


def token_id(tok, tc, role):
    """tokenizer_config.json's role token (a string or an AddedToken dict)
    as the tokenizer's id (added tokens, then the vocabulary), -1 when the
    role is unset; transformers' convert_tokens_to_ids."""
    t = tc.get(role)
    if isinstance(t, dict):
        t = t.get("content")
    if t is None:
        return -1
    for a in tok.get("added_tokens", []):
        if a["content"] == t:
            return a["id"]
    if t in tok["model"]["vocab"]:
        return tok["model"]["vocab"][t]
    raise LoadError(f"tokenizer_config.json: {role} {t!r} is not a token of tokenizer.json")


def hf_logits(d, ids_path, out):
    ids = read_safetensors(ids_path).get("ids")
    if ids is None or ids.dim() != 2:
        raise LoadError(f"{ids_path}: no ids of shape (B, T)")
    c, attn_bias, mlp_bias = hf_config(os.path.join(d, "config.json"), ids.shape[1])
    if int(ids.min()) < 0 or int(ids.max()) >= c["vocab_size"]:
        raise LoadError(f"{ids_path}: ids outside vocab_size {c['vocab_size']}")
    want = hf_param_shapes(c, attn_bias, mlp_bias)
    P = hf_state_dict(d)
    unexpected = sorted(set(P) - set(want))
    missing = sorted(set(want) - set(P))
    if unexpected or missing:
        raise LoadError(f"{d}: unexpected tensors {unexpected}, missing {missing}")
    for name, shape in want.items():
        if tuple(P[name].shape) != shape:
            raise LoadError(f"{d}: {name} has shape {list(P[name].shape)}, the model {list(shape)}")
        if P[name].dtype != torch.float64:
            raise LoadError(f"{d}: {name} is an integer tensor")
    with torch.no_grad():
        logits = forward(c, P, ids, rope_inv_freq(c))
    res = {"logits": f32_entry(logits)}

    def i32(v):
        return ("I32", (1,), struct.pack("<i", v))
    for k in ("bos_token_id", "eos_token_id"):
        v = c.get(k)
        if isinstance(v, list):  # transformers takes a list for eos: the first is the eos token
            v = v[0] if v else None
        res[k] = i32(-1 if v is None else v)
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tc = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
    res["tokenizer_bos_id"] = i32(token_id(tok, tc, "bos_token"))
    res["tokenizer_eos_id"] = i32(token_id(tok, tc, "eos_token"))
    # GenerationConfig: the ids generate() starts and stops with
    gp = os.path.join(d, "generation_config.json")
    gen = json.load(open(gp, encoding="utf-8")) if os.path.exists(gp) else {}
    bos, eos = gen.get("bos_token_id"), gen.get("eos_token_id")
    eos = [] if eos is None else eos if isinstance(eos, list) else [eos]
    res["generation_bos_token_id"] = i32(-1 if bos is None else bos)
    res["generation_eos_token_ids"] = ("I32", (len(eos),), struct.pack(f"<{len(eos)}i", *eos))
    write_safetensors(out, res)
    print(f"{d}: {len(P)} tensors, logits {list(logits.shape)}")


def logits_main(args):
    if not args or len(args) % 3:
        print("usage: hf_fixture.py logits DIR IDS OUT [DIR IDS OUT ...]", file=sys.stderr)
        sys.exit(2)
    failed = 0
    for i in range(0, len(args), 3):
        d, ids, out = args[i:i + 3]
        try:
            hf_logits(d, ids, out)
        except Exception as e:  # every failure named, the other triples still read
            print(f"{d}: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
    sys.exit(2 if failed else 0)


def main():
    if sys.argv[1:2] == ["logits"]:
        return logits_main(sys.argv[2:])
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
