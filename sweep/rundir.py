"""The run directory: the files that the sweeper, the trainer, status, analysis and export share.

Every reader and writer of these files goes through this module, so the layout is defined once:

    <sweep dir>/                  hydra.sweep.dir, outputs/<sweep.name> by default
        sweep.json                the sweep's identity (what it trains), checked on every relaunch
        plan.json                 every planned run (RunSpec.to_dict), the dropped points, the data dir
        multirun.yaml             the composed config, for people
        .sweep.lock               taken while a launch writes the sweep's files
        <run id>/                 one per run (grammar: sweep/runid.py)
            result.json           RunResult, written atomically once the run ends (done, diverged or failed)
            metrics.jsonl         append-only: one line per log step; truncated to the checkpoint on resume
            attempts.jsonl        one line per (re)start of the run (with the SLURM job id under SLURM)
            traceback.txt         the traceback of a run that failed (result.json says where it is)
            weights.pt            the final weights {"model_config", "model"}
            checkpoints/step_XXXXXXXX.pt      rolling checkpoints (the newest trainer.keep_last)
            checkpoints/branch_XXXXXXXX.pt    a trunk's checkpoints where its forks branch off
            .lock                 flock held while the run trains

Writes are atomic (a temp file in the same folder, fsync, rename), so a reader sees the old file or the
new one, never half of one, even after SIGKILL.  ``fault_point`` is the single fault-injection hook of the
chaos tests.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import signal
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Iterator, Optional

SWEEP_FILE = "sweep.json"
PLAN_FILE = "plan.json"
CONFIG_FILE = "multirun.yaml"
SWEEP_LOCK = ".sweep.lock"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
ATTEMPTS_FILE = "attempts.jsonl"
WEIGHTS_FILE = "weights.pt"
CHECKPOINT_DIR = "checkpoints"
RUN_LOCK = ".lock"
TRACEBACK_FILE = "traceback.txt"

TERMINAL = ("done", "diverged", "failed")  # statuses a result.json can have


# ---------------------------------------------------------------------------------------------
# fault injection (tests only)

_FAULTS: dict = {"spec": None, "items": {}, "counts": {}}


class InjectedFault(RuntimeError):
    """The exception ``SCALING_SWEEP_FAULT=<point>!raise`` raises: a run that fails on purpose."""


def fault_point(name: str) -> None:
    """Fault injection for the chaos tests, set by ``SCALING_SWEEP_FAULT``; does nothing when it is unset.

    ``SCALING_SWEEP_FAULT=<point>[@<n>][!<ACTION>],...`` acts the n-th time (default 1) this process passes the
    point ``name``.  ACTION is a signal to send to this process (default SIGKILL), ``raise`` (raise InjectedFault:
    a run that fails), or ``sleep=<s>`` (sleep s seconds at every pass from the n-th on: a slow run).  A point
    ending in ``*`` matches every point that starts with the rest (``step:*``: every step).  The points sit where
    a kill is most dangerous:

        write:<file name>    between writing a temp file and renaming it (write:checkpoint for checkpoints)
        planned              the sweep is planned and its files written, nothing launched yet
        data:rename          the data is built in its temp dir, not yet renamed into place
        setup:<k>            a run set up to start at step k (its checkpoint loaded), before its first step
        step:<k>             right after optimizer step k of a run
    """
    spec = os.environ.get("SCALING_SWEEP_FAULT")
    if not spec:
        return
    if spec != _FAULTS["spec"]:
        items = {}
        for item in spec.split(","):
            item, _, action = item.partition("!")
            point, _, nth = item.partition("@")
            items[point.strip()] = (int(nth or 1), action.strip() or "SIGKILL")
        _FAULTS.update(spec=spec, items=items, counts={})
    point = name if name in _FAULTS["items"] else next(
        (p for p in _FAULTS["items"] if p.endswith("*") and name.startswith(p[:-1])), None)
    if point is None:
        return
    nth, action = _FAULTS["items"][point]
    _FAULTS["counts"][point] = count = _FAULTS["counts"].get(point, 0) + 1
    if action.startswith("sleep="):
        if count >= nth:
            import time

            time.sleep(float(action.partition("=")[2]))
    elif count == nth:
        if action == "raise":
            raise InjectedFault(f"fault injected at {name} (SCALING_SWEEP_FAULT)")
        os.kill(os.getpid(), getattr(signal, action if action.startswith("SIG") else f"SIG{action}"))


# ---------------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", fault_name: Optional[str] = None) -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on success fsync it and rename it over ``path``.

    The one atomic writer: JSON, text, figures and torch checkpoints all go through it.  On any error (a full
    disk, a kill) the temp file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        fault_point(f"write:{fault_name or path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(obj):
    """A JSON-safe copy: numpy/torch scalars become Python numbers, NaN and inf become null, paths strings."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: Path, obj) -> Path:
    with atomic_file(path) as f:
        json.dump(jsonable(obj), f, indent=2)
        f.write("\n")
    return Path(path)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files (``.<name>.<random>.tmp``) that a killed writer left in ``directory``.

    Call it only while holding the lock that excludes other writers of that directory.
    """
    removed = []
    for p in list(Path(directory).glob(".*.tmp")) + list(Path(directory).glob(f"{CHECKPOINT_DIR}/.*.tmp")):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------
# locks


class RunLocked(RuntimeError):
    """Another process holds the run's lock (it is training this run right now)."""


