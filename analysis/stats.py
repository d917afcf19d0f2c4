"""Small numerical helpers shared by the approaches: batched least-squares lines, percentile
intervals, and the bootstrap's resampling weights."""

from __future__ import annotations

import numpy as np

CI_LEVEL = 0.8  # Chinchilla Table 2 brackets are 10th/90th percentiles


def line_rows(x: np.ndarray, y: np.ndarray, mask: np.ndarray, w: np.ndarray | None = None):
    """Least squares y = s·x + k over mask, independently for each row of (B, G) arrays; weighted by w (B, G)
    when given.

    Returns (s, k, ok); ok is False where fewer than 2 distinct x are selected."""
    x, y = np.broadcast_arrays(x, y)
    m = mask.astype(float) if w is None else np.where(mask, np.broadcast_to(w, mask.shape), 0.0)
    cnt = mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sw = m.sum(1)
        mx = (m * np.where(mask, x, 0.0)).sum(1) / sw
        my = (m * np.where(mask, y, 0.0)).sum(1) / sw
        dx = np.where(mask, x - mx[:, None], 0.0)
        dy = np.where(mask, y - my[:, None], 0.0)
        sxx = (m * dx * dx).sum(1)
        s = (m * dx * dy).sum(1) / sxx
        k = my - s * mx
    ok = (cnt >= 2) & (sxx > 1e-300)
    return np.where(ok, s, np.nan), np.where(ok, k, np.nan), ok


def percentile_ci(samples, level: float = CI_LEVEL):
    """[lo, hi] percentile interval of the finite samples, or None if there are fewer than 10."""
    v = np.asarray(samples, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 10:
        return None
    q = 50 * (1 - level)
    lo, hi = np.percentile(v, [q, 100 - q])
    return [float(lo), float(hi)]


def run_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) multinomial counts: each row is a resample of n runs with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def counts_within_groups(rng: np.random.Generator, labels: np.ndarray, n_boot: int) -> np.ndarray:
    """(n_boot, n) counts that resample each group's runs within the group (stratified)."""
    labels = np.asarray(labels)
    counts = np.zeros((n_boot, len(labels)), dtype=np.int64)
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        counts[:, idx] = run_counts(rng, len(idx), n_boot)
    return counts


def dirichlet_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) Bayesian-bootstrap weights (Rubin 1981): Dirichlet(1, …, 1) scaled to sum to n.

    Each row reweights the runs instead of drawing them: the same mean and nearly the same
    variance per run as multinomial counts, but no ties and no run left out.  Approach 3 uses it
    because its objective is nearly L1 (Huber δ = 1e-3 against ~0.5% noise), and multinomial
    resampling of an L1 fit is conservative (benchmarks/fit_calibration.md measures both).
    """
    return rng.dirichlet(np.ones(n), size=n_boot) * n
