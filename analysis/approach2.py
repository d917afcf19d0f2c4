"""Chinchilla Approach 2: isoFLOP parabolas, then power laws through their minima.

Hoffmann et al. 2022 (arXiv 2203.15556), Sec. 3.2 and Figure 3: for each compute budget C, fit a
parabola to final loss against log N; its vertex is that budget's compute-optimal model size
N_opt(C). A straight line through the vertices in log-log space gives N_opt ∝ C^a, and likewise
D_opt ∝ C^b (Chinchilla's Table 2 reports a = 0.49, b = 0.51 for this approach).

Everything here is a pure function over arrays; nothing is read or written.
"""

from __future__ import annotations

import numpy as np

# Budgets closer than this (relative) are the same isoFLOP profile.  Run results carry the
# *target* budget, which is the same float for every run of a profile; the tolerance only
# absorbs round trips through text (CSV, "%g"-formatted run ids).
BUDGET_RTOL = 1e-6
MIN_SIZES = 3  # a parabola has 3 coefficients


def group_budgets(budgets) -> np.ndarray:
    """Label each run with the index of its isoFLOP profile (0 = smallest budget).

    Sorted budgets are grouped greedily: a budget joins the current group when it is within
    BUDGET_RTOL of the group's first budget.
    """
    budgets = np.asarray(budgets, dtype=float)
    order = np.argsort(budgets, kind="stable")
    labels = np.empty(len(budgets), dtype=int)
    group, ref = -1, None
    for i in order:
        if ref is None or abs(budgets[i] - ref) > BUDGET_RTOL * abs(ref):
            group, ref = group + 1, budgets[i]
        labels[i] = group
    return labels


