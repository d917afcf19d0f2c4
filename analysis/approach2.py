"""Chinchilla Approach 2: isoFLOP parabolas, then power laws through their minima.

Hoffmann et al. 2022 (arXiv 2203.15556), Sec. 3.2 and Figure 3: for each compute budget C, fit a
parabola to final loss against log N; its vertex is that budget's compute-optimal model size
N_opt(C).  A straight line through the vertices in log-log space gives N_opt ∝ C^a (Table 2:
a = 0.49).  Here a second parabola per budget, in log D, gives D_opt(C) and D_opt ∝ C^b directly
(b = 0.51), rather than through C = 6ND, which is off for small models whose FLOPs per token
include attention (App. F).

Known bias (Open-Athena's analysis; see also analysis.compare.approach2_bias): a parabola is
symmetric, an isoFLOP curve is not when α ≠ β, so a vertex lands off the true optimum by an
amount that depends on where the grid sits around it.  With the same relative grid at every
budget the offset is the same and a is unbiased; a grid that drifts relative to the optimum biases
a.  Budgets whose vertex falls outside the sizes run are kept (the parabola extrapolates) but warned
about.

Everything here is a pure function over arrays; nothing is read or written.
"""

from __future__ import annotations

import numpy as np

from analysis.stats import line_rows

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


def profile_label(budgets, labels: np.ndarray, budget: float) -> int:
    """The group_budgets label of the isoFLOP profile that fit_approach2 reports as ``budget``."""
    return int(labels[np.argmin(np.abs(np.asarray(budgets, dtype=float) - budget))])


def _power_law(log_c: np.ndarray, log_y: np.ndarray, se=None) -> tuple[float, float]:
    """Least squares log10 y = slope * log10 C + intercept; weighted by 1/se² when the points' standard errors
    are given."""
    slope, intercept = np.polyfit(log_c, log_y, 1, w=None if se is None else 1.0 / np.asarray(se))
    return float(slope), float(intercept)


def _parabola(x, y, sigma=None):
    """Coefficients (c2, c1, c0) of y ≈ c2·x² + c1·x + c0; with per-point noise SDs sigma, weighted least squares
    (weights 1/σ²) and also the standard error of the vertex x* = −c1/(2c2) by the delta method,
    var x* = g Cov gᵀ with g = (c1/(2c2²), −1/(2c2), 0) and Cov = (Xᵀ W X)⁻¹ (σ known, so unscaled)."""
    if sigma is None:
        return tuple(float(c) for c in np.polyfit(x, y, 2)), None
    coef, cov = np.polyfit(x, y, 2, w=1.0 / np.asarray(sigma), cov="unscaled")
    c2, c1, _ = coef
    g = np.array([c1 / (2 * c2 * c2), -1 / (2 * c2), 0.0])
    return tuple(float(c) for c in coef), float(np.sqrt(max(g @ cov @ g, 0.0)))


