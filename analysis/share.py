"""Share a sweep as a wandb Report (``python -m analysis <sweep> --wandb-report``), built with wandb-workspaces.

The Report (one per sweep; a rerun updates the one saved before) holds, from top to bottom:
  * the headline: a and b with their bootstrap intervals per approach, and the projections;
  * the isoFLOP profiles as live panels over the training runs' summaries: final loss vs parameters,
    one run set (and so one colour) per budget;
  * the fit, from the analysis run (analysis/wandb_report.py): the isoFLOP profiles as a line chart
    (one line per budget), the fit table, the figures;
  * loss and validation loss vs FLOPs for every training run.
Every panel reads the runs of the sweep's group (group = sweep name) in the sweep's wandb project.

Online the Report is saved and its URL printed.  Offline it is built all the same and its specification
(what ``Report.save`` uploads) is written to ``<sweep>/wandb_report.json``; rerunning the command online
(after ``wandb sync``) saves it.  wandb-workspaces fills a missing entity in by asking the wandb API for
the default one, which needs the network: offline the entity must be given.

``build_report`` is pure (no network, no files): the tests check its panels against the offline runs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from analysis.fit import result_fits
from analysis.results import parse_input
from analysis.wandb_report import (ANALYSIS_JOB, FIGURE_PREFIX, FIT_TABLE, PROFILE_FIELDS, PROFILES_TABLE,
                                   log_analysis_run, profile_rows)
from sweep.rundir import CONFIG_FILE, write_json_atomic
from sweep.tracking import TRAIN_JOB, WandbConfig

REPORT_SPEC_FILE = "wandb_report.json"
INSTALL = "pip install 'scaling-sweep[wandb-report]' (or pip install wandb-workspaces)"
APPROACHES = ("approach1", "approach2", "approach3")
FIGURES = {"isoflop": "isoFLOP profiles with their parabolas; N_opt and D_opt vs C",
           "envelope": "loss vs FLOPs with the envelope; N_opt and D_opt with projections"}


@dataclass
class Target:
    """Where the Report goes: the sweep's wandb project and group, and how to reach wandb."""

    sweep_dir: Path
    sweep_name: str  # the runs' wandb group
    wandb: WandbConfig  # project, entity, mode (resolved: online | offline)

    @property
    def offline(self) -> bool:
        return self.wandb.mode == "offline"


def resolve_target(input_spec: str, entity: Optional[str] = None) -> Target:
    """The Report's target for one sweep directory, from its multirun.yaml; ValueError (one line, naming the
    fix) when the sweep was not logged to wandb, wandb-workspaces is missing, or an offline report has no entity.

    The mode is $WANDB_MODE when set, else the sweep's ``wandb.mode``, else online; the entity is ``entity``,
    else the sweep's ``wandb.entity``, else $WANDB_ENTITY."""
    _, sweep_dir = parse_input(input_spec)
    cfg_file = sweep_dir / CONFIG_FILE
    if not cfg_file.is_file():
        raise ValueError(f"--wandb-report needs a sweep directory (its {CONFIG_FILE} names the wandb project); "
                         f"{sweep_dir} has no {CONFIG_FILE}")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(cfg_file)
    w = cfg.get("wandb") or {}
    if not w.get("enabled"):
        raise ValueError(f"{sweep_dir} was run with wandb.enabled=false ({cfg_file}), so wandb holds none of its runs; "
                         f"run the sweep with wandb.enabled=true wandb.project=<project> to share it")
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        raise ValueError(f"--wandb-report builds the Report with wandb-workspaces, which is not installed: {INSTALL}")
    mode = os.environ.get("WANDB_MODE") or w.get("mode") or "online"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in ("online", "offline"):
        raise ValueError(f"wandb mode {mode!r} (WANDB_MODE or wandb.mode) cannot share a sweep; "
                         f"use WANDB_MODE=online to save the Report, or WANDB_MODE=offline to write its spec")
    entity = entity or w.get("entity") or os.environ.get("WANDB_ENTITY") or None
    if mode == "offline" and not entity:
        raise ValueError("an offline wandb Report needs an explicit entity (wandb-workspaces asks the wandb API for "
                         "the default one, which needs the network): pass --wandb-entity <team or user> "
                         "or set WANDB_ENTITY")
    wcfg = WandbConfig(enabled=True, project=str(w.get("project") or WandbConfig.project), entity=entity, mode=mode,
                       dir=w.get("dir"))
    return Target(sweep_dir=sweep_dir, sweep_name=str(cfg.sweep.name), wandb=wcfg)


