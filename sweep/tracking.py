"""Weights & Biases logging, off by default.

One wandb run per training run: ``group`` = the sweep name, ``job_type`` = "train", the run spec as
config, FLOPs and tokens as x-axes (``define_metric``), the final losses in the summary.  The wandb step
of a training record is its optimizer step, so the history's steps are the trainer's.

Resuming without duplicates.  The tracker's state (``{"id": wandb run id, "step": last step logged}``)
goes into the trainer's loop state, so every checkpoint holds it.  A resumed run reopens that wandb run
(``resume="allow"``) and asks wandb which step it holds last (``run.starting_step``: online the server's
last step + 1; a new offline run holds nothing).  The records of metrics.jsonl up to the checkpoint that
the wandb run lacks are sent first, then training goes on; a record at a step the run already holds is
never sent again.  The wandb run's view is the one that counts, not the checkpoint's "last step logged":
a killed process loses what wandb had not yet flushed (up to ``x_transaction_log_flush_interval``, 15 s,
of records offline; whatever was not yet uploaded online), and that can lie before or after the
checkpoint.

Offline, each start writes a new ``offline-run-*-<id>`` directory; wandb cannot append one offline
directory to another reliably (wandb/wandb#3841, #5865), so a resumed offline run holds the whole history
itself and the directories it supersedes are moved to ``<wandb dir>/superseded/``: ``wandb sync
<dir>/wandb/offline-run-*`` then uploads each run once, complete.

Only the run spec and the trainer section are logged as config: never the environment, so API keys
and other secrets cannot end up in wandb or in saved files.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger(__name__)

TRAIN_JOB = "train"  # the job_type of a training run
TRAIN_METRICS = ("loss", "val_loss", "lr", "tok_per_s", "mfu", "elapsed_s")  # plotted against FLOPs
AXES = ("flops", "tokens", "step")
SUPERSEDED_DIR = "superseded"


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
    """A thin wrapper around one wandb run; every method is a no-op when wandb is off.

    The run opens on ``start`` (the trainer calls it once it knows its checkpoint) or on the first ``log``.
    """

    def __init__(self, cfg: Optional[WandbConfig], *, sweep_dir: Path, sweep_name: str, run_id: str,
                 job_type: str = TRAIN_JOB, config: Optional[dict] = None):
        self.cfg = cfg if cfg is not None and cfg.enabled else None
        self.sweep_dir, self.sweep_name, self.run_id, self.job_type = Path(sweep_dir), sweep_name, run_id, job_type
        self.config = config or {}
        self.run = None
        self.state = {"id": wandb_run_id(sweep_dir, f"{job_type}:{run_id}"), "step": 0}

    @property
    def enabled(self) -> bool:
        return self.cfg is not None

    def start(self, state: Optional[dict] = None, history: Iterable[dict] = ()) -> dict:
        """Open the wandb run and return the tracker state, a dict kept up to date while the run logs.

        ``state``: the state a checkpoint holds (the same wandb run continues).  ``history``: the records
        the trainer logged up to its checkpoint (metrics.jsonl); those the wandb run lacks are sent now.
        """
        if self.cfg is None or self.run is not None:
            return self.state
        import wandb

        checkpointed = dict(state or {})
        if checkpointed.get("id"):
            self.state["id"] = checkpointed["id"]
        cfg = self.cfg
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(cfg.dir or self.sweep_dir),
            id=self.state["id"], name=self.run_id, group=self.sweep_name, job_type=self.job_type,
            config=self.config, resume="allow", reinit="create_new", settings=wandb.Settings(silent=True))
        if self.job_type == TRAIN_JOB:
            for axis in AXES:
                self.run.define_metric(axis)
            for key in TRAIN_METRICS:
                self.run.define_metric(key, step_metric="flops")
        # the last step this wandb run holds: online the server's, a new offline run none
        self.state["step"] = max(self.run.starting_step - 1, 0)
        holds = self.state["step"]
        sent = sum(self.log(rec) for rec in history)
        if self.run.offline:
            self._supersede_older_offline_dirs()
        if checkpointed or sent:
            log.info("wandb %s: the run held steps up to %d (the checkpoint had logged up to %s); sent %d records "
                     "from metrics.jsonl", self.state["id"], holds, checkpointed.get("step", "-"), sent)
        return self.state

    def _supersede_older_offline_dirs(self) -> None:
        """Move this run's older offline directories aside: this one holds the whole history."""
        here = Path(self.run.sync_dir)
        aside = here.parent / SUPERSEDED_DIR
        for old in sorted(here.parent.glob(f"offline-run-*-{self.state['id']}")):
            if old != here and old.is_dir():
                aside.mkdir(exist_ok=True)
                old.rename(aside / old.name)

    def log(self, record: dict) -> bool:
        """Log one record; a training record (with a ``step``) only if the wandb run does not hold its step yet."""
        if self.cfg is None:
            return False
        if self.run is None:
            self.start()
        values = {k: v for k, v in record.items() if v is not None}
        step = record.get("step") if self.job_type == TRAIN_JOB else None
        if step is None:
            self.run.log(values)
            return True
        if step <= self.state["step"]:
            return False  # already logged: history points are never duplicated
        self.run.log(values, step=step)
        self.state["step"] = step
        return True

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                if v is not None:
                    self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
