"""Checkpoints and stop signals: how a run survives preemption, time limits and kills.

Every ``trainer.checkpoint_every_s`` seconds of wall time, and on SIGTERM or the launcher's preemption signal
(submitit: ``SUBMITIT_PREEMPT_SIGNAL``, SIGUSR2 by default), the model, optimizer and loop state go to
``checkpoints/step_XXXXXXXX.pt`` (atomically).  After a signal the previous handler is restored and the signal
re-raised, so submitit's own handler still requeues the job.  A restarted run resumes from the newest readable
checkpoint of its own spec.  With FSDP (``sharded``) the state is gathered to full tensors on rank 0 first.
"""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Optional

import torch

from sweep.rundir import atomic_file, branch_checkpoint_path, checkpoint_path, checkpoint_paths, spec_hash

log = logging.getLogger(__name__)


def save_torch_atomic(obj, path: Path, fault_name: Optional[str] = None) -> None:
    """torch.save through the run directory's atomic writer: a full disk or a kill leaves the old file intact."""
    path = Path(path)
    if fault_name is None and path.parent.name == "checkpoints":
        fault_name = "checkpoint"
    with atomic_file(path, "wb", fault_name=fault_name) as f:
        torch.save(obj, f)


def save_checkpoint(run_dir: Path, step: int, model, opt, spec, loop: dict, keep_last: int, main: bool,
                    sharded: bool, branch: bool = False) -> None:
    """Save step ``step`` (every rank takes part when sharded; rank 0 writes) and keep the newest ``keep_last``.

    ``branch``: a trunk's checkpoint at a fork's branch step, kept apart (``branch_XXXXXXXX.pt``) until its forks are
    done; the rolling ``step_*`` checkpoints never prune it."""
    state = full_state_dict(model, sharded)
    optim = full_optim_state(model, opt, sharded)
    if not main:
        return
    ckpt = {"step": step, "spec_hash": spec_hash(spec.to_dict()), "model_config": spec.model.to_dict(),
            "model": state, "optimizer": optim, "loop": dict(loop)}
    if branch:
        save_torch_atomic(ckpt, branch_checkpoint_path(run_dir, step), fault_name="branch")
        return
    save_torch_atomic(ckpt, checkpoint_path(run_dir, step))
    for old in checkpoint_paths(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def load_branch_checkpoint(trunk_dir: Path, step: int, trunk) -> dict:
    """The trunk's checkpoint at a fork's branch step; ValueError, naming the fix, when it is missing or foreign."""
    path = branch_checkpoint_path(trunk_dir, step)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"the trunk {trunk.run_id} has no checkpoint at step {step} ({path}); it has not finished, "
                         "failed, or its checkpoints were removed: relaunch the sweep to train it") from None
    if ckpt.get("spec_hash") != spec_hash(trunk.to_dict()):
        raise ValueError(f"{path} belongs to another spec of {trunk.run_id}; delete {trunk_dir} or use a new sweep.name")
    return ckpt


def load_latest_checkpoint(run_dir: Path, spec) -> Optional[dict]:
    """The newest readable checkpoint of this spec (a trunk's branch checkpoints count), or None.  A torn or
    corrupt file is skipped."""
    paths = checkpoint_paths(run_dir) + [branch_checkpoint_path(run_dir, s) for s in spec.branch_steps]
    paths = sorted((p for p in paths if p.exists()), key=lambda p: int(p.stem.split("_")[1]))
    for path in reversed(paths):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the previous one
            log.warning("skipping unreadable checkpoint %s: %s", path, e)
            continue
        if ckpt.get("spec_hash") != spec_hash(spec.to_dict()):
            raise ValueError(f"{path} belongs to a different run spec; delete {path.parent} or use a new sweep.name")
        return ckpt
    return None


def full_state_dict(model, sharded: bool) -> dict:
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def full_optim_state(model, opt, sharded: bool) -> dict:
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def load_model(model, state: dict, sharded: bool) -> None:
    """Load a full state dict (what save_checkpoint writes); sharded, each rank keeps its slice."""
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state)


def load_optimizer(opt, model, state, sharded: bool) -> None:
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
    else:
        opt.load_state_dict(state)


class StopSignals:
    """Turn SIGTERM and the preemption signal into a flag checked between steps.

    A job enters it before anything else (``sweep.job.run_job``), so a signal during set-up waits for the first
    step instead of reaching submitit's handler mid-setup.  ``forward()`` hands the signal on once: it calls the
    previous handler (submitit's checkpoint + requeue) with our flag handler still installed, so a second copy of
    the signal (SLURM can deliver two within milliseconds) only sets the flag; submitit's handler, entered twice,
    fails ("A temporary saved file already exists").  A default or missing handler gets the signal re-raised
    after the handlers are restored.  A signal never forwarded (it came after the last step) is forwarded on exit.
    """

    def __init__(self):
        self.hit: Optional[int] = None
        self.forwarded = False
        self.prev: dict = {}
        names = {"SIGTERM", os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "SIGUSR2")}
        full = {n if n.startswith("SIG") else f"SIG{n}" for n in names}  # submitit accepts "USR2" or "SIGUSR2"
        self.signals = [getattr(signal, n) for n in full if hasattr(signal, n)]

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self.prev[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.hit = self.hit or signum

    def restore(self):
        for s, h in self.prev.items():
            signal.signal(s, h)
        self.prev = {}

    def __exit__(self, *exc):
        try:
            if self.hit is not None and not self.forwarded:
                self.forward()  # deferred, not dropped: the previous handler or the default acts now
        finally:
            self.restore()

    def forward(self):
        # a rank stopped because another rank got the signal re-raises SIGTERM on itself
        self.hit = self.hit or signal.SIGTERM
        self.forwarded = True
        prev = self.prev.get(self.hit, signal.SIG_DFL)
        if callable(prev):
            prev(self.hit, None)  # submitit: checkpoint, requeue, sys.exit; bypass (SIGTERM): returns
        elif prev != signal.SIG_IGN:
            self.restore()
            os.kill(os.getpid(), self.hit)