@contextlib.contextmanager
def run_lock(directory: Path, lock_name: str = RUN_LOCK, wait: bool = False) -> Iterator[None]:
    """An exclusive ``flock`` on ``<directory>/<lock_name>``: a run's while it trains, the sweep's while a launch
    writes its files.  Without ``wait`` a held lock raises RunLocked at once; with it, the call blocks.

    The kernel drops the lock when the holder dies, even by SIGKILL, so it never goes stale.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / lock_name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunLocked(f"{directory} is being trained by another process") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def is_locked(run_dir: Path) -> bool:
    """True while some process holds the run's lock."""
    p = Path(run_dir) / RUN_LOCK
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


# ---------------------------------------------------------------------------------------------
# the result record

RESULT_VERSION = 2  # 1: no version, kind or bytes_per_token / tokenizer fields (before 2026-12)


@dataclass
class RunResult:
    """What ``result.json`` holds: written by the trainer when a run ends, read by the sweeper (finished?),
    status, analysis and export.  ``from_dict`` also reads version-1 files."""

    run_id: str
    status: str  # done | diverged | failed
    kind: str = "grid"  # the spec's kind (sweep/runid.py: KINDS)
    error: Optional[str] = None  # why a run diverged or failed
    traceback: Optional[str] = None  # a failed run's traceback file (absolute path; older results have none)
    budget: Optional[float] = None  # the FLOP budget C the run was planned for
    flops: Optional[float] = None  # realised FLOPs, exact under flops_convention; a fork's include its trunk prefix
    flops_spent: Optional[float] = None  # FLOPs of this run's own steps (a fork: after its branch step)
    trunk: Optional[str] = None  # a fork's trunk (run id)
    flops_convention: Optional[str] = None
    params: Optional[int] = None
    params_non_embedding: Optional[int] = None
    tokens: Optional[int] = None
    steps: Optional[int] = None
    epochs: Optional[float] = None  # passes over the training split
    final_train_loss: Optional[float] = None  # smoothed (EMA 0.9) training loss at the last log step
    final_val_loss: Optional[float] = None
    wall_time_s: Optional[float] = None  # all of it: steps, compilation, evaluations, checkpoints
    compile_s: Optional[float] = None  # the first step of every attempt (torch.compile, autotuning, CUDA warm-up)
    tok_per_s: Optional[float] = None  # over the other steps: without compile_s and evaluations
    flops_per_s: Optional[float] = None  # the same, in FLOPs of flops_convention
    mfu: Optional[float] = None  # matmul FLOP/s (models.flops.matmul_flops_per_token) over the device's peak
    device: Optional[str] = None
    world_size: int = 1
    precision: Optional[str] = None
    compiled: Optional[bool] = None
    spec: dict = field(default_factory=dict)  # RunSpec.to_dict()
    data: dict = field(default_factory=dict)  # path, source, tokenizer, train_tokens of the prepared data
    bytes_per_token: Optional[float] = None  # UTF-8 bytes per token of the validation split (bits per byte)
    tokenizer_dir: Optional[str] = None  # absolute path of the tokenizer folder, when there is one
    versions: dict = field(default_factory=dict)  # git sha, torch, transformers, numpy, python
    version: int = RESULT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, run_dir: Optional[Path] = None) -> "RunResult":
        """A record from a result.json dict of any version (unknown keys are ignored; a missing run id is the
        run directory's name, a missing status "unknown")."""
        if not isinstance(d, dict):
            raise ValueError(f"a result record is a JSON object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        d = {"run_id": Path(run_dir).name if run_dir is not None else "", "status": "unknown", **d}
        rec = cls(**{k: v for k, v in d.items() if k in known})
        if "version" not in d:  # version 1: derive what later versions record
            from sweep.plan import spec_kind

            rec.version = 1
            rec.kind = spec_kind(rec.spec if isinstance(rec.spec, dict) else {})
            rec.flops_spent = rec.flops
            if run_dir is not None and isinstance(rec.data, dict):
                rec.bytes_per_token, rec.tokenizer_dir = _legacy_data_info(rec.data, Path(run_dir))
        return rec


def _legacy_data_info(data: dict, run_dir: Path) -> tuple[Optional[float], Optional[str]]:
    """(bytes per token, tokenizer folder) of a version-1 result, which only names its data dir as the trainer
    saw it (usually relative to the repository root) and its tokenizer spec: look for them as given, then
    relative to the run dir, the sweep dir and its parents."""
    bpt, tok = None, None
    path = data.get("path")
    if isinstance(path, str) and path:
        p = Path(path)
        bases = [p] if p.is_absolute() else [p] + [d / p for d in (run_dir, *run_dir.resolve().parents)]
        manifest = next((b / "manifest.json" for b in bases if (b / "manifest.json").is_file()), None)
        if manifest is not None:
            try:
                value = json.loads(manifest.read_text()).get("bytes_per_token")
                bpt = float(value) if value else None
            except (OSError, ValueError, TypeError, AttributeError):
                pass
        tok = next((b / "tokenizer" for b in bases if _is_tokenizer_dir(b / "tokenizer")), None)
    spec = data.get("tokenizer")
    if tok is None and isinstance(spec, str) and spec:  # a local tokenizer folder given as data.tokenizer
        p = Path(spec)
        tok = next((b for b in ([p] if p.is_absolute() else [p, run_dir / p]) if _is_tokenizer_dir(b)), None)
    return bpt, str(tok.resolve()) if tok is not None else None


def _is_tokenizer_dir(p: Path) -> bool:
    return (p / "tokenizer_config.json").is_file() or (p / "tokenizer.json").is_file()


def read_result(run_dir: Path, strict: bool = False) -> Optional[RunResult]:
    """The run's result, or None if it has none (not started, running, killed).  A file that cannot be read
    (a copy gone wrong: the trainer writes atomically) is None too, or ValueError with ``strict``."""
    p = Path(run_dir) / RESULT_FILE
    try:
        return RunResult.from_dict(json.loads(p.read_text()), Path(run_dir))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        if strict:
            raise ValueError(f"{p} cannot be read: {e}") from None
        return None


def write_result(run_dir: Path, result: RunResult) -> None:
    write_json_atomic(Path(run_dir) / RESULT_FILE, result.to_dict())


def error_line(exc: BaseException) -> str:
    """An exception as one line: its type, then its message with every run of whitespace made one space."""
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())


