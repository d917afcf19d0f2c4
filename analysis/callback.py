"""Hydra callback: fit the scaling laws when a multirun sweep ends.

Configure with `hydra.callbacks.analysis._target_: analysis.callback.AnalyzeOnMultirunEnd`
(optional keys: bootstrap, project, params, as for `python -m analysis`; holdout_top: true also fits without each
dataset's top budget and prints the prediction there against the measured profile, the `--holdout-top` self-check,
written to <sweep dir>/holdout_top/).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from analysis.results import NoResultsError
from analysis.fit import result_fits
from analysis.run import DEFAULT_BOOTSTRAP, DEFAULT_PROJECTIONS, FIT_FILE, analyze, format_summary
from analysis.validation import summary_lines

log = logging.getLogger(__name__)


class AnalyzeOnMultirunEnd(Callback):
    """Runs analyze(hydra.sweep.dir) after all jobs.  Never raises: the runs' results are
    already on disk, and the analysis can be redone with `python -m analysis <sweep dir>`."""

    def __init__(self, bootstrap: int = DEFAULT_BOOTSTRAP, project=DEFAULT_PROJECTIONS, params: str = "total",
                 holdout_top: bool = False):
        self.kwargs = {"n_boot": int(bootstrap), "project": [float(c) for c in project], "params": str(params)}
        self.holdout_top = bool(holdout_top)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("launch") is not None and config.launch.get("dry_run"):
            return  # a dry run only prints the plan
        if config.get("sweep") is not None and config.sweep.get("mode") == "lr_scan":
            return  # an LR scan's runs are no isoFLOP grid; the sweeper fitted the scan itself
        try:
            sweep_dir = str(config.hydra.sweep.dir)
            result = analyze(sweep_dir, **self.kwargs)
        except NoResultsError as e:  # e.g. a dry run: nothing was trained
            log.info("analysis: nothing to fit (%s)", e)
            return
        except ValueError as e:
            log.warning("analysis: scaling-law fit failed, run results are kept in %s: %s", sweep_dir, e)
            return
        except Exception:
            # A bug in the analysis must not turn a finished sweep into a failed command.
            log.exception("analysis: crashed; rerun with `python -m analysis <sweep dir>`")
            return
        log.info("analysis: wrote %s/%s\n%s", sweep_dir, FIT_FILE, format_summary(result))
        if self.holdout_top:
            self._holdout_top(sweep_dir)
        if config.get("wandb") is not None and config.wandb.get("enabled"):
            try:
                from omegaconf import OmegaConf

                from analysis.wandb_report import log_analysis_run

                log_analysis_run(result, Path(sweep_dir), OmegaConf.to_object(config.wandb), str(config.sweep.name))
            except Exception:  # noqa: BLE001 - the fit is on disk; wandb trouble must not fail the sweep
                log.exception("analysis: logging the fit to wandb failed")

    def _holdout_top(self, sweep_dir: str) -> None:
        """The --holdout-top self-check: predicted against measured at each dataset's top budget."""
        try:
            held = analyze(sweep_dir, holdout_top=True, **self.kwargs)
        except ValueError as e:  # e.g. too few budgets below the top one; the sweep's own fit stands
            log.warning("analysis: the --holdout-top self-check was not possible: %s", e)
            return
        except Exception:  # as for the sweep's fit: a bug in the analysis must not fail a finished sweep
            log.exception("analysis: the --holdout-top self-check crashed; rerun with "
                          "`python -m analysis <sweep dir> --holdout-top`")
            return
        lines = [f"{f['dataset']}: " + line if i == 0 else f"  {line}"
                 for f in result_fits(held) if f.get("validation")
                 for i, line in enumerate(summary_lines(f["validation"]))]
        log.info("analysis: self-check (python -m analysis %s --holdout-top)\n%s", sweep_dir, "\n".join(lines))
