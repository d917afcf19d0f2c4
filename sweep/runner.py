"""What the sweeper and each job do with a composed config.  The Hydra glue stays thin around this."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from models.ladder import LadderConfig
from sweep.data import DataConfig, TokenData, data_dir, prepare
from sweep.plan import Dropped, RecipeConfig, RunSpec, SweepConfig, plan_grid
from sweep.store import RunLocked, finished, read_result, remove_stale_temps, run_lock
from sweep.tracking import Tracker
from sweep.train import TrainerConfig, train

log = logging.getLogger(__name__)


def section(cfg: DictConfig, name: str):
    """A typed copy of one config section (each component gets only its own)."""
    return OmegaConf.to_object(cfg[name])


def make_plan(cfg: DictConfig, centres: Optional[dict] = None) -> tuple[list[RunSpec], list[Dropped], Path]:
    """Prepare (or find) the data, verify it, then plan the grid against its vocab and size.

    Raises ValueError (one line, naming the fix) for data that cannot be trained on: a truncated or
    corrupt shard, a swapped tokenizer, or splits shorter than one sequence."""
    data_cfg: DataConfig = section(cfg, "data")
    path = prepare(data_cfg)
    data = TokenData(path)  # sizes and the tokenizer every time, shard sha256 on first use
    ladder: LadderConfig = section(cfg, "model")
    recipe: RecipeConfig = section(cfg, "recipe")
    grid: SweepConfig = section(cfg, "sweep")
    for split in ("train", "val"):
        if data.n_windows(split, recipe.seq_len) < 1:
            longest = max(len(a) for a in data.shards[split]) - 1  # inputs + the last target fit in one shard
            raise ValueError(f"recipe.seq_len={recipe.seq_len} is longer than the {split} split of {path} "
                             f"(its longest shard holds {longest} input tokens); lower recipe.seq_len or use more data")
    specs, dropped = plan_grid(grid, ladder, recipe, data.vocab_size, data.train_tokens, centres)
    return specs, dropped, path


def refine_centres(sweep_dir: Path) -> dict:
    """Each budget's fitted optimum N from the finished runs of a first pass (Approach 2 vertices)."""
    from analysis.approach2 import fit_approach2
    from analysis.results import is_isoflop, load_results, split_usable

    usable, _ = split_usable(load_results(sweep_dir))
    usable = [r for r in usable if is_isoflop(r)]  # Approach 1's extra horizons are not grid points
    try:
        fit = fit_approach2([r["budget"] for r in usable], [r["params"] for r in usable],
                            [r["tokens"] for r in usable], [r["loss"] for r in usable])
    except ValueError as e:
        raise ValueError(f"sweep.refine needs a finished first pass with isoFLOP minima: {e}") from None
    return dict(zip(fit["budgets"], fit["N_opt"]))


def run_job(cfg: DictConfig, out_dir: Path) -> dict:
    """One job of the multirun: train the run named by cfg.run_id, as the sweeper planned it (plan.json)."""
    if not cfg.run_id:
        raise ValueError("run_id is not set: launch through the isoFLOP sweeper (`python -m sweep ...`), not a single run")
    out_dir = Path(out_dir)
    plan_path = out_dir.parent / "plan.json"  # the sweeper writes it before launching any job
    runs = {r["run_id"]: r for r in json.loads(plan_path.read_text())["runs"]}
    if cfg.run_id not in runs:
        raise ValueError(f"run_id={cfg.run_id!r} is not in {plan_path}; valid ids: {', '.join(runs)}")
    spec = RunSpec.from_dict(runs[cfg.run_id])
    data_path = data_dir(section(cfg, "data"))
    trainer: TrainerConfig = section(cfg, "trainer")
    if trainer.device_index is None and "WORLD_SIZE" not in os.environ and torch.cuda.device_count() > 1:
        # GPU packing: concurrent jobs (joblib n_jobs = GPUs x runs per GPU) spread round-robin over the GPUs
        from hydra.core.hydra_config import HydraConfig

        trainer.device_index = HydraConfig.get().job.num % torch.cuda.device_count()
    try:
        with run_lock(out_dir):
            remove_stale_temps(out_dir)  # debris of a writer killed mid-write; we are the only writer now
            # another launch may have finished this run while we were queued
            if finished(out_dir, spec.to_dict(), retry_failed=cfg.sweep.retry_failed):
                log.info("%s: already finished, not training it again", spec.run_id)
                return read_result(out_dir)
            tracker = Tracker(section(cfg, "wandb"), sweep_dir=out_dir.parent, sweep_name=cfg.sweep.name,
                              run_id=spec.run_id, config={"spec": spec.to_dict(), "trainer": OmegaConf.to_container(cfg.trainer)})
            try:
                return train(spec, trainer, TokenData(data_path), out_dir, tracker=tracker)
            finally:
                tracker.finish(exit_code=1)  # no-op when train already finished it
    except RunLocked as e:
        log.warning("%s: skipped, %s", spec.run_id, e)
        return {"run_id": spec.run_id, "status": "locked"}
