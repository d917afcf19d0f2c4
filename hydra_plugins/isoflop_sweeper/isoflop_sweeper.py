"""A thin Hydra Sweeper: budgets x sizes from ``sweep.plan``, one job per run, any launcher.

Select it with ``override hydra/sweeper: isoflop`` (conf/config.yaml does).  It

1. prepares the data once (so every job finds the same tokenizer and shards),
2. plans the grid with the pure ``sweep.plan.plan_grid`` and writes ``plan.json`` to the sweep dir,
3. prints the plan; with ``launch.dry_run=true`` it stops there (``launch.refine`` re-centres the grid first),
4. skips runs that already have a finished result (relaunching a sweep resumes it), and
5. hands the rest to whichever Hydra launcher is configured (basic, joblib, submitit_slurm, ...),
   each job with the user's overrides plus ``run_id=<id>``.

(No ``from __future__ import annotations`` here: Hydra execs plugin modules without registering them
in sys.modules, and dataclasses then cannot resolve string annotations.)
"""

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweep.errors import RunsFailed, SweepError

log = logging.getLogger(__name__)


@dataclass
class IsoFLOPSweeperConf:
    _target_: str = "hydra_plugins.isoflop_sweeper.isoflop_sweeper.IsoFLOPSweeper"
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None = all)


ConfigStore.instance().store(group="hydra/sweeper", name="isoflop", node=IsoFLOPSweeperConf, provider="scaling-sweep")


def _check_output_dir(sweep_dir: Path) -> None:
    """ValueError unless ``sweep_dir`` is, or can be created as, a writable directory."""
    p = sweep_dir.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the sweep dir {sweep_dir}: {p} is not a writable directory; "
                         "set sweep.name or hydra.sweep.dir to a writable path")


class IsoFLOPSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None) -> None:
        self.max_batch_size = max_batch_size
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        try:
            planned = self._plan(arguments)
        except (ValueError, OSError) as e:  # bad config, data or output dir: one line, nothing launched
            raise SweepError(e) from None
        return self._launch(arguments, *planned) if planned else []

    def _plan(self, arguments: List[str]) -> Optional[tuple]:
        """Plan the sweep and write its files; the runs still to train and the sweep dir (None: dry run)."""
        # imported here so that Hydra's plugin discovery stays cheap
        from analysis.refine import ladder_range, refine_centres
        from sweep.config import check_known_keys, identity, section
        from sweep.job import make_plan
        from sweep.plan import RunSpec, format_plan, no_feasible_runs, smallest_budget
        from sweep.rundir import (SWEEP_LOCK, check_identity, fault_point, finished, read_plan_dicts, remove_stale_temps,
                                  run_lock)

        cfg = self.config
        check_known_keys(cfg)  # before anything is prepared or created
        launch = section(cfg, "launch")
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for o in parser.parse_overrides(arguments):
            if o.is_sweep_override():
                raise ValueError(
                    f"'{o.input_line}' is a sweep override; the isoFLOP sweeper expands budgets x sizes itself: "
                    "give single values, or one sweep.name per variant")

        sweep_dir = Path(cfg.hydra.sweep.dir)
        _check_output_dir(sweep_dir)
        ident, defaults = identity(cfg)
        check_identity(sweep_dir, ident, defaults, launch.allow_config_change)  # again under the lock below
        # refined centres stay on the ladder and move at most one grid half-width (log10(size_span) / 2) per pass
        centres = refine_centres(sweep_dir, ladder_range(sweep_dir, section(cfg, "model")),
                                 math.log10(section(cfg, "sweep").size_span) / 2) if launch.refine else None
        specs, dropped, data_path = make_plan(cfg, centres=centres)
        if centres:
            # a refined sweep keeps the first pass's runs and adds the re-centred ones
            print("refined grid centres: " + ", ".join(f"C={c:.3g}: N={n:.3g}" for c, n in sorted(centres.items())))
            ids = {s.run_id for s in specs}
            specs = sorted([RunSpec.from_dict(r) for r in read_plan_dicts(sweep_dir) if r["run_id"] not in ids] + specs,
                           key=lambda s: (s.budget, s.params))
        print(f"isoFLOP sweep '{cfg.sweep.name}' -> {sweep_dir}  (data: {data_path})")
        print(format_plan(specs, dropped, launch.assumed_flops_per_s))
        if launch.dry_run:
            return None
        if not specs:
            from sweep.data import read_manifest

            data_vocab = read_manifest(Path(data_path))["vocab_size"]
            raise ValueError(no_feasible_runs(dropped, smallest_budget(
                section(cfg, "sweep"), section(cfg, "model"), section(cfg, "recipe"), data_vocab)))

        sweep_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(sweep_dir, SWEEP_LOCK, wait=True):  # concurrent launches take turns writing the sweep's files
            remove_stale_temps(sweep_dir)
            check_identity(sweep_dir, ident, defaults, launch.allow_config_change)
            self._write_sweep_files(cfg, sweep_dir, ident, specs, dropped, data_path)
        fault_point("planned")  # chaos tests: a kill between planning and launching
        todo = [s for s in specs if not finished(sweep_dir / s.run_id, s, launch.retry_failed)]
        if len(todo) < len(specs):
            log.info("%d of %d runs already finished; training the other %d", len(specs) - len(todo), len(specs), len(todo))
        return todo, sweep_dir

    @staticmethod
    def _write_sweep_files(cfg, sweep_dir, ident, specs, dropped, data_path) -> None:
        from sweep.rundir import CONFIG_FILE, write_identity, write_plan

        write_identity(sweep_dir, ident)
        OmegaConf.save(cfg, sweep_dir / CONFIG_FILE)
        write_plan(sweep_dir, specs, dropped, data_path)

    def _launch(self, arguments, todo, sweep_dir):
        import time

        jobs = [list(arguments) + [f"run_id='{s.run_id}'"] for s in todo]
        step = self.max_batch_size or max(1, len(jobs))
        returns, failed, trained_s = [], [], 0.0
        t0 = time.perf_counter()
        for i in range(0, len(jobs), step):
            results = self.launcher.launch(jobs[i:i + step], initial_job_idx=i)
            for spec, r in zip(todo[i:i + step], results):
                try:
                    ret = r.return_value  # raises the job's exception if it failed
                    trained_s += float((ret or {}).get("wall_time_s") or 0.0)
                except Exception as e:  # noqa: BLE001 - report every failure, then fail the sweep below
                    failed.append(f"{spec.run_id}: {type(e).__name__}: " + " ".join(str(e).split()))
            returns.append(results)
        wall = time.perf_counter() - t0
        if trained_s > 0:
            # 1.0 = no overhead; packing several runs per GPU brings it below 1
            log.info("sweep efficiency: %.0f s of wall time for %.0f s of run training time (ratio %.2f)",
                     wall, trained_s, wall / trained_s)
        if failed:
            raise RunsFailed(
                f"error: {len(failed)} of {len(jobs)} runs failed ({'; '.join(failed)}). Finished runs are kept: rerun the same "
                f"command to retry only the failed ones, or fit what exists with `python -m analysis {sweep_dir}`")
        return returns
