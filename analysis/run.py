"""analyze(): load results, fit Approaches 1-3 with bootstrap intervals, project, write the outputs.

Outputs, all in one directory and each written atomically (temp file + os.replace), fit.json last:
  results.csv            every run of every dataset, with why a run was skipped and loss in bits/byte
  figures/isoflop.png    Approach 2, one row per dataset (if any dataset supports it)
  figures/envelope.png   Approach 1, one row per dataset (if any dataset has training curves)
  report.md              tables, agreement, warnings, the seeds, the figures
  fit.json               the fits; one dataset at top level, several under "datasets"

With holdout_top (``--holdout-top``) every fit leaves out each dataset's top isoFLOP budget, which it then
predicts: the comparison with that budget's measured profile is the dataset's "validation" entry
(analysis.validation; ``datasets.<name>.validation``, or top-level ``validation`` for a single dataset), and the
outputs go to <sweep dir>/holdout_top/ by default so that they do not replace the sweep's own fit.

Everything is computed in memory first, so bad input raises ValueError before any file exists.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from analysis.approach3 import DEFAULT_METHOD, METHODS
from analysis.filters import DEFAULT_MIN_TOKENS_PER_PARAM
from analysis.fit import (CI_LEVEL, DEFAULT_BOOTSTRAP, DEFAULT_PROJECTIONS, LN2, PARAMS_KINDS, _n_of, fit_dataset,
                          result_fits)
from analysis.results import Dataset, load_dataset, parse_input
from analysis.validation import holdout_split, measured_profile, validation_entry, validation_runs
from analysis.summary import format_summary
from sweep.rundir import jsonable, write_bytes_atomic, write_json_atomic

HOLDOUT_DIR = "holdout_top"  # where --holdout-top writes by default, inside the sweep dir (or the file's dir)
FIT_FILE = "fit.json"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
FIGURE_FILE = "figures/isoflop.png"
ENVELOPE_FILE = "figures/envelope.png"

__all__ = ["DEFAULT_BOOTSTRAP", "DEFAULT_METHOD", "DEFAULT_MIN_TOKENS_PER_PARAM", "DEFAULT_PROJECTIONS", "ENVELOPE_FILE",
           "FIGURE_FILE", "FIT_FILE", "HOLDOUT_DIR", "METHODS", "PARAMS_KINDS", "REPORT_FILE", "RESULTS_FILE", "analyze",
           "default_out_dir", "format_summary", "result_fits"]


def default_out_dir(path, holdout_top: bool = False) -> Path:
    """A sweep dir holds its own analysis; a results file gets it beside the file; a hold-out check goes into
    HOLDOUT_DIR there."""
    path = Path(path)
    base = path if path.is_dir() else path.parent
    return base / HOLDOUT_DIR if holdout_top else base


def _results_csv(datasets: list[Dataset], params: str) -> bytes:
    cols = ["dataset", "run_id", "status", "skip_reason", "budget", "flops", "params",
            "params_non_embedding", "N", "tokens", "tokens_derived", "flops_derived", "loss", "bytes_per_token",
            "loss_bpb", "has_curve", "kind", "steps", "flops_per_token", "flops_convention"]
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


def holdout_fit(ds: Dataset, *, project=DEFAULT_PROJECTIONS, params: str = "total", **options) -> dict:
    """fit_dataset without the dataset's top isoFLOP budget, projected to it as well, with the comparison against
    that budget's measured profile as "validation" (analysis.validation); options as for fit_dataset."""
    train, top_rows, top = holdout_split(ds)
    fit = fit_dataset(train, project=sorted(set(project) | {top}), params=params, **options)
    N = [_n_of(r, params) for r in top_rows]
    fit["validation"] = validation_entry(fit, measured_profile(top_rows, N), kind="holdout")
    fit["_plot"]["held_out"] = {"runs": top_rows, "N": N}
    return fit


def forward_fit(ds: Dataset, *, project=DEFAULT_PROJECTIONS, params: str = "total", **options) -> dict:
    """fit_dataset (validation runs are in no approach's fit), projected to the forward validation runs' budget too,
    with the comparison against them as "validation" (kind "forward")."""
    runs = validation_runs(ds)
    budget = runs[0]["budget"]
    fit = fit_dataset(ds, project=sorted(set(project) | {budget}), params=params, **options)
    N = [_n_of(r, params) for r in runs]
    fit["validation"] = validation_entry(fit, measured_profile(runs, N), kind="forward")
    fit["_plot"]["held_out"] = {"runs": runs, "N": N}
    return fit


