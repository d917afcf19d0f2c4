"""Run directories and results on disk: atomic writes, status, and the sweep's run table."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional


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


def is_done(run_dir: Path) -> bool:
    """A run counts as finished when it has a result with a terminal training status."""
    r = read_result(run_dir)
    return r is not None and r.get("status") in ("done", "diverged")
