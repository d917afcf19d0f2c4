"""The wandb ``analysis`` run of a sweep: the fit table (a, b and projections per approach with their
intervals), the isoFLOP profiles as a table and a line chart (final loss vs parameters, one line per
budget), the figures, and the headline numbers in the summary.  Uses the same deterministic id scheme as
the training runs, so re-analysing a sweep updates one analysis run.  The sweep's wandb Report
(analysis/share.py) shows these keys next to the training runs' own."""
from __future__ import annotations

from pathlib import Path

from analysis.results import APPROACH2_KINDS, load_results, split_usable

ANALYSIS_JOB = "analysis"  # the analysis run's job_type (the training runs' is "train")
ANALYSIS_RUN = "fit"  # its name
FIT_TABLE = "fit_table"
FIT_COLUMNS = ["quantity", "approach", "value", "ci_low", "ci_high"]
PROFILES = "isoflop_profiles"  # a line chart (wandb.plot.line: the "wandb/line/v0" preset) ...
PROFILES_TABLE = PROFILES + "_table"  # ... whose table wandb logs under this key
PROFILE_COLUMNS = ["budget", "params", "final_val_loss", "run_id"]
PROFILE_FIELDS = {"x": "params", "y": "final_val_loss", "stroke": "budget"}  # one line per budget
FIGURE_PREFIX = "figures/"  # figures/<png stem>


def fit_table_rows(result: dict) -> list[list]:
    """Rows of (quantity, approach, value, ci_low, ci_high) from a fit.json dict (single dataset)."""
    rows = []
    for entry in (result.get("agreement") or {}).get("table", []):
        for approach in ("approach1", "approach2", "approach3"):
            cell = entry.get(approach)
            if cell and cell.get("value") is not None:
                lo, hi = (cell.get("ci") or [None, None])[:2]
                rows.append([entry["quantity"], approach, cell["value"], lo, hi])
    if not rows:  # no agreement table (e.g. one approach only): fall back to each approach's a and b
        for approach in ("approach1", "approach2", "approach3"):
            fit = result.get(approach) or {}
            for q in ("a", "b"):
                if fit.get(q) is not None:
                    lo, hi = ((fit.get("ci") or {}).get(q) or [None, None])[:2]
                    rows.append([q, approach, fit[q], lo, hi])
    return rows


def budget_label(budget: float) -> str:
    return f"{budget:.3g}"


def profile_rows(sweep_dir: Path) -> list[list]:
    """(budget label, params, final val loss, run id) of every finished isoFLOP point, by budget then size:
    the values the training runs put in their wandb summaries (result.json)."""
    usable, _ = split_usable(load_results(sweep_dir))
    points = sorted((r["budget"], r["params"], r["loss"], r["run_id"]) for r in usable
                    if r["kind"] in APPROACH2_KINDS and r["budget"])
    return [[budget_label(c), n, loss, rid] for c, n, loss, rid in points]


def log_analysis_run(result: dict, sweep_dir: Path, wandb_cfg, sweep_name: str, figures_dir: Path = None):
    """Log the analysis run and return its wandb id (None when wandb is off).  ``figures_dir``: where analyze
    wrote figures/ (default: the sweep dir)."""
    from sweep.tracking import Tracker

    tracker = Tracker(wandb_cfg, sweep_dir=sweep_dir, sweep_name=sweep_name, run_id=ANALYSIS_RUN,
                      job_type=ANALYSIS_JOB, config={"sweep_dir": str(sweep_dir), "n_runs": result.get("n_runs")})
    if not tracker.enabled:
        return None
    import wandb

    tracker.start()
    payload = {FIT_TABLE: wandb.Table(columns=FIT_COLUMNS, data=fit_table_rows(result))}
    profiles = profile_rows(sweep_dir)
    if profiles:
        payload[PROFILES] = wandb.plot.line(wandb.Table(columns=PROFILE_COLUMNS, data=profiles), PROFILE_FIELDS["x"],
                                            PROFILE_FIELDS["y"], stroke=PROFILE_FIELDS["stroke"],
                                            title="isoFLOP profiles: final loss vs parameters, one line per budget")
    for png in sorted((Path(figures_dir or sweep_dir) / "figures").glob("*.png")):
        payload[FIGURE_PREFIX + png.stem] = wandb.Image(str(png))
    tracker.log(payload)
    tracker.summary({f"{k}_{q}": (result.get(k) or {}).get(q) for k in ("approach1", "approach2", "approach3")
                     for q in ("a", "b")})
    tracker.finish()
    return tracker.state["id"]
