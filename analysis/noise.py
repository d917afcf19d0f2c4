"""Approach 2's noise model and the parametric bootstrap it drives.

Each run's final loss is taken as its profile's true value plus Gaussian noise of SD σ.  σ comes from

  repeats    grid points trained more than once (sweep.seeds > 1): per budget, the pooled SD of the repeats
             about their point means, Σ (L − mean_point)² / Σ (n_point − 1) over the budget's points; a budget
             with fewer than MIN_BUDGET_DOF such degrees of freedom takes the SD pooled over all budgets (weights
             from a few-dof SD would be treated as exact and make the intervals too narrow).  The
             parabolas are then weighted least squares with these σ (analysis.approach2.fit_approach2).
  residuals  no repeats: the parabolas' own residuals, σ² = Σ_budgets RSS / Σ_budgets (runs − 3), pooled over the
             used budgets.  This includes any lack of fit of the parabola, so it errs on the wide side.

The parametric bootstrap (Efron & Tibshirani 1993, ch. 6) redraws every run's loss as the fitted parabola at
its size plus σ*·ε, ε ~ N(0, 1), refits every budget's parabolas and the power laws through their vertices, and
reads intervals off the spread.  σ* = σ·sqrt(χ²_ν/ν) is drawn afresh per resample from σ's own sampling
distribution (ν its degrees of freedom), so the uncertainty of σ itself widens the intervals as it should.
The resampling bootstraps (runs within each budget, or all runs) are still reported beside it.
"""

from __future__ import annotations

import numpy as np

from analysis.approach2 import _check_inputs, group_budgets, profile_label, resampled_vertices, vertex_lines

MIN_BUDGET_DOF = 10  # repeat degrees of freedom a budget needs for its own σ (fewer: the pooled σ)


def _point_key(n: float) -> float:
    return float(f"{n:.6g}")


def repeat_sigmas(budgets, params, losses) -> dict | None:
    """Per-run noise SD from seed repeats (see the module docstring), or None when no point was repeated.

    Returns {source: "repeats", sigma (pooled), dof, sigma_runs (n,), dof_runs (n,), budgets: [{budget, sigma,
    dof}]}; a run's dof_runs is the degrees of freedom behind its σ (its budget's, or the pooled)."""
    budgets, params, _, losses = _check_inputs(budgets, params, None, losses)
    labels = group_budgets(budgets)
    points: dict[tuple, list[int]] = {}
    for i, (g, n) in enumerate(zip(labels, params)):
        points.setdefault((int(g), _point_key(n)), []).append(i)
    ss = np.zeros(labels.max() + 1)
    dof = np.zeros(labels.max() + 1, dtype=int)
    for (g, _), idx in points.items():
        v = losses[idx]
        ss[g] += float(np.sum((v - v.mean()) ** 2))
        dof[g] += len(idx) - 1
    if dof.sum() == 0:
        return None
    sigma = float(np.sqrt(ss.sum() / dof.sum()))
    if sigma <= 0:
        return None
    own = (dof >= MIN_BUDGET_DOF) & (ss > 0)
    sig_g = np.where(own, np.sqrt(ss / np.maximum(dof, 1)), sigma)
    dof_g = np.where(own, dof, dof.sum())
    per_budget = [{"budget": float(np.mean(budgets[labels == g])), "sigma": float(sig_g[g]), "dof": int(dof_g[g]),
                   "own": bool(own[g])} for g in range(len(ss))]
    return {"source": "repeats", "sigma": sigma, "dof": int(dof.sum()), "sigma_runs": sig_g[labels],
            "dof_runs": dof_g[labels], "budgets": per_budget}


def residual_sigma(budgets, params, losses, fit2: dict) -> dict | None:
    """Noise SD from the residuals of fit2's parabolas in log N (no repeats), pooled over its used budgets; None
    when the parabolas have no residual degrees of freedom (3 sizes per budget)."""
    budgets, params, _, losses = _check_inputs(budgets, params, None, losses)
    labels = group_budgets(budgets)
    ss, dof = 0.0, 0
    for p in fit2["parabolas"]:
        sel = labels == profile_label(budgets, labels, p["budget"])
        ss += float(np.sum((losses[sel] - np.polyval(p["coeffs"], np.log10(params[sel]))) ** 2))
        dof += int(sel.sum()) - 3
    if dof <= 0 or ss <= 0:
        return None
    sigma = float(np.sqrt(ss / dof))
    return {"source": "residuals", "sigma": sigma, "dof": dof, "sigma_runs": np.full(len(losses), sigma),
            "dof_runs": np.full(len(losses), dof), "budgets": []}


def parametric_bootstrap(budgets, params, tokens, fit2: dict, noise: dict, rng: np.random.Generator, n_boot: int):
    """Approach 2 refitted on n_boot parametric resamples (see the module docstring).

    Only the runs of fit2's used budgets take part.  Returns (a, a0, b, b0, ok, vertices), vertices being
    analysis.approach2.resampled_vertices' dict (its l_opt feeds the loss power law of the hold-out check)."""
    budgets, params, tokens, _ = _check_inputs(budgets, params, tokens, np.zeros(len(np.ravel(budgets))))
    labels = group_budgets(budgets)
    used = [profile_label(budgets, labels, p["budget"]) for p in fit2["parabolas"]]
    sel = np.isin(labels, used)
    coeffs = {profile_label(budgets, labels, p["budget"]): p["coeffs"] for p in fit2["parabolas"]}
    x = np.log10(params[sel])
    l_hat = np.array([np.polyval(coeffs[g], xi) for g, xi in zip(labels[sel], x)])
    sig, dof = np.asarray(noise["sigma_runs"])[sel], np.asarray(noise["dof_runs"])[sel]
    # σ* = σ sqrt(χ²_ν / ν): one draw per resample for each group of runs that shares a σ estimate
    scale = np.ones((n_boot, int(sel.sum())))
    groups = {}
    for j, (s_j, d_j) in enumerate(zip(sig, dof)):
        groups.setdefault((float(s_j), int(d_j)), []).append(j)
    for (_, d), idx in groups.items():
        scale[:, idx] = np.sqrt(rng.chisquare(d, size=n_boot) / d)[:, None]
    Y = l_hat + sig * scale * rng.standard_normal((n_boot, int(sel.sum())))
    w = 1.0 / sig ** 2 if fit2.get("weighted") else np.ones_like(sig)
    v = resampled_vertices(budgets[sel], params[sel], tokens[sel], Y, w)
    se_n = se_d = None
    if fit2.get("weighted"):
        se_n = np.array([max(p["vertex_se"], 1e-12) for p in fit2["parabolas"]])
        se_d = np.array([max(p["vertex_se"], 1e-12) for p in fit2["parabolas_D"]])
    a, a0, b, b0, ok = vertex_lines(v, se_n, se_d)
    return a, a0, b, b0, ok, v
