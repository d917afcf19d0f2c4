"""Run directories and results on disk: atomic writes, per-run OS locks, status, the sweep's identity."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Iterator, Optional


_FAULT_COUNTS: dict = {}


def fault_point(name: str) -> None:
    """Fault injection for the chaos tests: ``SCALING_SWEEP_KILL_AT=<name>:<n>`` SIGKILLs this process the
    n-th time it passes the point ``name`` (several points: comma-separated).  Does nothing otherwise.

    The points sit inside the short windows where a kill is most dangerous (between writing a temp file
    and renaming it, between planning and launching), which random timing rarely hits.
    """
    spec = os.environ.get("SCALING_SWEEP_KILL_AT")
    if not spec:
        return
    for item in spec.split(","):
        point, _, nth = item.rpartition(":")
        if point == name:
            _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
            if _FAULT_COUNTS[name] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp file in the same directory, fsync, then rename over ``path``.

    A reader sees either the old file or the new one, never a torn write, even if the job is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_jsonable)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        fault_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_result(run_dir: Path) -> Optional[dict]:
    """The run's result.json, or None if it has none (not started, running, or killed)."""
    p = Path(run_dir) / "result.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())


def spec_hash(spec_dict: dict) -> str:
    """Identity of a planned run: a hash of its full spec (shape, recipe, budget, steps)."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()[:16]


def finished(run_dir: Path, spec_dict: dict, retry_failed: bool = False) -> bool:
    """Whether a run needs no training: a terminal result for this very spec.

    ``done`` and ``diverged`` are terminal; ``failed`` counts as terminal unless retry_failed is set.
    A result written for another spec does not count (the sweeper refuses such sweeps earlier).
    """
    r = read_result(run_dir)
    if r is None or r.get("spec") != spec_dict:
        return False
    return r.get("status") in ("done", "diverged") or (r.get("status") == "failed" and not retry_failed)


class RunLocked(RuntimeError):
    """Another process holds the run's lock (it is training this run right now)."""


@contextlib.contextmanager
def run_lock(run_dir: Path, lock_name: str = ".lock", wait: bool = False) -> Iterator[None]:
    """An exclusive ``flock`` on ``<run_dir>/<lock_name>`` for as long as the run trains.

    Without ``wait`` a held lock raises RunLocked at once; with it, the call blocks until the lock is free.

    The kernel drops the lock when the holder dies, even by SIGKILL, so it never goes stale.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / lock_name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunLocked(f"{run_dir} is being trained by another process") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files (``.<name>.<random>.tmp``) that a killed writer left in ``directory``.

    Call it only while holding the lock that excludes other writers of that directory.
    """
    removed = []
    for p in list(Path(directory).glob(".*.tmp")) + list(Path(directory).glob("checkpoints/.*.tmp")):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def is_locked(run_dir: Path) -> bool:
    """True while some process holds the run's lock."""
    p = Path(run_dir) / ".lock"
    if not p.exists():
        return False
    fd = os.open(p, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
