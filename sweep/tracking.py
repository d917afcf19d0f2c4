"""Weights & Biases logging, off by default.

One wandb run per training run: ``group`` = the sweep name, ``job_type`` = "train", the run spec as
config, FLOPs and tokens as x-axes (``define_metric``), the final losses in the summary.  The run id is
derived from the sweep directory and the run id, so a resumed run continues the same wandb run
(``resume="allow"``).  ``WANDB_MODE=offline`` writes everything locally for a later ``wandb sync``.

Only the run spec and the trainer section are logged as config: never the environment, so API keys
and other secrets cannot end up in wandb or in saved files.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class WandbConfig:
    """The ``wandb`` config section."""

    enabled: bool = False  # log to wandb (the smoke run and the tests leave it off)
    project: str = "scaling-sweep"
    entity: Optional[str] = None  # team or user; None = your default entity
    mode: Optional[str] = None  # online | offline | disabled; None = $WANDB_MODE, else online
    dir: Optional[str] = None  # where wandb keeps its local files; None = the sweep directory


def wandb_run_id(sweep_dir: Path, run_id: str) -> str:
    """A stable wandb id (letters, digits, -, _) for one run of one sweep directory."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "", run_id.replace(".", "p"))
    digest = hashlib.sha1(f"{Path(sweep_dir).resolve()}|{run_id}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


class Tracker:
    """A thin wrapper around one wandb run; every method is a no-op when wandb is off."""

    def __init__(self, cfg: Optional[WandbConfig], *, sweep_dir: Path, sweep_name: str, run_id: str,
                 job_type: str = "train", config: Optional[dict] = None):
        self.run = None
        if cfg is None or not cfg.enabled:
            return
        import wandb

        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(cfg.dir or sweep_dir),
            id=wandb_run_id(sweep_dir, f"{job_type}:{run_id}"), name=run_id, group=sweep_name, job_type=job_type,
            config=config or {}, resume="allow", reinit="create_new", settings=wandb.Settings(silent=True))
        if job_type == "train":
            for axis in ("flops", "tokens", "step"):
                self.run.define_metric(axis)
            for key in ("loss", "val_loss", "lr", "tok_per_s", "mfu"):
                self.run.define_metric(key, step_metric="flops")

    def log(self, record: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if v is not None})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                if v is not None:
                    self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