def _power_law(log_c: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """Least squares log10 y = slope * log10 C + intercept."""
    slope, intercept = np.polyfit(log_c, log_y, 1)
    return float(slope), float(intercept)


def fit_approach2(budgets, params, tokens, losses) -> dict:
    """Fit Approach 2 to isoFLOP runs.

    budgets, params, tokens, losses: array-likes of equal length, one entry per run (C in FLOPs,
    N total parameters, D training tokens, final loss).  tokens may be None, meaning D = C/(6N).

    Per budget (≥ 3 distinct sizes) a parabola L = c2·x² + c1·x + c0 in x = log10 N is fitted;
    budgets whose parabola has no minimum (c2 ≤ 0) are dropped with a reason.  A vertex outside
    the budget's size range is kept but flagged with inside_grid = False (it is an
    extrapolation, so widen the grid for that budget).

    Returns a JSON-serialisable dict (plain floats, lists):
      a, a_intercept:  log10 N_opt = a·log10 C + a_intercept
      b, b_intercept:  log10 D_opt = b·log10 C + b_intercept
      budgets, N_opt, D_opt, L_opt: one entry per used budget, ascending C
      parabolas: [{budget, coeffs [c2, c1, c0] in x = log10 N, n_points, inside_grid,
                   x_range [min x, max x]}] for the used budgets
      dropped:   [{budget, reason}]
    Raises ValueError when fewer than 2 budgets have a parabola minimum.
    """
    budgets = np.asarray(budgets, dtype=float).ravel()
    params = np.asarray(params, dtype=float).ravel()
    losses = np.asarray(losses, dtype=float).ravel()
    if tokens is None:
        tokens = budgets / (6.0 * params)  # C ≈ 6ND (Kaplan 2020)
    tokens = np.asarray(tokens, dtype=float).ravel()
    n = len(budgets)
    if not (len(params) == len(tokens) == len(losses) == n):
        raise ValueError(
            f"budgets, params, tokens and losses must have equal length "
            f"(got {n}, {len(params)}, {len(tokens)}, {len(losses)})"
        )
    for name, arr in (("budgets", budgets), ("params", params), ("tokens", tokens)):
        if not np.all(np.isfinite(arr) & (arr > 0)):
            raise ValueError(f"{name} must be finite and positive; drop the bad runs first")
    if not np.all(np.isfinite(losses)):
        raise ValueError("losses must be finite; drop diverged runs first")

    labels = group_budgets(budgets)
    used, parabolas, dropped = [], [], []
    for g in range(labels.max() + 1 if n else 0):
        sel = labels == g
        budget = float(np.mean(budgets[sel]))
        x = np.log10(params[sel])
        n_sizes = len(np.unique(params[sel]))
        if n_sizes < MIN_SIZES:
            dropped.append({"budget": budget,
                            "reason": f"only {n_sizes} distinct model size(s); a parabola needs >= {MIN_SIZES}"})
            continue
        c2, c1, c0 = (float(c) for c in np.polyfit(x, losses[sel], 2))
        if c2 <= 0:
            dropped.append({"budget": budget,
                            "reason": f"parabola opens downward (c2 = {c2:.3g} <= 0), so it has no minimum; "
                                      f"the grid may miss the optimum or the losses are too noisy"})
            continue
        x_opt = -c1 / (2.0 * c2)  # vertex of c2·x² + c1·x + c0
        l_opt = c0 - c1 * c1 / (4.0 * c2)  # parabola value at the vertex
        # D_opt: interpolate log10 D linearly in log10 N over this budget's runs rather than
        # taking C/(6 N_opt).  When the runs were planned with D = C/(6N) the line is exact (slope
        # -1, intercept log10 C/6).  When the FLOP count also has an attention term (App. F:
        # 6N + 6·n_layer·T·d per token) or steps were rounded, D is not C/(6N); the line through
        # the runs' own (N, D) then stays within ~1% of the true D at N_opt for a ±0.75-decade
        # grid, where C/(6 N_opt) can be off by tens of percent for small models.
        s, k = np.polyfit(x, np.log10(tokens[sel]), 1)
        d_opt = 10.0 ** (s * x_opt + k)
        lo, hi = float(x.min()), float(x.max())
        used.append((budget, 10.0 ** x_opt, float(d_opt), l_opt))
        parabolas.append({
            "budget": budget,
            "coeffs": [c2, c1, c0],
            "n_points": int(sel.sum()),
            "inside_grid": bool(lo <= x_opt <= hi),
            "x_range": [lo, hi],
        })

    if len(used) < 2:
        few = sum(d["reason"].startswith("only") for d in dropped)
        why = f"; {few} had < {MIN_SIZES} distinct sizes" if few else ""
        why += f"; {len(dropped) - few} had no minimum" if len(dropped) > few else ""
        raise ValueError(
            f"need at least 2 budgets with a parabola minimum, got {len(used)} of "
            f"{len(used) + len(dropped)} budget(s){why}; add budgets or sizes "
            f"(runs share a budget when equal within {BUDGET_RTOL:g} relative)"
        )

    c, n_opt, d_opt, l_opt = (np.array(col) for col in zip(*used))
    a, a0 = _power_law(np.log10(c), np.log10(n_opt))
    b, b0 = _power_law(np.log10(c), np.log10(d_opt))
    return {
        "a": a,
        "a_intercept": a0,
        "b": b,
        "b_intercept": b0,
        "budgets": [float(v) for v in c],
        "N_opt": [float(v) for v in n_opt],
        "D_opt": [float(v) for v in d_opt],
        "L_opt": [float(v) for v in l_opt],
        "parabolas": parabolas,
        "dropped": dropped,
    }


def predict(fit: dict, C):
    """(N_opt, D_opt) at compute C from the fitted power laws; floats for a scalar C.

    N_opt = 10^(a_intercept) · C^a,  D_opt = 10^(b_intercept) · C^b.
    """
    log_c = np.log10(np.asarray(C, dtype=float))
    n_opt = 10.0 ** (fit["a"] * log_c + fit["a_intercept"])
    d_opt = 10.0 ** (fit["b"] * log_c + fit["b_intercept"])
    if np.ndim(n_opt) == 0:
        return float(n_opt), float(d_opt)
    return n_opt, d_opt

