"""Variable projection for Approach 3: the starting points of the Huber fit from a grid over (α, β) alone.

After Open-Athena's "scaling-law-analysis" (arXiv 2603.22339): for fixed exponents (α, β) the loss
L = E + A·N^-α + B·D^-β is linear in (E, A, B), so the best (E, A, B) ≥ 0 at each grid point is a non-negative
least-squares problem in closed form, and only the two exponents need a search.  analysis.approach3 then polishes
the best grid points with L-BFGS on Chinchilla's objective (Huber δ = 1e-3 on log loss), so the fit is Chinchilla's
estimator; only the initialisation differs from its 4,500-point grid over all five parameters.

The non-negative least squares of 3 unknowns is solved exactly by enumeration: its solution is the unconstrained
least-squares solution on some subset of the columns {1, N^-α, D^-β} with all coefficients ≥ 0, and the best such
feasible subset solution is the optimum (KKT).  All 7 subsets for all grid points are a few batched 3x3 solves on
Gram matrices built from sums, so a 120 x 120 grid costs milliseconds.
"""

from __future__ import annotations

import itertools

import numpy as np

ALPHA_GRID = np.linspace(0.02, 3.0, 120)  # wider than Chinchilla's 0-2: CPU-scale fits reach alpha ~ 1.6
BETA_GRID = np.linspace(0.02, 3.0, 120)
SUBSETS = [s for k in (3, 2, 1) for s in itertools.combinations(range(3), k)]  # columns (1, N^-α, D^-β)
SEPARATION = 6  # grid steps between the extra starts (0.15 in alpha or beta)
COEF_FLOOR = 1e-6  # a coefficient NNLS sets to 0 starts the Huber fit at this share of the mean loss


def nnls_grid(N, D, L, alphas=ALPHA_GRID, betas=BETA_GRID):
    """For every (α, β) of the grid: the residual sum of squares and (E, A, B) of the non-negative least squares
    fit of L to E + A·N^-α + B·D^-β.  Returns (rss (Na, Nb), coef (Na, Nb, 3))."""
    N, D, L = (np.asarray(v, dtype=float) for v in (N, D, L))
    lnN, lnD = np.log(N), np.log(D)
    X = np.exp(-np.outer(alphas, lnN))  # (Na, n): N^-α
    Y = np.exp(-np.outer(betas, lnD))  # (Nb, n): D^-β
    n = len(L)
    # column norms, to scale the Gram matrix (N^-α spans many decades over α)
    sx, sy, s1 = np.sqrt((X * X).sum(1)), np.sqrt((Y * Y).sum(1)), np.sqrt(n)
    Xs, Ys = X / sx[:, None], Y / sy[:, None]
    Na, Nb = len(alphas), len(betas)
    G = np.empty((Na, Nb, 3, 3))
    G[..., 0, 0] = 1.0
    G[..., 1, 1] = 1.0
    G[..., 2, 2] = 1.0
    G[..., 0, 1] = G[..., 1, 0] = (Xs.sum(1) / s1)[:, None]
    G[..., 0, 2] = G[..., 2, 0] = (Ys.sum(1) / s1)[None, :]
    G[..., 1, 2] = G[..., 2, 1] = Xs @ Ys.T
    r = np.empty((Na, Nb, 3))
    r[..., 0] = L.sum() / s1
    r[..., 1] = (Xs @ L)[:, None]
    r[..., 2] = (Ys @ L)[None, :]
    yy = float(L @ L)
    best_rss = np.full((Na, Nb), np.inf)
    best = np.zeros((Na, Nb, 3))
    for cols in SUBSETS:
        idx = np.array(cols)
        Gs = G[..., idx[:, None], idx[None, :]]
        rs = r[..., idx]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            try:
                c = np.linalg.solve(Gs + 1e-12 * np.eye(len(idx)), rs[..., None])[..., 0]
            except np.linalg.LinAlgError:
                continue
            rss = yy - 2 * (c * rs).sum(-1) + np.einsum("...i,...ij,...j->...", c, Gs, c)
        ok = np.isfinite(rss) & (c >= 0).all(-1) & (rss < best_rss)
        best_rss = np.where(ok, rss, best_rss)
        full = np.zeros((Na, Nb, 3))
        full[..., idx] = c
        best = np.where(ok[..., None], full, best)
    scale = np.stack([np.full((Na, Nb), s1), np.broadcast_to(sx[:, None], (Na, Nb)),
                      np.broadcast_to(sy[None, :], (Na, Nb))], -1)
    return np.maximum(best_rss, 0.0), best / scale


def starts(N, D, L, k: int = 8, alphas=ALPHA_GRID, betas=BETA_GRID) -> np.ndarray:
    """Up to k starting points (ln A, ln B, ln E, α, β) for the Huber fit: the grid's local minima of the NNLS
    residual (8-neighbourhood), best first, then the next best grid points if there are fewer minima."""
    rss, coef = nnls_grid(N, D, L, alphas, betas)
    padded = np.pad(rss, 1, constant_values=np.inf)
    Na, Nb = rss.shape
    neighbours = np.stack([padded[1 + di:1 + di + Na, 1 + dj:1 + dj + Nb]
                           for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj])
    is_min = np.isfinite(rss) & (rss <= neighbours.min(0))
    # local minima first (best first), then the best other grid points at least SEPARATION steps from every pick
    ranked = list(np.argsort(np.where(is_min, rss, np.inf), axis=None)[: int(is_min.sum())])
    ranked += list(np.argsort(np.where(is_min | ~np.isfinite(rss), np.inf, rss), axis=None))
    picks: list[tuple[int, int]] = []
    for n_min, flat in enumerate(ranked):
        i, j = np.unravel_index(flat, rss.shape)
        if not np.isfinite(rss[i, j]):
            continue
        if n_min >= is_min.sum() and any(max(abs(i - p), abs(j - q)) < SEPARATION for p, q in picks):
            continue
        picks.append((int(i), int(j)))
        if len(picks) == k:
            break
    mean_l = float(np.mean(L))
    lnN, lnD = np.log(np.asarray(N, dtype=float)), np.log(np.asarray(D, dtype=float))
    out = []
    for i, j in picks:
        al, be = alphas[i], betas[j]
        E, A, B = coef[i, j]
        # a coefficient at its bound 0 starts at a small positive value (the Huber fit works in ln A, ln B, ln E)
        A = max(A, COEF_FLOOR * mean_l / float(np.mean(np.exp(-al * lnN))))
        B = max(B, COEF_FLOOR * mean_l / float(np.mean(np.exp(-be * lnD))))
        E = max(E, COEF_FLOOR * mean_l)
        out.append([np.log(A), np.log(B), np.log(E), al, be])
    return np.array(out, dtype=float)