# ---------------------------------------------------------------------------------------------
# the Report (pure)

def _num(v, ci=None, fmt="{:.3f}") -> str:
    if v is None:
        return "-"
    return fmt.format(v) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def headline_markdown(result: dict) -> str:
    """a and b with intervals per approach, and the projections, as Markdown tables."""
    (fit,) = result_fits(result)
    level = f"{100 * result.get('ci_level', 0):.0f}%"
    lines = [f"Runs fitted: {fit['n_runs']} ({fit['n_skipped']} skipped). {level} bootstrap intervals "
             f"({result.get('bootstrap')} resamples) in brackets.", "",
             "| approach | a (N_opt ∝ C^a) | b (D_opt ∝ C^b) |", "|---|---|---|"]
    for name in APPROACHES:
        f, label = fit[name], name.replace("approach", "Approach ")
        if not f:
            lines.append(f"| {label} | skipped: {fit['approaches_skipped'][name]} | |")
            continue
        ci = f.get("ci") or {}
        lines.append(f"| {label} | {_num(f['a'], ci.get('a'))} | {_num(f['b'], ci.get('b'))} |")
    if fit["projections"]:
        lines += ["", "| projected to C | approach | N_opt | D_opt |", "|---|---|---|---|"]
        for proj in fit["projections"]:
            for name in APPROACHES:
                p = proj[name]
                if p:
                    lines.append(f"| {proj['flops']:.3g} | {name.replace('approach', 'Approach ')} | "
                                 f"{_num(p['N'], p.get('N_ci'), '{:.3g}')} | {_num(p['D'], p.get('D_ci'), '{:.3g}')} |")
    lines += [f"\nWARNING {w}" for w in fit["warnings"]]
    return "\n".join(lines)


