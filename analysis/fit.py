"""fit_dataset(): Approaches 1-3 on one dataset, with bootstrap intervals, projections and the cross-checks.

Pure: results in, a JSON-ready dict out (written by analysis.run, printed by analysis.summary).
"""

from __future__ import annotations

import math

import numpy as np

from analysis import approach1, approach2, approach3
from analysis.compare import agreement, approach2_bias
from analysis.results import APPROACH1_KINDS, APPROACH2_KINDS, APPROACH3_KINDS, Dataset
from analysis.stats import CI_LEVEL, counts_within_groups, dirichlet_weights, percentile_ci, run_counts

DEFAULT_PROJECTIONS = (5.76e23,)  # Gopher's budget, where Chinchilla Table 3 projects 67B / 1.5T
DEFAULT_BOOTSTRAP = 1000
PARAMS_KINDS = ("total", "non_embedding")
LN2 = math.log(2.0)


def _n_of(row: dict, params: str) -> float | None:
    return row["params"] if params == "total" else row["params_non_embedding"]


def _ci(samples: np.ndarray, ok: np.ndarray, level: float):
    return percentile_ci(np.asarray(samples)[ok], level)


def _projection_samples(a, a0, b, b0, C):
    log_c = math.log10(C)
    with np.errstate(over="ignore"):  # a wild bootstrap exponent projects to inf; percentiles handle it
        return 10.0 ** (a * log_c + a0), 10.0 ** (b * log_c + b0)


def _fit_approach1(ds: Dataset, usable, N, project, n_boot, rng, level):
    why = approach1.approach1_skip_reason(ds.curves, [r["run_id"] for r in usable])
    if why:
        raise ValueError(why)
    idx = [i for i, r in enumerate(usable) if r["run_id"] in ds.curves and r["kind"] in APPROACH1_KINDS]
    curves = [ds.curves[usable[i]["run_id"]] for i in idx]
    fit, env = approach1.fit_approach1(curves, [N[i] for i in idx])
    boot = {}
    if n_boot:
        a, a0, b, b0, ok = approach1.bootstrap_approach1(env, run_counts(rng, len(curves), n_boot))
        fit["ci"] = {"a": _ci(a, ok, level), "b": _ci(b, ok, level)}
        fit["n_boot_ok"] = int(ok.sum())
        boot = {C: _projection_samples(a[ok], a0[ok], b[ok], b0[ok], C) for C in project}
    return fit, env, boot


def _fit_approach2(usable, N, project, n_boot, rng, level, inside_grid_only=False):
    if any(r["budget"] is None or not r["budget"] > 0 for r in usable):
        raise ValueError("no budget for some runs, so runs cannot be grouped into isoFLOP profiles; "
                         "add a budget column")
    args = ([r["budget"] for r in usable], N, [r["tokens"] for r in usable], [r["loss"] for r in usable])
    fit = approach2.fit_approach2(*args)
    if inside_grid_only:
        # Refit through the budgets whose vertices (in N and in D) lie inside the sizes run: an extrapolated
        # vertex can sit decades away and dominate the power law.  The others are listed as dropped.
        outside = [p["budget"] for p, q in zip(fit["parabolas"], fit["parabolas_D"])
                   if not (p["inside_grid"] and q["inside_grid"])]
        if outside:
            labels = approach2.group_budgets(args[0])
            drop = {approach2.profile_label(args[0], labels, c) for c in outside}
            keep = [i for i, g in enumerate(labels) if g not in drop]
            args = tuple([a[i] for i in keep] for a in args)
            dropped = fit["dropped"] + [{"budget": c, "reason": "vertex outside the sizes run (--inside-grid-only)"}
                                        for c in outside]
            try:
                fit = approach2.fit_approach2(*args)
            except ValueError as e:
                raise ValueError(f"--inside-grid-only leaves too few budgets: {e}") from None
            fit["dropped"] = sorted(fit["dropped"] + dropped, key=lambda d: d["budget"])
    boot = {}
    if n_boot:
        # Main interval: runs resampled within each budget, so every resample keeps the design (the
        # budgets and how many runs each has).  Pooled resampling of all runs is reported too; with
        # a handful of runs per budget it is markedly conservative (tests/analysis/test_approach2.py measures
        # both against the true sampling spread).
        labels = approach2.group_budgets(args[0])
        a, a0, b, b0, ok = approach2.bootstrap_approach2(*args, counts_within_groups(rng, labels, n_boot))
        fit["ci"] = {"a": _ci(a, ok, level), "b": _ci(b, ok, level)}
        fit["n_boot_ok"] = int(ok.sum())
        boot = {C: _projection_samples(a[ok], a0[ok], b[ok], b0[ok], C) for C in project}
        pa, _, pb, _, pok = approach2.bootstrap_approach2(*args, run_counts(rng, len(args[1]), n_boot))
        fit["ci_runs"] = {"a": _ci(pa, pok, level), "b": _ci(pb, pok, level)}
    return fit, boot


