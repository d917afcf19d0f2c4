"""The ``recipe`` section: the training hyper-parameters of a sweep's runs, and the rules that set them per run.

A named recipe, not hidden constants (conf/recipe/*.yaml).  Rules are resolved into every run's spec, so each
spec holds the values it trains with:

    lr_rule     constant: ``lr``;  deepseek: lr = 0.3118 C^-0.125 (DeepSeek LLM 2024, sec. 3.1);
                power: lr = lr (N / lr_n0)^-lr_p (D / lr_d0)^lr_q (fitted by an LR scan, sweep.mode=lr_scan)
    batch_rule  constant: ``batch_size``;  deepseek: batch tokens = 0.2920 C^0.3271 (ibid.)
    beta2       ``beta2``, or 0.5^(tokens per step / beta2_half_life_tokens) (a half-life fixed in tokens)
    warm-up     warmup_frac of the run's steps, or warmup_tokens + warmup_params x N tokens, capped
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from models.flops import CONVENTIONS


@dataclass
class RecipeConfig:  # mutable: Hydra must be able to override it (frozen dataclasses become read-only nodes)
    """Training hyper-parameters shared by every run of a sweep (a named recipe, not hidden constants)."""

    seq_len: int = 256  # tokens per training sequence (T in the FLOP count)
    batch_size: int = 32  # sequences per optimizer step, global across data-parallel ranks
    lr: float = 3e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # the LR at the last step, as a share of the peak (Chinchilla's cosine: 10%)
    warmup_frac: float = 0.05  # linear warm-up over this fraction of the run's steps (forks: of the trunk's shortest fork)
    weight_decay: float = 0.1  # decoupled AdamW decay on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # global grad-norm clip; 0 disables
    flops_convention: str = "chinchilla"  # how the budget is counted: one of models.flops.CONVENTIONS
    min_steps: int = 50  # fewer optimizer steps than this is not a meaningful run
    max_epochs: float = 4.0  # drop points that would repeat the training data more often than this
    seed: int = 0
    lr_rule: str = "constant"  # constant: `lr` for every run | deepseek: of C | power: of N and D (see resolve_lr)
    batch_rule: str = "constant"  # constant: `batch_size` | deepseek: batch tokens = 0.2920 * C^0.3271 (ibid.)
    batch_multiple: int = 1  # the deepseek batch is rounded to a multiple of this many sequences (e.g. the GPU count)
    # cosine: warm-up, then cosine to min_lr_ratio over exactly the run (Chinchilla) | wsd: warm-up, a constant peak,
    # then a cooldown over the last cooldown_frac of the run's steps to min_lr_ratio (Hägele et al. 2024, arXiv 2405.18392)
    schedule: str = "cosine"
    cooldown_frac: float = 0.2  # wsd: the share of the run's steps that cool down (Hägele et al.: ~20% matches cosine)
    cooldown_shape: str = "1-sqrt"  # wsd: linear | 1-sqrt, lr = min + (peak - min)(1 - sqrt(progress)) (better: ibid.)
    # lr_rule=power: lr = lr * (N / lr_n0)^(-lr_p) * (D / lr_d0)^lr_q (N: total parameters, D: the run's tokens)
    lr_n0: float = 1e5
    lr_p: float = 0.0
    lr_d0: float = 1e7
    lr_q: float = 0.0
    beta2_half_life_tokens: float = 0.0  # > 0: beta2 = 0.5^(tokens per step / this), a half-life fixed in tokens
    warmup_tokens: float = 0.0  # > 0: warm up over this many tokens (+ warmup_params x N) instead of warmup_frac
    warmup_params: float = 0.0  # > 0: warm up over this many tokens per parameter (Porian et al. 2024: ~1, i.e. N tokens)
    warmup_max_frac: float = 0.25  # ... capped at this fraction of the run's steps

    def __post_init__(self):
        if self.lr_rule not in ("constant", "deepseek", "power") or self.batch_rule not in ("constant", "deepseek"):
            raise ValueError(f"recipe.lr_rule / recipe.batch_rule = {self.lr_rule!r} / {self.batch_rule!r}: lr_rule is "
                             "constant, deepseek or power; batch_rule constant or deepseek")
        if not (self.lr_n0 > 0 and self.lr_d0 > 0):
            raise ValueError(f"recipe.lr_n0 and recipe.lr_d0 must be > 0, got {self.lr_n0}, {self.lr_d0}")
        if self.beta2_half_life_tokens < 0 or self.warmup_tokens < 0 or self.warmup_params < 0:
            raise ValueError("recipe.beta2_half_life_tokens, warmup_tokens and warmup_params must be >= 0 (0 = off)")
        if not 0 < self.warmup_max_frac < 1:
            raise ValueError(f"recipe.warmup_max_frac must be in (0, 1), got {self.warmup_max_frac}")
        if self.batch_multiple < 1:
            raise ValueError(f"recipe.batch_multiple must be >= 1, got {self.batch_multiple}")
        if self.flops_convention not in CONVENTIONS:
            raise ValueError(f"recipe.flops_convention={self.flops_convention!r}: use one of {', '.join(CONVENTIONS)}")
        for name in ("seq_len", "batch_size", "min_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"recipe.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"recipe.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"recipe.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"recipe.warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not self.max_epochs > 0:
            raise ValueError(f"recipe.max_epochs must be > 0, got {self.max_epochs}")
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"recipe.schedule={self.schedule!r}: use cosine or wsd")
        if not 0 < self.cooldown_frac < 1:
            raise ValueError(f"recipe.cooldown_frac must be in (0, 1), got {self.cooldown_frac}")
        if self.cooldown_shape not in ("linear", "1-sqrt"):
            raise ValueError(f"recipe.cooldown_shape={self.cooldown_shape!r}: use linear or 1-sqrt")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len  # global batch in tokens

    def resolved(self, budget: float) -> "RecipeConfig":
        """This recipe with the budget's rules evaluated at C (the batch, and a deepseek LR); a power LR rule
        waits for the run's size and length (``sized``)."""
        lr, batch = self.lr, self.batch_size
        if self.lr_rule == "deepseek":
            lr = 0.3118 * budget ** -0.1250  # DeepSeek LLM (2024, sec. 3.1) fit of the optimal peak LR over compute C
        if self.batch_rule == "deepseek":
            tokens = 0.2920 * budget ** 0.3271  # DeepSeek LLM (2024, sec. 3.1) fit of the optimal batch size in tokens
            m = self.batch_multiple
            batch = max(m, round(tokens / self.seq_len / m) * m)  # whole sequences, a multiple of batch_multiple
        rule = "power" if self.lr_rule == "power" else "constant"
        return dataclasses.replace(self, lr=lr, batch_size=batch, lr_rule=rule, batch_rule="constant")

    def sized(self, params: int, tokens: int) -> "RecipeConfig":
        """A resolved recipe with the rules of the run's size N and length D evaluated: every run's spec holds
        the values it trains with (lr_rule constant)."""
        lr, beta2 = self.lr, self.beta2
        if self.lr_rule == "power":
            # lr = lr0 (N/N0)^-p (D/D0)^q: Porian et al. 2024 tune the LR per size; Step Law (arXiv 2503.04715)
            # finds the optimal LR rising with the tokens D, so q is usually > 0
            lr = self.lr * (params / self.lr_n0) ** -self.lr_p * (tokens / self.lr_d0) ** self.lr_q
        if self.beta2_half_life_tokens > 0:
            # beta2^(steps) halves a gradient's weight after half_life tokens: beta2 = 0.5^(tokens per step / half-life)
            # (Marek et al. 2025, arXiv 2507.07101, keep the half-life fixed in tokens across batch sizes)
            beta2 = 0.5 ** (self.tokens_per_step / self.beta2_half_life_tokens)
        return dataclasses.replace(self, lr=lr, beta2=beta2, lr_rule="constant")

    def warmup_steps(self, steps: int, params: int) -> int:
        """Warm-up steps of a run of ``steps`` steps and N = ``params``: warmup_frac of the run, or (when set)
        warmup_tokens + warmup_params x N tokens, capped at warmup_max_frac of the run (Porian et al. 2024 warm up
        over ~N tokens)."""
        if self.warmup_tokens > 0 or self.warmup_params > 0:
            tokens = self.warmup_tokens + self.warmup_params * params
            return max(1, min(math.ceil(tokens / self.tokens_per_step), math.floor(self.warmup_max_frac * steps)))
        return max(1, round(self.warmup_frac * steps)) if self.warmup_frac > 0 else 0
