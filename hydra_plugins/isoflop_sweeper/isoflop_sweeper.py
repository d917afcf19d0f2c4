"""A thin Hydra Sweeper: budgets x sizes from ``sweep.plan``, one job per run, any launcher.

Select it with ``override hydra/sweeper: isoflop`` (conf/config.yaml does).  It

1. prepares the data once (so every job finds the same tokenizer and shards),
2. plans the grid with the pure ``sweep.plan.plan_grid`` and writes ``plan.json`` to the sweep dir,
3. prints the plan; with ``sweep.dry_run=true`` it stops there,
4. skips runs that already have a finished result (relaunching a sweep resumes it), and
5. hands the rest to whichever Hydra launcher is configured (basic, joblib, submitit_slurm, ...),
   each job with the user's overrides plus ``run_id=<id>``.

(No ``from __future__ import annotations`` here: Hydra execs plugin modules without registering them
in sys.modules, and dataclasses then cannot resolve string annotations.)
"""

import json
import os
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweep.data import NOT_HASHED

log = logging.getLogger(__name__)


class SweepError(CompactHydraException):
    """Bad input found while planning: Hydra prints just this one line (no traceback) and exits 1."""

    def __init__(self, message: str) -> None:
        super().__init__("error: " + " ".join(str(message).split()))


class RunsFailed(CompactHydraException):
    """Some runs of the sweep failed; the others are kept.  One line, like SweepError."""


@dataclass
class IsoFLOPSweeperConf:
    _target_: str = "hydra_plugins.isoflop_sweeper.isoflop_sweeper.IsoFLOPSweeper"
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None = all)


ConfigStore.instance().store(group="hydra/sweeper", name="isoflop", node=IsoFLOPSweeperConf, provider="scaling-sweep")


def sweep_identity(cfg: DictConfig) -> dict:
    """The config keys that decide what the sweep trains (flattened), without the knobs of how it runs."""
    from omegaconf import OmegaConf as OC

    out = {}
    for section in ("data", "model", "recipe", "sweep"):
        for k, v in OC.to_container(cfg[section], resolve=True).items():
            if f"{section}.{k}" not in NOT_IDENTITY:
                out[f"{section}.{k}"] = v
    return out


# keys that change how a sweep runs or reports, not what it trains; of data, those the data dir's hash ignores
NOT_IDENTITY = {"sweep.name", "sweep.dry_run", "sweep.retry_failed", "sweep.allow_config_change",
                "sweep.assumed_flops_per_s", "sweep.refine"} | {f"data.{k}" for k in NOT_HASHED}


def _check_identity(cfg: DictConfig, sweep_dir: Path) -> dict:
    """This sweep's identity; ValueError if ``sweep_dir`` holds a sweep of another config (unless allowed)."""
    identity = sweep_identity(cfg)
    ident_path = sweep_dir / "sweep.json"
    if ident_path.exists() and not cfg.sweep.allow_config_change:
        old = {k: v for k, v in json.loads(ident_path.read_text())["config"].items() if k not in NOT_IDENTITY}
        if old != identity:
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            listed = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise ValueError(
                f"{sweep_dir} holds a sweep with a different config ({listed} changed); "
                "use a new sweep.name, or pass sweep.allow_config_change=true to extend this one")
    return identity


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
        from sweep.config import check_known_keys
        from sweep.plan import RunSpec, format_plan, no_feasible_runs, smallest_budget
        from sweep.runner import make_plan, refine_centres, section
        from sweep.store import fault_point, finished, remove_stale_temps, run_lock as sweep_lock

        cfg = self.config
        check_known_keys(cfg)  # before anything is prepared or created
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for o in parser.parse_overrides(arguments):
            if o.is_sweep_override():
                raise ValueError(
                    f"'{o.input_line}' is a sweep override; the isoFLOP sweeper expands budgets x sizes itself: "
                    "give single values, or one sweep.name per variant")

        sweep_dir = Path(cfg.hydra.sweep.dir)
        _check_output_dir(sweep_dir)
        _check_identity(cfg, sweep_dir)  # also under the lock below; here before any data is prepared
        centres = refine_centres(sweep_dir) if cfg.sweep.refine else None
        specs, dropped, data_path = make_plan(cfg, centres=centres)
        if centres:
            # a refined sweep keeps the first pass's runs and adds the re-centred ones
            print("refined grid centres: " + ", ".join(f"C={c:.3g}: N={n:.3g}" for c, n in sorted(centres.items())))
            old = json.loads((sweep_dir / "plan.json").read_text())["runs"] if (sweep_dir / "plan.json").exists() else []
            ids = {s.run_id for s in specs}
            specs = sorted([RunSpec.from_dict(r) for r in old if r["run_id"] not in ids] + specs,
                           key=lambda s: (s.budget, s.params))
        print(f"isoFLOP sweep '{cfg.sweep.name}' -> {sweep_dir}  (data: {data_path})")
        print(format_plan(specs, dropped, cfg.sweep.assumed_flops_per_s))
        if cfg.sweep.dry_run:
            return None
        if not specs:
            data_vocab = json.loads((Path(data_path) / "manifest.json").read_text())["vocab_size"]
            raise ValueError(no_feasible_runs(dropped, smallest_budget(
                section(cfg, "sweep"), section(cfg, "model"), section(cfg, "recipe"), data_vocab)))

        sweep_dir.mkdir(parents=True, exist_ok=True)
        with sweep_lock(sweep_dir, ".sweep.lock", wait=True):  # concurrent launches take turns writing the sweep's files
            remove_stale_temps(sweep_dir)
            self._write_sweep_files(cfg, sweep_dir, specs, dropped, data_path)
        fault_point("planned")  # chaos tests: a kill between planning and launching
        todo = [s for s in specs if not finished(sweep_dir / s.run_id, s.to_dict(), cfg.sweep.retry_failed)]
        if len(todo) < len(specs):
            log.info("%d of %d runs already finished; training the other %d", len(specs) - len(todo), len(specs), len(todo))
        return todo, sweep_dir

    @staticmethod
    def _write_sweep_files(cfg, sweep_dir, specs, dropped, data_path) -> None:
        from sweep.store import write_json_atomic

        identity = _check_identity(cfg, sweep_dir)
        write_json_atomic(sweep_dir / "sweep.json", {"config": identity})
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        write_json_atomic(sweep_dir / "plan.json", {
            "runs": [s.to_dict() for s in specs],
            "dropped": [d.__dict__ for d in dropped],
            "data": str(data_path),
        })

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