def _fit_approach3(usable, N, project, n_boot, rng, level):
    D = [r["tokens"] for r in usable]
    L = [r["loss"] for r in usable]
    fit = approach3.fit_approach3(N, D, L)
    boot = {}
    if n_boot:
        # Runs reweighted by Dirichlet(1, …, 1) (Bayesian bootstrap), not drawn with replacement:
        # better calibrated for this nearly-L1 objective (see analysis.stats.dirichlet_weights).
        samples = approach3.bootstrap_approach3(N, D, L, fit, dirichlet_weights(rng, len(N), n_boot))
        fit["ci"] = {k: percentile_ci(samples[k], level) for k in ("E", "A", "B", "alpha", "beta", "a", "b")}
        fit["n_boot_ok"] = int(len(samples["E"]))
        fit["n_warm_starts"] = samples["n_starts"]
        good = np.isfinite(samples["G"])
        for C in project:
            c6 = C / 6.0
            boot[C] = (samples["G"][good] * c6 ** samples["a"][good], c6 ** samples["b"][good] / samples["G"][good])
    return fit, boot


def fit_dataset(ds: Dataset, *, params: str = "total", project=DEFAULT_PROJECTIONS,
                n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, ci_level: float = CI_LEVEL,
                inside_grid_only: bool = False) -> dict:
    """Fit every approach the data supports; a ValueError from one approach skips it with a reason.

    Returns the per-dataset part of fit.json (JSON-serialisable after _clean), plus "_plot", the
    objects the figures need (removed before writing)."""
    if params not in PARAMS_KINDS:
        raise ValueError(f"--params must be one of {'|'.join(PARAMS_KINDS)}, got {params!r}")
    usable = ds.usable
    N = [_n_of(r, params) for r in usable]
    if params == "non_embedding" and any(n is None or not n > 0 for n in N):
        missing = sum(n is None or not n > 0 for n in N)
        raise ValueError(f"{ds.name}: --params non_embedding needs a non-embedding parameter count for "
                         f"every run ({missing} of {len(N)} lack one); add a params_non_embedding column "
                         f"or use --params total")
    project = [float(c) for c in project]
    out = {"dataset": ds.name, "source": ds.source, "n_runs": len(usable), "n_skipped": len(ds.skipped),
           "skipped": [{"run_id": r["run_id"], "reason": r["skip_reason"]} for r in ds.skipped],
           "notes": list(ds.notes), "bytes_per_token": ds.bytes_per_token,
           "approaches_skipped": {}}
    # Approach 2's isoFLOP profiles are the grid runs; a sweep's extra token horizons (kind "horizon",
    # for Approach 1) were trained to other budgets and only feed Approaches 1 and 3.
    iso = [i for i, r in enumerate(usable) if r["kind"] in APPROACH2_KINDS]
    iso_rows, iso_N = [usable[i] for i in iso], [N[i] for i in iso]
    if len(iso) < len(usable):
        left = sorted({r["kind"] for r in usable if r["kind"] not in APPROACH2_KINDS})
        out["notes"].append(f"{len(usable) - len(iso)} {'/'.join(left)} runs left out of the isoFLOP profiles")
    # Approach 3 fits finished models: a trunk's final loss is at its constant LR, before any cooldown
    a3 = [i for i, r in enumerate(usable) if r["kind"] in APPROACH3_KINDS]
    a3_rows, a3_N = [usable[i] for i in a3], [N[i] for i in a3]
    boots, plot = {}, {"usable": iso_rows, "N": iso_N,
                       "has_budgets": bool(iso_rows) and all(r["budget"] is not None and r["budget"] > 0 for r in iso_rows)}
    fitters = {
        "approach1": lambda rng: _fit_approach1(ds, usable, N, project, n_boot, rng, ci_level),
        "approach2": lambda rng: _fit_approach2(iso_rows, iso_N, project, n_boot, rng, ci_level, inside_grid_only),
        "approach3": lambda rng: _fit_approach3(a3_rows, a3_N, project, n_boot, rng, ci_level),
    }
    for k, (name, fitter) in enumerate(fitters.items()):
        rng = np.random.default_rng([seed, k])  # an independent, reproducible stream per approach
        try:
            res = fitter(rng)
        except ValueError as e:
            out[name] = None
            out["approaches_skipped"][name] = " ".join(str(e).split())
            continue
        if name == "approach1":
            out[name], plot["envelope"], boots[name] = res
        else:
            out[name], boots[name] = res

    bpt = ds.bytes_per_token
    if bpt:  # bits per byte = nats / ln 2 / (bytes per token)
        if out["approach2"]:
            out["approach2"]["L_opt_bpb"] = [v / LN2 / bpt for v in out["approach2"]["L_opt"]]
        if out["approach3"]:
            out["approach3"]["E_bpb"] = out["approach3"]["E"] / LN2 / bpt

    predictors = {"approach1": approach1.predict, "approach2": approach2.predict,
                  "approach3": approach3.optimal_allocation}
    out["projections"] = []
    for C in project:
        entry = {"flops": C}
        for name, predict in predictors.items():
            fit = out[name]
            if not fit or (name == "approach3" and not np.isfinite(fit["G"])):
                entry[name] = None
                continue
            n_opt, d_opt = predict(fit, C)
            entry[name] = {"N": n_opt, "D": d_opt}
            if C in boots.get(name, {}):
                ns, dsamp = boots[name][C]
                entry[name]["N_ci"] = percentile_ci(ns, ci_level)
                entry[name]["D_ci"] = percentile_ci(dsamp, ci_level)
        out["projections"].append(entry)

    out["agreement"] = agreement(out)
    # Run-to-run noise from repeated grid points (sweep.seeds > 1), set against the isoFLOP profiles
    out["noise"] = approach2.repeat_noise([r["budget"] for r in iso_rows], iso_N, [r["loss"] for r in iso_rows],
                                          out["approach2"]) if plot["has_budgets"] else None
    out["approach2_bias"] = approach2_bias(
        [r["budget"] for r in iso_rows], iso_N, [r["tokens"] for r in iso_rows],
        out["approach2"], out["approach3"]) if out["approach2"] else None
    warnings = []
    for name in ("approach1", "approach2", "approach3"):
        if out[name]:
            warnings += [f"{name}: {w}" for w in out[name].get("warnings", [])]
    warnings += out["agreement"]["warnings"]
    if out["noise"]:
        warnings += [f"noise: {w}" for w in out["noise"]["warnings"]]
    if out["approach2_bias"]:
        warnings += out["approach2_bias"]["warnings"]
    out["warnings"] = warnings
    out["_plot"] = plot
    return out


def result_fits(result: dict) -> list[dict]:
    """The per-dataset fits of a fit.json, single- or multi-dataset."""
    return list(result["datasets"].values()) if "datasets" in result else [result]
