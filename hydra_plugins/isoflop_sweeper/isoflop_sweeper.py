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


def _check_trunks(sweep_dir: Path, specs) -> None:
    """ValueError if a trunk the sweep dir's plan already has would change or go: a budget added to a forks sweep
    later changes its trunks' lengths and branch steps, and a trunk cannot branch where it kept no checkpoint.  New
    trunks beside the old ones (an LR scan's extensions) train from scratch, so they are fine."""
    from sweep.plan import RunSpec
    from sweep.rundir import read_plan_dicts

    old = [RunSpec.from_dict(r) for r in read_plan_dicts(sweep_dir) if r.get("kind") == "trunk"]
    new = [s for s in specs if s.kind == "trunk"]
    changed = sorted(t.run_id for t in old if t not in new)
    if changed:
        raise ValueError(
            f"the trunks of this sweep would change ({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}): "
            "a trunk cannot branch where it kept no checkpoint, so a forks sweep cannot add budgets or sizes later; "
            "use a new sweep.name")


def _forks_summary(sweep_dir: Path, plan, keep_checkpoints: bool) -> None:
    """For a forks sweep: what the trunks and forks cost against the same points as independent cosine runs, measured
    (the results) and analytic (the plan); and the branch checkpoints of trunks whose forks are all done go."""
    from sweep.rundir import CHECKPOINT_DIR, read_result

    if not any(s.kind == "trunk" for s in plan.runs):
        return
    res = {s.run_id: read_result(sweep_dir / s.run_id) for s in plan.runs}
    done = {rid for rid, r in res.items() if r is not None and r.status in ("done", "diverged")}
    spent = sum(res[rid].flops_spent or 0.0 for rid in done)
    alone = sum(res[rid].flops or 0.0 for rid in done if res[rid].kind != "trunk")
    analytic = sum(s.flops_spent for s in plan.runs) / sum(s.flops for s in plan.runs if s.kind != "trunk")
    if alone > 0:
        log.info("forks: the runs trained so far cost %.3g FLOPs, %.3f of the %.3g their points cost as independent "
                 "cosine runs (the plan's analytic ratio: %.3f)", spent, spent / alone, alone, analytic)
    if keep_checkpoints:
        return
    for t in plan.runs:
        forks = [s.run_id for s in plan.runs if s.trunk == t.run_id]
        if t.kind == "trunk" and forks and all(f in done for f in forks):
            for p in (sweep_dir / t.run_id / CHECKPOINT_DIR).glob("branch_*.pt"):
                p.unlink(missing_ok=True)