def build_report(result: dict, profiles: list[list], *, project: str, entity: Optional[str], sweep_name: str,
                 figures: list[str] = (), analysis_id: Optional[str] = None):
    """The sweep's wandb Report object.  ``profiles``: analysis.wandb_report.profile_rows; ``figures``: the png
    stems the analysis run logged; ``analysis_id``: its wandb id (None: every analysis run of the group).
    ``entity`` None: wandb-workspaces looks the default up (online only)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    def runs(job_type, names=None, run_id=None):  # the sweep's runs of one job type (of these names, this id)
        chosen = [expr.Metric("Group") == sweep_name, expr.Metric("JobType") == job_type]
        return chosen + ([expr.Metric("Name").isin(names)] if names else []) + (
            [expr.Metric("ID") == run_id] if run_id else [])

    by_budget: dict[str, list[str]] = {}
    for budget, _, _, run_id in profiles:
        by_budget.setdefault(budget, []).append(run_id)
    (fit,) = result_fits(result)
    profile_grid = wr.PanelGrid(
        runsets=[wr.Runset(name=f"C = {c} FLOPs", filters=runs(TRAIN_JOB, names=ids)) for c, ids in by_budget.items()]
        or [wr.Runset(name="training runs", filters=runs(TRAIN_JOB))],
        panels=[wr.ScatterPlot(title="final validation loss vs parameters (one run set per budget)",
                               x=wr.SummaryMetric("params"), y=wr.SummaryMetric("final_val_loss"), log_x=True,
                               layout=wr.Layout(w=24, h=10))])
    fit_panels = [wr.CustomChart(query={"summaryTable": {"tableKey": PROFILES_TABLE}}, chart_name="wandb/line/v0",
                                 chart_fields=dict(PROFILE_FIELDS),
                                 chart_strings={"title": "isoFLOP profiles: final loss vs parameters"},
                                 layout=wr.Layout(w=12, h=10)),
                  wr.WeavePanelSummaryTable(table_name=FIT_TABLE, layout=wr.Layout(w=12, h=10))]
    fit_panels += [wr.MediaBrowser(title=FIGURES.get(stem, stem), media_keys=[FIGURE_PREFIX + stem],
                                   gallery_axis="step", layout=wr.Layout(w=24, h=14)) for stem in figures]
    curves = [wr.LinePlot(title=f"{y} vs FLOPs, every run", x="flops", y=[y], log_x=True, log_y=True,
                          layout=wr.Layout(w=12, h=9)) for y in ("loss", "val_loss")]
    blocks = [
        wr.H1("Headline"), wr.MarkdownBlock(headline_markdown(result)),
        wr.H1("isoFLOP profiles"),
        wr.P("Final validation loss vs parameters from each training run's summary; each budget is a run set."),
        profile_grid,
        wr.H1("Fit"),
        wr.P(f"From the analysis run ({fit['n_runs']} runs): the profiles as lines, the fit table, the figures."),
        wr.PanelGrid(runsets=[wr.Runset(name="analysis run", filters=runs(ANALYSIS_JOB, run_id=analysis_id))],
                     panels=fit_panels),
        wr.H1("Loss vs FLOPs"),
        wr.PanelGrid(runsets=[wr.Runset(name="training runs", filters=runs(TRAIN_JOB))], panels=curves),
    ]
    kw = {"entity": entity} if entity else {}
    return wr.Report(project=project, title=f"{sweep_name}: compute-optimal scaling"[:128],
                     description=f"Scaling-law sweep {sweep_name!r}: isoFLOP profiles and Chinchilla fits.",
                     blocks=blocks, **kw)


def report_spec(report) -> dict:
    """The Report as ``Report.save`` uploads it (its viewspec; wandb-workspaces has no public serialiser)."""
    return report._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------------------------------------
# the command

def share(result: dict, target: Target, figures_dir: Path) -> list[str]:
    """Log the analysis run, build the Report, write its spec and, online, save it.  Returns lines to print.

    Online trouble (no login, no network, a project that is not yours) is a ValueError naming the fix."""
    cfg = target.wandb
    spec_file = target.sweep_dir / REPORT_SPEC_FILE
    try:
        analysis_id = log_analysis_run(result, target.sweep_dir, cfg, target.sweep_name, figures_dir=figures_dir)
        stems = sorted(p.stem for p in (Path(figures_dir) / "figures").glob("*.png"))  # what the analysis run logged
        figures = [s for s in FIGURES if s in stems] + [s for s in stems if s not in FIGURES]
        report = build_report(result, profile_rows(target.sweep_dir), project=cfg.project, entity=cfg.entity,
                              sweep_name=target.sweep_name, figures=figures, analysis_id=analysis_id)
        if not target.offline:
            report.id = _saved_id(spec_file, report) or ""  # update the sweep's Report instead of adding another
            report.save()
    except Exception as e:  # noqa: BLE001 - online, wandb's errors are many; offline every error is a bug
        if target.offline:
            raise
        raise ValueError(f"sharing on wandb failed ({' '.join(str(e).split())[:300]}); check `wandb login` (or "
                         f"WANDB_API_KEY) and that {cfg.entity or 'your default entity'}/{cfg.project} is yours "
                         f"(delete {spec_file} to save a new Report), or use WANDB_MODE=offline to write the spec only")
    write_json_atomic(spec_file, report_spec(report))
    if target.offline:
        wandb_dir = Path(cfg.dir or target.sweep_dir) / "wandb"
        return [f"wandb is offline: built the Report of {target.sweep_name!r} and wrote its spec to {spec_file}; "
                f"it is saved once online: wandb sync {wandb_dir}/offline-run-*, then rerun "
                f"python -m analysis {target.sweep_dir} --wandb-report"]
    return [f"wandb Report: {report.url}"]


def _saved_id(spec_file: Path, report) -> Optional[str]:
    """The id of this sweep's Report saved before to the same entity and project, if any."""
    try:
        old = json.loads(spec_file.read_text())
    except (OSError, ValueError):
        return None
    project = old.get("project") or {}
    if project.get("entityName") == report.entity and project.get("name") == report.project:
        return old.get("id") or None
    return None
