"""A Llama-style decoder-only language model, in one readable file.

Architecture (Touvron et al. 2023, "LLaMA"): token embedding -> n_layers x [RMSNorm -> causal
self-attention with RoPE (optionally grouped-query) -> residual; RMSNorm -> SwiGLU MLP -> residual]
-> final RMSNorm -> lm_head. No biases, no dropout, no learned positions.

Parameter names follow Meta's Llama checkpoints (tok_embeddings, layers.{i}.attention.wq, ...,
layers.{i}.feed_forward.w1, attention_norm, ffn_norm, norm, output) so an export is a rename. wq and wk are
stored in the rotate-half layout (GPT-NeoX / Hugging Face `LlamaForCausalLM`: head dims i and i + hd/2 rotate
together), so exporting to HF needs no permutation of them; the forward reorders their rows each step so that each
rotating pair sits side by side and RoPE is one complex multiply (see `Attention.forward`).

Everything runs in fp32 on CPU; on CUDA wrap the forward in `torch.autocast("cuda", torch.bfloat16)`.
RMSNorm, RoPE and the loss are computed in fp32 regardless.  The initial value of every parameter is a pure
function of (seed, parameter name), so an FSDP2 model built on the meta device and sharded first starts
exactly where an unsharded one does (`Transformer.initial_value`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import MISSING, asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    d_model: int  # residual stream width d
    n_layers: int  # number of transformer blocks L
    n_heads: int  # query heads H; head_dim = d_model // n_heads
    n_kv_heads: int  # key/value heads K (K == H: multi-head, K == 1: multi-query, else grouped-query)
    d_ff: int  # SwiGLU hidden width (w1, w3: d -> d_ff; w2: d_ff -> d)
    vocab_size: int  # V, used exactly as given (pad it beforehand with pad_vocab if you want)
    seq_len: int  # maximum context T; RoPE tables are precomputed up to this length
    tie_embeddings: bool = False  # lm_head shares the token-embedding matrix (counted once)
    rope_theta: float = 10000.0  # RoPE base frequency (Su et al. 2021; Llama uses 10000)

    def __post_init__(self):
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "vocab_size", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"ModelConfig.tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if (not isinstance(self.rope_theta, (int, float)) or isinstance(self.rope_theta, bool)
                or not math.isfinite(self.rope_theta) or self.rope_theta <= 0):
            raise ValueError(f"ModelConfig.rope_theta must be a positive number, got {self.rope_theta!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}; "
                             f"pick d_model as a multiple of n_heads")
        if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}; "
                             f"use a divisor of n_heads (n_heads for MHA, 1 for MQA)")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim = d_model/n_heads = {self.head_dim} must be even for RoPE; "
                             f"change d_model or n_heads")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {sorted(unknown)}; valid keys are {sorted(known)}")
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(d)
        if missing:
            raise ValueError(f"ModelConfig is missing required keys {sorted(missing)}")
        return cls(**d)


def pad_vocab(vocab_size: int, multiple: int = 64) -> int:
    """Round vocab_size up to a multiple (nanoGPT pads 50257 -> 50304 for faster matmuls)."""
    if vocab_size <= 0 or multiple <= 0:
        raise ValueError(f"pad_vocab needs positive sizes, got vocab_size={vocab_size}, multiple={multiple}")
    return -(-vocab_size // multiple) * multiple


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019), computed in fp32 (or wider)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RMSNormFunction.apply(x, self.weight, self.eps)


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with its backward written out.  With xh = x * r, r = (mean(x^2) + eps)^-1/2 and g = dL/dy * weight:

        dL/dx = r * (g - xh * mean(g * xh))        dL/dweight = sum over tokens of dL/dy * xh

    (the Jacobian of x -> x * r(x), whose rank-one part comes from dr/dx = -r^3 x / d).  Eager on CPU this is about 4
    kernels forward and 6 backward, where autograd of the written-out formula runs about 14 (benchmarks/
    model_variants.md); a compiled graph traces both methods like any other ops."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        r = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)  # (..., 1)
        xh = xf * r
        ctx.save_for_backward(xh, r, weight)
        ctx.x_dtype = x.dtype
        return (xh * weight.to(xh.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        xh, r, weight = ctx.saved_tensors
        gy = grad_y.to(xh.dtype)
        g = gy * weight.to(xh.dtype)
        grad_weight = (gy * xh).flatten(0, -2).sum(0)  # (d,)
        mean_g_xh = torch.linalg.vecdot(g, xh, dim=-1).unsqueeze(-1) / xh.shape[-1]  # (..., 1)
        grad_x = torch.addcmul(g, xh, mean_g_xh, value=-1.0).mul_(r)
        return grad_x.to(ctx.x_dtype), grad_weight.to(weight.dtype), None


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim/2): the angle t * theta^(-2i/hd) of pair i at position t (Su et al.
    2021, eq. 34)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # (T, hd/2)
    return angles.cos().float(), angles.sin().float()


def pair_rows(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Reorder a q or k projection's output rows, (n_heads * hd, d), from rotate-half order (each head's dims i and
    i + hd/2 rotate together) to interleaved order (they become dims 2i and 2i + 1).  Applied to q and k alike it
    permutes each head's dims the same way, which leaves every q . k dot product unchanged."""
    return w.view(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(n_heads * head_dim, -1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_2i, x_2i+1) by its position's angle: (x_2i + i x_2i+1) * (cos + i sin).  x: (B, n, T, hd)
    in interleaved order (``pair_rows``), cos/sin: (T, hd/2).  Computed in fp32.

    Eager, it is one complex multiply: on CPU 2 kernels forward and 1 backward, where the rotate-half form
    x * cos + cat(-x2, x1) * sin takes 5 and 4 (benchmarks/model_variants.md).  Inductor generates no code for
    complex ops (it would fall back to eager kernels), so a compiled graph gets the same rotation in real arithmetic
    (``rope_real``), which it fuses."""
    if torch.compiler.is_compiling():
        return rope_real(x, cos, sin)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, n, T, hd/2) complex
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).type_as(x)


def rope_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` in real arithmetic: (x_2i, x_2i+1) -> (x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos)."""
    xf = x.float()
    x1, x2 = xf[..., 0::2], xf[..., 1::2]  # (B, n, T, hd/2) each
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, K, hd = self.n_heads, self.n_kv_heads, self.head_dim
        # q and k come out with each head's rotating pairs side by side (pair_rows: a copy of a d x d weight, not
        # of the activations); the scores q . k, and so the output, are those of the rotate-half layout.
        q = F.linear(x, pair_rows(self.wq.weight, H, hd)).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        k = F.linear(x, pair_rows(self.wk.weight, K, hd)).view(B, T, K, hd).transpose(1, 2)  # (B, K, T, hd)
        v = self.wv(x).view(B, T, K, hd).transpose(1, 2)  # (B, K, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # enable_gqa lets each group of H/K query heads share one K/V head without materialising copies
        # on the fused kernels (the math kernel repeats k, v internally).
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=(K != H))  # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, H * hd)  # (B, T, H*hd)
        return self.wo(y)  # (B, T, d)


