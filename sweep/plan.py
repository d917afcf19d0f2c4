"""Planning an isoFLOP sweep: budgets x model sizes -> RunSpecs.  Pure functions only.

For each FLOP budget C the planner centres a log-spaced grid of model sizes on the size a
prior expects to be optimal, maps each target size onto the model ladder, and sets the number
of optimizer steps so that

    steps * tokens_per_step * flops_per_token(shape) ~= C           (exact per-token count, App. F)

to within half an optimizer step.  Points that cannot be trained sensibly (too few steps, or more
epochs over the data than the recipe allows) are dropped with a stated reason.

Run ids encode the grid point, ``C1e+12-N9.12e+04``; their grammar for every kind of run is in sweep/runid.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from models.flops import CONVENTIONS, flops_per_token, param_counts
from models.ladder import LadderConfig, shape_for_params
from models.transformer import ModelConfig
from sweep.runid import KINDS, run_id


@dataclass
class RecipeConfig:  # mutable: Hydra must be able to override it (frozen dataclasses become read-only nodes)
    """Training hyper-parameters shared by every run of a sweep (a named recipe, not hidden constants)."""

    seq_len: int = 256  # tokens per training sequence (T in the FLOP count)
    batch_size: int = 32  # sequences per optimizer step, global across data-parallel ranks
    lr: float = 3e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # cosine decays to 10% of peak at the last step (Chinchilla)
    warmup_frac: float = 0.05  # linear warm-up over this fraction of the run's steps
    weight_decay: float = 0.1  # decoupled AdamW decay on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # global grad-norm clip; 0 disables
    flops_convention: str = "chinchilla"  # how the budget is counted: one of models.flops.CONVENTIONS
    min_steps: int = 50  # fewer optimizer steps than this is not a meaningful run
    max_epochs: float = 4.0  # drop points that would repeat the training data more often than this
    seed: int = 0
    lr_rule: str = "constant"  # constant: `lr` for every run | deepseek: lr = 0.3118 * C^-0.1250 (DeepSeek LLM 2024, sec. 3.1)
    batch_rule: str = "constant"  # constant: `batch_size` | deepseek: batch tokens = 0.2920 * C^0.3271 (ibid.)
    batch_multiple: int = 1  # the deepseek batch is rounded to a multiple of this many sequences (e.g. the GPU count)

    def __post_init__(self):
        if self.lr_rule not in ("constant", "deepseek") or self.batch_rule not in ("constant", "deepseek"):
            raise ValueError(f"recipe.lr_rule / recipe.batch_rule = {self.lr_rule!r} / {self.batch_rule!r}: use constant or deepseek")
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

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len  # global batch in tokens

    def resolved(self, budget: float) -> "RecipeConfig":
        """This recipe with the rules evaluated at budget C: every run's spec holds the resolved values."""
        lr, batch = self.lr, self.batch_size
        if self.lr_rule == "deepseek":
            lr = 0.3118 * budget ** -0.1250  # DeepSeek LLM (2024) fit of the optimal peak LR over compute C
        if self.batch_rule == "deepseek":
            tokens = 0.2920 * budget ** 0.3271  # DeepSeek LLM (2024) fit of the optimal batch size in tokens
            m = self.batch_multiple
            batch = max(m, round(tokens / self.seq_len / m) * m)  # whole sequences, a multiple of batch_multiple
        return dataclasses.replace(self, lr=lr, batch_size=batch, lr_rule="constant", batch_rule="constant")


@dataclass
class SweepConfig:
    """The ``sweep`` config section: which (budget, size) points to train (how to run them: ``launch``)."""

    name: str = "default"  # outputs go to outputs/<name>/<run id>/
    budgets: list = field(default_factory=list)  # FLOP budgets C
    sizes_per_budget: int = 5  # model sizes per budget
    size_span: float = 8.0  # largest / smallest target N at each budget (log-spaced in between)
    tokens_per_param: float = 20.0  # prior D/N at the optimum that centres the grid (Chinchilla: ~20)
    sizes: list = field(default_factory=list)  # explicit target sizes N for every budget; overrides the knobs above
    seeds: int = 1  # train every grid point this many times (seed + k), to measure run-to-run noise
    horizons: list = field(default_factory=list)  # Approach 1: also train each size to C x these factors, e.g. [0.25, 4]
    horizons_max_budget: float = 0.0  # skip horizon runs whose budget C x factor exceeds this; 0 = no cap


