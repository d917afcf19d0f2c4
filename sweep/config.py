"""The root config schema.  Each component owns its section's dataclass; this file only assembles them.

YAML files under conf/ hold differences from these defaults; unknown keys are errors (struct mode).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from models.ladder import LadderConfig
from sweep.data import DataConfig
from sweep.plan import RecipeConfig, SweepConfig
from sweep.tracking import WandbConfig
from sweep.train import TrainerConfig


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: LadderConfig = field(default_factory=LadderConfig)  # the shape rule for a target N (models/ladder.py)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run_id: Optional[str] = None  # set per job by the isoFLOP sweeper


def register() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)
