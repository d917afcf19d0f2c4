"""The model shape for a target parameter count: a one-dimensional "ladder" of shapes indexed by width.

Rule (every rung is a `ModelConfig`):
    d_model    = m * head_dim                      for m = 1, 2, ... while d_model <= max_d_model
    n_heads    = d_model / head_dim                (= m)
    n_layers   = max(min_layers, round_half_up(d_model / aspect_ratio))
    d_ff       = ceil(ffn_ratio * d_model / d_ff_multiple) * d_ff_multiple
                 (SwiGLU at ffn_ratio = 8/3 keeps the MLP at ~8 d^2 params, like a 4d two-matrix MLP; Llama)
    n_kv_heads = largest divisor of n_heads that is <= n_heads / kv_group (at least 1)
    vocab_size = pad_vocab(vocab_size, vocab_multiple)
    seq_len, tie_embeddings: passed through

With kv_group > 1, n_kv_heads can drop when n_heads has no suitable divisor (kv_group=2: 12 heads
-> 6 KV heads but 13 heads -> 1); such rungs are skipped, so that every dimension is non-decreasing
along the ladder. Since d_model also strictly increases (and with it the V*d embedding), the total
parameter count N is strictly increasing, and "nearest rung in log N" is a monotone map from targets
to shapes.

`shape_for_params(n_target, ...)` returns the rung whose N (models.flops.param_counts, embeddings
included) is nearest to n_target in log space, ties going to the smaller rung.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import numbers
import operator
from dataclasses import dataclass

from models.flops import param_counts
from models.transformer import ModelConfig, pad_vocab


@dataclass  # mutable on purpose: it is the Hydra `model` section, and frozen dataclasses become read-only nodes
class LadderConfig:
    aspect_ratio: float = 64.0  # d_model / n_layers (Kaplan 2020 fig. 5: loss is flat over ~20-200)
    head_dim: int = 64  # width of each attention head; d_model steps in units of this
    ffn_ratio: float = 8 / 3  # SwiGLU d_ff ~= ffn_ratio * d_model (Llama)
    d_ff_multiple: int = 32  # d_ff is rounded up to a multiple of this
    min_layers: int = 1  # floor on n_layers for the narrowest rungs
    kv_group: int = 1  # query heads per KV head; 1 = multi-head attention
    tie_embeddings: bool = False  # share the embedding matrix with the lm_head
    vocab_multiple: int = 64  # tokenizer vocab is padded up to a multiple of this
    max_d_model: int = 16384  # the widest rung

    def __post_init__(self):
        for name in ("head_dim", "d_ff_multiple", "min_layers", "kv_group", "vocab_multiple", "max_d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LadderConfig.{name} must be a positive int, got {value!r}")
        for name in ("aspect_ratio", "ffn_ratio"):
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value <= 0):
                raise ValueError(f"LadderConfig.{name} must be a positive number, got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"LadderConfig.tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if self.head_dim % 2 != 0:
            raise ValueError(f"LadderConfig.head_dim={self.head_dim} must be even (RoPE rotates pairs)")
        if self.max_d_model < self.head_dim:
            raise ValueError(f"LadderConfig.max_d_model={self.max_d_model} is below head_dim={self.head_dim}; "
                             f"the ladder would be empty")


def _largest_divisor_at_most(n: int, limit: float) -> int:
    return max((k for k in range(1, n + 1) if n % k == 0 and k <= limit), default=1)


def _rung(m: int, vocab: int, seq_len: int, cfg: LadderConfig) -> ModelConfig:
    d = m * cfg.head_dim
    # int(x + 0.5) is round-half-up; Python's round() would send 2.5 to 2 (banker's rounding).
    n_layers = max(cfg.min_layers, int(d / cfg.aspect_ratio + 0.5))
    # The 1e-9 keeps float noise (8/3 * 192 = 511.99999...) from bumping d_ff up a whole multiple.
    d_ff = math.ceil(cfg.ffn_ratio * d / cfg.d_ff_multiple - 1e-9) * cfg.d_ff_multiple
    return ModelConfig(
        d_model=d, n_layers=n_layers, n_heads=m, n_kv_heads=_largest_divisor_at_most(m, m / cfg.kv_group),
        d_ff=d_ff, vocab_size=vocab, seq_len=seq_len, tie_embeddings=cfg.tie_embeddings,
    )


def _ladder(vocab_size: int, seq_len: int, cfg: LadderConfig) -> tuple[tuple[ModelConfig, ...], tuple[int, ...]]:
    """(shapes, params), both in increasing N. Cached: the planner asks for the same ladder many times."""
    # the cache is keyed on the config's field values, since the (mutable) config itself is not hashable
    return _cached_ladder(vocab_size, seq_len, dataclasses.astuple(cfg))


@functools.lru_cache(maxsize=256)
def _cached_ladder(vocab_size: int, seq_len: int, key: tuple) -> tuple[tuple[ModelConfig, ...], tuple[int, ...]]:
    cfg = LadderConfig(*key)
    vocab = pad_vocab(vocab_size, cfg.vocab_multiple)
    shapes: list[ModelConfig] = []
    for m in range(1, cfg.max_d_model // cfg.head_dim + 1):
        shape = _rung(m, vocab, seq_len, cfg)
        if shapes and shape.n_kv_heads < shapes[-1].n_kv_heads:
            continue  # n_kv_heads would shrink (see module docstring)
        shapes.append(shape)
    params = tuple(param_counts(s)["params"] for s in shapes)
    assert all(a < b for a, b in zip(params, params[1:])), "ladder N must be strictly increasing"
    return tuple(shapes), params


def _positive_int(name: str, value) -> int:
    """Accept ints and numpy integers (planners often pass np.int64); the cache key must be a plain int."""
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None
    if isinstance(value, bool) or n <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return n


def ladder(vocab_size: int, seq_len: int, cfg: LadderConfig) -> list[ModelConfig]:
    """Every rung of the ladder, in increasing parameter count."""
    return list(_ladder(_positive_int("vocab_size", vocab_size), _positive_int("seq_len", seq_len), cfg)[0])


def shape_for_params(n_target: float, vocab_size: int, seq_len: int, cfg: LadderConfig) -> ModelConfig:
    """The rung whose total params is nearest to n_target in log space (ties -> smaller rung).

    Raises ValueError if n_target lies outside [smallest rung's N, largest rung's N].
    """
    shapes, params = _ladder(_positive_int("vocab_size", vocab_size), _positive_int("seq_len", seq_len), cfg)
    if (not isinstance(n_target, numbers.Real) or isinstance(n_target, bool)
            or not math.isfinite(n_target) or n_target <= 0):
        raise ValueError(f"n_target must be a positive finite number, got {n_target!r}")
    if n_target < params[0]:
        raise ValueError(f"n_target={n_target:.4g} params is below the smallest ladder shape "
                         f"({params[0]:,} params, d_model={shapes[0].d_model}); lower the head_dim or the vocab")
    if n_target > params[-1]:
        raise ValueError(f"n_target={n_target:.4g} params is above the largest ladder shape "
                         f"({params[-1]:,} params, d_model={shapes[-1].d_model}); raise max_d_model")
    hi = bisect.bisect_left(params, n_target)  # first rung with N >= n_target
    if params[hi] == n_target or hi == 0:
        return shapes[hi]
    lo = hi - 1  # params[lo] < n_target < params[hi]
    log_t = math.log(n_target)
    if math.log(params[hi]) - log_t < log_t - math.log(params[lo]):
        return shapes[hi]
    return shapes[lo]
