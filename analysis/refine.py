"""``launch.refine``: re-centre each budget's grid on the optimum fitted from a first pass.

Orchestration that needs both the sweep's results and the fits, so it lives here and not in ``sweep``
(imports run models <- sweep <- analysis <- hydra_plugins); the isoFLOP sweeper calls it.
"""
from __future__ import annotations

from pathlib import Path

from analysis.approach2 import fit_approach2
from analysis.results import APPROACH2_KINDS, load_results, split_usable


def refine_centres(sweep_dir: Path) -> dict:
    """Each budget's fitted optimum N from the finished runs of a first pass (Approach 2 vertices)."""
    usable, _ = split_usable(load_results(sweep_dir))
    usable = [r for r in usable if r["kind"] in APPROACH2_KINDS]  # Approach 1's extra horizons are not grid points
    try:
        fit = fit_approach2([r["budget"] for r in usable], [r["params"] for r in usable],
                            [r["tokens"] for r in usable], [r["loss"] for r in usable])
    except ValueError as e:
        raise ValueError(f"launch.refine needs a finished first pass with isoFLOP minima: {e}") from None
    return dict(zip(fit["budgets"], fit["N_opt"]))
