"""``python -m sweep.status outputs/<sweep>``: where a sweep stands.

One line per planned run (done, diverged, failed, running, partial, pending), the FLOPs spent against
the FLOPs planned, and an ETA from the throughput of the finished runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep.plan import RunSpec, _fmt_time
from sweep.rundir import CHECKPOINT_DIR, finished, is_locked, read_metrics, read_plan, read_result


def run_state(run_dir: Path, spec: RunSpec) -> tuple[str, float, float]:
    """(state, FLOPs spent, wall seconds spent) of one planned run."""
    if finished(run_dir, spec, retry_failed=False):  # done, diverged or failed, for this very spec
        res = read_result(run_dir)
        return res.status, float(res.flops or 0.0), float(res.wall_time_s or 0.0)
    spent, wall = 0.0, 0.0
    for rec in read_metrics(run_dir):
        spent, wall = float(rec.get("flops", spent)), float(rec.get("elapsed_s", wall))
    if is_locked(run_dir):
        return "running", spent, wall
    if spent or (run_dir / CHECKPOINT_DIR).exists():
        return "partial", spent, wall
    return "pending", 0.0, 0.0


def status(sweep_dir: Path) -> dict:
    rows = []
    for spec in read_plan(sweep_dir).runs:
        state, spent, wall = run_state(Path(sweep_dir) / spec.run_id, spec)
        rows.append({"run_id": spec.run_id, "state": state, "planned": spec.flops, "spent": spent, "wall": wall})
    planned = sum(r["planned"] for r in rows)
    spent = sum(r["spent"] for r in rows)
    wall = sum(r["wall"] for r in rows)
    rate = spent / wall if wall > 0 else None  # FLOP/s over everything trained so far
    remaining = sum(r["planned"] - r["spent"] for r in rows if r["state"] not in ("done", "diverged", "failed"))
    return {"rows": rows, "planned": planned, "spent": spent, "remaining": remaining,
            "eta_s": remaining / rate if rate else None}


def format_status(st: dict) -> str:
    lines = [f"{'run id':<22} {'state':<9} {'FLOPs spent':>12} {'planned':>10} {'done %':>7}"]
    for r in st["rows"]:
        pct = 100 * r["spent"] / r["planned"] if r["planned"] else 0.0
        lines.append(f"{r['run_id']:<22} {r['state']:<9} {r['spent']:>12.3g} {r['planned']:>10.3g} {pct:>6.1f}%")
    counts = {}
    for r in st["rows"]:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    eta = _fmt_time(st["eta_s"]) if st["eta_s"] is not None else "unknown (nothing trained yet)"
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    lines.append(f"FLOPs: {st['spent']:.3g} of {st['planned']:.3g} spent ({100 * st['spent'] / st['planned']:.1f}%); "
                 f"ETA at the rate so far, one run at a time: {eta}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.status", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path)
    a = p.parse_args(argv)
    try:
        st = status(a.sweep_dir)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_status(st))
    return 0


if __name__ == "__main__":
    sys.exit(main())
