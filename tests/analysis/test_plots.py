"""analysis.plots: the isoFLOP figure renders as a PNG."""

from __future__ import annotations

import numpy as np

from analysis import fit_approach2, load_results, split_usable
from analysis.plots import figure_png, isoflop_figure
from helpers import write_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_isoflop_figure_png(tmp_path):
    # The figure's data are tested in analysis/test_outputs.py; here: a real PNG, 3 panels wide.
    rows = load_results(write_sweep(tmp_path / "sweep"))
    usable, _ = split_usable(rows)
    budgets, params, losses = ([r[k] for r in usable] for k in ("budget", "params", "loss"))
    fit = fit_approach2(budgets, params, [r["tokens"] for r in usable], losses)
    png = figure_png(isoflop_figure([{"name": "sweep", "budgets": np.array(budgets), "params": np.array(params),
                                      "losses": np.array(losses), "fit": fit, "projections": []}]))
    assert png[:8] == PNG_SIGNATURE
    import io

    import matplotlib.image

    img = matplotlib.image.imread(io.BytesIO(png))
    assert img.ndim == 3 and img.shape[1] > 2 * img.shape[0] and img.shape[2] in (3, 4)  # 3 panels wide
