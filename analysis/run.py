"""analyze(): load results, fit Approach 2, write fit.json and figures/isoflop.png."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from analysis.approach2 import fit_approach2
from analysis.results import load_results, split_usable

FIT_FILE = "fit.json"
FIGURE_FILE = "figures/isoflop.png"


def write_json_atomic(obj, path) -> Path:
    """json.dump to a temp file beside `path`, then os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_out_dir(path) -> Path:
    """A sweep dir holds its own analysis; a results file gets it beside the file."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def analyze(path, out=None) -> dict:
    """Fit Approach 2 to the results at `path` (sweep dir, CSV or JSON) and write
    `<out>/fit.json` and `<out>/figures/isoflop.png` (out defaults to default_out_dir(path)).

    Returns what was written to fit.json.  Any problem with the input raises ValueError before
    anything is written.
    """
    rows = load_results(path)
    usable, skipped = split_usable(rows)
    fit = fit_approach2(
        [r["budget"] for r in usable],
        [r["params"] for r in usable],
        [r["tokens"] for r in usable],
        [r["loss"] for r in usable],
    )
    result = {
        "approach2": fit,
        "n_runs": len(usable),
        "n_skipped": len(skipped),
        "skipped": [{"run_id": r["run_id"], "reason": r["skip_reason"]} for r in skipped],
        "source": str(path),
    }

    from analysis.plots import plot_isoflop  # imported here: it switches matplotlib to Agg

    out = Path(out) if out is not None else default_out_dir(path)
    plot_isoflop(rows, fit, out / FIGURE_FILE)
    write_json_atomic(result, out / FIT_FILE)  # last: fit.json present means the figure is too
    return result


def format_summary(result: dict) -> str:
    """A few lines for humans (ASCII, any console): exponents, then one line per budget."""
    fit = result["approach2"]
    lines = [
        f"Approach 2 on {result['n_runs']} runs ({result['n_skipped']} skipped) from {result['source']}",
        f"  N_opt ~ C^{fit['a']:.3f}   (log10 N_opt = {fit['a']:.4f}*log10 C {fit['a_intercept']:+.4f})",
        f"  D_opt ~ C^{fit['b']:.3f}   (log10 D_opt = {fit['b']:.4f}*log10 C {fit['b_intercept']:+.4f})",
        f"  {'budget':>9} {'N_opt':>10} {'D_opt':>10} {'L_opt':>8} {'runs':>5}  in grid",
    ]
    for c, n, d, l, p in zip(fit["budgets"], fit["N_opt"], fit["D_opt"], fit["L_opt"], fit["parabolas"]):
        lines.append(f"  {c:9.3g} {n:10.3g} {d:10.3g} {l:8.4f} {p['n_points']:5d}  "
                     f"{'yes' if p['inside_grid'] else 'NO (extrapolated)'}")
    for d in fit["dropped"]:
        lines.append(f"  dropped {d['budget']:.3g}: {d['reason']}")
    return "\n".join(lines)
