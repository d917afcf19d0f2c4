"""analyze(): load results, fit Approaches 1-3 with bootstrap intervals, project, write the outputs.

Outputs, all in one directory and each written atomically (temp file + os.replace), fit.json last:
  results.csv            every run of every dataset, with why a run was skipped and loss in bits/byte
  figures/isoflop.png    Approach 2, one row per dataset (if any dataset supports it)
  figures/envelope.png   Approach 1, one row per dataset (if any dataset has training curves)
  report.md              tables, agreement, warnings, the seeds, the figures
  fit.json               the fits; one dataset at top level, several under "datasets"

Everything is computed in memory first, so bad input raises ValueError before any file exists.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from analysis import approach1, approach2, approach3
from sweep.store import fault_point
from analysis.compare import agreement, approach2_bias
from analysis.results import Dataset, is_isoflop, load_dataset, parse_input
from analysis.stats import CI_LEVEL, counts_within_groups, dirichlet_weights, percentile_ci, run_counts

FIT_FILE = "fit.json"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
FIGURE_FILE = "figures/isoflop.png"
ENVELOPE_FILE = "figures/envelope.png"
DEFAULT_PROJECTIONS = (5.76e23,)  # Gopher's budget, where Chinchilla Table 3 projects 67B / 1.5T
DEFAULT_BOOTSTRAP = 1000
PARAMS_KINDS = ("total", "non_embedding")
LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# atomic files


def write_bytes_atomic(data: bytes, path) -> Path:
    """Write to a temp file beside `path`, then os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        fault_point(f"write:{path.name}")  # chaos tests only (SCALING_SWEEP_KILL_AT)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _clean(obj):
    """JSON-safe copy: numpy scalars → Python, NaN/inf → None (json.dump would write bare NaN)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_json_atomic(obj, path) -> Path:
    return write_bytes_atomic((json.dumps(_clean(obj), indent=2) + "\n").encode(), path)


def default_out_dir(path) -> Path:
    """A sweep dir holds its own analysis; a results file gets it beside the file."""
    path = Path(path)
    return path if path.is_dir() else path.parent


# ---------------------------------------------------------------------------------------------
# fitting one dataset


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
    idx = [i for i, r in enumerate(usable) if r["run_id"] in ds.curves]
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
        # a handful of runs per budget it is markedly conservative (tests/test_analysis.py measures
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
    iso = [i for i, r in enumerate(usable) if is_isoflop(r)]
    iso_rows, iso_N = [usable[i] for i in iso], [N[i] for i in iso]
    if len(iso) < len(usable):
        out["notes"].append(f"{len(usable) - len(iso)} horizon runs (Approach 1) left out of the isoFLOP profiles")
    boots, plot = {}, {"usable": iso_rows, "N": iso_N,
                       "has_budgets": bool(iso_rows) and all(r["budget"] is not None and r["budget"] > 0 for r in iso_rows)}
    fitters = {
        "approach1": lambda rng: _fit_approach1(ds, usable, N, project, n_boot, rng, ci_level),
        "approach2": lambda rng: _fit_approach2(iso_rows, iso_N, project, n_boot, rng, ci_level, inside_grid_only),
        "approach3": lambda rng: _fit_approach3(usable, N, project, n_boot, rng, ci_level),
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


# ---------------------------------------------------------------------------------------------
# outputs


def _results_csv(datasets: list[Dataset], params: str) -> bytes:
    cols = ["dataset", "run_id", "status", "skip_reason", "budget", "flops", "params",
            "params_non_embedding", "N", "tokens", "tokens_derived", "flops_derived", "loss", "bytes_per_token",
            "loss_bpb", "has_curve", "kind"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for ds in datasets:
        skipped = {r["run_id"]: r["skip_reason"] for r in ds.skipped}
        for r in ds.rows:
            bpt, loss = r["bytes_per_token"], r["loss"]
            row = {k: r.get(k) for k in cols if k in r}
            row.update({
                "dataset": ds.name, "skip_reason": skipped.get(r["run_id"], ""),
                "N": _n_of(r, params),
                "loss_bpb": loss / LN2 / bpt if (bpt and loss is not None and math.isfinite(loss)) else None,
                "has_curve": r["run_id"] in ds.curves,
            })
            w.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue().encode()


def analyze(inputs, out=None, *, project=DEFAULT_PROJECTIONS, params: str = "total",
            n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, ci_level: float = CI_LEVEL,
            inside_grid_only: bool = False) -> dict:
    """Fit Approaches 1-3 to one or more inputs and write the outputs (see the module docstring).

    inputs: a path (sweep dir, CSV or JSON) or a list of them; "name=path" names a dataset
      (default: the sweep dir's or file's name).  Several inputs become one row each in the figures.
    out: output dir; defaults to the sweep dir (or the results file's dir) for a single input.
    project: compute budgets to project N_opt and D_opt to.  params: "total" or "non_embedding" N.
    n_boot: bootstrap resamples for the intervals (0: none).  seed: the bootstrap's RNG seed.
    inside_grid_only: Approach 2's power laws use only budgets whose parabola vertices lie inside the sizes run.

    Returns what was written to fit.json.  Raises ValueError, before anything is written, for bad
    input or when no approach could be fitted to any dataset.
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) or inputs is None else list(inputs)
    if not specs:
        raise ValueError("no inputs given; pass a sweep dir, a results CSV or a JSON list of records")
    if n_boot < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {n_boot}")
    project = [float(c) for c in project]
    if any(not (math.isfinite(c) and c > 0) for c in project):
        raise ValueError(f"--project budgets must be positive FLOP counts, got {project}")
    named = [parse_input(s) if s is not None else ("", None) for s in specs]
    names = [n for n, _ in named]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two inputs are both named {dup[0]!r}; name them with name=path")
    if out is None:
        if len(named) > 1:
            raise ValueError("several inputs need --out DIR for the combined outputs")
        out = default_out_dir(named[0][1]) if named[0][1] is not None else None
    datasets = [load_dataset(path, name) for name, path in named]
    fits = [fit_dataset(ds, params=params, project=project, n_boot=n_boot, seed=seed, ci_level=ci_level,
                        inside_grid_only=inside_grid_only)
            for ds in datasets]
    if not any(f[ap] for f in fits for ap in ("approach1", "approach2", "approach3")):
        why = "; ".join(f"{f['dataset']}: " + "; ".join(f"{k}: {v}" for k, v in f["approaches_skipped"].items())
                        for f in fits)
        raise ValueError(f"no approach could be fitted ({why})")

    plots = [f.pop("_plot") for f in fits]
    settings = {"params": params, "bootstrap": n_boot, "ci_level": ci_level, "seed": seed,
                "project": project, "inside_grid_only": inside_grid_only}
    if len(fits) == 1:
        result = {**fits[0], **settings}
    else:
        result = {"datasets": {f["dataset"]: f for f in fits}, **settings}
    result = _clean(result)

    # Render everything before writing anything.
    from analysis import plots as plotting  # imported here: it switches matplotlib to Agg
    from analysis.report import render_report

    files = {}
    # The isoFLOP figure also shows runs whose Approach 2 fit failed (e.g. no parabola minimum):
    # the raw profiles are what tells the user how to fix the grid.
    iso = [(f, p) for f, p in zip(result_fits(result), plots) if f["approach2"] or p["has_budgets"]]
    if iso:
        files[FIGURE_FILE] = plotting.figure_png(plotting.isoflop_figure(
            [plotting.isoflop_panel(f, p) for f, p in iso]))
    env = [(f, p) for f, p in zip(result_fits(result), plots) if f["approach1"]]
    if env:
        files[ENVELOPE_FILE] = plotting.figure_png(plotting.envelope_figure(
            [plotting.envelope_panel(f, p) for f, p in env]))
    files[RESULTS_FILE] = _results_csv(datasets, params)
    files[REPORT_FILE] = render_report(result, figures=[k for k in (FIGURE_FILE, ENVELOPE_FILE) if k in files]).encode()

    out = Path(out)
    for rel, data in files.items():
        write_bytes_atomic(data, out / rel)
    for rel in (FIGURE_FILE, ENVELOPE_FILE):
        if rel not in files:  # a figure from an earlier analysis would contradict this report
            (out / rel).unlink(missing_ok=True)
    write_json_atomic(result, out / FIT_FILE)  # last: fit.json present means the rest is too
    return result


