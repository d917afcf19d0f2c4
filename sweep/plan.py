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

import bisect
import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from models.flops import flops_per_token, param_counts
from models.ladder import LadderConfig, shape_for_params
from models.transformer import ModelConfig
from sweep.recipe import RecipeConfig
from sweep.runid import KINDS, run_id


@dataclass
class ScanConfig:
    """``sweep.scan``: the LR scan of ``sweep.mode=lr_scan`` (sweep/lrscan.py)."""

    sizes: int = 4  # model sizes, log-spaced over the range of the grid's sizes
    lrs: int = 5  # peak LRs per size, log-spaced a factor lr_factor apart, centred on the recipe's rule
    lr_factor: float = 2.0
    tokens_per_param: float = 20.0  # each size's scan run trains D = this x N tokens ...
    max_flops: float = 0.0  # ... unless the scan's FLOPs would exceed this: then the largest sizes train less; 0 = no cap
    extend: int = 2  # when a size's best LR is at an edge of its scan, add up to this many LRs beyond it
    lengths: list = field(default_factory=lambda: [0.25, 0.5])  # with sweep.forks: also cool down at these x the length


@dataclass
class SweepConfig:
    """The ``sweep`` config section: which (budget, size) points to train (how to run them: ``launch``)."""

    name: str = "default"  # outputs go to outputs/<name>/<run id>/
    budgets: list = field(default_factory=list)  # FLOP budgets C
    sizes_per_budget: int = 5  # model sizes per budget
    size_span: float = 8.0  # largest / smallest target N at each budget (log-spaced in between)
    tokens_per_param: float = 20.0  # prior D/N at the optimum that centres the grid (Chinchilla: ~20)
    prior_count: str = "6N"  # how the prior turns C into D: 6N (C = 6 N D) | exact (C = D x the ladder's FLOPs/token)
    sizes: list = field(default_factory=list)  # explicit target sizes N for every budget; overrides the knobs above
    seeds: int = 1  # train every grid point this many times (seed + k), to measure run-to-run noise
    seed_sizes: int = 0  # > 0: repeat only the this many central sizes of each budget (0: every size)
    horizons: list = field(default_factory=list)  # Approach 1: also train each size to C x these factors, e.g. [0.25, 4]
    horizons_max_budget: float = 0.0  # skip horizon runs whose budget C x factor exceeds this; 0 = no cap
    forks: bool = False  # one constant-LR trunk per (shape, seed), a cooldown fork per budget (needs recipe.schedule=wsd)
    # after the grid: fit, predict the compute-optimal N at validate_factor x the top budget, and train validate_sizes
    # runs there (kind validation, held out of every fit), log-spaced over validate_span around the prediction
    validate: bool = False
    validate_factor: float = 3.0
    validate_sizes: int = 1
    validate_span: float = 4.0
    mode: str = "grid"  # grid: the isoFLOP grid | lr_scan: LR scans per size that fit recipe.lr_rule=power (sweep.scan)
    scan: ScanConfig = field(default_factory=ScanConfig)


