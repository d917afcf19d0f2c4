"""Agreement across the three approaches, Approach 2's grid-centring bias, and the published seeds.

The seeds are Hoffmann et al. 2022 (arXiv 2203.15556): Table 2 (a, b per approach with 10th/90th
percentiles, and Kaplan et al. 2020 for contrast), Table A2 (Approach 2 on C4 and GitHub, App. C)
and Table 3 (Approach 1's projections).
"""

from __future__ import annotations

import numpy as np

from analysis.approach2 import fit_approach2
from analysis.approach3 import predict_loss
from analysis.compute import allocation_slopes

# Chinchilla Table 2: approach → (a, b, a 10-90% interval, b 10-90% interval).
TABLE2 = {
    "Approach 1": (0.50, 0.50, (0.488, 0.502), (0.501, 0.512)),
    "Approach 2": (0.49, 0.51, (0.462, 0.534), (0.483, 0.529)),
    "Approach 3": (0.46, 0.54, (0.454, 0.455), (0.542, 0.543)),
    "Kaplan et al. 2020": (0.73, 0.27, None, None),
}
# Chinchilla Table A2 (Approach 2, 4 isoFLOP profiles per dataset).
TABLE_A2 = {"C4": (0.50, 0.50), "GitHub": (0.53, 0.47)}
# Chinchilla Table 3 (Approach 1): compute → (N_opt, D_opt).  5.76e23 is Gopher's budget.
TABLE3 = {1.92e19: (400e6, 8.0e9), 1.21e20: (1e9, 20.2e9), 1.23e22: (10e9, 205.1e9),
          5.76e23: (67e9, 1.5e12), 3.85e24: (175e9, 3.7e12)}
GOPHER_FLOPS = 5.76e23

APPROACHES = ("approach1", "approach2", "approach3")
LABEL = {"approach1": "Approach 1", "approach2": "Approach 2", "approach3": "Approach 3"}

BIAS_WARN = 0.01  # warn when Approach 2's exponent bias on the fitted surface exceeds this
CENTRE_WARN = 0.25  # ... or a vertex sits this far off its grid's centre (share of the half-width)


def _quantities(result: dict) -> list[tuple[str, str, dict]]:
    """(key, label, {approach: (estimate, ci)}) for a, b and every projection's N and D."""
    rows = []
    for key in ("a", "b"):
        vals = {ap: (result[ap][key], result[ap].get("ci", {}).get(key))
                for ap in APPROACHES if result.get(ap)}
        rows.append((key, key, vals))
    for proj in result.get("projections", []):
        for sym in ("N", "D"):
            vals = {ap: (proj[ap][sym], proj[ap].get(f"{sym}_ci")) for ap in APPROACHES if proj.get(ap)}
            rows.append((f"{sym}@{proj['flops']:.3g}", f"{sym}_opt({proj['flops']:.3g})", vals))
    return rows


def agreement(result: dict) -> dict:
    """Pairwise CI overlap of a, b and the projections; a warning for each pair that disagrees.

    Returns {"table": [{quantity, <approach>: {value, ci}}], "warnings": [...]}.
    """
    table, warnings = [], []
    for key, label, vals in _quantities(result):
        table.append({"quantity": label, **{ap: {"value": v, "ci": ci} for ap, (v, ci) in vals.items()}})
        aps = [ap for ap in APPROACHES if ap in vals and vals[ap][1] is not None]
        for i, p in enumerate(aps):
            for q in aps[i + 1:]:
                (lo1, hi1), (lo2, hi2) = vals[p][1], vals[q][1]
                if hi1 < lo2 or hi2 < lo1:
                    fmt = (lambda v: f"{v:.3f}") if key in ("a", "b") else (lambda v: f"{v:.3g}")
                    warnings.append(f"{label}: {LABEL[p]} [{fmt(lo1)}, {fmt(hi1)}] and {LABEL[q]} "
                                    f"[{fmt(lo2)}, {fmt(hi2)}] do not overlap")
    return {"table": table, "warnings": warnings}


def surface_agrees(result: dict) -> bool | None:
    """Whether Approach 3's surface agrees with Approaches 1 and 2: its a and b intervals overlap theirs.

    None when it cannot be told (no Approach 3, no other approach, or no intervals: --bootstrap 0)."""
    f3 = result.get("approach3")
    others = [result[ap] for ap in ("approach1", "approach2") if result.get(ap)]
    if not f3 or not others or not f3.get("ci"):
        return None
    for f in others:
        for key in ("a", "b"):
            mine, theirs = f3["ci"].get(key), (f.get("ci") or {}).get(key)
            if not mine or not theirs:
                return None
            if mine[1] < theirs[0] or theirs[1] < mine[0]:
                return False
    return True


