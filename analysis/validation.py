"""Checking fitted laws against a budget they were not fitted on.

``python -m analysis <sweep> --holdout-top`` fits every approach on all runs below the sweep's top isoFLOP budget,
predicts the compute-optimal N, D and loss at that budget, and compares the predictions with the top budget's
measured profile.  Loss has two predictors:

  approach3            L(N_opt, D_opt) of Approach 3's surface at its own allocation on the sweep's compute axis;
  approach2_power_law  a power law through Approach 2's per-budget minima, L_opt(C) = E + k·C^-γ (least squares
                       over γ with (E, k) >= 0 solved at each γ).  With 2 budgets E cannot be fitted too, and
                       L_opt = k·C^-γ (E = 0; Kaplan et al. 2020's L(C) form).  E is not borrowed from Approach 3,
                       so that the two predictors stay independent of each other.

The comparison is ``validation_entry(fit, measured)``: a pure function of a dataset's fits (their projections at the
budget) and a measured profile, so a run trained later at the predicted optimum (a "forward" validation) can
write the same entry with kind "forward".  In fit.json it is ``datasets.<name>.validation``; a single-dataset
fit.json keeps the dataset at its top level, so there it is ``validation``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from analysis.approach2 import BUDGET_RTOL, MIN_SIZES
from analysis.results import APPROACH2_KINDS, Dataset

POWER_LAW_FREE_E = 3  # budgets needed to fit E, k and γ (3 parameters; with 3 budgets the law interpolates them)
GAMMA_GRID = np.logspace(-3, np.log10(3.0), 600)  # γ searched over 0.001-3
APPROACHES = ("approach1", "approach2", "approach3")
LOSS_PREDICTORS = ("approach3", "approach2_power_law")


# ---------------------------------------------------------------------------------------------
# L_opt(C) = E + k C^-γ


def loss_power_law(log_c, L, valid=None, E: float | None = None) -> dict:
    """Fit L_opt = E + k·C^-γ through per-budget minima, for one set (L: (G,)) or many (L: (B, G), valid (B, G)).

    log_c: log10 of the budgets (G,).  E: None to fit it, or the value to hold it at.  Returns {E, k, gamma}, floats
    or (B,) arrays, NaN where no power law with k > 0 fits (fewer than 2 budgets, or L below E)."""
    L = np.asarray(L, dtype=float)
    single = L.ndim == 1
    L = np.atleast_2d(L)
    valid = np.isfinite(L) if valid is None else np.atleast_2d(valid) & np.isfinite(L)
    Lz = np.where(valid, L, 0.0)
    m = valid.astype(float)
    lc = np.asarray(log_c, dtype=float)
    if E is not None:  # log(L - E) = log k - γ log C: a line
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.log10(np.where(valid & (L > E), L - E, np.nan))
        mask = valid & np.isfinite(y)
        n = mask.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mx = np.where(mask, lc, 0).sum(1) / n
            my = np.where(mask, y, 0).sum(1) / n
            dx = np.where(mask, lc - mx[:, None], 0)
            slope = (dx * np.where(mask, y - my[:, None], 0)).sum(1) / (dx * dx).sum(1)
        ok = (n >= 2) & (mask.sum(1) == valid.sum(1)) & np.isfinite(slope) & (slope < 0)
        out = {"E": np.full(len(L), float(E)), "k": np.where(ok, 10 ** (my - slope * mx), np.nan),
               "gamma": np.where(ok, -slope, np.nan)}
    else:
        n = m.sum(1)

        def at(g):  # for fixed γ (per row) the law is linear in (E, k): least squares with E >= 0
            x = 10.0 ** (-g[:, None] * lc)
            with np.errstate(invalid="ignore", divide="ignore"):
                mx, my = (m * x).sum(1) / n, (m * Lz).sum(1) / n
                k = (m * (x - mx[:, None]) * (Lz - my[:, None])).sum(1) / (m * (x - mx[:, None]) ** 2).sum(1)
                e = my - k * mx
                k = np.where(e < 0, (m * x * Lz).sum(1) / (m * x * x).sum(1), k)  # E at its bound 0
                e = np.maximum(e, 0.0)
                rss = (m * (Lz - e[:, None] - k[:, None] * x) ** 2).sum(1)
            return e, k, np.where((k > 0) & np.isfinite(rss), rss, np.inf)

        grid = np.array([at(np.full(len(L), g))[2] for g in GAMMA_GRID])  # (n_gamma, B)
        i = np.argmin(grid, 0)
        lo = np.log(GAMMA_GRID[np.clip(i - 1, 0, None)])
        hi = np.log(GAMMA_GRID[np.clip(i + 1, None, len(GAMMA_GRID) - 1)])
        gr = (math.sqrt(5.0) - 1.0) / 2.0  # golden-section search in ln γ between the best grid point's neighbours
        for _ in range(50):
            c, d = hi - gr * (hi - lo), lo + gr * (hi - lo)
            left = at(np.exp(c))[2] < at(np.exp(d))[2]
            hi, lo = np.where(left, d, hi), np.where(left, lo, c)
        g = np.exp((lo + hi) / 2)
        e, k, rss = at(g)
        ok = (n >= 3) & np.isfinite(rss) & np.isfinite(grid.min(0))
        out = {"E": np.where(ok, e, np.nan), "k": np.where(ok, k, np.nan), "gamma": np.where(ok, g, np.nan)}
    return {k: float(v[0]) for k, v in out.items()} if single else out


def predict_loss_power_law(law: dict, C):
    with np.errstate(over="ignore", invalid="ignore"):
        return law["E"] + law["k"] * np.asarray(C, dtype=float) ** (-np.asarray(law["gamma"]))


def power_law_form(n_budgets: int) -> str:
    if n_budgets >= POWER_LAW_FREE_E:
        return "L_opt = E + k C^-gamma (E, k, gamma fitted)"
    return f"L_opt = k C^-gamma (E = 0: {n_budgets} budgets < {POWER_LAW_FREE_E} cannot fit E too)"


# ---------------------------------------------------------------------------------------------
# the hold-out split and the measured profile


def _same_budget(a: float, b: float) -> bool:
    return abs(a - b) <= BUDGET_RTOL * abs(b)


def top_budget(ds: Dataset) -> float | None:
    budgets = [r["budget"] for r in ds.usable if r["kind"] in APPROACH2_KINDS and r["budget"]]
    return max(budgets) if budgets else None


def holdout_split(ds: Dataset) -> tuple[Dataset, list[dict], float]:
    """(the dataset without its top isoFLOP budget, the top budget's grid runs, that budget).

    Every run at or above the top budget leaves the training set (a horizon run trained to more compute would
    carry information from beyond the budget being predicted).  ValueError, naming the fix, when there is nothing
    to hold out."""
    top = top_budget(ds)
    if top is None:
        raise ValueError(f"{ds.name}: --holdout-top needs isoFLOP budgets; these results have none")
    held = [r for r in ds.usable if r["kind"] in APPROACH2_KINDS and _same_budget(r["budget"], top)]
    train_ids = {r["run_id"] for r in ds.rows
                 if not (r["budget"] and (_same_budget(r["budget"], top) or r["budget"] > top))}
    lower = {float(f"{r['budget']:.6g}") for r in ds.usable if r["run_id"] in train_ids and r["kind"] in APPROACH2_KINDS}
    if len(lower) < 2:
        raise ValueError(f"{ds.name}: --holdout-top leaves {len(lower)} isoFLOP budget(s) below the top one "
                         f"({top:.3g}); it needs at least 2 to fit, so add budgets")
    if len({r["params"] for r in held}) < MIN_SIZES:
        raise ValueError(f"{ds.name}: the top budget {top:.3g} has fewer than {MIN_SIZES} sizes, so it has no "
                         f"measured minimum to compare with; add sizes there")
    train = dataclasses.replace(
        ds, rows=[r for r in ds.rows if r["run_id"] in train_ids],
        curves={k: v for k, v in ds.curves.items() if k in train_ids},
        notes=list(ds.notes) + [f"--holdout-top: the {len(ds.usable) - len([r for r in ds.usable if r['run_id'] in train_ids])} "
                                f"runs at or above the top budget {top:.3g} are held out of every fit"])
    return train, held, top


def measured_profile(runs: list[dict], N, axis=None) -> dict:
    """The held-out budget's own minimum: parabolas in log N and log D through its runs (as Approach 2 fits one
    budget), and its best run.  N: the runs' parameter counts (total or non-embedding).  With fewer than 3 sizes
    (a forward validation of one run at the predicted optimum) the measured loss is the best run's, at its N."""
    N = np.asarray(N, dtype=float)
    L = np.array([r["loss"] for r in runs], dtype=float)
    D = np.array([r["tokens"] for r in runs], dtype=float)
    x, xd = np.log10(N), np.log10(D)
    if len(np.unique(N)) < MIN_SIZES:
        best = int(np.argmin(L))
        return {"budget": float(np.mean([r["budget"] for r in runs])), "n_runs": len(runs), "N_opt": None, "D_opt": None,
                "L_opt": float(L[best]), "note": f"{len(runs)} run(s), no profile: L is the best run's, at its own N",
                "best_run": {"run_id": runs[best]["run_id"], "N": float(N[best]), "D": float(D[best]), "L": float(L[best])}}
    c2, c1, c0 = np.polyfit(x, L, 2)
    d2, d1, _ = np.polyfit(xd, L, 2)
    best = int(np.argmin(L))
    out = {"budget": float(np.mean([r["budget"] for r in runs])), "n_runs": len(runs),
           "best_run": {"run_id": runs[best]["run_id"], "N": float(N[best]), "D": float(D[best]), "L": float(L[best])}}
    if c2 <= 0 or d2 <= 0:
        out.update({"N_opt": None, "D_opt": None, "L_opt": None,
                    "note": "the held-out profile's parabola has no minimum; compare with its best run"})
        return out
    x_opt, xd_opt = -c1 / (2 * c2), -d1 / (2 * d2)
    out.update({"N_opt": float(10 ** x_opt), "D_opt": float(10 ** xd_opt), "L_opt": float(c0 - c1 * c1 / (4 * c2)),
                "inside_grid": bool(x.min() <= x_opt <= x.max())})
    return out


