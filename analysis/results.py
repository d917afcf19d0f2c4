"""Load run results into flat rows (and training curves) for fitting.

Three sources are accepted:
  * a sweep dir: one `<run_id>/result.json` per run as the trainer writes them, plus its
    `<run_id>/metrics.jsonl` training curve (Approach 1 needs those);
  * a CSV of external results (e.g. Epoch AI's extraction of Chinchilla Figure 4);
  * a JSON list of records (e.g. the CS336 isoFLOP file `{parameters, compute_budget, final_loss}`).

Every row is normalised to

    {run_id, status, budget, flops, params, params_non_embedding, tokens, tokens_derived,
     flops_derived, loss, bytes_per_token, kind}

`kind` is the run's kind (sweep/runid.py): "grid" for a point of an isoFLOP profile, "horizon" for a
sweep's extra token horizon (Approach 1), and so on.  Each approach selects the runs it uses by an
allowlist of kinds (APPROACH2_KINDS).  Files without a kind column are grid points; "isoflop" is read as
"grid" (the name before spec version 2).

External files carry no status, so their rows are "done".  `budget` (the isoFLOP profile a run
belongs to) is optional: without it Approach 2 cannot group runs.  `flops` (the run's compute) is
the budget when only a budget is given.  When a file has no token count, D = flops/(6N) (Kaplan
2020's C ≈ 6ND per training token, which is also how Chinchilla's figures relate the three) and
`tokens_derived` is True so the report can say so; with tokens but no FLOPs, flops = 6ND
(`flops_derived`).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep.plan import spec_kind
from sweep.rundir import RESULT_FILE, read_config_section, read_metrics, read_result

# The runs each approach fits, by kind (sweep/runid.py).  Approach 2's isoFLOP profiles are grid points and the
# cooldown forks that stand for them; Approach 3 every finished model (horizons too); Approach 1 every training
# curve, a forks sweep's trunks included (with their forks' cooldown ends).  lr_scan and validation runs: none.
APPROACH1_KINDS = ("grid", "horizon", "fork", "trunk")
APPROACH2_KINDS = ("grid", "fork")
APPROACH3_KINDS = ("grid", "horizon", "fork")

# Accepted column names, matched case-insensitively, first match wins.
ALIASES = {
    "budget": ("budget", "compute_budget", "c"),
    "flops": ("flops", "training flop", "training_flops", "compute"),
    "params": ("params", "parameters", "model size", "n"),
    "params_non_embedding": ("params_non_embedding", "non_embedding_params"),
    "loss": ("final_val_loss", "final_loss", "loss"),
    "tokens": ("tokens", "d"),
    "bytes_per_token": ("bytes_per_token",),
    "run_id": ("run_id",),
    "status": ("status",),
    "kind": ("kind",),  # grid (a point of an isoFLOP profile) | horizon (an extra token horizon for Approach 1) | ...
    "steps": ("steps",),
    "flops_per_token": ("flops_per_token",),
    "flops_convention": ("flops_convention",),
    "dataset": ("dataset",),  # a file of several datasets (e.g. analysis's own results.csv): name=path picks one
}
FIX = "pass a sweep dir (with <run>/result.json files), a results CSV or a JSON list of records"
CSV_COLUMNS = "params, loss, and tokens or flops, plus an optional budget"


class NoResultsError(ValueError):
    """There is nothing to analyse at all (missing path, no result.json, empty file).

    Distinct from a plain ValueError (results exist but cannot be fitted) so that the Hydra
    callback can treat a dry run as normal and a failed fit as a warning.
    """


def _float(v):
    """float(v), or None for a missing/blank/non-numeric value."""
    if v is None or isinstance(v, bool) or (isinstance(v, str) and not v.strip()):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _positive(v) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def make_row(run_id, status, *, budget=None, flops=None, params=None, params_non_embedding=None,
             tokens=None, loss=None, bytes_per_token=None, kind="grid", steps=None, flops_per_token=None,
             flops_convention=None, model=None) -> dict:
    budget, flops, params, pne, tokens, loss, bpt, steps, fpt = (
        _float(v) for v in (budget, flops, params, params_non_embedding, tokens, loss, bytes_per_token, steps,
                            flops_per_token))
    if flops is None:
        flops = budget  # a table of isoFLOP runs gives the budget only
    derived = flops_derived = False
    if tokens is None and _positive(flops) and _positive(params):
        tokens, derived = flops / (6.0 * params), True  # D = C/(6N) when the source has no token count
    elif flops is None and _positive(tokens) and _positive(params):
        flops, flops_derived = 6.0 * params * tokens, True  # C = 6ND when it has tokens but no FLOPs
    return {"run_id": str(run_id), "status": str(status), "budget": budget, "flops": flops,
            "params": params, "params_non_embedding": pne, "tokens": tokens, "tokens_derived": derived,
            "flops_derived": flops_derived, "loss": loss, "bytes_per_token": bpt if _positive(bpt) else None,
            "kind": spec_kind({"kind": kind}), "steps": steps,
            # training FLOPs per token as the run counted them (analysis.compute builds the sweep's axis from it)
            "flops_per_token": fpt if _positive(fpt) else None,
            "flops_convention": str(flops_convention) if flops_convention else None,
            "model": model if isinstance(model, dict) else None}


def skip_reason(row: dict) -> str | None:
    """Why a row cannot be fitted, or None if it can."""
    if row["status"] != "done":
        return f"status {row['status']}"
    if row["loss"] is None or not math.isfinite(row["loss"]) or row["loss"] <= 0:
        return "no finite positive final loss"
    for key in ("flops", "params", "tokens"):
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


# ---------------------------------------------------------------------------------------------
# sources


def _from_sweep_dir(path: Path) -> list[dict]:
    rows = []
    for f in path.glob(f"*/{RESULT_FILE}"):
        try:
            rec = read_result(f.parent, strict=True)
        except ValueError:
            # The trainer writes atomically, so this is a copy gone wrong; report it as skipped.
            rows.append(make_row(f.parent.name, "unreadable"))
            continue
        spec = rec.spec if isinstance(rec.spec, dict) else {}
        recipe = spec.get("recipe") if isinstance(spec.get("recipe"), dict) else {}
        rows.append(make_row(
            rec.run_id or f.parent.name, rec.status, budget=rec.budget, flops=rec.flops, params=rec.params,
            params_non_embedding=rec.params_non_embedding, tokens=rec.tokens, loss=rec.final_val_loss,
            bytes_per_token=rec.bytes_per_token, kind=rec.kind, steps=rec.steps,
            flops_per_token=spec.get("flops_per_token"),
            flops_convention=rec.flops_convention or recipe.get("flops_convention"), model=spec.get("model")))
    if not rows:
        raise NoResultsError(f"no */{RESULT_FILE} under {path}; run the sweep first or {FIX}")
    return sorted(rows, key=lambda r: r["run_id"])


def _from_records(records: list[dict], path: Path) -> list[dict]:
    """Map aliased keys of external records (CSV rows or JSON objects) to rows."""
    if not records:
        raise NoResultsError(f"{path} has no rows; {FIX}")
    keys = {str(k).strip().lower(): k for k in records[0]}
    col = {f: next((keys[n] for n in names if n in keys), None) for f, names in ALIASES.items()}
    missing = [f for f in ("params", "loss") if col[f] is None]
    if col["flops"] is None and col["budget"] is None and col["tokens"] is None:
        missing.append("flops")
    if missing:
        wanted = "; ".join(f"{f}: one of {'|'.join(ALIASES[f])}" for f in missing)
        raise ValueError(f"{path}: no column for {wanted}; rename the column(s) "
                         f"(needed: {CSV_COLUMNS})")
    rows = []
    for i, rec in enumerate(records):
        get = lambda f: rec.get(col[f]) if col[f] is not None else None  # noqa: E731
        rows.append(make_row(get("run_id") or f"row{i}", get("status") or "done",
                             **{f: get(f) for f in ("budget", "flops", "params", "params_non_embedding",
                                                    "tokens", "loss", "bytes_per_token", "steps",
                                                    "flops_per_token", "flops_convention")},
                             kind=get("kind")))
        if col["dataset"] is not None:
            rows[-1]["dataset"] = str(get("dataset") or "")
    return rows


def load_results(path) -> list[dict]:
    """Rows (see the module docstring) from a sweep dir, CSV or JSON file.

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
        try:
            with open(path, newline="") as fh:
                rows = _from_records(list(csv.DictReader(fh)), path)
        except (UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"{path} is not a readable CSV ({e}); {FIX}") from None
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON ({e}); {FIX}") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path} is not a JSON list of records; {FIX}")
        rows = _from_records(data, path)
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; {FIX}")

    if not split_usable(rows)[0]:
        counts = ", ".join(f"{s}={k}" for s, k in sorted(Counter(r["status"] for r in rows).items()))
        raise ValueError(f"{path}: none of the {len(rows)} runs is usable ({counts}); "
                         f"only status 'done' runs with a finite final loss, positive params and "
                         f"flops are fitted")
    return rows