def approach2_bias(budgets, params, tokens, fit2: dict | None, fit3: dict | None, axis=None,
                   surface_agrees: bool | None = True) -> dict | None:
    """How far off Approach 2 is on this very grid, measured on the fitted Approach 3 surface.

    Open-Athena's point: a parabola misplaces the minimum of an asymmetric isoFLOP curve (α ≠ β),
    and the misplacement depends on where the grid sits around the optimum.  Here Approach 2 is
    re-run on noise-free losses L̂(N, D) from the Approach 3 fit at exactly the runs' (budget, N, D);
    the surface's own compute-optimal exponents on the sweep's compute axis (analysis.compute) are the
    target, so the difference is the bias this grid alone causes.  Also reports each budget's vertex offset
    from its grid's centre.

    The measurement means something only if the surface describes these runs: the "biased on this grid"
    warning is given when surface_agrees (Approach 3's a and b intervals overlap Approaches 1 and 2's); when
    it disagrees, or that cannot be told, the warning says instead that the bias cannot be assessed.

    Returns {offsets, warnings, assessable} and, with an Approach 3 fit, {a_surface, b_surface,
    a_approach2_on_surface, b_approach2_on_surface, bias_a, bias_b}; None when there is no Approach 2 fit.
    """
    if fit2 is None:
        return None
    budgets, params, tokens = (np.asarray(v, dtype=float) for v in (budgets, params, tokens))
    warnings = []
    offsets = []
    for p in fit2["parabolas"]:
        lo, hi = p["x_range"]
        x_opt = -p["coeffs"][1] / (2 * p["coeffs"][0])
        offsets.append(float((x_opt - (lo + hi) / 2) / max((hi - lo) / 2, 1e-12)))
    out = {"offsets": offsets, "assessable": bool(surface_agrees)}
    off = [(c, o) for c, o in zip(fit2["budgets"], offsets) if abs(o) > CENTRE_WARN]
    if fit3 is not None and np.isfinite(fit3.get("G", np.nan)):
        truth = allocation_slopes(fit3, fit2["budgets"], axis)
        try:
            sim = fit_approach2(budgets, params, tokens, predict_loss(fit3, params, tokens))
        except ValueError:
            sim = None
        if sim is not None and truth is not None:
            a_true, b_true = truth["a"], truth["b"]
            out.update({"a_surface": a_true, "b_surface": b_true,
                        "a_approach2_on_surface": sim["a"], "b_approach2_on_surface": sim["b"],
                        "bias_a": sim["a"] - a_true, "bias_b": sim["b"] - b_true})
            big = max(abs(out["bias_a"]), abs(out["bias_b"])) > BIAS_WARN
            if surface_agrees and big:
                warnings.append(
                    f"Approach 2 is biased on this grid: on the fitted Approach 3 surface "
                    f"(alpha = {fit3['alpha']:.3f}, beta = {fit3['beta']:.3f}) it gives a = "
                    f"{sim['a']:.3f}, b = {sim['b']:.3f} where the surface's own optima give "
                    f"{a_true:.3f}, {b_true:.3f} (bias {out['bias_a']:+.3f}, {out['bias_b']:+.3f}); "
                    f"centre each budget's grid on its optimum or prefer Approach 3 (Open-Athena)")
            elif surface_agrees is False or (surface_agrees is None and big):
                why = ("its a and b intervals do not overlap those of Approaches 1 and 2" if surface_agrees is False
                       else "there are no intervals to compare it with (--bootstrap 0)")
                warnings.append(
                    "Approach 2's bias on this grid cannot be assessed: the Approach 3 surface it would be measured "
                    f"on is not known to describe these runs ({why})")
    if off:
        where = ", ".join(f"{c:.3g} ({o:+.2f})" for c, o in off)
        asym = ""
        if fit3 is not None and surface_agrees:
            asym = f"; with alpha = {fit3['alpha']:.2f} vs beta = {fit3['beta']:.2f} the parabola vertex shifts"
        warnings.append(f"Approach 2 grid not centred on the optimum at budget(s) {where} "
                        f"(vertex offset as a share of the grid's half-width){asym}; "
                        f"re-centre those grids (Open-Athena: off-centre grids bias Approach 2 when alpha != beta)")
    out["warnings"] = warnings
    return out


def seeds_rows(result: dict, dataset: str | None = None) -> list[tuple[str, str, str]]:
    """(source, a, b) rows: this fit's three approaches, then Chinchilla's Tables 2 and A2."""
    def fmt(v, ci):
        if v is None or not np.isfinite(v):
            return "-"
        return f"{v:.3f}" + (f" ({ci[0]:.3f}, {ci[1]:.3f})" if ci else "")

    rows = []
    for ap in APPROACHES:
        f = result.get(ap)
        if f:
            ci = f.get("ci", {})
            rows.append((f"this fit: {LABEL[ap]}", fmt(f["a"], ci.get("a")), fmt(f["b"], ci.get("b"))))
        else:
            rows.append((f"this fit: {LABEL[ap]}", "skipped", "skipped"))
    for name, (a, b, ca, cb) in TABLE2.items():
        rows.append((f"Chinchilla Table 2: {name}", fmt(a, ca), fmt(b, cb)))
    for name, (a, b) in TABLE_A2.items():
        same = dataset is not None and name.lower() in dataset.lower()  # e.g. "C4", "github_code"
        rows.append((f"Chinchilla Table A2: {name}" + (" (this dataset)" if same else ""), fmt(a, None), fmt(b, None)))
    return rows