def analyze(inputs, out=None, *, project=DEFAULT_PROJECTIONS, params: str = "total",
            n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, ci_level: float = CI_LEVEL,
            inside_grid_only: bool = False, min_tokens_per_param: float = DEFAULT_MIN_TOKENS_PER_PARAM,
            min_steps: int = 0, approach3_method: str = DEFAULT_METHOD, holdout_top: bool = False) -> dict:
    """Fit Approaches 1-3 to one or more inputs and write the outputs (see the module docstring).

    inputs: a path (sweep dir, CSV or JSON) or a list of them; "name=path" names a dataset
      (default: the sweep dir's or file's name).  Several inputs become one row each in the figures.
    out: output dir; defaults to the sweep dir (or the results file's dir) for a single input.
    project: compute budgets to project N_opt and D_opt to.  params: "total" or "non_embedding" N.
    n_boot: bootstrap resamples for the intervals (0: none).  seed: the bootstrap's RNG seed.
    inside_grid_only: Approach 2's power laws use only budgets whose parabola vertices lie inside the sizes run.
    min_tokens_per_param: Approach 3 leaves out runs with fewer tokens per parameter (0: none).
    min_steps: every approach leaves out runs with fewer optimizer steps (0: none).
    approach3_method: how Approach 3's Huber fit is started, "varpro" or "grid" (analysis.approach3).
    holdout_top: fit without each dataset's top isoFLOP budget and check the predictions there (see above).

    Returns what was written to fit.json.  Raises ValueError, before anything is written, for bad
    input or when no approach could be fitted to any dataset.
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) or inputs is None else list(inputs)
    if not specs:
        raise ValueError("no inputs given; pass a sweep dir, a results CSV or a JSON list of records")
    if n_boot < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {n_boot}")
    if min_tokens_per_param < 0 or min_steps < 0:
        raise ValueError(f"--min-tokens-per-param and --min-steps must be >= 0, got {min_tokens_per_param:g} "
                         f"and {min_steps}")
    if approach3_method not in METHODS:
        raise ValueError(f"--approach3-init must be one of {', '.join(METHODS)}, got {approach3_method!r}")
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
        out = default_out_dir(named[0][1], holdout_top) if named[0][1] is not None else None
    datasets = [load_dataset(path, name) for name, path in named]
    options = dict(params=params, n_boot=n_boot, seed=seed, ci_level=ci_level, inside_grid_only=inside_grid_only,
                   min_tokens_per_param=min_tokens_per_param, min_steps=min_steps, approach3_method=approach3_method)
    if holdout_top:
        fits = [holdout_fit(ds, project=project, **options) for ds in datasets]
    else:  # a sweep with forward validation runs (sweep.validate) checks its law against them
        fits = [(forward_fit if validation_runs(ds) else fit_dataset)(ds, project=project, **options) for ds in datasets]
    if not any(f[ap] for f in fits for ap in ("approach1", "approach2", "approach3")):
        why = "; ".join(f"{f['dataset']}: " + "; ".join(f"{k}: {v}" for k, v in f["approaches_skipped"].items())
                        for f in fits)
        raise ValueError(f"no approach could be fitted ({why})")

    plots = [f.pop("_plot") for f in fits]
    settings = {"params": params, "bootstrap": n_boot, "ci_level": ci_level, "seed": seed,
                "project": project, "inside_grid_only": inside_grid_only,
                "min_tokens_per_param": min_tokens_per_param, "min_steps": min_steps,
                "approach3_method": approach3_method, "holdout_top": holdout_top}
    if len(fits) == 1:
        result = {**fits[0], **settings}
    else:
        result = {"datasets": {f["dataset"]: f for f in fits}, **settings}
    result = jsonable(result)

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
        write_bytes_atomic(out / rel, data)
    for rel in (FIGURE_FILE, ENVELOPE_FILE):
        if rel not in files:  # a figure from an earlier analysis would contradict this report
            (out / rel).unlink(missing_ok=True)
    write_json_atomic(out / FIT_FILE, result)  # last: fit.json present means the rest is too
    return result