def check_sweep(sweep: SweepConfig) -> None:
    """Raise ValueError, naming the fix, for a grid that cannot be planned."""
    budgets = list(sweep.budgets)
    if not budgets:
        raise ValueError("sweep.budgets is empty: give FLOP budgets, e.g. sweep.budgets=[1e12,3e12,1e13]")
    if any(not (isinstance(c, (int, float)) and c > 0 and math.isfinite(c)) for c in budgets):
        raise ValueError(f"sweep.budgets must be positive numbers, got {budgets}")
    if sweep.sizes_per_budget < 1 or sweep.size_span < 1 or not sweep.tokens_per_param > 0:
        raise ValueError("sweep.sizes_per_budget >= 1, sweep.size_span >= 1 and sweep.tokens_per_param > 0 are required")
    if sweep.seeds < 1 or sweep.seed_sizes < 0 or any(not h > 0 for h in sweep.horizons) or sweep.horizons_max_budget < 0:
        raise ValueError("sweep.seeds must be >= 1, sweep.horizons positive factors (e.g. [0.25,4]) and sweep.horizons_max_budget >= 0")
    if any(not n > 0 for n in sweep.sizes):
        raise ValueError(f"sweep.sizes must be positive parameter counts, got {list(sweep.sizes)}")
    if not (sweep.validate_factor > 0 and sweep.validate_sizes >= 1 and sweep.validate_span >= 1):
        raise ValueError("sweep.validate_factor > 0, sweep.validate_sizes >= 1 and sweep.validate_span >= 1 are required")
    if sweep.prior_count not in ("6N", "exact"):
        raise ValueError(f"sweep.prior_count={sweep.prior_count!r}: use 6N or exact")
    if sweep.mode not in ("grid", "lr_scan"):
        raise ValueError(f"sweep.mode={sweep.mode!r}: use grid (the isoFLOP sweep) or lr_scan (fit the LR rule first)")
    sc = sweep.scan
    if sc.sizes < 1 or sc.lrs < 3 or not sc.lr_factor > 1 or not sc.tokens_per_param > 0 or sc.max_flops < 0 or sc.extend < 0:
        raise ValueError("sweep.scan needs sizes >= 1, lrs >= 3 (a parabola), lr_factor > 1, tokens_per_param > 0, "
                         "max_flops >= 0 and extend >= 0")
    if any(not 0 < f < 1 for f in sc.lengths):
        raise ValueError(f"sweep.scan.lengths are fractions of each size's scan length in (0, 1), got {list(sc.lengths)}")


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
    cooldown_steps: int = 0  # wsd: the last steps, whose LR decays to min_lr_ratio (0: cosine, or a trunk's constant LR)
    start_step: int = 0  # a fork starts from its trunk's checkpoint at this step (steps, tokens, FLOPs count from 0)
    trunk: Optional[str] = None  # a fork's trunk (its run id)
    branch_steps: tuple = ()  # a trunk keeps checkpoints at these steps, where its forks branch off

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; kinds are {', '.join(KINDS)}")
        object.__setattr__(self, "branch_steps", tuple(self.branch_steps))  # JSON gives a list

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def flops_spent(self) -> float:
        """FLOPs this run itself trains: a fork's share after its branch step (its prefix is its trunk's)."""
        return (self.steps - self.start_step) * self.recipe.tokens_per_step * self.flops_per_token

    def to_dict(self) -> dict:
        """The spec as plan.json and result.json store it, in the oldest format version that can hold it
        (see SPEC_VERSION): keys added since version 1 are left out while they hold their default, so a
        sweep that uses no newer feature keeps byte-identical specs (and spec hashes) across versions."""
        d = asdict(self)
        d["branch_steps"] = list(self.branch_steps)
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
ADDED_KEYS: dict[str, dict] = {
    "spec": {"cooldown_steps": 0, "start_step": 0, "trunk": None, "branch_steps": []},
    "recipe": {"schedule": "cosine", "cooldown_frac": 0.2, "cooldown_shape": "1-sqrt", "lr_n0": 1e5, "lr_p": 0.0,
               "lr_d0": 1e7, "lr_q": 0.0, "beta2_half_life_tokens": 0.0, "warmup_tokens": 0.0, "warmup_params": 0.0,
               "warmup_max_frac": 0.25},
}


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