# ---------------------------------------------------------------------------------------------
# training curves


@dataclass
class Curve:
    """One run's training curve from metrics.jsonl: cumulative FLOPs, tokens and train loss at
    each logged step, ascending in FLOPs."""

    run_id: str
    flops: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray


def read_curve(run_dir: Path, run_id: str, final_tokens=None, final_flops=None) -> Curve | None:
    """The run's metrics.jsonl as a curve.  Records without a finite positive flops/loss are skipped;
    tokens, when missing, scale with FLOPs from the run's final (flops, tokens).  None when fewer than 3
    points remain."""
    pts = []
    for rec in read_metrics(run_dir):
        c, l, t = _float(rec.get("flops")), _float(rec.get("loss")), _float(rec.get("tokens"))
        if _positive(c) and _positive(l):
            pts.append((c, t, l))
    if len(pts) < 3:
        return None
    pts.sort(key=lambda p: p[0])
    c = np.array([p[0] for p in pts])
    l = np.array([p[2] for p in pts])
    t = np.array([np.nan if p[1] is None else p[1] for p in pts])
    if np.isnan(t).any():
        if not (_positive(final_tokens) and _positive(final_flops)):
            return None
        t = np.where(np.isnan(t), c * final_tokens / final_flops, t)
    keep = np.concatenate([[True], np.diff(c) > 0])  # one point per FLOP count
    return Curve(run_id, c[keep], t[keep], l[keep])