def _failure(sweep_dir: Path, run_id: str, exc: Exception) -> str:
    """One line for a run whose job raised: the error and traceback file its job recorded (sweep.job.run_job), else
    the exception as the launcher gave it (a job that died before it could record anything)."""
    from sweep.rundir import error_line, read_result

    r = read_result(sweep_dir / run_id)
    if r is not None and r.status == "failed" and r.error:
        return f"{run_id}: {r.error} (traceback: {r.traceback})"
    return f"{run_id}: {error_line(exc)}"


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
        if not planned:
            return []
        if self.config.sweep.mode == "lr_scan":
            return self._scan(arguments, *planned)
        returns = self._launch(arguments, *planned)
        if self.config.sweep.validate:
            returns += self._validate(arguments, planned[1])
        return returns

    def _validate(self, arguments, sweep_dir: Path):
        """sweep.validate: fit the grid's law, predict the compute-optimal N at validate_factor x the top budget, and
        train the validation runs there (kind validation: no approach fits them; the analysis compares them with
        the prediction as its "forward" validation entry).  A pure function of the grid's results, so a relaunch plans
        the same runs."""
        from analysis.fit import fit_dataset
        from analysis.results import APPROACH2_KINDS, load_dataset
        from analysis.validation import forward_target
        from sweep.config import section
        from sweep.data import read_manifest
        from sweep.plan import format_plan, plan_validation
        from sweep.rundir import SWEEP_LOCK, finished, read_plan, run_lock, write_plan

        cfg = self.config
        grid = section(cfg, "sweep")
        ds = load_dataset(sweep_dir)
        top = max(r["budget"] for r in ds.usable if r["kind"] in APPROACH2_KINDS)
        budget = grid.validate_factor * top
        try:
            n_opt = forward_target(fit_dataset(ds, project=[budget], n_boot=0), budget)
        except ValueError as e:
            log.warning("validation: no run trained: the law could not be fitted (%s)", e)
            return []
        plan = read_plan(sweep_dir)
        manifest = read_manifest(Path(plan.data))
        specs, dropped = plan_validation(grid, section(cfg, "model"), section(cfg, "recipe"), manifest["vocab_size"],
                                         manifest["splits"]["train"]["tokens"], budget, n_opt)
        print(f"validation: the law's N_opt at {budget:.3g} FLOPs ({grid.validate_factor:g} x the top budget) is "
              f"{n_opt:.3g}; training {len(specs)} run(s) there")
        print(format_plan(specs, dropped, section(cfg, "launch").assumed_flops_per_s))
        with run_lock(sweep_dir, SWEEP_LOCK, wait=True):  # the plan gains the validation runs
            plan = read_plan(sweep_dir)
            ids = {s.run_id for s in specs}
            write_plan(sweep_dir, [s for s in plan.runs if s.kind != "validation" and s.run_id not in ids] + specs,
                       plan.dropped, plan.data)
        todo = [s for s in specs if not finished(sweep_dir / s.run_id, s, section(cfg, "launch").retry_failed)]
        return self._launch(arguments, todo, sweep_dir) if todo else []

    def _scan(self, arguments, todo, sweep_dir):
        """An LR scan: train its runs; while a size's best LR lies at an edge of its scan, plan one LR beyond it and
        train that (up to sweep.scan.extend per size), all in this command; then fit the rule and write the recipe."""
        from omegaconf import OmegaConf

        from analysis.lrscan import format_scan, scan_outputs

        returns = self._launch(arguments, todo, sweep_dir)
        for _ in range(self.config.sweep.scan.extend):
            try:
                planned = self._plan(arguments, quiet=True)
            except (ValueError, OSError) as e:
                raise SweepError(e) from None
            if not planned or not planned[0]:
                break  # no edge left to extend, or its extensions are trained
            print(f"LR scan: extending {len(planned[0])} runs beyond the edges of their sizes' scans")
            returns += self._launch(arguments, *planned)
        try:
            result = scan_outputs(sweep_dir, OmegaConf.to_container(self.config.recipe, resolve=True))
        except ValueError as e:
            raise SweepError(f"the LR scan could not be fitted: {e}") from None
        print(format_scan(result))
        return returns

    def _scan_extensions(self, sweep_dir: Path):
        """{N: LRs} to train in an LR scan: those tried, and one beyond each edge still allowed (analysis.lrscan)."""
        from analysis.lrscan import extensions, scan_rows

        sc = self.config.sweep.scan
        if not (sweep_dir / "plan.json").exists():
            return None
        return extensions(scan_rows(sweep_dir), sc.lr_factor, sc.lrs, sc.extend)

    def _plan(self, arguments: List[str], quiet: bool = False) -> Optional[tuple]:
        """Plan the sweep and write its files; the runs still to train and the sweep dir (None: dry run)."""
        # imported here so that Hydra's plugin discovery stays cheap
        from analysis.refine import ladder_range, refine_centres
        from sweep.config import check_known_keys, identity, section
        from sweep.cost import describe, plan_precision, run_cost
        from sweep.job import make_plan
        from sweep.plan import RunSpec, format_plan, no_feasible_runs, smallest_budget
        from sweep.rundir import (SWEEP_LOCK, check_identity, fault_point, finished, read_plan_dicts, read_result,
                                  remove_stale_temps, run_lock)

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
        extra = self._scan_extensions(sweep_dir) if cfg.sweep.mode == "lr_scan" else None
        specs, dropped, data_path = make_plan(cfg, centres=centres, extra_lrs=extra, dry_run=launch.dry_run)
        if centres:
            # a refined sweep keeps the first pass's runs and adds the re-centred ones
            print("refined grid centres: " + ", ".join(f"C={c:.3g}: N={n:.3g}" for c, n in sorted(centres.items())))
            ids = {s.run_id for s in specs}
            specs = sorted([RunSpec.from_dict(r) for r in read_plan_dicts(sweep_dir) if r["run_id"] not in ids] + specs,
                           key=lambda s: (s.budget, s.params))
        _check_trunks(sweep_dir, specs)
        if not quiet:
            kind = "LR scan" if cfg.sweep.mode == "lr_scan" else "isoFLOP sweep"
            print(f"{kind} '{cfg.sweep.name}' -> {sweep_dir}  (data: {data_path})")
            if not (Path(data_path) / "manifest.json").exists():  # a dry run planned with the assumed sizes
                print(f"data not prepared: planned with {cfg.data.assumed_train_tokens:.4g} training tokens "
                      f"(data.assumed_train_tokens) and the vocab of data.tokenizer / data.assumed_vocab_size; nothing downloaded")
            trainer = section(cfg, "trainer")
            precision = plan_precision(trainer.precision, trainer.device, launch.device)
            costs = [run_cost(s, trainer.micro_batch_size, precision, launch.device, launch.assumed_mfu, trainer.parallel,
                              launch.gpus_per_run) for s in specs]
            note = describe(launch.device, launch.assumed_mfu, launch.gpus_per_run, trainer.parallel)
            print(format_plan(specs, dropped, launch.assumed_flops_per_s, costs, note))
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
        kept = [s.run_id for s in specs if s not in todo and read_result(sweep_dir / s.run_id).status == "failed"]
        if kept:
            log.warning("%d failed run(s) not retried (launch.retry_failed=true retries them): %s", len(kept), ", ".join(kept))
        return todo, sweep_dir

    @staticmethod
    def _write_sweep_files(cfg, sweep_dir, ident, specs, dropped, data_path) -> None:
        from sweep.rundir import CONFIG_FILE, write_identity, write_plan

        write_identity(sweep_dir, ident)
        OmegaConf.save(cfg, sweep_dir / CONFIG_FILE)
        write_plan(sweep_dir, specs, dropped, data_path)

    def _launch(self, arguments, todo, sweep_dir):
        """Launch the runs to train in two launcher calls, trunks and other runs first, then the forks: a fork needs its
        trunk's checkpoint, and no job may wait for another job's output inside one call (joblib and SLURM array
        limits would deadlock).  With ``launch.order=longest_first`` the longest runs of each call go first (by the
        FLOPs each trains itself): with more runs than workers a long run started last would leave the other workers
        idle while it finishes."""
        import time

        from sweep.config import section
        from sweep.rundir import fault_point, finished, read_plan, read_result

        plan = read_plan(sweep_dir)
        order = section(self.config, "launch").order

        def ordered(runs):  # longest_first: a stable sort, equal runs keep the plan's order
            runs = list(runs)
            return sorted(runs, key=lambda s: -s.flops_spent) if order == "longest_first" else runs

        phases = [ordered(s for s in todo if not s.trunk), ordered(s for s in todo if s.trunk)]
        returns, failed, trained_s, idx = [], [], 0.0, 0
        t0 = time.perf_counter()
        for k, phase in enumerate(phases):
            if k == 1 and phase:
                fault_point("forks")  # chaos tests: the trunks are done, no fork launched yet
                ready = {t.run_id for t in plan.runs if t.kind == "trunk" and finished(sweep_dir / t.run_id, t)
                         and read_result(sweep_dir / t.run_id).status == "done"}
                failed += [f"{s.run_id}: its trunk {s.trunk} did not finish" for s in phase if s.trunk not in ready]
                phase = [s for s in phase if s.trunk in ready]
            jobs = [list(arguments) + [f"run_id='{s.run_id}'"] for s in phase]
            step = self.max_batch_size or max(1, len(jobs))
            for i in range(0, len(jobs), step):
                results = self.launcher.launch(jobs[i:i + step], initial_job_idx=idx)
                idx += len(jobs[i:i + step])
                for spec, r in zip(phase[i:i + step], results):
                    try:
                        ret = r.return_value  # raises the job's exception if it failed
                        trained_s += float((ret or {}).get("wall_time_s") or 0.0)
                    except Exception as e:  # noqa: BLE001 - report every failure, then fail the sweep below
                        failed.append(_failure(sweep_dir, spec.run_id, e))
                returns.append(results)
        wall = time.perf_counter() - t0
        if trained_s > 0:
            # 1.0 = no overhead; packing several runs per GPU brings it below 1
            log.info("sweep efficiency: %.0f s of wall time for %.0f s of run training time (ratio %.2f)",
                     wall, trained_s, wall / trained_s)
        _forks_summary(sweep_dir, plan, self.config.trainer.keep_checkpoints)
        if failed:
            for line in failed:
                log.error("failed: %s", line)
            raise RunsFailed(
                f"error: {len(failed)} of {len(todo)} runs failed ({'; '.join(failed)}). The other runs are kept: rerun the "
                f"same command with launch.retry_failed=true to retry only the failed ones, or fit what exists with "
                f"`python -m analysis {sweep_dir}`")
        return returns