def target_sizes(budget: float, grid: SweepConfig, centre: Optional[float] = None,
                 flops_per_token_of=None) -> list[float]:
    """Target parameter counts for one budget.

    Prior optimum: D = r N (r = tokens_per_param) and, with prior_count 6N, C ~= 6 N D, so N* = sqrt(C / (6 r)); with
    prior_count exact, C = D fpt(N) with the ladder's exact FLOPs per token (``flops_per_token_of``, N -> fpt), so N*
    solves r N fpt(N) = C (fpt/6N is 1.3-2.7 on tiny models, and drifts with N: a 6N prior then centres each budget
    differently).  A refined sweep passes the fitted optimum as ``centre`` instead.  The grid is log-spaced over
    [N*/sqrt(span), N*·sqrt(span)].
    """
    if grid.sizes and centre is None:
        return [float(n) for n in grid.sizes]
    n_star = centre or math.sqrt(budget / (6.0 * grid.tokens_per_param))
    if centre is None and grid.prior_count == "exact":
        if flops_per_token_of is None:
            raise ValueError("sweep.prior_count=exact needs the ladder's FLOPs per token")
        for _ in range(60):  # fixed point of N = sqrt(C / (r fpt(N) / N)); fpt(N)/N varies slowly, so it converges fast
            n_star = math.sqrt(budget / (grid.tokens_per_param * flops_per_token_of(n_star) / n_star))
    k = grid.sizes_per_budget
    if k == 1:
        return [n_star]
    return [n_star * grid.size_span ** (i / (k - 1) - 0.5) for i in range(k)]


def ladder_flops_per_token(vocab_size: int, seq_len: int, ladder_cfg: LadderConfig, convention: str):
    """N -> training FLOPs per token along the ladder: log-log interpolation between its rungs' exact counts, and
    the end rungs' fpt / N beyond them."""
    from models.ladder import ladder as ladder_shapes

    shapes = ladder_shapes(vocab_size, seq_len, ladder_cfg)
    log_n = [math.log(param_counts(s)["params"]) for s in shapes]
    log_f = [math.log(flops_per_token(s, convention)) for s in shapes]

    def fpt(n: float) -> float:
        x = math.log(n)
        if x <= log_n[0]:
            return math.exp(log_f[0] + x - log_n[0])
        if x >= log_n[-1]:
            return math.exp(log_f[-1] + x - log_n[-1])
        i = bisect.bisect_right(log_n, x) - 1
        t = (x - log_n[i]) / (log_n[i + 1] - log_n[i])
        return math.exp(log_f[i] + t * (log_f[i + 1] - log_f[i]))

    return fpt


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
        fpt_of = (ladder_flops_per_token(vocab_size, recipe.seq_len, ladder, recipe.flops_convention)
                  if grid.prior_count == "exact" else None)
        for target in target_sizes(budget, grid, (centres or {}).get(budget), fpt_of):
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

    points = []
    for budget in sorted({c for c, _, _ in isoflop}):
        row = [(c, shape, t) for c, shape, t in isoflop if c == budget]
        first = (len(row) - grid.seed_sizes) // 2 if 0 < grid.seed_sizes < len(row) else 0  # the central seed_sizes
        last = first + grid.seed_sizes if 0 < grid.seed_sizes < len(row) else len(row)
        points += [(c, shape, t, seed, "grid", None) for i, (c, shape, t) in enumerate(row)
                   for seed in range(grid.seeds if first <= i < last else 1)]
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
                points.append((c * h, shape, t, 0, "horizon", None))

    if grid.forks:
        from sweep.forks import plan_forks

        specs = plan_forks(points, recipe, train_tokens, seen, dropped)
    else:
        for budget, shape, target, seed, kind, _ in points:
            run_recipe = dataclasses.replace(recipe.resolved(budget), seed=recipe.seed + seed)
            spec = point_spec(budget, shape, target, seed, kind, run_recipe, train_tokens, seen, dropped)
            if spec is not None:
                specs.append(spec)
    specs.sort(key=lambda s: (KINDS.index(s.kind) if s.kind != "trunk" else -1, s.budget, s.params, s.recipe.seed))
    return specs, dropped


def plan_sweep(grid: SweepConfig, ladder: LadderConfig, recipe: RecipeConfig, vocab_size: int,
               train_tokens: Optional[int] = None, centres: Optional[dict] = None,
               extra_lrs: Optional[dict] = None) -> tuple[list[RunSpec], list[Dropped]]:
    """The sweep's runs for its ``sweep.mode``: the isoFLOP grid (plan_grid), or an LR scan (sweep/lrscan.py)."""
    if grid.mode == "lr_scan":
        from sweep.lrscan import plan_scan

        check_sweep(grid)
        return plan_scan(grid, ladder, recipe, vocab_size, train_tokens, extra_lrs)
    return plan_grid(grid, ladder, recipe, vocab_size, train_tokens, centres)