def write_failure(run_dir: Path, spec, exc: BaseException) -> RunResult:
    """Record that ``spec``'s run raised ``exc``: its traceback in traceback.txt, then result.json with status
    ``failed``, the error and the traceback's path (both atomic; the traceback first, so a result never points at
    a missing file).  A relaunch skips the run unless ``launch.retry_failed`` is set."""
    import traceback

    run_dir = Path(run_dir)
    tb = run_dir / TRACEBACK_FILE
    with atomic_file(tb) as f:
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    result = RunResult(run_id=spec.run_id, status="failed", kind=spec.kind, budget=spec.budget, trunk=spec.trunk,
                       params=spec.params, params_non_embedding=spec.params_non_embedding,
                       error=error_line(exc), traceback=str(tb.resolve()),
                       spec=spec.to_dict())
    write_result(run_dir, result)
    return result


def finished(run_dir: Path, spec, retry_failed: bool = False) -> bool:
    """Whether a run needs no training: a terminal result for this very spec (a sweep.plan.RunSpec).

    ``done`` and ``diverged`` are terminal; ``failed`` counts as terminal unless retry_failed is set.  Specs are
    compared as RunSpecs, so a result written before a config key with a default was added still counts.
    """
    from sweep.plan import RunSpec

    r = read_result(run_dir)
    if r is None or not r.spec:
        return False
    try:
        same = RunSpec.from_dict(r.spec) == spec
    except (TypeError, ValueError, KeyError):
        same = False
    return same and (r.status in ("done", "diverged") or (r.status == "failed" and not retry_failed))