def result_fits(result: dict) -> list[dict]:
    """The per-dataset fits of a fit.json, single- or multi-dataset."""
    return list(result["datasets"].values()) if "datasets" in result else [result]


# ---------------------------------------------------------------------------------------------
# console summary


def _ci_str(ci, fmt="{:.3f}"):
    return f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else ""


def format_summary(result: dict) -> str:
    """A few lines for humans (ASCII, any console)."""
    lines = []
    for f in result_fits(result):
        lines.append(f"{f['dataset']}: {f['n_runs']} runs ({f['n_skipped']} skipped) from {f['source']}")
        for note in f["notes"]:
            lines.append(f"  note: {note}")
        for name in ("approach1", "approach2", "approach3"):
            fit = f[name]
            label = name.replace("approach", "Approach ")
            if not fit:
                lines.append(f"  {label}: skipped ({f['approaches_skipped'][name]})")
                continue
            ci = fit.get("ci", {})
            a = "-" if fit["a"] is None else f"{fit['a']:.3f}"
            b = "-" if fit["b"] is None else f"{fit['b']:.3f}"
            lines.append(f"  {label}: N_opt ~ C^{a}{_ci_str(ci.get('a'))}   D_opt ~ C^{b}{_ci_str(ci.get('b'))}")
            if name == "approach3":
                lines.append(f"    E = {fit['E']:.4g}, A = {fit['A']:.4g}, B = {fit['B']:.4g}, "
                             f"alpha = {fit['alpha']:.4f}, beta = {fit['beta']:.4f}")
        if f["approach2"]:
            fit = f["approach2"]
            lines.append(f"    {'budget':>9} {'N_opt':>10} {'D_opt':>10} {'L_opt':>8} {'runs':>5}  in grid")
            for c, n, d, l, p in zip(fit["budgets"], fit["N_opt"], fit["D_opt"], fit["L_opt"], fit["parabolas"]):
                lines.append(f"    {c:9.3g} {n:10.3g} {d:10.3g} {l:8.4f} {p['n_points']:5d}  "
                             f"{'yes' if p['inside_grid'] else 'NO (extrapolated)'}")
            for d in fit["dropped"]:
                lines.append(f"    dropped {d['budget']:.3g}: {d['reason']}")
        if f.get("noise"):
            nz = f["noise"]
            lines.append(f"  run-to-run noise: sigma = {nz['sigma']:.3g} from {nz['repeated_points']} repeated points"
                         + (f"; parabola misfit {nz['lack_of_fit']:.2f}x noise" if nz["lack_of_fit"] is not None else ""))
        for proj in f["projections"]:
            parts = []
            for name in ("approach1", "approach2", "approach3"):
                p = proj[name]
                if p:
                    parts.append(f"{name[-1]}: N {p['N']:.3g}{_ci_str(p.get('N_ci'), '{:.3g}')}, "
                                 f"D {p['D']:.3g}{_ci_str(p.get('D_ci'), '{:.3g}')}")
            lines.append(f"  at C = {proj['flops']:.3g}: " + "; ".join(parts))
        for w in f["warnings"]:
            lines.append(f"  WARNING {w}")
    return "\n".join(lines)