def forward_target(fit: dict, budget: float) -> float:
    """The compute-optimal N a forward validation trains at ``budget`` (which fit["projections"] must include):
    Approach 2's (the isoFLOP headline), else Approach 3's, else Approach 1's.  ValueError when none projects."""
    proj = next((p for p in fit["projections"] if _same_budget(p["flops"], budget)), None)
    for ap in ("approach2", "approach3", "approach1"):
        q = (proj or {}).get(ap)
        if q and q.get("N") and math.isfinite(q["N"]) and q["N"] > 0:
            return float(q["N"])
    raise ValueError(f"no approach projects N_opt to {budget:.3g}: the validation run has no target")


def validation_runs(ds: Dataset) -> list[dict]:
    """The finished runs of kind validation (a forward validation), at one budget."""
    return [r for r in ds.usable if r["kind"] == "validation"]


# ---------------------------------------------------------------------------------------------
# the entry


def _inside(v, ci):
    return None if v is None or not ci else bool(ci[0] <= v <= ci[1])


def validation_entry(fit: dict, measured: dict, kind: str = "holdout") -> dict:
    """Predictions at measured["budget"] (from fit["projections"], which must include that budget) against the
    measured profile.  kind: "holdout" (fitted without the budget) or "forward" (a run trained at the predicted
    optimum).  Keys: kind, budget, L_pred / L_pred_ci per loss predictor, L_measured, N_opt_pred / N_opt_pred_ci and
    D_opt_pred / D_opt_pred_ci per approach, N_opt_measured, D_opt_measured, measured (the profile), inside_ci
    (does each interval hold the measurement), ratio_N (predicted / measured N_opt), error_L (predicted − measured)."""
    budget = measured["budget"]
    proj = next((p for p in fit["projections"] if _same_budget(p["flops"], budget)), None)
    if proj is None:
        raise ValueError(f"the fits have no projection at the validation budget {budget:.3g}")
    entry = {"kind": kind, "budget": budget,
             "fitted_budgets": (fit.get("approach2") or {}).get("budgets"),
             "L_pred": {}, "L_pred_ci": {}, "L_measured": measured.get("L_opt"),
             "N_opt_pred": {}, "N_opt_pred_ci": {}, "N_opt_measured": measured.get("N_opt"),
             "D_opt_pred": {}, "D_opt_pred_ci": {}, "D_opt_measured": measured.get("D_opt"),
             "measured": measured}
    for ap in APPROACHES:
        q = proj.get(ap)
        if q:
            entry["N_opt_pred"][ap], entry["N_opt_pred_ci"][ap] = q["N"], q.get("N_ci")
            entry["D_opt_pred"][ap], entry["D_opt_pred_ci"][ap] = q["D"], q.get("D_ci")
    for name, q in (proj.get("loss") or {}).items():
        if q:
            entry["L_pred"][name], entry["L_pred_ci"][name] = q["L"], q.get("L_ci")
    entry["inside_ci"] = {
        "N_opt": {ap: _inside(entry["N_opt_measured"], ci) for ap, ci in entry["N_opt_pred_ci"].items()},
        "L": {name: _inside(entry["L_measured"], ci) for name, ci in entry["L_pred_ci"].items()}}
    n_meas, l_meas = entry["N_opt_measured"], entry["L_measured"]
    entry["ratio_N"] = {ap: (v / n_meas if n_meas else None) for ap, v in entry["N_opt_pred"].items()}
    entry["error_L"] = {name: (v - l_meas if l_meas is not None else None) for name, v in entry["L_pred"].items()}
    return entry


def summary_lines(entry: dict) -> list[str]:
    """The entry in a few lines (console and report)."""
    def ci(c, fmt):
        return f" [{fmt.format(c[0])}, {fmt.format(c[1])}]" if c else ""

    lines = [f"{entry['kind']} check at C = {entry['budget']:.3g}"
             + (f" (fitted on {', '.join(f'{c:.3g}' for c in entry['fitted_budgets'])})" if entry["fitted_budgets"] else "")]
    meas = entry["N_opt_measured"]
    lines.append("N_opt measured " + (f"{meas:.3g}" if meas else "-")
                 + "; predicted " + "; ".join(f"{ap[-1]}: {v:.3g}{ci(entry['N_opt_pred_ci'][ap], '{:.3g}')}"
                                               for ap, v in entry["N_opt_pred"].items()))
    lm = entry["L_measured"]
    lines.append("L_opt measured " + (f"{lm:.4f}" if lm is not None else "-")
                 + "; predicted " + "; ".join(f"{name}: {v:.4f}{ci(entry['L_pred_ci'][name], '{:.4f}')}"
                                               for name, v in entry["L_pred"].items()))
    return lines