def check_sweep(sweep: SweepConfig) -> None:
    """Raise ValueError, naming the fix, for a grid that cannot be planned."""
    budgets = list(sweep.budgets)
    if not budgets:
        raise ValueError("sweep.budgets is empty: give FLOP budgets, e.g. sweep.budgets=[1e12,3e12,1e13]")
    if any(not (isinstance(c, (int, float)) and c > 0 and math.isfinite(c)) for c in budgets):
        raise ValueError(f"sweep.budgets must be positive numbers, got {budgets}")
    if sweep.sizes_per_budget < 1 or sweep.size_span < 1 or not sweep.tokens_per_param > 0:
        raise ValueError("sweep.sizes_per_budget >= 1, sweep.size_span >= 1 and sweep.tokens_per_param > 0 are required")
    if sweep.seeds < 1 or any(not h > 0 for h in sweep.horizons) or sweep.horizons_max_budget < 0:
        raise ValueError("sweep.seeds must be >= 1, sweep.horizons positive factors (e.g. [0.25,4]) and sweep.horizons_max_budget >= 0")
    if any(not n > 0 for n in sweep.sizes):
        raise ValueError(f"sweep.sizes must be positive parameter counts, got {list(sweep.sizes)}")


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs, fixed at planning time."""

    run_id: str
    budget: float  # target FLOPs C
    model: ModelConfig
    recipe: RecipeConfig
    params: int  # total parameters, tied embedding counted once
    params_non_embedding: int
    flops_per_token: float  # training (fwd+bwd) FLOPs per token under recipe.flops_convention
    steps: int
    warmup_steps: int
    tokens: int  # steps * tokens_per_step
    flops: float  # planned FLOPs = tokens * flops_per_token, within half a step of budget
    epochs: Optional[float]  # tokens / training tokens available; None when the data size is unknown
    kind: str = "grid"  # one of sweep.runid.KINDS: grid (an isoFLOP point) | horizon (Approach 1's extra lengths) | ...

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; kinds are {', '.join(KINDS)}")

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    def to_dict(self) -> dict:
        """The spec as plan.json and result.json store it, in the oldest format version that can hold it
        (see SPEC_VERSION): keys added since version 1 are left out while they hold their default, so a
        sweep that uses no newer feature keeps byte-identical specs (and spec hashes) across versions."""
        d = asdict(self)
        for section, added in ADDED_KEYS.items():
            part = d if section == "spec" else d[section]
            for key, default in added.items():
                if part.get(key) == default:
                    del part[key]
        if self.kind in V1_KINDS:
            d["kind"] = V1_KINDS[self.kind]
        else:
            d["version"] = SPEC_VERSION
        d["tokens_per_param"] = self.tokens_per_param
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """A spec of any format version; keys it lacks take their defaults."""
        version = d.get("version", 1)
        if version > SPEC_VERSION:
            raise ValueError(f"spec format version {version} is newer than this code ({SPEC_VERSION}); upgrade scaling-sweep")
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["kind"] = spec_kind(d)
        d["model"] = ModelConfig(**d["model"])
        d["recipe"] = RecipeConfig(**d["recipe"])
        return cls(**d)


# Spec format versions.  1 (until 2026-12): no "version" key, grid points were of kind "isoflop".  2: a "version"
# key, grid points of kind "grid".  A spec is written as version 1 whenever it can be (its kind existed then).
SPEC_VERSION = 2
V1_KINDS = {"grid": "isoflop", "horizon": "horizon"}  # kinds version 1 knew, as it spelled them
# Keys added to a spec (or its recipe) after version 1, with the default that gives version 1's behaviour.
# New keys must default to the old behaviour; they are written only when they differ from it.
ADDED_KEYS: dict[str, dict] = {"spec": {}, "recipe": {}}


def spec_kind(d: dict) -> str:
    """The kind of a spec dict of any version (version 1 wrote grid points as "isoflop" and may lack a kind)."""
    kind = d.get("kind") or "grid"
    return "grid" if kind == "isoflop" else kind


@dataclass(frozen=True)
class Dropped:
    budget: float
    target_params: float
    reason: str
    run_id: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# the plan

def target_sizes(budget: float, grid: SweepConfig, centre: Optional[float] = None) -> list[float]:
    """Target parameter counts for one budget.

    Prior optimum: with C ~= 6 N D and D = r N (r = tokens_per_param), N* = sqrt(C / (6 r)); a refined
    sweep passes the fitted optimum as ``centre`` instead.  The grid is log-spaced over
    [N*/sqrt(span), N*·sqrt(span)].
    """
    if grid.sizes and centre is None:
        return [float(n) for n in grid.sizes]
    n_star = centre or math.sqrt(budget / (6.0 * grid.tokens_per_param))
    k = grid.sizes_per_budget
    if k == 1:
        return [n_star]
    return [n_star * grid.size_span ** (i / (k - 1) - 0.5) for i in range(k)]


def plan_grid(
    grid: SweepConfig,
    ladder: LadderConfig,
    recipe: RecipeConfig,
    vocab_size: int,
    train_tokens: Optional[int] = None,
    centres: Optional[dict] = None,
) -> tuple[list[RunSpec], list[Dropped]]:
    """All feasible RunSpecs of the sweep, and the points dropped with their reasons.

    ``vocab_size`` is the tokenizer's; the ladder pads it.  ``train_tokens`` is the size of the
    training split, used for the epoch limit (None skips that check).  ``centres`` maps budgets to
    the N each grid is centred on (a refined sweep); other budgets use the prior.
    """
    check_sweep(grid)
    specs: list[RunSpec] = []
    dropped: list[Dropped] = []
    seen: set[str] = set()
    isoflop: list[tuple[float, ModelConfig, float]] = []  # (budget, shape, target N) of the isoFLOP grid
    for budget in sorted(float(c) for c in grid.budgets):
        shapes: list[ModelConfig] = []
        for target in target_sizes(budget, grid, (centres or {}).get(budget)):
            try:
                shape = shape_for_params(target, vocab_size, recipe.seq_len, ladder)
            except ValueError as e:
                dropped.append(Dropped(budget, target, str(e)))
                continue
            if shape in shapes:  # two targets rounded onto the same ladder rung
                dropped.append(Dropped(budget, target, "same ladder shape as the previous size; widen sweep.size_span or refine the ladder (smaller model.head_dim)"))
                continue
            shapes.append(shape)
            isoflop.append((budget, shape, target))

    points = [(c, shape, t, seed, "grid") for c, shape, t in isoflop for seed in range(grid.seeds)]
    if grid.horizons:
        # Approach 1 wants each size trained to several token horizons (Chinchilla: 4 cosine lengths over 16x):
        # every shape of the grid, once, at its first budget times each horizon factor
        first: dict[ModelConfig, tuple[float, float]] = {}
        for c, shape, t in isoflop:
            first.setdefault(shape, (c, t))
        for shape, (c, t) in first.items():
            for h in grid.horizons:
                if h == 1:
                    continue
                if grid.horizons_max_budget and c * h > grid.horizons_max_budget:
                    dropped.append(Dropped(c * h, t, f"horizon run above sweep.horizons_max_budget={grid.horizons_max_budget:.3g}"))
                    continue
                points.append((c * h, shape, t, 0, "horizon"))

    for budget, shape, target, seed, kind in points:
        run_recipe = dataclasses.replace(recipe.resolved(budget), seed=recipe.seed + seed)
        tps = run_recipe.tokens_per_step
        counts = param_counts(shape)
        n = counts["params"]
        fpt = flops_per_token(shape, recipe.flops_convention)
        # steps * tps * fpt = C, rounded to the nearest whole optimizer step
        steps = round(budget / (tps * fpt))
        rid = run_id(budget, n, seed)
        if rid in seen:
            dropped.append(Dropped(budget, target, "run id collides with another point (3 significant digits)", rid))
            continue
        if steps < recipe.min_steps:
            dropped.append(Dropped(
                budget, target,
                f"only {steps} steps (< recipe.min_steps={recipe.min_steps}); raise the budget or lower recipe.batch_size",
                rid))
            continue
        tokens = steps * tps
        epochs = tokens / train_tokens if train_tokens else None
        if epochs is not None and epochs > recipe.max_epochs:
            dropped.append(Dropped(
                budget, target,
                f"needs {epochs:.1f} epochs of the data (> recipe.max_epochs={recipe.max_epochs}); use more data or smaller budgets",
                rid))
            continue
        seen.add(rid)
        specs.append(RunSpec(
            run_id=rid,
            budget=budget,
            model=shape,
            recipe=run_recipe,
            params=n,
            params_non_embedding=counts["params_non_embedding"],
            flops_per_token=fpt,
            steps=steps,
            warmup_steps=max(1, round(recipe.warmup_frac * steps)) if recipe.warmup_frac > 0 else 0,
            tokens=tokens,
            flops=tokens * fpt,
            epochs=epochs,
            kind=kind,
        ))
    specs.sort(key=lambda s: (s.kind != "grid", s.budget, s.params, s.recipe.seed))
    return specs, dropped


def smallest_budget(grid: SweepConfig, ladder: LadderConfig, recipe: RecipeConfig, vocab_size: int) -> float:
    """FLOPs of recipe.min_steps optimizer steps of the smallest ladder shape: no budget below this can train."""
    from models.ladder import ladder as ladder_shapes

    shape = ladder_shapes(vocab_size, recipe.seq_len, ladder)[0]
    tps = recipe.resolved(min(float(c) for c in grid.budgets)).tokens_per_step
    return recipe.min_steps * tps * flops_per_token(shape, recipe.flops_convention)  # steps * tokens/step * FLOPs/token


def no_feasible_runs(dropped: list[Dropped], floor: Optional[float] = None) -> str:
    """The one-line error for a plan with no runs: the first reason, which names the fix.  ``floor``:
    the smallest budget that can train (smallest_budget), named when every budget is below it."""
    if floor is not None and dropped and all(d.budget < floor for d in dropped):
        return (f"every budget is too small: the smallest model needs {floor:.3g} FLOPs for recipe.min_steps optimizer "
                f"steps; raise sweep.budgets to at least {floor:.3g} (or lower recipe.min_steps / recipe.batch_size)")
    first = f": C={dropped[0].budget:.3g} N~{dropped[0].target_params:.3g} {dropped[0].reason}" if dropped else ""
    return f"the plan has no feasible runs{first}" + (f" (and {len(dropped) - 1} more points dropped)" if len(dropped) > 1 else "")


def plan(grid, ladder, recipe, vocab_size, train_tokens=None, centres=None) -> list[RunSpec]:
    """The feasible RunSpecs of :func:`plan_grid`."""
    return plan_grid(grid, ladder, recipe, vocab_size, train_tokens, centres)[0]


def format_plan(specs: list[RunSpec], dropped: list[Dropped], flops_per_second: float = 0.0,
                costs: Optional[list] = None, cost_note: str = "") -> str:
    """The plan as a fixed-width table: budget, N, shape, tokens, steps, tokens/param, epochs, planned FLOPs, est.
    time; with ``costs`` (sweep.cost.RunCost per spec) also the estimated peak memory per GPU at the micro-batch,
    what a run needs to fit the device (a smaller micro-batch, FSDP over k GPUs) and its GPU-hours, and totals."""
    head = (f"{'run id':<22} {'budget':>9} {'params':>9} {'shape (L x d, H/K, ff)':<24} {'tokens':>9} {'steps':>6} "
            f"{'D/N':>6} {'epochs':>6} {'FLOPs':>9} {'est.':>7}")
    device = costs is not None and any(c.gpu_hours is not None for c in costs)  # a GPU is named: flags, GPU-hours
    if costs is not None:
        head += f" {'mem/GPU':>9} {'micro':>5}" + (f" {'fits?':>10} {'GPU-h':>8}" if device else "")
    lines = [head, "-" * len(head)]
    total = 0.0
    for i, s in enumerate(specs):
        m = s.model
        shape = f"{m.n_layers}x{m.d_model}, {m.n_heads}/{m.n_kv_heads}, {m.d_ff}"
        ep = f"{s.epochs:.2f}" if s.epochs is not None else "?"
        est = _fmt_time(s.flops / flops_per_second) if flops_per_second > 0 else "?"
        total += s.flops
        line = (f"{s.run_id:<22} {s.budget:>9.3g} {s.params:>9.3g} {shape:<24} {s.tokens:>9.3g} {s.steps:>6d} "
                f"{s.tokens_per_param:>6.1f} {ep:>6} {s.flops:>9.4g} {est:>7}")
        if costs is not None:
            c = costs[i]
            line += f" {_fmt_bytes(c.memory):>9} {c.micro_batch:>5d}"
            if device:
                line += f" {c.advice or 'ok':>10} {_fmt_hours(c.gpu_hours):>8}"
        lines.append(line)
    tot = _fmt_time(total / flops_per_second) if flops_per_second > 0 else "?"
    lines.append(f"{len(specs)} runs, {total:.3g} FLOPs in total, est. {tot}")
    if costs:
        hours = [c.gpu_hours for c in costs if c.gpu_hours is not None]
        flagged = [c for c in costs if c.advice]
        lines.append(f"peak memory per GPU up to {_fmt_bytes(max(c.memory for c in costs))}"
                     + (f"; {len(flagged)} runs do not fit the GPU at their micro-batch (fits?)" if flagged else "")
                     + (f"; {_fmt_hours(sum(hours))} GPU-hours in total" if hours else ""))
    if cost_note:
        lines.append(cost_note)
    for d in dropped:
        lines.append(f"dropped C={d.budget:.3g} N~{d.target_params:.3g}: {d.reason}")
    return "\n".join(lines)


def _fmt_hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.3g}"


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _fmt_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
