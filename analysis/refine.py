"""``launch.refine``: re-centre each budget's grid on the optimum fitted from a first pass.

Orchestration that needs both the sweep's results and the fits, so it lives here and not in ``sweep``
(imports run models <- sweep <- analysis <- hydra_plugins); the isoFLOP sweeper calls it.

A vertex can lie far off the grid (an extrapolated parabola: on the CPU prose sweep the 3e11 vertex was at
N = 228, below the smallest ladder shape, so every re-centred size was dropped).  So each centre is clamped:
  * it moves at most one grid half-width (in log N) from the centre of the budget's first-pass grid, so a pass
    never jumps further than the grid it measured could see; a vertex further out is approached pass by pass;
  * the re-centred grid [centre / 10^h, centre * 10^h] (h: the grid's half-width in decades) lies on the ladder,
    i.e. centre is within [N_min * 10^h, N_max / 10^h] (the ladder's middle when the ladder is narrower).
"""
from __future__ import annotations

import math
from pathlib import Path

from analysis.approach2 import fit_approach2, group_budgets
from analysis.results import APPROACH2_KINDS, load_results, split_usable
from models.flops import param_counts
from models.ladder import ladder
from sweep.rundir import read_plan_dicts


def ladder_range(sweep_dir: Path, ladder_cfg) -> tuple[float, float] | None:
    """(smallest, largest) total parameters of the sweep's ladder at its runs' vocab and sequence length
    (from plan.json), or None when the sweep has no plan yet."""
    runs = read_plan_dicts(sweep_dir)
    if not runs:
        return None
    model = runs[0]["model"]
    shapes = ladder(model["vocab_size"], model["seq_len"], ladder_cfg)
    return float(param_counts(shapes[0])["params"]), float(param_counts(shapes[-1])["params"])


def clamp_centre(vertex: float, previous: float, half_width: float | None,
                 ladder: tuple[float, float] | None) -> float:
    """The re-centred grid's centre for a fitted vertex (see the module docstring); half_width in decades."""
    x0 = x = math.log10(vertex)
    if half_width is not None:
        p = math.log10(previous)
        x = min(max(x, p - half_width), p + half_width)
    if ladder is not None:
        lo, hi = (math.log10(v) for v in ladder)
        h = half_width or 0.0
        x = (lo + hi) / 2 if hi - lo < 2 * h else min(max(x, lo + h), hi - h)
    return vertex if x == x0 else 10.0 ** x


def refine_centres(sweep_dir: Path, ladder_range: tuple[float, float] | None = None,
                   half_width: float | None = None) -> dict:
    """Each budget's grid centre for the next pass: its Approach 2 vertex from the finished runs, clamped to the
    ladder and to one grid half-width from the previous centre (the geometric middle of the budget's grid runs).

    ladder_range: (smallest, largest) parameters of the ladder (see ladder_range()); half_width: the grid's
    half-width in decades, log10(sweep.size_span) / 2.  Without them a vertex is used as it is."""
    usable, _ = split_usable(load_results(sweep_dir))
    usable = [r for r in usable if r["kind"] in APPROACH2_KINDS]  # Approach 1's extra horizons are not grid points
    budgets = [r["budget"] for r in usable]
    try:
        fit = fit_approach2(budgets, [r["params"] for r in usable], [r["tokens"] for r in usable],
                            [r["loss"] for r in usable])
    except ValueError as e:
        raise ValueError(f"launch.refine needs a finished first pass with isoFLOP minima: {e}") from None
    labels = group_budgets(budgets)
    centres = {}
    for c, n_opt in zip(fit["budgets"], fit["N_opt"]):
        g = labels[min(range(len(budgets)), key=lambda i: abs(budgets[i] - c))]
        sizes = [r["params"] for r, lab in zip(usable, labels) if lab == g]
        previous = math.sqrt(min(sizes) * max(sizes))
        centres[c] = clamp_centre(n_opt, previous, half_width, ladder_range)
    return centres