def plan_validation(grid: SweepConfig, ladder: LadderConfig, recipe: RecipeConfig, vocab_size: int,
                    train_tokens: Optional[int], budget: float, n_opt: float) -> tuple[list[RunSpec], list[Dropped]]:
    """The forward validation runs (``sweep.validate``): at ``budget`` (validate_factor x the top budget), the ladder
    shapes nearest ``n_opt`` (the law's prediction) and, with validate_sizes > 1, log-spaced over validate_span
    around it; standalone runs of the recipe's schedule (a forks sweep's trunks cannot branch at a new length)."""
    k = grid.validate_sizes
    targets = [n_opt] if k == 1 else [n_opt * grid.validate_span ** (i / (k - 1) - 0.5) for i in range(k)]
    specs, dropped, seen, shapes = [], [], set(), []
    for t in targets:
        try:
            shape = shape_for_params(t, vocab_size, recipe.seq_len, ladder)
        except ValueError as e:
            dropped.append(Dropped(budget, t, f"{e}; the validation run cannot be trained on this ladder"))
            continue
        if shape in shapes:
            dropped.append(Dropped(budget, t, "same ladder shape as the previous validation size; raise sweep.validate_span"))
            continue
        shapes.append(shape)
        spec = point_spec(budget, shape, t, 0, "validation", recipe.resolved(budget), train_tokens, seen, dropped)
        if spec is not None:
            specs.append(spec)
    return specs, dropped


def steps_for(budget: float, tokens_per_step: int, flops_per_token: float) -> int:
    """Optimizer steps whose exact FLOPs are nearest the budget: steps * tokens/step * FLOPs/token ~= C."""
    return round(budget / (tokens_per_step * flops_per_token))


def point_spec(budget: float, shape: ModelConfig, target: float, seed: int, kind: str, run_recipe: RecipeConfig,
               train_tokens: Optional[int], seen: set, dropped: list, steps: Optional[int] = None,
               warmup_steps: Optional[int] = None, min_steps: Optional[int] = None, lr: Optional[float] = None,
               **fields) -> Optional[RunSpec]:
    """The RunSpec of one point trained with ``run_recipe`` (resolved, seeded), or None with the reason appended to
    ``dropped``: its id collides with another (``seen``), too few steps, or too many epochs of the data.
    ``steps`` defaults to the budget's, ``min_steps`` to the recipe's; ``lr`` fixes the peak LR (an LR scan's point,
    named in its id); ``fields`` are further RunSpec fields."""
    if lr is not None:
        run_recipe = dataclasses.replace(run_recipe, lr=lr, lr_rule="constant")
    tps = run_recipe.tokens_per_step
    counts = param_counts(shape)
    n = counts["params"]
    fpt = flops_per_token(shape, run_recipe.flops_convention)
    steps = steps_for(budget, tps, fpt) if steps is None else steps
    if run_recipe.lr_rule != "constant" or run_recipe.beta2_half_life_tokens > 0:
        run_recipe = run_recipe.sized(n, steps * tps)
    rid = run_id(budget, n, seed, lr=lr, kind=kind)
    if rid in seen:
        dropped.append(Dropped(budget, target, "run id collides with another point (3 significant digits)", rid))
        return None
    if steps < (run_recipe.min_steps if min_steps is None else min_steps):
        dropped.append(Dropped(
            budget, target,
            f"only {steps} steps (< recipe.min_steps={run_recipe.min_steps}); raise the budget or lower recipe.batch_size",
            rid))
        return None
    tokens = steps * tps
    epochs = tokens / train_tokens if train_tokens else None
    if epochs is not None and epochs > run_recipe.max_epochs:
        dropped.append(Dropped(
            budget, target,
            f"needs {epochs:.1f} epochs of the data (> recipe.max_epochs={run_recipe.max_epochs}); use more data or smaller budgets",
            rid))
        return None
    seen.add(rid)
    if warmup_steps is None:
        warmup_steps = run_recipe.warmup_steps(steps, n)
    if run_recipe.schedule == "wsd" and "cooldown_steps" not in fields:
        fields["cooldown_steps"] = cooldown_steps(steps, run_recipe)
    return RunSpec(run_id=rid, budget=budget, model=shape, recipe=run_recipe, params=n,
                   params_non_embedding=counts["params_non_embedding"], flops_per_token=fpt, steps=steps,
                   warmup_steps=warmup_steps, tokens=tokens, flops=tokens * fpt, epochs=epochs, kind=kind, **fields)


