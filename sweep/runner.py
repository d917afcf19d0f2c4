"""What the sweeper and each job do with a composed config.  The Hydra glue stays thin around this."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from models.ladder import LadderConfig
from sweep.data import DataConfig, TokenData, data_dir, prepare, read_manifest
from sweep.plan import Dropped, RecipeConfig, RunSpec, SweepConfig, plan_grid
from sweep.store import RunLocked, finished, read_result, run_lock
from sweep.tracking import Tracker
from sweep.train import TrainerConfig, train

log = logging.getLogger(__name__)


def section(cfg: DictConfig, name: str):
    """A typed copy of one config section (each component gets only its own)."""
    return OmegaConf.to_object(cfg[name])


def make_plan(cfg: DictConfig, prepare_data: bool = True) -> tuple[list[RunSpec], list[Dropped], Path]:
    """Prepare (or find) the data, then plan the grid against its vocab and size."""
    data_cfg: DataConfig = section(cfg, "data")
    path = prepare(data_cfg) if prepare_data else data_dir(data_cfg)
    m = read_manifest(path)
    ladder: LadderConfig = section(cfg, "model")
    recipe: RecipeConfig = section(cfg, "recipe")
    grid: SweepConfig = section(cfg, "sweep")
    specs, dropped = plan_grid(grid, ladder, recipe, m["vocab_size"], m["splits"]["train"]["tokens"])
    return specs, dropped, path


def run_job(cfg: DictConfig, out_dir: Path) -> dict:
    """One job of the multirun: re-derive the (pure, deterministic) plan and train the run named by cfg.run_id."""
    if not cfg.run_id:
        raise ValueError("run_id is not set: launch through the isoFLOP sweeper (`python -m sweep ...`), not a single run")
    specs, _, path = make_plan(cfg, prepare_data=False)
    by_id = {s.run_id: s for s in specs}
    if cfg.run_id not in by_id:
        raise ValueError(f"run_id={cfg.run_id!r} is not in this sweep's plan; valid ids: {', '.join(by_id)}")
    spec = by_id[cfg.run_id]
    trainer: TrainerConfig = section(cfg, "trainer")
    if trainer.device_index is None and "WORLD_SIZE" not in os.environ and torch.cuda.device_count() > 1:
        # GPU packing: concurrent jobs (joblib n_jobs = GPUs x runs per GPU) spread round-robin over the GPUs
        from hydra.core.hydra_config import HydraConfig

        trainer.device_index = HydraConfig.get().job.num % torch.cuda.device_count()
    try:
        with run_lock(out_dir):
            # another launch may have finished this run while we were queued
            if finished(out_dir, spec.to_dict(), retry_failed=cfg.sweep.retry_failed):
                log.info("%s: already finished, not training it again", spec.run_id)
                return read_result(out_dir)
            tracker = Tracker(section(cfg, "wandb"), sweep_dir=Path(out_dir).parent, sweep_name=cfg.sweep.name,
                              run_id=spec.run_id, config={"spec": spec.to_dict(), "trainer": OmegaConf.to_container(cfg.trainer)})
            try:
                return train(spec, trainer, TokenData(path), out_dir, tracker=tracker)
            finally:
                tracker.finish(exit_code=1)  # no-op when train already finished it
    except RunLocked as e:
        log.warning("%s: skipped, %s", spec.run_id, e)
        return {"run_id": spec.run_id, "status": "locked"}
