"""fit_dataset(): Approaches 1-3 on one dataset, with bootstrap intervals, projections and the cross-checks.

Pure: results in, a JSON-ready dict out (written by analysis.run, printed by analysis.summary).

One compute axis for every approach (analysis.compute): each turns its fit into N_opt(C) and D_opt(C) =
C / fpt(N_opt(C)) with the sweep's own FLOPs per token, so the agreement table compares like with like.
Approach 3's exponents a and b are then the slopes of its N_opt(C) and D_opt(C) through the isoFLOP budgets (the
closed form β/(α+β) on C = 6ND is kept as a_6ND, b_6ND).  Each approach fits the runs its filter keeps
(analysis.filters), recorded under "filters".
"""

from __future__ import annotations

import math

import numpy as np

from analysis import approach1, approach2, approach3
from analysis.compare import agreement, approach2_bias, surface_agrees
from analysis.compute import allocate, allocation_slopes, compute_axis, slope_budgets, slope_grid
from analysis.filters import DEFAULT_MIN_TOKENS_PER_PARAM, RunFilter
from analysis.noise import parametric_bootstrap, repeat_sigmas, residual_sigma
from analysis.results import APPROACH1_KINDS, APPROACH2_KINDS, APPROACH3_KINDS, Dataset
from analysis.stats import CI_LEVEL, counts_within_groups, dirichlet_weights, line_rows, percentile_ci, run_counts
from analysis.validation import POWER_LAW_FREE_E, loss_power_law, power_law_form, predict_loss_power_law

DEFAULT_PROJECTIONS = (5.76e23,)  # Gopher's budget, where Chinchilla Table 3 projects 67B / 1.5T
DEFAULT_BOOTSTRAP = 1000
PARAMS_KINDS = ("total", "non_embedding")
LN2 = math.log(2.0)


def _n_of(row: dict, params: str) -> float | None:
    return row["params"] if params == "total" else row["params_non_embedding"]


def _ci(samples: np.ndarray, ok: np.ndarray, level: float):
    return percentile_ci(np.asarray(samples)[ok], level)


def _power_law_samples(a, a0, C):
    with np.errstate(over="ignore"):  # a wild bootstrap exponent projects to inf; percentiles handle it
        return 10.0 ** (a * math.log10(C) + a0)


BAND_POINTS = 41  # C values of a power law's interval band (the figures' shaded band around the fitted line)
BAND_PAD = 0.5  # decades of C past the budgets and projections (the figures extend their lines 0.3: plots.C_PAD)