def spec_hash(spec_dict: dict) -> str:
    """Identity of a planned run: a hash of its full spec (shape, recipe, budget, steps); checkpoints carry it."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# metrics and attempts


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of metrics.jsonl in order; a torn last line (a kill mid-write) and non-records are skipped."""
    p = Path(run_dir) / METRICS_FILE
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the records up to ``step`` (the checkpoint a run resumes from); the later ones are logged again."""
    p = Path(run_dir) / METRICS_FILE
    if not p.exists():
        return
    keep = [r for r in read_metrics(run_dir) if isinstance(r.get("step"), int) and r["step"] <= step]
    with atomic_file(p) as f:
        f.write("".join(json.dumps(r) + "\n" for r in keep))


def last_val_loss(run_dir: Path) -> Optional[float]:
    return next((r["val_loss"] for r in reversed(read_metrics(run_dir)) if "val_loss" in r), None)


def append_attempt(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / ATTEMPTS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_attempts(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / ATTEMPTS_FILE
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt"))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def branch_checkpoint_path(run_dir: Path, step: int) -> Path:
    """A trunk's checkpoint at a fork's branch step (kept until its forks are done)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"branch_{step:08d}.pt"


# ---------------------------------------------------------------------------------------------
# the plan and the sweep's identity


@dataclass
class Plan:
    runs: list  # [RunSpec]
    dropped: list  # [{budget, target_params, reason, run_id}]
    data: str  # the prepared data directory

    def spec(self, run_id: str):
        for s in self.runs:
            if s.run_id == run_id:
                return s
        raise ValueError(f"run_id={run_id!r} is not in the plan; valid ids: {', '.join(s.run_id for s in self.runs)}")


def write_plan(sweep_dir: Path, specs: list, dropped: list, data_path) -> None:
    write_json_atomic(Path(sweep_dir) / PLAN_FILE, {
        "runs": [s.to_dict() for s in specs],
        "dropped": [d.__dict__ if not isinstance(d, dict) else d for d in dropped],
        "data": str(data_path),
    })


def read_plan(sweep_dir: Path) -> Plan:
    """The sweep's plan.json; FileNotFoundError naming the fix when there is none."""
    from sweep.plan import RunSpec

    p = Path(sweep_dir) / PLAN_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: is {sweep_dir} a sweep directory? (it is written when a sweep launches)")
    obj = json.loads(p.read_text())
    return Plan([RunSpec.from_dict(r) for r in obj["runs"]], obj.get("dropped", []), obj.get("data", ""))


def read_plan_dicts(sweep_dir: Path) -> list[dict]:
    """The plan's runs as written (for readers that compare with other on-disk specs)."""
    p = Path(sweep_dir) / PLAN_FILE
    return json.loads(p.read_text())["runs"] if p.exists() else []


def identity_changes(old: dict, new: dict, defaults: dict) -> list[str]:
    """The identity keys on which a stored identity ``old`` and the current ``new`` differ.

    ``defaults`` holds every identity key of the current config with its schema default: a key that ``old``
    lacks (added after that sweep was made) counts as its default, so new keys with defaults change nothing;
    a key that only ``old`` has is not part of today's identity (a run-only key older versions stored) and
    is ignored."""
    return [k for k in sorted(defaults) if old.get(k, defaults[k]) != new.get(k, defaults[k])]


def check_identity(sweep_dir: Path, identity: dict, defaults: dict, allow_change: bool) -> None:
    """ValueError, naming the fix, if ``sweep_dir`` holds a sweep of another config (unless allowed)."""
    p = Path(sweep_dir) / SWEEP_FILE
    if not p.exists() or allow_change:
        return
    changed = identity_changes(json.loads(p.read_text())["config"], identity, defaults)
    if changed:
        listed = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise ValueError(
            f"{sweep_dir} holds a sweep with a different config ({listed} changed); "
            "use a new sweep.name, or pass launch.allow_config_change=true to extend this one")


def write_identity(sweep_dir: Path, identity: dict) -> None:
    write_json_atomic(Path(sweep_dir) / SWEEP_FILE, {"config": identity})


# ---------------------------------------------------------------------------------------------
# the composed config, read back (analysis needs the ladder that shaped the runs)


def read_config_section(sweep_dir: Path, name: str) -> Optional[dict]:
    """One section of the sweep's ``multirun.yaml`` (e.g. ``model``, the LadderConfig) as a plain dict, or None when
    the file or the section is missing or unreadable (a sweep copied without it, a results file)."""
    p = Path(sweep_dir) / CONFIG_FILE
    if not p.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.load(p).get(name)
        section = OmegaConf.to_container(node, resolve=True) if node is not None else None
    except Exception:  # noqa: BLE001 - any parse or interpolation error: the section is unavailable
        return None
    return section if isinstance(section, dict) else None