def cooldown_steps(steps: int, recipe: RecipeConfig) -> int:
    """wsd: the cooldown covers the last cooldown_frac of a run's steps (at least one)."""
    return max(1, round(recipe.cooldown_frac * steps))


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
    """The plan as a fixed-width table: budget, N, shape, tokens, steps, the recipe each run trains with (peak LR,
    batch in sequences, beta2, warm-up steps), tokens/param, epochs, FLOPs (what the model sees: a fork's include its
    trunk's), FLOPs spent (the run's own steps) and the estimated time of those; with ``costs`` (sweep.cost.RunCost
    per spec) also the estimated peak memory per GPU at the micro-batch, what a run needs to fit the device (a
    smaller micro-batch, FSDP over k GPUs) and the GPU-hours of its own steps, and their totals."""
    head = (f"{'run id':<24} {'budget':>9} {'params':>9} {'shape (L x d, H/K, ff)':<24} {'tokens':>9} {'steps':>6} "
            f"{'lr':>8} {'batch':>5} {'beta2':>6} {'warm':>5} {'D/N':>6} {'epochs':>6} {'FLOPs':>9} {'spent':>9} {'est.':>7}")
    device = costs is not None and any(c.gpu_hours is not None for c in costs)  # a GPU is named: flags, GPU-hours
    if costs is not None:
        head += f" {'mem/GPU':>9} {'micro':>5}" + (f" {'fits?':>10} {'GPU-h':>8}" if device else "")
    lines = [head, "-" * len(head)]
    total = 0.0
    for i, s in enumerate(specs):
        m, r = s.model, s.recipe
        shape = f"{m.n_layers}x{m.d_model}, {m.n_heads}/{m.n_kv_heads}, {m.d_ff}"
        ep = f"{s.epochs:.2f}" if s.epochs is not None else "?"
        est = _fmt_time(s.flops_spent / flops_per_second) if flops_per_second > 0 else "?"
        total += s.flops_spent
        line = (f"{s.run_id:<24} {s.budget:>9.3g} {s.params:>9.3g} {shape:<24} {s.tokens:>9.3g} {s.steps:>6d} "
                f"{r.lr:>8.3g} {r.batch_size:>5d} {r.beta2:>6.4g} {s.warmup_steps:>5d} {s.tokens_per_param:>6.1f} "
                f"{ep:>6} {s.flops:>9.4g} {s.flops_spent:>9.4g} {est:>7}")
        if costs is not None:
            c = costs[i]
            line += f" {_fmt_bytes(c.memory):>9} {c.micro_batch:>5d}"
            if device:
                line += f" {c.advice or 'ok':>10} {_fmt_hours(c.gpu_hours):>8}"
        lines.append(line)
    tot = _fmt_time(total / flops_per_second) if flops_per_second > 0 else "?"
    lines.append(f"{len(specs)} runs, {total:.3g} FLOPs in total, est. {tot}")
    if any(s.kind == "trunk" for s in specs):
        alone = sum(s.flops for s in specs if s.kind != "trunk")
        lines.append(f"trunks and forks: {total:.3g} FLOPs against {alone:.3g} as independent cosine runs "
                     f"(ratio {total / alone:.3f})")
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
