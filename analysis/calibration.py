"""Coverage of Approach 2's intervals on synthetic surfaces laid out like our CPU sweeps.

Used by tests/analysis/test_calibration.py and scripts/bench_calibration.py (results: benchmarks/fit_calibration.md).

Design: the real first pass of the first CPU study (benchmarks/cpu_sweep_v1/; conf/experiment/cpu_sweep.yaml as of
commit a2cddb8), planned by sweep.plan itself:
the same ladder (head_dim 8, aspect ratio 32, tied embeddings, at least 2 layers; a 2048-token vocabulary), the
same recipe (seq_len 128, DeepSeek's batch rule) and grid (5 sizes over a 16x span around the 20 tokens-per-
parameter prior), so each profile has the ladder's uneven rungs, its dropped points and its drift off the true
optimum.  Every run's D is its planned tokens, on the exact App. F count (analysis.compute's ladder axis).

Truth: CODE_SURFACE, Approach 3 on that study's code runs with >= 4 tokens per parameter.  The targets are
the surface's own compute-optimal exponents on the same axis over the design's budgets (analysis.compute), and its
N_opt at 10x the top budget.  Noise: Gaussian, additive in nats, SD sigma; CPU_SIGMA is what that study's sweeps
measured (they had no seed repeats, so it is the pooled residual SD of their parabolas, lack of fit included).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from analysis.approach2 import bootstrap_approach2, fit_approach2, group_budgets
from analysis.approach3 import predict_loss
from analysis.compute import ComputeAxis, _ladder_table, allocate, allocation_slopes
from analysis.noise import parametric_bootstrap, repeat_sigmas, residual_sigma
from analysis.stats import counts_within_groups, percentile_ci, run_counts
from models.ladder import LadderConfig
from sweep.plan import RecipeConfig, SweepConfig, plan_grid

CPU_LADDER = LadderConfig(head_dim=8, aspect_ratio=32, tie_embeddings=True, min_layers=2)
CPU_RECIPE = RecipeConfig(seq_len=128, min_steps=50, lr_rule="deepseek", batch_rule="deepseek")
CPU_VOCAB = 2048
CPU_BUDGETS = {3: (1e12, 3e12, 1e13), 4: (3e11, 1e12, 3e12, 1e13), 5: (3e11, 1e12, 3e12, 1e13, 3e13)}
# python -m analysis code=benchmarks/cpu_sweep_v1/results.csv (code rows), Approach 3 at >= 4 tokens/param (24 runs)
CODE_SURFACE = {"E": 2.6279, "A": 205.05, "B": 620.19, "alpha": 0.4909, "beta": 0.4512}
# Pooled residual SD of the parabolas of benchmarks/cpu_sweep_v1/results.csv, every budget with >= 4 sizes
# (scripts/bench_calibration.py noise): code 0.114 nats (11 dof), prose 0.184 nats (11 dof).
CPU_SIGMA = {"code": 0.114, "prose": 0.184}
METHODS = ("parametric", "within", "pooled")
TARGETS = ("a", "b", "N_proj")


def cpu_axis() -> ComputeAxis:
    """The CPU sweep's compute axis: its ladder under the chinchilla count."""
    log_n, log_f = _ladder_table(CPU_LADDER, CPU_VOCAB, CPU_RECIPE.seq_len, "chinchilla", "total",
                                 CPU_LADDER.max_d_model)
    return ComputeAxis("ladder", "total", log_n, log_f, "chinchilla", dataclasses.asdict(CPU_LADDER), CPU_VOCAB,
                       CPU_RECIPE.seq_len, CPU_LADDER.max_d_model)


def cpu_design(budgets=CPU_BUDGETS[4], sizes: int = 5, span: float = 16.0, seeds: int = 1, centres: dict | None = None):
    """(C, N, D) of the grid runs sweep.plan plans for the CPU sweep's config at these budgets (centres: each
    budget's grid centre, as a refined pass plans it; default the 20 tokens-per-parameter prior)."""
    grid = SweepConfig(budgets=list(budgets), sizes_per_budget=sizes, size_span=span, tokens_per_param=20.0,
                       seeds=seeds)
    specs, _ = plan_grid(grid, CPU_LADDER, CPU_RECIPE, CPU_VOCAB, centres=centres)
    specs = [s for s in specs if s.kind == "grid"]
    return tuple(np.array([getattr(s, k) for s in specs], dtype=float) for k in ("budget", "params", "tokens"))


