"""The wandb ``analysis`` run of a sweep: the fit table (a, b and projections per approach with their
intervals), the figures, and the headline numbers in the summary.  Uses the same deterministic id
scheme as the training runs, so re-analysing a sweep updates one analysis run."""
from __future__ import annotations

from pathlib import Path


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


def log_analysis_run(result: dict, sweep_dir: Path, wandb_cfg, sweep_name: str) -> None:
    from sweep.tracking import Tracker

    tracker = Tracker(wandb_cfg, sweep_dir=sweep_dir, sweep_name=sweep_name, run_id="fit", job_type="analysis",
                      config={"sweep_dir": str(sweep_dir), "n_runs": result.get("n_runs")})
    if tracker.run is None:
        return
    import wandb

    payload = {"fit_table": wandb.Table(columns=["quantity", "approach", "value", "ci_low", "ci_high"],
                                        data=fit_table_rows(result))}
    for png in sorted((Path(sweep_dir) / "figures").glob("*.png")):
        payload[f"figures/{png.stem}"] = wandb.Image(str(png))
    tracker.log(payload)
    tracker.summary({f"{k}_{q}": (result.get(k) or {}).get(q) for k in ("approach1", "approach2", "approach3")
                     for q in ("a", "b")})
    tracker.finish()