def _check_inputs(budgets, params, tokens, losses):
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
    return budgets, params, tokens, losses


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def fit_approach2(budgets, params, tokens, losses, sigma=None) -> dict:
    """Fit Approach 2 to isoFLOP runs.

    budgets, params, tokens, losses: array-likes of equal length, one entry per run (C in FLOPs,
    N parameters, D training tokens, final loss).  tokens may be None, meaning D = C/(6N).
    sigma: None, or each run's noise SD (from seed repeats, analysis.noise): the parabolas are then weighted
    least squares (1/σ²), each vertex gets a standard error (vertex_se in log10 units), and the power laws
    through the vertices are weighted by 1/se², so a budget whose minimum is pinned down counts for more.

    Per budget (≥ 3 distinct sizes) parabolas L = c2·x² + c1·x + c0 are fitted in x = log10 N and
    in x = log10 D; budgets where either has no minimum (c2 ≤ 0) are dropped with a reason.  A
    vertex outside the budget's range of N (or D) is kept, flagged with inside_grid = False and
    warned about (it is an extrapolation: widen the grid for that budget).

    Returns a JSON-serialisable dict (plain floats, lists):
      a, a_intercept:  log10 N_opt = a·log10 C + a_intercept  (vertices in log N)
      b, b_intercept:  log10 D_opt = b·log10 C + b_intercept  (vertices in log D)
      budgets, N_opt, D_opt, L_opt: one entry per used budget, ascending C (L_opt from the N parabola)
      D_at_N_opt: the runs' own D interpolated (log-log line) at N_opt, for comparison with D_opt
      parabolas, parabolas_D: [{budget, coeffs [c2, c1, c0], n_points, inside_grid,
                                x_range [min x, max x]}] for the used budgets
      dropped:   [{budget, reason}]
      warnings:  human-readable lines (off-grid minima)
    Raises ValueError when fewer than 2 budgets have a parabola minimum.
    """
    budgets, params, tokens, losses = _check_inputs(budgets, params, tokens, losses)
    n = len(budgets)
    sig = None if sigma is None else np.asarray(sigma, dtype=float).ravel()
    if sig is not None and not (len(sig) == n and np.all(np.isfinite(sig) & (sig > 0))):
        raise ValueError("sigma must give a positive noise SD for every run")
    labels = group_budgets(budgets)
    used, parabolas, parabolas_d, dropped, warnings, ses = [], [], [], [], [], []
    for g in range(labels.max() + 1 if n else 0):
        sel = labels == g
        budget = float(np.mean(budgets[sel]))
        x = np.log10(params[sel])
        xd = np.log10(tokens[sel])
        n_sizes = len(np.unique(params[sel]))
        if n_sizes < MIN_SIZES:
            dropped.append({"budget": budget,
                            "reason": f"only {n_sizes} distinct model size(s); a parabola needs >= {MIN_SIZES}"})
            continue
        s_g = None if sig is None else sig[sel]
        (c2, c1, c0), se_n = _parabola(x, losses[sel], s_g)
        (d2, d1, d0), se_d = _parabola(xd, losses[sel], s_g)
        if c2 <= 0 or d2 <= 0:
            which = "log N" if c2 <= 0 else "log D"
            dropped.append({"budget": budget,
                            "reason": f"parabola in {which} opens downward (c2 = {min(c2, d2):.3g} <= 0), "
                                      f"so it has no minimum; the grid may miss the optimum or the "
                                      f"losses are too noisy"})
            continue
        x_opt = -c1 / (2.0 * c2)  # vertex of c2·x² + c1·x + c0
        l_opt = c0 - c1 * c1 / (4.0 * c2)  # parabola value at the vertex
        xd_opt = -d1 / (2.0 * d2)
        # The runs' own D at N_opt, from a line through their (log N, log D): exact when D = C/(6N).
        s, k = np.polyfit(x, xd, 1)
        lo, hi = float(x.min()), float(x.max())
        lod, hid = float(xd.min()), float(xd.max())
        used.append((budget, 10.0 ** x_opt, 10.0 ** xd_opt, l_opt, 10.0 ** (s * x_opt + k)))
        parabolas.append({"budget": budget, "coeffs": [c2, c1, c0], "n_points": int(sel.sum()),
                          "inside_grid": bool(lo <= x_opt <= hi), "x_range": [lo, hi]})
        parabolas_d.append({"budget": budget, "coeffs": [d2, d1, d0], "n_points": int(sel.sum()),
                            "inside_grid": bool(lod <= xd_opt <= hid), "x_range": [lod, hid]})
        if sig is not None:
            parabolas[-1]["vertex_se"], parabolas_d[-1]["vertex_se"] = se_n, se_d
            ses.append((se_n, se_d))
        for sym, v, a_, b_ in (("N_opt", x_opt, lo, hi), ("D_opt", xd_opt, lod, hid)):
            if not a_ <= v <= b_:
                warnings.append(f"budget {_fmt(budget)}: {sym} = {_fmt(10 ** v)} lies outside the grid "
                                f"({_fmt(10 ** a_)}-{_fmt(10 ** b_)}); the parabola extrapolates, "
                                f"so widen the grid at this budget")

    if len(used) < 2:
        few = sum(d["reason"].startswith("only") for d in dropped)
        why = f"; {few} had < {MIN_SIZES} distinct sizes" if few else ""
        why += f"; {len(dropped) - few} had no minimum" if len(dropped) > few else ""
        raise ValueError(
            f"need at least 2 budgets with a parabola minimum, got {len(used)} of "
            f"{len(used) + len(dropped)} budget(s){why}; add budgets or sizes "
            f"(runs share a budget when equal within {BUDGET_RTOL:g} relative)"
        )

    c, n_opt, d_opt, l_opt, d_at_n = (np.array(col) for col in zip(*used))
    se_n, se_d = (np.maximum(np.array(col), 1e-12) for col in zip(*ses)) if ses else (None, None)
    a, a0 = _power_law(np.log10(c), np.log10(n_opt), se_n)
    b, b0 = _power_law(np.log10(c), np.log10(d_opt), se_d)
    return {
        "weighted": sig is not None,
        "a": a,
        "a_intercept": a0,
        "b": b,
        "b_intercept": b0,
        "budgets": [float(v) for v in c],
        "N_opt": [float(v) for v in n_opt],
        "D_opt": [float(v) for v in d_opt],
        "L_opt": [float(v) for v in l_opt],
        "D_at_N_opt": [float(v) for v in d_at_n],
        "parabolas": parabolas,
        "parabolas_D": parabolas_d,
        "dropped": dropped,
        "warnings": warnings,
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


# ---------------------------------------------------------------------------------------------
# Bootstrap


def _vertices(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Weighted parabolas y ≈ c2·x² + c1·x + c0, one per resample: y is (n,) or (B, n) (the losses, shared or
    simulated per resample), w (n,) or (B, n) (bootstrap counts or 1/σ² weights).  Returns the vertex x (B,), the
    parabola's value there (B,) and whether the vertex exists (≥ 3 distinct x with weight, c2 > 0)."""
    y, w = np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    B = max(len(y) if y.ndim == 2 else 1, len(w) if w.ndim == 2 else 1)
    y, w = np.broadcast_to(y, (B, len(x))), np.broadcast_to(w, (B, len(x)))
    xm = x.mean()
    u = x - xm  # centred for conditioning
    V = np.stack([u * u, u, np.ones_like(u)], 1)  # (n, 3)
    M = np.einsum("bn,ni,nj->bij", w, V, V)
    r = np.einsum("bn,ni,bn->bi", w, V, y)
    pattern = w > 0
    distinct = np.array([len(np.unique(x[row])) for row in pattern]) >= MIN_SIZES
    M[~distinct] = np.eye(3)  # keep solve() well-posed; these rows are discarded
    coef = np.linalg.solve(M, r[..., None])[..., 0]
    c2, c1, c0 = coef[:, 0], coef[:, 1], coef[:, 2]
    ok = distinct & (c2 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c2s = np.where(ok, c2, 1.0)
        v = xm - c1 / (2 * c2s)
        val = c0 - c1 * c1 / (4 * c2s)  # the parabola's minimum (centred coordinates)
    return np.where(ok, v, np.nan), np.where(ok, val, np.nan), ok


def resampled_vertices(budgets, params, tokens, losses, weights) -> dict:
    """Every isoFLOP profile's vertices for B resamples: losses (n,) or (B, n), weights (n,) or (B, n).

    Returns {log_c (G,), xn, xd (log10 vertices in N and in D), l_opt (the N parabola's minimum), valid
    (a minimum in both log N and log D), each (B, G)}."""
    budgets, params, tokens, _ = _check_inputs(budgets, params, tokens, np.zeros(len(np.ravel(budgets))))
    Y, W = np.asarray(losses, dtype=float), np.asarray(weights, dtype=float)
    labels = group_budgets(budgets)
    G = labels.max() + 1
    B = max(len(Y) if Y.ndim == 2 else 1, len(W) if W.ndim == 2 else 1)
    out = {"log_c": np.empty(G), "xn": np.full((B, G), np.nan), "xd": np.full((B, G), np.nan),
           "l_opt": np.full((B, G), np.nan), "valid": np.zeros((B, G), dtype=bool)}
    for g in range(G):
        sel = labels == g
        out["log_c"][g] = np.log10(np.mean(budgets[sel]))
        y, w = Y[..., sel], W[..., sel]
        vn, ln, okn = _vertices(np.log10(params[sel]), y, w)
        vd, _, okd = _vertices(np.log10(tokens[sel]), y, w)
        out["xn"][:, g], out["xd"][:, g], out["l_opt"][:, g], out["valid"][:, g] = vn, vd, ln, okn & okd
    return out


def vertex_lines(v: dict, se_n=None, se_d=None):
    """(a, a0, b, b0, ok) per resample: the power laws through each resample's valid vertices, weighted by
    1/se² when the vertices' standard errors (G,) are given."""
    B, G = v["xn"].shape
    xc = np.broadcast_to(v["log_c"], (B, G))
    wn = None if se_n is None else np.broadcast_to(1.0 / np.asarray(se_n) ** 2, (B, G))
    wd = None if se_d is None else np.broadcast_to(1.0 / np.asarray(se_d) ** 2, (B, G))
    a, a0, ok_a = line_rows(xc, np.where(v["valid"], v["xn"], 0.0), v["valid"], wn)
    b, b0, ok_b = line_rows(xc, np.where(v["valid"], v["xd"], 0.0), v["valid"], wd)
    return a, a0, b, b0, ok_a & ok_b


def bootstrap_approach2(budgets, params, tokens, losses, counts: np.ndarray):
    """(a, a0, b, b0, ok) arrays, one entry per row of counts (B, n): the runs' bootstrap weights,
    from analysis.stats.run_counts (resample runs) or counts_within_groups (within budgets).

    A resample keeps the budgets that still have ≥ 3 distinct sizes and a minimum in both log N
    and log D, and is ok when at least 2 remain."""
    budgets, params, tokens, losses = _check_inputs(budgets, params, tokens, losses)
    return vertex_lines(resampled_vertices(budgets, params, tokens, losses, np.asarray(counts, dtype=float)))


# Run-to-run noise from repeated grid points (sweep.seeds > 1)

NOISE_DEPTH_MIN = 3.0  # a profile shallower than this many noise SDs does not resolve its minimum
NOISE_LACK_OF_FIT = 2.0  # parabola residuals this many noise SDs above the noise: the span is too wide


def repeat_noise(budgets, params, losses, fit: dict | None = None) -> dict | None:
    """Run-to-run noise of the final loss, from grid points trained more than once (other seeds).

    sigma is the pooled standard deviation over the repeated points,
        sigma² = Σ_points Σ_runs (L - mean_point)² / Σ_points (n_point - 1),
    an estimate that needs no model of the loss.  With a fit (fit_approach2's result) the noise is
    also set against each used budget's profile:
      depth_sigmas:  (max - min of the point means) / sigma, how far the profile rises out of the noise;
      rms_residual:  RMS of the point means about their parabola (dof = points - 3, pooled over budgets),
      lack_of_fit:   rms_residual / (sigma / sqrt(mean runs per point)), ~1 when the parabola fits to noise.
    Warnings name the fix: a profile that is flat within noise, or parabolas that miss beyond it.
    Returns None when no point was repeated.
    """
    budgets, params, _, losses = _check_inputs(budgets, params, None, losses)
    labels = group_budgets(budgets)
    points: dict[tuple, list[float]] = {}
    for g, n, l in zip(labels, params, losses):
        points.setdefault((int(g), float(f"{n:.6g}")), []).append(float(l))
    dof = sum(len(v) - 1 for v in points.values())
    if dof == 0:
        return None
    ss = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in points.values())
    sigma = float(np.sqrt(ss / dof))
    out = {"sigma": sigma, "dof": int(dof), "repeated_points": sum(len(v) > 1 for v in points.values()),
           "runs": int(len(losses)), "budgets": [], "depth_sigmas": [], "rms_residual": None,
           "lack_of_fit": None, "warnings": []}
    if not fit or sigma <= 0:
        return out
    res_ss, res_dof, runs_per_point = 0.0, 0, []
    for p in fit["parabolas"]:
        g = profile_label(budgets, labels, p["budget"])
        mine = [(np.log10(n), np.mean(v), len(v)) for (gg, n), v in points.items() if gg == g]
        x, m, k = (np.array(c, dtype=float) for c in zip(*mine))
        depth = float((m.max() - m.min()) / sigma)
        out["budgets"].append(p["budget"])
        out["depth_sigmas"].append(depth)
        if depth < NOISE_DEPTH_MIN:
            out["warnings"].append(
                f"budget {_fmt(p['budget'])}: the profile rises only {depth:.1f} noise SDs (sigma = {sigma:.3g}) "
                f"across its sizes, so its minimum is not resolved; widen sweep.size_span or add sweep.seeds")
        res_ss += float(np.sum((m - np.polyval(p["coeffs"], x)) ** 2))
        res_dof += len(x) - 3
        runs_per_point += list(k)
    if res_dof > 0:
        rms = float(np.sqrt(res_ss / res_dof))
        lof = rms / (sigma / np.sqrt(np.mean(runs_per_point)))  # a point mean of k runs has SD sigma/sqrt(k)
        out["rms_residual"], out["lack_of_fit"] = rms, float(lof)
        if lof > NOISE_LACK_OF_FIT:
            out["warnings"].append(
                f"the parabolas miss their point means by {lof:.1f}x the noise (RMS {rms:.3g}, sigma {sigma:.3g}): "
                "the profiles are not parabolic over this span; narrow sweep.size_span around the minima (sweep.refine)")
    return out
