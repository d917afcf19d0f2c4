"""The LR-scan stage (``sweep.mode=lr_scan``): which runs it trains.  Pure; the fits are analysis/lrscan.py.

At ``sweep.scan.sizes`` model sizes log-spaced over the range of sizes the grid would train, each size trains at
``sweep.scan.lrs`` peak LRs a factor ``lr_factor`` apart, centred on the recipe's own rule at that size (so a scan
can refine a rule it starts from), for D = ``tokens_per_param`` x N tokens.  When the scan's FLOPs would exceed
``max_flops``, the largest sizes train less: every size's scan budget is min(its own, B), with B the largest budget
that fits (water-filling), so the small sizes keep their full length.

With ``sweep.forks=true`` (and recipe.schedule=wsd) each (size, LR) is a trunk whose forks cool down at the full
length and at ``lengths`` x it: the best LR at several D separates the rule's N and D exponents (p and q).

``extra`` adds LRs beyond a size's edge (the scan's extension when the best LR lies at an edge); it comes from
the results (analysis.lrscan.extensions), so a relaunch plans the same runs.  Runs are of kind ``lr_scan``, with ids
``C<budget>-N<params>-lr<peak LR>``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

from models.flops import flops_per_token, param_counts
from models.ladder import LadderConfig, shape_for_params
from sweep.plan import Dropped, RunSpec, SweepConfig, ladder_flops_per_token, point_spec, target_sizes
from sweep.recipe import RecipeConfig


def scan_sizes(grid: SweepConfig, ladder: LadderConfig, vocab_size: int, seq_len: int, convention: str) -> list:
    """The scan's distinct ladder shapes: ``scan.sizes`` targets log-spaced over the grid's smallest to largest target."""
    fpt_of = ladder_flops_per_token(vocab_size, seq_len, ladder, convention) if grid.prior_count == "exact" else None
    targets = [n for c in grid.budgets for n in target_sizes(float(c), grid, None, fpt_of)]
    lo, hi, k = min(targets), max(targets), grid.scan.sizes
    shapes = []
    for i in range(k):
        n = lo * (hi / lo) ** (i / (k - 1)) if k > 1 else math.sqrt(lo * hi)
        try:
            shape = shape_for_params(n, vocab_size, seq_len, ladder)
        except ValueError:
            continue
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def scan_budgets(shapes: list, grid: SweepConfig, convention: str) -> list[float]:
    """Each shape's scan budget C = r N fpt(N) (D = r N tokens), the largest lowered to fit ``scan.max_flops``."""
    sc = grid.scan
    full = [sc.tokens_per_param * param_counts(s)["params"] * flops_per_token(s, convention) for s in shapes]
    if not sc.max_flops:
        return full
    # cost of a run of budget C: C, or with forks its trunk and the extra cooldowns, ~C (1 + cooldown x sum(lengths))
    runs = sc.lrs * (1 + (0.2 * sum(sc.lengths) if grid.forks else 0))
    cost = lambda cap: runs * sum(min(c, cap) for c in full)  # noqa: E731
    if cost(max(full)) <= sc.max_flops:
        return full
    lo, hi = 0.0, max(full)
    for _ in range(100):  # bisection for the largest cap that fits
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(mid) <= sc.max_flops else (lo, mid)
    return [min(c, lo) for c in full]


def scan_lrs(centre: float, grid: SweepConfig, extra=()) -> list[float]:
    """``scan.lrs`` values a factor apart centred on ``centre``, plus the extension's ``extra`` LRs, ascending."""
    sc = grid.scan
    base = [centre * sc.lr_factor ** (j - (sc.lrs - 1) / 2) for j in range(sc.lrs)]
    return sorted(set(base) | {float(x) for x in extra})


def plan_scan(grid: SweepConfig, ladder: LadderConfig, recipe: RecipeConfig, vocab_size: int,
              train_tokens: Optional[int] = None, extra: Optional[dict] = None) -> tuple[list[RunSpec], list[Dropped]]:
    """The scan's runs and dropped points.  ``extra``: {N (params) of a size: [extra peak LRs]}."""
    shapes = scan_sizes(grid, ladder, vocab_size, recipe.seq_len, recipe.flops_convention)
    budgets = scan_budgets(shapes, grid, recipe.flops_convention)
    points, dropped, seen, specs = [], [], set(), []
    for shape, c in zip(shapes, budgets):
        n = param_counts(shape)["params"]
        base = recipe.resolved(c)
        tokens = round(c / flops_per_token(shape, recipe.flops_convention))
        centre = base.sized(n, tokens).lr if base.lr_rule == "power" else base.lr  # the rule the scan starts from
        for lr in scan_lrs(centre, grid, (extra or {}).get(n, ())):
            lengths = sorted(set(grid.scan.lengths) | {1.0}) if grid.forks else [1.0]
            points += [(c * f, shape, n, 0, "lr_scan", lr) for f in lengths]
    if grid.forks:
        from sweep.forks import plan_forks

        specs = plan_forks(points, recipe, train_tokens, seen, dropped)
    else:
        for c, shape, n, seed, kind, lr in points:
            run_recipe = dataclasses.replace(recipe.resolved(c), seed=recipe.seed + seed)
            spec = point_spec(c, shape, n, seed, kind, run_recipe, train_tokens, seen, dropped, lr=lr)
            if spec is not None:
                specs.append(spec)
    specs.sort(key=lambda s: (s.kind != "trunk", s.params, s.recipe.lr, s.budget))
    return specs, dropped
