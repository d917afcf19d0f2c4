"""Load run results into flat rows for fitting.

Three sources are accepted:
  * a sweep dir: one `<run_id>/result.json` per run, as the trainer writes them;
  * a CSV of external results (e.g. Epoch AI's extraction of Chinchilla Figure 4);
  * a JSON list of records (e.g. the CS336 isoFLOP file `{parameters, compute_budget, final_loss}`).

Every row is normalised to {run_id, status, budget, params, tokens, loss}.  External files carry
no status, so their rows are "done".  When a file has no token count, D = C/(6N) (Kaplan 2020's
C ≈ 6ND per training token), which is also how Chinchilla's figures relate the three.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

# Accepted column names, matched case-insensitively, first match wins.
ALIASES = {
    "budget": ("budget", "compute_budget", "training flop", "c"),
    "params": ("params", "parameters", "model size", "n"),
    "loss": ("final_val_loss", "final_loss", "loss"),
    "tokens": ("tokens", "d"),
    "run_id": ("run_id",),
    "status": ("status",),
}
REQUIRED = ("budget", "params", "loss")
FIX = "pass a sweep dir (with <run>/result.json files), a results CSV or a JSON list of records"


class NoResultsError(ValueError):
    """There is nothing to analyse at all (missing path, no result.json, empty file).

    Distinct from a plain ValueError (results exist but cannot be fitted) so that the Hydra
    callback can treat a dry run as normal and a failed fit as a warning.
    """


def _float(v):
    """float(v), or None for a missing/blank/non-numeric value."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _positive(v) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def _row(run_id, status, budget, params, tokens, loss) -> dict:
    budget, params, tokens, loss = (_float(v) for v in (budget, params, tokens, loss))
    if tokens is None and _positive(budget) and _positive(params):
        tokens = budget / (6.0 * params)  # D = C/(6N) when the source has no token count
    return {"run_id": str(run_id), "status": str(status), "budget": budget,
            "params": params, "tokens": tokens, "loss": loss}


def skip_reason(row: dict) -> str | None:
    """Why a row cannot be fitted, or None if it can."""
    if row["status"] != "done":
        return f"status {row['status']}"
    if row["loss"] is None or not math.isfinite(row["loss"]):
        return "no finite final loss"
    for key in ("budget", "params", "tokens"):
        if not _positive(row[key]):
            return f"{key} missing or not positive"
    return None


def split_usable(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows to fit, skipped rows); each skipped row gets a "skip_reason"."""
    usable, skipped = [], []
    for row in rows:
        why = skip_reason(row)
        if why is None:
            usable.append(row)
        else:
            skipped.append({**row, "skip_reason": why})
    return usable, skipped


def _from_sweep_dir(path: Path) -> list[dict]:
    rows = []
    for f in path.glob("*/result.json"):
        try:
            rec = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            # The trainer writes atomically, so this is a copy gone wrong; report it as skipped.
            rows.append(_row(f.parent.name, "unreadable", None, None, None, None))
            continue
        rows.append(_row(rec.get("run_id") or f.parent.name, rec.get("status", "unknown"),
                         rec.get("budget"), rec.get("params"), rec.get("tokens"),
                         rec.get("final_val_loss")))
    if not rows:
        raise NoResultsError(f"no */result.json under {path}; run the sweep first or {FIX}")
    return sorted(rows, key=lambda r: r["run_id"])


def _from_records(records: list[dict], path: Path) -> list[dict]:
    """Map aliased keys of external records (CSV rows or JSON objects) to rows."""
    if not records:
        raise NoResultsError(f"{path} has no rows; {FIX}")
    keys = {k.strip().lower(): k for k in records[0]}
    col = {}
    for field, names in ALIASES.items():
        col[field] = next((keys[n] for n in names if n in keys), None)
    missing = [f for f in REQUIRED if col[f] is None]
    if missing:
        wanted = "; ".join(f"{f}: one of {'|'.join(ALIASES[f])}" for f in missing)
        raise ValueError(f"{path}: no column for {wanted}; rename the column(s) to an accepted name")
    rows = []
    for i, rec in enumerate(records):
        get = lambda f: rec.get(col[f]) if col[f] is not None else None  # noqa: E731
        rows.append(_row(get("run_id") or f"row{i}", get("status") or "done",
                         get("budget"), get("params"), get("tokens"), get("loss")))
    return rows


def load_results(path) -> list[dict]:
    """Rows {run_id, status, budget, params, tokens, loss} from a sweep dir, CSV or JSON file.

    All rows are returned, skipped ones included (see split_usable); a source with no usable
    row at all raises ValueError, and one with no rows raises NoResultsError (a ValueError).
    """
    if path is None or not str(path).strip():
        raise NoResultsError(f"no results path given; {FIX}")
    path = Path(path)
    if not path.exists():
        raise NoResultsError(f"{path} does not exist; {FIX}")
    if path.is_dir():
        rows = _from_sweep_dir(path)
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            rows = _from_records(list(csv.DictReader(fh)), path)
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); {FIX}") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path} is not a JSON list of records; {FIX}")
        rows = _from_records(data, path)
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; {FIX}")

    if not split_usable(rows)[0]:
        counts = ", ".join(f"{s}={k}" for s, k in sorted(Counter(r["status"] for r in rows).items()))
        raise ValueError(f"{path}: none of the {len(rows)} runs is usable ({counts}); "
                         f"only status 'done' runs with a finite final loss are fitted")
    return rows