def _samples_ci(ns, C, axis, level):
    """(N_ci, D_ci) at compute C from bootstrap fits' N_opt(C) samples: D_opt = C / fpt(N_opt) for each."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return percentile_ci(ns, level), percentile_ci(axis.tokens(C, ns), level)


def _band(b: dict, c_values, axis, level) -> dict:
    """A power law's pointwise interval: at each C, the percentile interval of the bootstrap fits' N_opt(C) and of
    their D_opt(C) (the same rule as every projection's interval, _projection)."""
    logs = np.log10([c for c in c_values if c and c > 0])
    cs = np.logspace(logs.min() - BAND_PAD, logs.max() + BAND_PAD, BAND_POINTS)
    n_ci, d_ci = zip(*(_samples_ci(_power_law_samples(b["a"], b["a0"], C), C, axis, level) for C in cs))
    return {"flops": cs.tolist(), "N_ci": list(n_ci), "D_ci": list(d_ci)}


def _fit_approach1(ds: Dataset, rows, N, n_boot, rng, level):
    why = approach1.approach1_skip_reason(ds.curves, [r["run_id"] for r in rows])
    if why:
        raise ValueError(why)
    idx = [i for i, r in enumerate(rows) if r["run_id"] in ds.curves]
    curves = [ds.curves[rows[i]["run_id"]] for i in idx]
    fit, env = approach1.fit_approach1(curves, [N[i] for i in idx])
    boot = {}
    if n_boot:
        a, a0, b, b0, ok = approach1.bootstrap_approach1(env, run_counts(rng, len(curves), n_boot))
        fit["ci"] = {"a": _ci(a, ok, level), "b": _ci(b, ok, level)}
        fit["n_boot_ok"] = int(ok.sum())
        boot = {"a": a[ok], "a0": a0[ok]}
    return fit, env, boot


def _approach2_args(rows, N):
    if any(r["budget"] is None or not r["budget"] > 0 for r in rows):
        raise ValueError("no budget for some runs, so runs cannot be grouped into isoFLOP profiles; "
                         "add a budget column")
    return ([r["budget"] for r in rows], list(N), [r["tokens"] for r in rows], [r["loss"] for r in rows])


def _fit_approach2(rows, N, n_boot, rng, level, inside_grid_only=False):
    args = _approach2_args(rows, N)
    # Seed repeats give each run a noise SD: then the parabolas are weighted (analysis.noise).
    rep = repeat_sigmas(args[0], args[1], args[3])
    sig = None if rep is None else list(rep["sigma_runs"])
    fit = approach2.fit_approach2(*args, sigma=sig)
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
            sig = None if sig is None else [sig[i] for i in keep]
            dropped = fit["dropped"] + [{"budget": c, "reason": "vertex outside the sizes run (--inside-grid-only)"}
                                        for c in outside]
            try:
                fit = approach2.fit_approach2(*args, sigma=sig)
            except ValueError as e:
                raise ValueError(f"--inside-grid-only leaves too few budgets: {e}") from None
            fit["dropped"] = sorted(fit["dropped"] + dropped, key=lambda d: d["budget"])
    noise = (repeat_sigmas(args[0], args[1], args[3]) if rep is not None
             else residual_sigma(args[0], args[1], args[3], fit))
    fit["noise_model"] = None if noise is None else {k: noise[k] for k in ("source", "sigma", "dof", "budgets")}
    boot = {}
    if n_boot:
        labels = approach2.group_budgets(args[0])
        wa, wa0, wb, _, wok = approach2.bootstrap_approach2(*args, counts_within_groups(rng, labels, n_boot))
        fit["ci_within"] = {"a": _ci(wa, wok, level), "b": _ci(wb, wok, level)}
        pa, _, pb, _, pok = approach2.bootstrap_approach2(*args, run_counts(rng, len(args[1]), n_boot))
        fit["ci_runs"] = {"a": _ci(pa, pok, level), "b": _ci(pb, pok, level)}
        if noise is not None:
            # Main interval: parametric bootstrap from the noise SD, which benchmarks/fit_calibration.md finds
            # calibrated on our CPU design; the resampling bootstraps above are 1.5x too wide there.
            a, a0, b, b0, ok, v = parametric_bootstrap(args[0], args[1], args[2], fit, noise, rng, n_boot)
            fit["ci_method"] = (f"parametric bootstrap from the noise SD sigma = {noise['sigma']:.3g} "
                                + ("of the seed repeats" if noise["source"] == "repeats" else
                                   "of the parabolas' residuals (no seed repeats)"))
        else:  # 3 sizes per budget and no repeats: no residual to measure the noise by
            counts = counts_within_groups(rng, labels, n_boot)
            v = approach2.resampled_vertices(*args, counts)
            a, a0, b, b0, ok = approach2.vertex_lines(v)
            fit["ci_method"] = "runs resampled within each budget (no noise estimate: no repeats, no residual dof)"
        fit["ci"] = {"a": _ci(a, ok, level), "b": _ci(b, ok, level)}
        fit["n_boot_ok"] = int(ok.sum())
        boot = {"a": a[ok], "a0": a0[ok], "l_opt": v["l_opt"][ok], "valid": v["valid"][ok], "log_c": v["log_c"]}
    return fit, boot


def _fit_approach3(rows, N, n_boot, rng, level, method, axis, budgets):
    D = [r["tokens"] for r in rows]
    L = [r["loss"] for r in rows]
    fit = approach3.fit_approach3(N, D, L, method=method)
    fit["a_6ND"], fit["b_6ND"] = fit["a"], fit["b"]  # App. D.2's closed form on C = 6ND
    slopes = allocation_slopes(fit, budgets, axis) if budgets else None
    if slopes:
        fit.update(slopes)
    fit["e_profile"] = _e_profile(N, D, L, fit, level, axis, budgets)
    boot = {}
    if n_boot:
        # Runs reweighted by Dirichlet(1, …, 1) (Bayesian bootstrap), not drawn with replacement:
        # better calibrated for this nearly-L1 objective (see analysis.stats.dirichlet_weights).
        samples = approach3.bootstrap_approach3(N, D, L, fit, dirichlet_weights(rng, len(N), n_boot))
        if slopes:
            grid = slope_grid(slopes["slope_budgets"])
            n, d = allocate(samples, grid, axis)
            lc = np.broadcast_to(np.log10(grid), n.shape)
            with np.errstate(divide="ignore", invalid="ignore"):
                good = np.isfinite(n) & np.isfinite(d)
                samples["a"] = line_rows(lc, np.where(good, np.log10(n), 0.0), good)[0]
                samples["b"] = line_rows(lc, np.where(good, np.log10(d), 0.0), good)[0]
            samples["a"] = np.where(good.all(1), samples["a"], np.nan)
            samples["b"] = np.where(good.all(1), samples["b"], np.nan)
        fit["ci"] = {k: percentile_ci(samples[k], level) for k in ("E", "A", "B", "alpha", "beta", "a", "b")}
        fit["n_boot_ok"] = int(len(samples["E"]))
        fit["n_warm_starts"] = samples["n_starts"]
        boot = samples
    return fit, boot


def _e_profile(N, D, L, fit, level, axis, budgets) -> dict | None:
    """analysis.approach3.profile_e, with each refit's a and b also on the sweep's compute axis (``a``, ``b``, as
    the fit's own are), and the range of those over the profile set (``a_set``, ``b_set``).  When E is at its
    bound, the fit's warning gains what the profile says.  None where no held-E refit is a power law."""
    prof = approach3.profile_e(N, D, L, fit, level=level)
    if prof is None:
        return None
    params = prof.pop("params")
    if budgets and "slope_budgets" in fit:
        slopes = [allocation_slopes(p, budgets, axis) for p in params]
        prof["a"] = [s["a"] if s else float("nan") for s in slopes]
        prof["b"] = [s["b"] if s else float("nan") for s in slopes]
    else:
        prof["a"], prof["b"] = prof["a_6ND"], prof["b_6ND"]
    _, prof["a_set"], prof["b_set"] = approach3.profile_set(prof["E"], prof["deviance"], prof["threshold"],
                                                            [prof["a"], prof["b"]])
    at_bound = [i for i, w in enumerate(fit["warnings"]) if w.startswith("E = ") and "at its bound" in w]
    if at_bound and prof["E_set"] and prof["a_set"]:
        up_to = "at least up to" if prof["E_set_open_above"] else "up to"
        fit["warnings"][at_bound[0]] += (
            f"; held fixed, any E {up_to} {prof['E_set'][1]:.3g} fits within the {level:.0%} profile-likelihood "
            f"threshold, and over those a runs {prof['a_set'][0]:.3f}-{prof['a_set'][1]:.3f} "
            f"(fit.json approach3.e_profile)")
    return prof


def _projection(out, boots, C, axis, level, e_hold):
    """N_opt, D_opt (with intervals) per approach at compute C, and the predicted loss of the two loss predictors."""
    entry = {"flops": C}
    for name in ("approach1", "approach2", "approach3"):
        fit = out[name]
        if not fit or (name == "approach3" and not np.isfinite(fit["G"])):
            entry[name] = None
            continue
        if name == "approach3":
            n_opt, d_opt = allocate(fit, C, axis)
        else:
            n_opt = approach2.predict(fit, C)[0]
            d_opt = float(axis.tokens(C, n_opt))
        entry[name] = {"N": n_opt, "D": d_opt}
        b = boots.get(name)
        if b:
            ns = allocate(b, C, axis)[0] if name == "approach3" else _power_law_samples(b["a"], b["a0"], C)
            entry[name]["N_ci"], entry[name]["D_ci"] = _samples_ci(ns, C, axis, level)
    loss = {}
    f3 = out["approach3"]
    if entry["approach3"]:
        q = entry["approach3"]
        loss["approach3"] = {"L": float(approach3.predict_loss(f3, q["N"], q["D"]))}
        b = boots.get("approach3")
        if b:
            ns, ds = allocate(b, C, axis)
            loss["approach3"]["L_ci"] = percentile_ci(approach3.predict_loss(b, ns, ds), level)
    f2 = out["approach2"]
    if f2 and f2.get("loss_law"):
        law = f2["loss_law"]
        loss["approach2_power_law"] = {"L": float(predict_loss_power_law(law, C))}
        b = boots.get("approach2")
        if b and "l_opt" in b:
            laws = loss_power_law(b["log_c"], b["l_opt"], b["valid"], e_hold)
            loss["approach2_power_law"]["L_ci"] = percentile_ci(predict_loss_power_law(laws, C), level)
    if loss:
        entry["loss"] = loss
    return entry


def fit_dataset(ds: Dataset, *, params: str = "total", project=DEFAULT_PROJECTIONS,
                n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, ci_level: float = CI_LEVEL,
                inside_grid_only: bool = False, min_tokens_per_param: float = DEFAULT_MIN_TOKENS_PER_PARAM,
                min_steps: int = 0, approach3_method: str = approach3.DEFAULT_METHOD) -> dict:
    """Fit every approach the data supports; a ValueError from one approach skips it with a reason.

    min_tokens_per_param: Approach 3's filter (runs with D/N below it are left out; 0: none).  min_steps: every
    approach's (runs with fewer optimizer steps are left out).  approach3_method: "varpro" or "grid"
    (analysis.approach3.fit_approach3).

    Returns the per-dataset part of fit.json (JSON-serialisable after _clean), plus "_plot", the
    objects the figures need (removed before writing)."""
    if params not in PARAMS_KINDS:
        raise ValueError(f"--params must be one of {'|'.join(PARAMS_KINDS)}, got {params!r}")
    if min_tokens_per_param < 0 or min_steps < 0:
        raise ValueError("--min-tokens-per-param and --min-steps must be >= 0")
    usable = ds.usable
    N = [_n_of(r, params) for r in usable]
    if params == "non_embedding" and any(n is None or not n > 0 for n in N):
        missing = sum(n is None or not n > 0 for n in N)
        raise ValueError(f"{ds.name}: --params non_embedding needs a non-embedding parameter count for "
                         f"every run ({missing} of {len(N)} lack one); add a params_non_embedding column "
                         f"or use --params total")
    project = [float(c) for c in project]
    axis = compute_axis(usable, params, ds.ladder)
    out = {"dataset": ds.name, "source": ds.source, "n_runs": len(usable), "n_skipped": len(ds.skipped),
           "skipped": [{"run_id": r["run_id"], "reason": r["skip_reason"]} for r in ds.skipped],
           "notes": list(ds.notes), "bytes_per_token": ds.bytes_per_token,
           "compute_axis": axis.to_json(), "approaches_skipped": {}}
    if axis.source == "6ND":
        out["notes"].append(f"no FLOP count per token ({axis.note}): every D_opt(C) and Approach 3's N_opt(C) use "
                            f"C = 6ND")
    # Approach 2's isoFLOP profiles are the grid runs; a sweep's extra token horizons (kind "horizon",
    # for Approach 1) were trained to other budgets and only feed Approaches 1 and 3.
    iso = [i for i, r in enumerate(usable) if r["kind"] in APPROACH2_KINDS]
    if len(iso) < len(usable):
        left = sorted({r["kind"] for r in usable if r["kind"] not in APPROACH2_KINDS})
        out["notes"].append(f"{len(usable) - len(iso)} {'/'.join(left)} runs left out of the isoFLOP profiles")
    # Approach 3 fits finished models (a trunk's final loss is at its constant LR, before any cooldown); Approach 1
    # every training curve (lr_scan and validation runs: neither)
    a1 = [i for i, r in enumerate(usable) if r["kind"] in APPROACH1_KINDS]
    a3 = [i for i, r in enumerate(usable) if r["kind"] in APPROACH3_KINDS]
    sets = {"approach1": a1, "approach2": iso, "approach3": a3}
    filters = {"approach1": RunFilter(min_steps), "approach2": RunFilter(min_steps),
               "approach3": RunFilter(min_steps, min_tokens_per_param)}
    chosen, out["filters"] = {}, {}
    for name, idx in sets.items():
        keep, out["filters"][name] = filters[name].apply([usable[i] for i in idx])
        chosen[name] = ([usable[idx[k]] for k in keep], [N[idx[k]] for k in keep])
    iso_rows, iso_N = chosen["approach2"]
    budgets = slope_budgets([usable[i] for i in iso] or usable)
    boots, plot = {}, {"usable": iso_rows, "N": iso_N,
                       "has_budgets": bool(iso_rows) and all(r["budget"] is not None and r["budget"] > 0 for r in iso_rows)}
    fitters = {
        "approach1": lambda rng: _fit_approach1(ds, *chosen["approach1"], n_boot, rng, ci_level),
        "approach2": lambda rng: _fit_approach2(iso_rows, iso_N, n_boot, rng, ci_level, inside_grid_only),
        "approach3": lambda rng: _fit_approach3(*chosen["approach3"], n_boot, rng, ci_level, approach3_method,
                                                axis, budgets),
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

    # Approach 2's compute-optimal loss against compute, L_opt = E + k C^-gamma (the hold-out check's predictor)
    e_hold = None
    f2 = out["approach2"]
    if f2:
        nb = len(f2["budgets"])
        e_hold = None if nb >= POWER_LAW_FREE_E else 0.0  # too few budgets for E too: Kaplan's L = k C^-gamma
        law = loss_power_law(np.log10(f2["budgets"]), f2["L_opt"], E=e_hold)
        if np.isfinite(law["gamma"]):
            f2["loss_law"] = {**law, "form": power_law_form(nb)}

    out["projections"] = [_projection(out, boots, C, axis, ci_level, e_hold) for C in project]
    c_values = [r["budget"] for r in iso_rows if r["budget"]] + project
    if out["approach1"]:
        c_values += list(out["approach1"]["flops_range"])
    for name in ("approach1", "approach2"):
        if out[name] and boots.get(name):
            out[name]["band"] = _band(boots[name], c_values, axis, ci_level)
    out["agreement"] = agreement(out)
    # Run-to-run noise from repeated grid points (sweep.seeds > 1), set against the isoFLOP profiles
    out["noise"] = approach2.repeat_noise([r["budget"] for r in iso_rows], iso_N, [r["loss"] for r in iso_rows],
                                          out["approach2"]) if plot["has_budgets"] else None
    agrees = surface_agrees(out)
    out["approach2_bias"] = approach2_bias(
        [r["budget"] for r in iso_rows], iso_N, [r["tokens"] for r in iso_rows],
        out["approach2"], out["approach3"], axis=axis, surface_agrees=agrees) if out["approach2"] else None
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
    out["compute_axis"] = axis.to_json()  # now: the allocations may have extended a ladder past its widest rung
    plot["boots"] = boots
    plot["axis"] = axis
    out["_plot"] = plot
    return out


def result_fits(result: dict) -> list[dict]:
    """The per-dataset fits of a fit.json, single- or multi-dataset."""
    return list(result["datasets"].values()) if "datasets" in result else [result]