def load_curves(sweep_dir, rows: list[dict]) -> dict[str, Curve]:
    """Curves of the usable rows of a sweep dir, keyed by run_id (runs without one are absent)."""
    sweep_dir = Path(sweep_dir)
    curves = {}
    for row in split_usable(rows)[0]:
        curve = read_curve(sweep_dir / row["run_id"], row["run_id"], row["tokens"], row["flops"])
        if curve is not None:
            curves[row["run_id"]] = curve
    return curves


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass
class Dataset:
    """One input: its runs, their curves and what the loader had to assume."""

    name: str
    source: str
    rows: list[dict]
    curves: dict[str, Curve] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    bytes_per_token: float | None = None
    ladder: dict | None = None  # a sweep dir's `model` section (models.ladder.LadderConfig), from multirun.yaml

    @property
    def usable(self) -> list[dict]:
        return split_usable(self.rows)[0]

    @property
    def skipped(self) -> list[dict]:
        return split_usable(self.rows)[1]


def parse_input(spec: str) -> tuple[str, Path]:
    """'name=path' or 'path' → (name, path); the default name is the sweep dir's or file's name."""
    spec = str(spec)
    name, sep, rest = spec.partition("=")
    if sep and name and "/" not in name and not Path(spec).exists():
        path = Path(rest)
    else:
        name, path = "", Path(spec)
    if not name:
        name = path.resolve().name if path.is_dir() else path.stem
    return name, path


def _one_dataset(rows: list[dict], path: Path, name: str) -> list[dict]:
    """A file whose `dataset` column holds several datasets (analysis's own results.csv) gives the rows of the one
    named like the input (name=path); ValueError naming the choices otherwise."""
    labels = sorted({r.get("dataset") for r in rows if r.get("dataset")})
    if len(labels) <= 1:
        return rows
    if name not in labels:
        raise ValueError(f"{path} holds the datasets {', '.join(labels)} (its dataset column); "
                         f"name the one to fit, e.g. {labels[0]}={path}")
    return [r for r in rows if r.get("dataset") == name]


def load_dataset(path, name: str | None = None) -> Dataset:
    """Rows, curves (sweep dirs only), notes and bytes per token of one input."""
    rows = load_results(path)
    path = Path(path)
    name = name or (path.resolve().name if path.is_dir() else path.stem)
    rows = _one_dataset(rows, path, name)
    ds = Dataset(name=name, source=str(path), rows=rows)
    usable = ds.usable
    if path.is_dir():
        ds.curves = load_curves(path, rows)
        ds.ladder = read_config_section(path, "model")
    n_derived = sum(r["tokens_derived"] for r in usable)
    if n_derived:
        ds.notes.append(f"{n_derived} of {len(usable)} runs have no token count: D = flops/(6·params) "
                        f"(Kaplan 2020's C ≈ 6ND)")
    n_derived = sum(r["flops_derived"] for r in usable)
    if n_derived:
        ds.notes.append(f"{n_derived} of {len(usable)} runs have no FLOP count: flops = 6·params·tokens")
    if not path.is_dir() and all(r["budget"] is not None and r["flops"] == r["budget"] for r in usable):
        ds.notes.append("no separate FLOP count: each run's compute is its budget")
    bpts = [r["bytes_per_token"] for r in usable]
    if all(b is not None for b in bpts) and bpts and np.ptp(bpts) <= 1e-9 * max(bpts):
        ds.bytes_per_token = float(bpts[0])
    elif any(b is not None for b in bpts):
        ds.notes.append("runs disagree on bytes per token (or some lack it): no bits-per-byte summary")
    else:
        ds.notes.append("no bytes_per_token in the data manifest: losses in nats per token only")
    return ds
