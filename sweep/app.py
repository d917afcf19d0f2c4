"""The Hydra app behind ``python -m sweep``: plan an isoFLOP grid, train every run, fit and plot.

The task function lives in this importable module (not in ``__main__``) so that launchers that pickle
it into other processes (joblib, submitit) can find it again.

The isoFLOP sweeper plugin (hydra_plugins/isoflop_sweeper) expands sweep.budgets x sizes and hands
one job per run to the configured Hydra launcher; each job lands in ``main`` below.
"""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep.config import register
from sweep.runner import run_job

register()
# absolute, so that the app finds conf/ the same way when run as `python -m sweep` or imported by tests
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    return run_job(cfg, HydraConfig.get().runtime.output_dir)

