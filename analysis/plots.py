"""The isoFLOP figure, laid out like Chinchilla's Figure 3 (Hoffmann et al. 2022).

Left: final loss against parameters, one colour per budget, with each budget's parabola and its
minimum.  Middle and right: the minima (N_opt, D_opt) against FLOPs with the fitted power laws.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.approach2 import group_budgets, predict  # noqa: E402
from analysis.results import split_usable  # noqa: E402

X_PAD = 0.15  # draw each parabola this many decades of N past its outermost runs
C_PAD = 0.5  # extend the power-law lines this many decades of C past the budgets


def _budget_label(c: float) -> str:
    return f"{c:.3g} FLOPs"  # 6e+18 FLOPs, 1.5e+19 FLOPs


def plot_isoflop(rows: list[dict], fit: dict, path) -> Path:
    """Write the three-panel isoFLOP figure for `rows` (from load_results) and `fit`
    (from fit_approach2) to the PNG `path`, atomically; returns the path."""
    path = Path(path)
    usable, _ = split_usable(rows)
    budgets = np.array([r["budget"] for r in usable])
    labels = group_budgets(budgets)
    n_groups = int(labels.max()) + 1
    # One colour per budget, by its rank: budgets are roughly log-spaced, so rank ≈ log C.
    cmap = plt.get_cmap("viridis")
    colours = [cmap(0.9 * i / max(n_groups - 1, 1)) for i in range(n_groups)]
    group_budget = [float(np.mean(budgets[labels == g])) for g in range(n_groups)]

    def colour_of(c):
        return colours[int(np.argmin([abs(np.log10(c / gb)) for gb in group_budget]))]

    fig, (ax_l, ax_n, ax_d) = plt.subplots(1, 3, figsize=(15, 4.6))

    # Panel 1: isoFLOP profiles.
    params = np.array([r["params"] for r in usable])
    losses = np.array([r["loss"] for r in usable])
    fitted = fit["budgets"]
    for g in range(n_groups):
        sel = labels == g
        label = _budget_label(group_budget[g])
        if not any(abs(np.log10(group_budget[g] / c)) < 1e-6 for c in fitted):
            label += " (dropped)"
        ax_l.scatter(params[sel], losses[sel], s=18, color=colours[g], label=label)
    for p, c in zip(fit["parabolas"], fit["budgets"]):
        x_opt = -p["coeffs"][1] / (2 * p["coeffs"][0])
        lo, hi = min(p["x_range"][0], x_opt), max(p["x_range"][1], x_opt)  # reach an off-grid minimum
        x = np.linspace(lo - X_PAD, hi + X_PAD, 200)
        ax_l.plot(10**x, np.polyval(p["coeffs"], x), color=colour_of(c), lw=1.2)
    for c, n_opt, l_opt in zip(fit["budgets"], fit["N_opt"], fit["L_opt"]):
        ax_l.scatter([n_opt], [l_opt], s=60, marker="o", color=colour_of(c), edgecolors="black", zorder=3)
    ax_l.set_xscale("log")
    ax_l.set_xlabel("Parameters")
    ax_l.set_ylabel("Loss")
    ax_l.set_title("IsoFLOP profiles")
    ax_l.legend(fontsize=7, loc="best")

    # Panels 2 and 3: minima and power laws.
    c_opt = np.array(fit["budgets"])
    c_line = np.logspace(np.log10(c_opt.min()) - C_PAD, np.log10(c_opt.max()) + C_PAD, 50)
    n_line, d_line = predict(fit, c_line)
    for ax, ys, line, sym, exp, ylabel in (
        (ax_n, fit["N_opt"], n_line, "N_{opt}", fit["a"], "Parameters"),
        (ax_d, fit["D_opt"], d_line, "D_{opt}", fit["b"], "Tokens"),
    ):
        ax.plot(c_line, line, color="black", lw=1, ls="--", label=rf"${sym} \propto C^{{{exp:.2f}}}$")
        ax.scatter(c_opt, ys, s=40, c=[colour_of(c) for c in c_opt], edgecolors="black", zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FLOPs")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel)
        ax.legend(loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
