"""What the sweeper and each job do with a composed config: plan the sweep, and train one of its runs.

The Hydra glue (sweep/app.py, hydra_plugins/isoflop_sweeper) stays thin around these two functions.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from sweep.checkpoint import StopSignals
from sweep.config import section
from sweep.data import TokenData, bpe_vocab, data_dir, prepare
from sweep.plan import Dropped, RunSpec, plan_sweep
from sweep.device import Dist, broadcast_choice, join_ranks, leave_ranks, rank_device
from sweep.rundir import (TRACEBACK_FILE, RunLocked, finished, read_plan, read_result, remove_stale_temps,
                          run_lock, write_failure)
from sweep.tracking import Tracker
from sweep.train import TrainerConfig, train

log = logging.getLogger(__name__)


def make_plan(cfg: DictConfig, centres: Optional[dict] = None, extra_lrs: Optional[dict] = None,
              dry_run: bool = False) -> tuple[list[RunSpec], list[Dropped], Path]:
    """Prepare (or find) the data, verify it, then plan the grid against its vocab and size.

    A ``dry_run`` with ``data.assumed_train_tokens`` set and the data not prepared yet plans with the assumed
    sizes instead, and prepares (downloads) nothing.  Raises ValueError (one line, naming the fix) for data that
    cannot be trained on: a truncated or corrupt shard, a swapped tokenizer, or splits shorter than one sequence."""
    data_cfg = section(cfg, "data")
    if dry_run and data_cfg.assumed_train_tokens and not (data_dir(data_cfg) / "manifest.json").exists():
        from sweep.config import _folder_vocab

        vocab = data_cfg.assumed_vocab_size or bpe_vocab(data_cfg.tokenizer) or _folder_vocab(data_cfg.tokenizer)
        if not vocab:
            raise ValueError(f"data.tokenizer={data_cfg.tokenizer!r} does not say its vocab size: set data.assumed_vocab_size "
                             "for a dry run before the data is prepared")
        specs, dropped = plan_sweep(section(cfg, "sweep"), section(cfg, "model"), section(cfg, "recipe"), vocab,
                                    int(data_cfg.assumed_train_tokens), centres, extra_lrs)
        return specs, dropped, data_dir(data_cfg)
    path = prepare(data_cfg)
    data = TokenData(path)  # sizes and the tokenizer every time, shard sha256 on first use
    recipe = section(cfg, "recipe")
    for split in ("train", "val"):
        if data.n_windows(split, recipe.seq_len) < 1:
            longest = max(len(a) for a in data.shards[split]) - 1  # inputs + the last target fit in one shard
            raise ValueError(f"recipe.seq_len={recipe.seq_len} is longer than the {split} split of {path} "
                             f"(its longest shard holds {longest} input tokens); lower recipe.seq_len or use more data")
    specs, dropped = plan_sweep(section(cfg, "sweep"), section(cfg, "model"), recipe, data.vocab_size,
                                data.train_tokens, centres, extra_lrs)
    return specs, dropped, path


def run_job(cfg: DictConfig, run_dir: Path, job_num: int = 0) -> dict:
    """One job of the multirun: train the run named by cfg.run_id, as the sweeper planned it (plan.json).

    ``job_num`` is the job's index in the launch: in a packed GPU sweep job k trains on GPU k mod #GPUs.
    Returns the result record as a dict ({"run_id", "status": "locked"} when another process trains the run).

    A job of several tasks (SLURM ``tasks_per_node`` > 1, sweep.device.Dist.from_env) is one data-parallel run:
    rank 0 alone takes the run lock and decides (train, already finished, locked), and every rank follows.
    A run that raises gets result.json ``failed`` (the error, traceback.txt) and the exception goes on to the
    sweeper, which reports it after the other runs.  The ranks of a job that returned leave their process group.
    """
    result = _run_job(cfg, run_dir, job_num)
    leave_ranks(Dist.from_env())  # not after a raise: a rank that failed may leave its peers inside a collective
    return result


def _run_job(cfg: DictConfig, run_dir: Path, job_num: int) -> dict:
    if not cfg.run_id:
        raise ValueError("run_id is not set: launch through the isoFLOP sweeper (`python -m sweep ...`), not a single run")
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as held:
        # first: a stop signal from here on waits for the trainer's next step (sweep.checkpoint.StopSignals)
        stop = held.enter_context(StopSignals())
        plan = read_plan(run_dir.parent)  # the sweeper writes plan.json before launching any job
        spec = plan.spec(cfg.run_id)
        trunk = plan.spec(spec.trunk) if spec.trunk else None  # a fork starts from its trunk's checkpoint
        trainer: TrainerConfig = section(cfg, "trainer")
        dist = Dist.from_env()
        if trainer.device_index is None and dist.world == 1 and torch.cuda.device_count() > 1:
            trainer.device_index = job_num % torch.cuda.device_count()  # GPU packing: jobs round-robin over the GPUs
        device = None
        if dist.world > 1:  # the ranks agree on what to do before any of them trains
            device = rank_device(trainer.device, trainer.device_index, dist)
            join_ranks(dist, device)
        choice = "train"
        if dist.main:
            try:
                held.enter_context(run_lock(run_dir))
            except RunLocked as e:
                log.warning("%s: skipped, %s", spec.run_id, e)
                choice = "locked"
            else:
                remove_stale_temps(run_dir)  # debris of a writer killed mid-write; we are the only writer now
                # another launch may have finished this run while we were queued
                if finished(run_dir, spec, retry_failed=cfg.launch.retry_failed):
                    log.info("%s: already finished, not training it again", spec.run_id)
                    choice = "finished"
        choice = broadcast_choice(choice, ("train", "finished", "locked"), dist, device)
        if choice == "locked":
            return {"run_id": spec.run_id, "status": "locked"}
        if choice == "finished":
            return read_result(run_dir).to_dict()
        tracker = None
        try:
            if dist.main:
                (run_dir / TRACEBACK_FILE).unlink(missing_ok=True)  # a retried failure's, now stale
                tracker = Tracker(section(cfg, "wandb"), sweep_dir=run_dir.parent, sweep_name=cfg.sweep.name,
                                  run_id=spec.run_id,
                                  config={"spec": spec.to_dict(), "trainer": OmegaConf.to_container(cfg.trainer)})
            data = TokenData(data_dir(section(cfg, "data")))
            return train(spec, trainer, data, run_dir, tracker=tracker, trunk=trunk, stop=stop).to_dict()
        except Exception as e:  # not SystemExit: a run stopped by a signal (preemption) resumes, it has not failed
            if dist.main:
                result = write_failure(run_dir, spec, e)
                log.error("%s: failed (%s); traceback in %s", spec.run_id, result.error, result.traceback)
            raise
        finally:
            if tracker is not None:
                tracker.finish(exit_code=1)  # no-op when train already finished it