class FeedForward(nn.Module):
    """SwiGLU MLP (Shazeer 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, d_ff) -> (B, T, d)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)  # (B, T, d)
        x = x + self.feed_forward(self.ffn_norm(x))  # (B, T, d)
        return x


class Transformer(nn.Module):
    """The model; ``Transformer(cfg, seed)`` is initialised, and built under ``torch.device("meta")`` it holds no
    storage until ``to_empty`` (then ``reset_parameters(seed)`` or a checkpoint fills it: FSDP's meta-device init)."""

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight  # one Parameter, seen once by .parameters()
        # RoPE tables are derived from the config, so they are buffers that are not saved in state_dict.
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (seq_len, hd/2)
        self.register_buffer("rope_sin", sin, persistent=False)  # (seq_len, hd/2)
        if not self.rope_cos.is_meta:
            self.reset_parameters(seed)

    def to_empty(self, *, device, recurse: bool = True) -> "Transformer":
        """Give a meta-device model real (uninitialised) storage on ``device``, keeping what ``__init__`` set up:
        ``Module.to_empty`` would give the tied lm_head a tensor of its own, and leaves the RoPE tables empty."""
        super().to_empty(device=device, recurse=recurse)
        if self.cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(self.cfg.seq_len, self.cfg.head_dim, self.cfg.rope_theta)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        return self

    def initial_value(self, name: str, seed: int) -> torch.Tensor:
        """The initial value of parameter ``name``: full shape, fp32, on the CPU.

        N(0, 0.02) everywhere (GPT-2 / nanoGPT); the projections that write into the residual stream (wo, w2)
        get std 0.02/sqrt(2L) so the residual variance does not grow with depth (GPT-2 paper, sec. 2.3: "scale
        the weights of residual layers by 1/sqrt(N)"); norm gains start at 1.  Each parameter draws from its own
        generator, seeded by (seed, name), so the value does not depend on the device, on the order parameters
        are visited in, or on how they are sharded.
        """
        p = self.get_parameter(name)
        if name.endswith("norm.weight"):
            return torch.ones(p.shape)
        std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("wo.weight", "w2.weight")) else 0.02
        key = int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1
        return torch.empty(p.shape).normal_(0.0, std, generator=torch.Generator().manual_seed(key))

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0):
        """Set every parameter to ``initial_value(name, seed)``.  A parameter sharded by FSDP2 (a DTensor) takes
        its rank's slice of that full value, so a sharded model starts exactly where an unsharded one does."""
        for name, p in self.named_parameters():  # a tied weight once, as tok_embeddings.weight
            value = self.initial_value(name, seed)
            if hasattr(p, "placements"):  # a DTensor: this rank holds one shard
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value, p.device_mesh, p.placements)
            p.copy_(value)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """idx: (B, T) token ids, T <= seq_len. Returns logits (B, T, V), or the mean CE loss if targets given."""
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence length {T} exceeds seq_len={self.cfg.seq_len}; "
                             f"truncate the input or build the model with a larger seq_len")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, hd/2)
        x = self.tok_embeddings(idx)  # (B, T, d)
        for layer in self.layers:
            x = layer(x, cos, sin)  # (B, T, d)
        x = self.norm(x)  # (B, T, d)
        logits = self.output(x)  # (B, T, V)
        if targets is None:
            return logits
        # Loss in fp32 even under bf16 autocast: the log-softmax over V is where precision matters.
        return F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T))
