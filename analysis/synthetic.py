"""Synthetic loss surfaces with known truth, for checking that Approach 3's intervals are calibrated.

Used by tests/analysis/test_calibration.py and scripts/bench_fit.py.  A replicate draws noisy
losses L = L_true(N, D) · exp(σ ε) on a fixed isoFLOP design, fits Approach 3 (its default start), bootstraps
it, and records whether each interval covers the true value.  σ = 0.005 is the robust scale
(1.4826 · MAD) of the log-loss residuals of the Epoch refit of Chinchilla's own data.
"""

from __future__ import annotations

import math
import time

import numpy as np

from analysis import approach3
from analysis.stats import dirichlet_weights, percentile_ci, run_counts

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. Sec. 3.3
SIGMA_CHINCHILLA = 0.005
KEYS = ("E", "A", "B", "alpha", "beta", "a", "b")


def truth(params: dict = CHINCHILLA) -> dict:
    p = params
    return approach3.params_from_theta([math.log(p["A"]), math.log(p["B"]), math.log(p["E"]), p["alpha"], p["beta"]])


def isoflop_design(params: dict = CHINCHILLA, budgets=None, sizes: int = 8, half_width: float = 1.0):
    """(N, D): `sizes` log-spaced N within ±half_width decades of the true N_opt at each budget,
    D = C/(6N), as a sweep centred on the optimum would run them."""
    t = truth(params)
    budgets = np.logspace(18, 22, 5) if budgets is None else np.asarray(budgets, dtype=float)
    N = np.array([approach3.optimal_allocation(t, c)[0] * 10**x for c in budgets
                  for x in np.linspace(-half_width, half_width, sizes)])
    C = np.repeat(budgets, sizes)
    return N, C / (6 * N)


def coverage(N, D, *, params: dict = CHINCHILLA, sigma: float = SIGMA_CHINCHILLA, replicates: int = 100,
             n_boot: int = 200, level: float = 0.8, scheme: str = "dirichlet", seed: int = 0,
             delta: float = approach3.DELTA) -> dict:
    """Share of replicates whose `level` interval covers the truth, per parameter.

    scheme: "dirichlet" (what analyze uses) or "multinomial" (classic resampling of runs).
    delta: the Huber threshold (Chinchilla's 1e-3; a large value makes the fit least squares).
    Returns {"coverage": {key: share}, "sd_ratio": {key: mean bootstrap sd / sd of the estimates},
    "bias": {key: mean estimate − truth}, "replicates", "seconds"}.
    """
    t = truth(params)
    L_true = approach3.predict_loss(t, N, D)
    noise_rng, boot_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    hits = {k: 0 for k in KEYS}
    est = {k: [] for k in KEYS}
    sds = {k: [] for k in KEYS}
    start = time.perf_counter()
    for _ in range(replicates):
        L = L_true * np.exp(sigma * noise_rng.standard_normal(len(N)))
        fit = approach3.fit_approach3(N, D, L, delta=delta)
        w = (dirichlet_weights if scheme == "dirichlet" else run_counts)(boot_rng, len(N), n_boot)
        samples = approach3.bootstrap_approach3(N, D, L, fit, w, delta=delta)
        for k in KEYS:
            ci = percentile_ci(samples[k], level)
            hits[k] += bool(ci and ci[0] <= t[k] <= ci[1])
            est[k].append(fit[k])
            sds[k].append(np.nanstd(samples[k]))
    return {
        "coverage": {k: hits[k] / replicates for k in KEYS},
        "sd_ratio": {k: float(np.mean(sds[k]) / np.std(est[k])) for k in KEYS},
        "bias": {k: float(np.mean(est[k]) - t[k]) for k in KEYS},
        "replicates": replicates,
        "seconds": time.perf_counter() - start,
    }
