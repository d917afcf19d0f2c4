"""The Hydra app behind ``python -m sweep``: ``main`` drives the sweep, ``task`` is one job of it.

``main`` composes the config and hands it to Hydra; Hydra (MULTIRUN mode, conf/config.yaml) runs the
isoFLOP sweeper (hydra_plugins/isoflop_sweeper), which plans the grid and gives the configured launcher
one job per run; the launcher calls ``task`` for each, here or in another process.  The task lives in
this importable module (not in ``__main__``) so that launchers that pickle it (joblib, submitit) find it.
"""
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweep.config import migrate_overrides, register
from sweep.job import run_job

register()
# absolute, so that the app finds conf/ the same way when run as `python -m sweep` or imported by tests
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def task(cfg: DictConfig) -> dict:
    """One job: train the run ``cfg.run_id`` into its directory (hydra.sweep.dir/<run id>)."""
    hc = HydraConfig.get()
    return run_job(cfg, Path(hc.runtime.output_dir), job_num=hc.job.num)


def main(argv: Optional[list] = None) -> None:
    """Run the whole sweep for the overrides in ``argv`` (default: sys.argv[1:])."""
    args = migrate_overrides(list(sys.argv[1:] if argv is None else argv))
    sys.argv = [sys.argv[0], *args]  # Hydra reads its overrides from sys.argv
    hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")(task)()