def truth(surface: dict, budgets, axis: ComputeAxis) -> dict:
    """The surface's compute-optimal exponents over these budgets and its N_opt at 10x the top one."""
    slopes = allocation_slopes(surface, budgets, axis)
    c_proj = 10.0 * max(budgets)
    return {"a": slopes["a"], "b": slopes["b"], "N_proj": allocate(surface, c_proj, axis)[0], "C_proj": c_proj}


def _intervals(C, N, D, L, fit, method, rng, n_boot, level, c_proj):
    if method == "parametric":
        noise = repeat_sigmas(C, N, L) or residual_sigma(C, N, L, fit)
        if noise is None:
            return None
        a, a0, b, b0, ok, _ = parametric_bootstrap(C, N, D, fit, noise, rng, n_boot)
    else:
        counts = (counts_within_groups(rng, group_budgets(C), n_boot) if method == "within"
                  else run_counts(rng, len(N), n_boot))
        a, a0, b, b0, ok = bootstrap_approach2(C, N, D, L, counts)
    with np.errstate(over="ignore"):
        n_proj = 10.0 ** (a[ok] * math.log10(c_proj) + a0[ok])
    return {"a": percentile_ci(a[ok], level), "b": percentile_ci(b[ok], level), "N_proj": percentile_ci(n_proj, level)}


def approach2_coverage(surface: dict = CODE_SURFACE, budgets=CPU_BUDGETS[4], *, sigma: float = CPU_SIGMA["code"],
                       seeds: int = 1, replicates: int = 100, n_boot: int = 400, level: float = 0.8,
                       methods=("parametric",), seed: int = 0, centred: bool = False) -> dict:
    """Share of replicates whose `level` intervals cover the truth, per method and target (a, b, N_proj).

    A replicate draws L = L_true(N, D) + sigma·ε on the CPU design (each point `seeds` times), fits Approach 2 as
    `python -m analysis` does (weighted by the repeats' σ when seeds > 1) and bootstraps it per method.  A replicate
    whose fit fails (fewer than 2 budgets with a minimum) counts as a miss for every target and is also counted
    in "failed".  centred: every grid centred on the surface's true optimum (a refined pass), not on the prior.  Returns {coverage {method: {target: share}}, width {method: {target: median interval width in
    log10 for N_proj}}, spread {target: the 10-90% spread of the point estimates}, truth, bias {target: median
    estimate - truth}, failed, replicates, runs, seconds}.
    """
    axis = cpu_axis()
    centres = dict(zip(budgets, allocate(surface, np.asarray(budgets, dtype=float), axis)[0])) if centred else None
    C, N, D = cpu_design(budgets, seeds=seeds, centres=centres)
    t = truth(surface, budgets, axis)
    L_true = predict_loss(surface, N, D)
    noise_rng = np.random.default_rng([seed, 0])
    hits = {m: {k: 0 for k in TARGETS} for m in methods}
    widths = {m: {k: [] for k in TARGETS} for m in methods}
    est = {k: [] for k in TARGETS}
    failed = 0
    start = time.perf_counter()
    for r in range(replicates):
        L = L_true + sigma * noise_rng.standard_normal(len(N))
        rep = repeat_sigmas(C, N, L) if seeds > 1 else None
        try:
            fit = fit_approach2(C, N, D, L, sigma=None if rep is None else rep["sigma_runs"])
        except ValueError:
            failed += 1
            continue
        point = {"a": fit["a"], "b": fit["b"], "N_proj": 10.0 ** (fit["a"] * math.log10(t["C_proj"]) + fit["a_intercept"])}
        for k in TARGETS:
            est[k].append(point[k])
        for m in methods:
            ci = _intervals(C, N, D, L, fit, m, np.random.default_rng([seed, 1, r, METHODS.index(m)]), n_boot,
                            level, t["C_proj"])
            for k in TARGETS:
                c = ci and ci[k]
                if c:
                    hits[m][k] += bool(c[0] <= t[k] <= c[1])
                    widths[m][k].append(math.log10(c[1] / c[0]) if k == "N_proj" else c[1] - c[0])
    spread = {k: float(np.subtract(*np.percentile(np.log10(est[k]) if k == "N_proj" else est[k], [90, 10])))
              for k in TARGETS}
    return {
        "coverage": {m: {k: hits[m][k] / replicates for k in TARGETS} for m in methods},
        "width": {m: {k: float(np.median(widths[m][k])) if widths[m][k] else None for k in TARGETS} for m in methods},
        "spread": spread,
        "truth": t,
        "bias": {k: float(np.median(est[k]) / t[k] - 1 if k == "N_proj" else np.median(est[k]) - t[k])
                 for k in TARGETS},
        "failed": failed, "replicates": replicates, "runs": int(len(N)),
        "seconds": time.perf_counter() - start,
    }
