"""The figures, laid out after Chinchilla's (Hoffmann et al. 2022).

isoflop_figure: after the C4/GitHub isoFLOP figure (App. C, Figure A5; Figure 3 for one dataset):
  one row per dataset: loss against parameters per budget with each parabola and its minimum;
  N_opt and D_opt against FLOPs with the fitted power laws, projected to the target budgets.
envelope_figure: after Figure 2 (Approach 1): every run's smoothed training curve coloured by its
  size with the envelope drawn; the envelope's N and D against FLOPs, with the power-law projection
  labelled "67B" / "1.5T"-style at each target.

All axes are logarithmic.  The figure functions return the matplotlib Figure (tests inspect its
axes and artists: gids "parabola", "minimum", "optima", "fit", "projection", "curve", "envelope", and for a
validation "held_out", "validation_pred", "validation_measured");
figure_png renders one to PNG bytes and closes it.
"""

from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import LogLocator, NullLocator, ScalarFormatter  # noqa: E402

from analysis import approach1, approach2  # noqa: E402

MAX_REACH = 0.5  # decades a parabola is drawn past the sizes run toward an off-grid minimum
X_PAD = 0.15  # draw each parabola this many decades of N past its outermost runs
C_PAD = 0.3  # extend the power-law lines this many decades of C past the data / projections


def human(v: float) -> str:
    """67e9 → '67B', 1.5e12 → '1.5T', 4e8 → '400M' (Chinchilla's labels)."""
    if abs(v) >= 1e15:
        return f"{v:.2g}"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _loss_axis(ax):
    """Log-scaled loss axis with plain tick labels (2.5, 3, 4 rather than 10^0.4)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_locator(NullLocator())


def _decades(ax):
    """Major ticks only, at most ~8 per axis: wide log axes (data to projection) are otherwise
    slow to draw and unreadable."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=8))
        axis.set_minor_locator(NullLocator())


def _layout(fig, rows: int):
    """Fixed margins (tight_layout measures every tick label twice: most of a figure's cost)."""
    fig.subplots_adjust(left=0.05, right=0.985, wspace=0.28, hspace=0.38,
                        top=1 - 0.35 / (4.8 * rows), bottom=0.55 / (4.8 * rows))


def _projection_panel(ax, c_pts, y_pts, colours, fit, predict, which: str, projections, title: str,
                      size: float = 14, axis=None, validation=None):
    """N_opt or D_opt against C: the points, the fitted law, each projection labelled, and a validation's
    prediction and measurement (own markers).  With a compute axis (analysis.compute) other than 6N, the D line
    is C / fpt(N_opt(C)), the rule every projection uses."""
    exp = fit["a"] if which == "N" else fit["b"]
    c_all = list(c_pts) + [p["flops"] for p in projections] + ([validation["budget"]] if validation else [])
    lo, hi = np.log10(min(c_all)) - C_PAD, np.log10(max(c_all)) + C_PAD
    c_line = np.logspace(lo, hi, 100)
    sym = "N_{opt}" if which == "N" else "D_{opt}"
    label = rf"${sym} \propto C^{{{exp:.3f}}}$"
    if which == "D" and axis is not None and axis.source != "6ND":
        line = axis.tokens(c_line, predict(fit, c_line)[0])
        label = rf"$D_{{opt}} = C / fpt(N_{{opt}})$ (b = {exp:.3f})"
    else:
        line = predict(fit, c_line)[0 if which == "N" else 1]
    ax.plot(c_line, line, color="black", lw=1, ls="--", gid="fit", label=label)
    _band(ax, fit.get("band"), which, c_line)
    ax.scatter(c_pts, y_pts, s=size, c=colours, edgecolors="black" if size > 20 else "none", zorder=3,
               gid="optima")
    ordered = sorted(projections, key=lambda q: q["flops"])
    for i, p in enumerate(ordered):
        v = p[which]
        ax.axvline(p["flops"], color="grey", lw=0.8, ls=":")
        ci = p.get(f"{which}_ci")
        if ci and all(np.isfinite(ci)):
            # a percentile interval need not contain the point estimate: clip, never a negative bar
            ax.errorbar([p["flops"]], [v], yerr=[[max(v - ci[0], 0.0)], [max(ci[1] - v, 0.0)]], fmt="none",
                        ecolor="crimson", capsize=3, lw=1)
        ax.scatter([p["flops"]], [v], marker="*", s=120, color="crimson", zorder=4, gid="projection")
        # alternate sides so that labels of nearby budgets do not overprint each other; the largest budget's
        # label goes left, inside the axes (on the right it was clipped at the figure's edge)
        left = i % 2 == 0 or i == len(ordered) - 1
        ax.annotate(human(v), (p["flops"], v), textcoords="offset points", xytext=(-8, 8) if left else (8, -14),
                    ha="right" if left else "left", color="crimson", fontsize=10, fontweight="bold")
    if validation:
        _validation_markers(ax, validation, which)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _decades(ax)
    ax.set_xlabel("FLOPs")
    ax.set_ylabel("Parameters" if which == "N" else "Tokens")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)  # never on top of a point
    ax.grid(True, which="major", alpha=0.3)


def _band(ax, band, which: str, c_line):
    """The fitted law's interval (analysis.fit._band: the bootstrap fits' percentile interval at each C), shaded
    along the line, interpolated in log-log between the band's C values."""
    if not band:
        return
    c = np.asarray(band["flops"], dtype=float)
    ci = [v if v else [np.nan, np.nan] for v in band[f"{which}_ci"]]
    lo, hi = np.array([v[0] for v in ci], dtype=float), np.array([v[1] for v in ci], dtype=float)
    ok = np.isfinite(lo) & np.isfinite(hi) & (lo > 0) & (hi > 0)
    if ok.sum() < 2:
        return
    x = np.log10(c_line)
    lo_line = 10.0 ** np.interp(x, np.log10(c[ok]), np.log10(lo[ok]))
    hi_line = 10.0 ** np.interp(x, np.log10(c[ok]), np.log10(hi[ok]))
    ax.fill_between(c_line, lo_line, hi_line, color="grey", alpha=0.25, lw=0, gid="band",
                    label="interval (bootstrap)")


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * abs(b)


def _validation_markers(ax, v: dict, which: str):
    """A validation (analysis.validation) on an N_opt or D_opt panel: the prediction as a crimson plus with its
    interval, the measured optimum as a hollow diamond."""
    c = v["budget"]
    pred, ci, meas = v["pred"].get(which), v["pred"].get(f"{which}_ci"), v["measured"].get(which)
    if pred is not None:
        if ci and all(np.isfinite(ci)):
            ax.errorbar([c], [pred], yerr=[[max(pred - ci[0], 0.0)], [max(ci[1] - pred, 0.0)]], fmt="none",
                        ecolor="darkorange", capsize=3, lw=1)
        ax.scatter([c], [pred], marker="P", s=110, color="darkorange", edgecolors="black", zorder=5,
                   gid="validation_pred", label=f"{v['kind']}: predicted at {c:.3g}")
    if meas is not None:
        ax.scatter([c], [meas], marker="D", s=70, facecolors="none", edgecolors="black", linewidths=1.5, zorder=6,
                   gid="validation_measured", label=f"{v['kind']}: measured")


# ---------------------------------------------------------------------------------------------
# Approach 2


def isoflop_panel(fit: dict, plot: dict) -> dict:
    """What one isoFLOP row needs, from a dataset's fit (fit.json part) and the fitter's plot data."""
    usable = plot["usable"]
    v = fit.get("validation")
    val = None
    if v and v["budget"] is not None:
        q = next((p["approach2"] for p in fit["projections"] if _same(p["flops"], v["budget"]) and p["approach2"]), None)
        val = {"budget": v["budget"], "kind": v["kind"], "pred": q or {},
               "measured": {"N": v["N_opt_measured"], "D": v["D_opt_measured"]}}
    held = plot.get("held_out")
    return {"name": fit["dataset"], "budgets": np.array([r["budget"] for r in usable], dtype=float),
            "params": np.array(plot["N"], dtype=float), "losses": np.array([r["loss"] for r in usable]),
            "fit": fit["approach2"], "skipped": fit.get("approaches_skipped", {}).get("approach2"),
            "axis": plot.get("axis"), "validation": val,
            "held_out": None if not held else {"params": np.array(held["N"], dtype=float),
                                               "losses": np.array([r["loss"] for r in held["runs"]]),
                                               "budget": held["runs"][0]["budget"]},
            "projections": [{"flops": p["flops"], **p["approach2"]} for p in fit["projections"]
                            if p["approach2"] and not (val and _same(p["flops"], val["budget"]))]}


def isoflop_figure(panels: list[dict]):
    """One row of three panels per dataset (see isoflop_panel for a row's fields)."""
    fig, axes = plt.subplots(len(panels), 3, figsize=(16, 4.8 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels):
        _isoflop_row(row, panel, show_name=len(panels) > 1)
    _layout(fig, len(panels))
    return fig


def _isoflop_row(axes, panel, show_name: bool):
    ax_l, ax_n, ax_d = axes
    fit = panel["fit"]
    budgets, params, losses = panel["budgets"], panel["params"], panel["losses"]
    labels = approach2.group_budgets(budgets)
    n_groups = int(labels.max()) + 1
    cmap = plt.get_cmap("viridis")
    colours = [cmap(0.9 * i / max(n_groups - 1, 1)) for i in range(n_groups)]
    group_budget = [float(np.mean(budgets[labels == g])) for g in range(n_groups)]

    def colour_of(c):
        return colours[int(np.argmin([abs(np.log10(c / gb)) for gb in group_budget]))]

    fitted = fit["budgets"] if fit else []
    for g in range(n_groups):
        sel = labels == g
        label = f"{group_budget[g]:.3g} FLOPs"
        if not any(abs(np.log10(group_budget[g] / c)) < 1e-6 for c in fitted):
            label += " (dropped)"
        ax_l.scatter(params[sel], losses[sel], s=18, color=colours[g], label=label, gid="runs")
    held = panel.get("held_out")
    if held is not None:
        ax_l.scatter(held["params"], held["losses"], s=26, facecolors="none", edgecolors="black", gid="held_out",
                     label=f"{held['budget']:.3g} FLOPs (held out)")
    for p, c in zip(fit["parabolas"] if fit else [], fitted):
        x_opt = -p["coeffs"][1] / (2 * p["coeffs"][0])
        # reach an off-grid minimum, but at most MAX_REACH decades past the sizes run, so that one wild
        # extrapolation does not squash every profile into a corner; a minimum beyond that is marked at the
        # edge with an arrow and its value
        lo = max(min(p["x_range"][0], x_opt), p["x_range"][0] - MAX_REACH)
        hi = min(max(p["x_range"][1], x_opt), p["x_range"][1] + MAX_REACH)
        x = np.linspace(lo - X_PAD, hi + X_PAD, 200)
        ax_l.plot(10**x, np.polyval(p["coeffs"], x), color=colour_of(c), lw=1.2, gid="parabola")
        inside_view = lo - 1e-9 <= x_opt <= hi + 1e-9
        edge = x_opt if inside_view else (lo if x_opt < lo else hi)
        l_edge = float(np.polyval(p["coeffs"], edge))
        ax_l.scatter([10**edge], [l_edge], s=70, marker="o" if p["inside_grid"] else "X", color=colour_of(c),
                     edgecolors="black", zorder=3, gid="minimum")
        if not inside_view:
            ax_l.annotate(("\u2190 " if x_opt < lo else "") + f"min at N={human(10 ** x_opt)}"
                          + (" \u2192" if x_opt > hi else ""), (10**edge, l_edge), textcoords="offset points",
                          xytext=(4, -12), fontsize=7, color=colour_of(c), gid="minimum_off_view")
    ax_l.set_xscale("log")
    ax_l.xaxis.set_minor_locator(NullLocator())
    _loss_axis(ax_l)
    ax_l.set_xlabel("Parameters")
    ax_l.set_ylabel("Loss")
    ax_l.set_title(f"{panel['name']}: isoFLOP profiles" if show_name else "IsoFLOP profiles")
    ax_l.legend(fontsize=7, loc="best")

    if not fit:  # the runs only, and why there is no fit
        why = textwrap.fill(f"Approach 2 skipped: {panel.get('skipped') or 'no fit'}", 45)
        for ax, title in ((ax_n, "Approach 2: parameters"), (ax_d, "Approach 2: tokens")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=9, wrap=True)
            ax.tick_params(which="both", labelbottom=False, labelleft=False, length=0)
            ax.set_title(title)
            ax.set_xlabel("FLOPs")
        return
    cols = [colour_of(c) for c in fitted]
    extra = {"axis": panel.get("axis"), "validation": panel.get("validation")}
    _projection_panel(ax_n, fitted, fit["N_opt"], cols, fit, approach2.predict, "N", panel["projections"],
                      "Approach 2: parameters", size=45, **extra)
    _projection_panel(ax_d, fitted, fit["D_opt"], cols, fit, approach2.predict, "D", panel["projections"],
                      "Approach 2: tokens", size=45, **extra)


# ---------------------------------------------------------------------------------------------
# Approach 1


def envelope_panel(fit: dict, plot: dict) -> dict:
    return {"name": fit["dataset"], "envelope": plot["envelope"], "fit": fit["approach1"], "axis": plot.get("axis"),
            "projections": [{"flops": p["flops"], **p["approach1"]} for p in fit["projections"] if p["approach1"]]}


def envelope_figure(panels: list[dict]):
    """One row of three panels per dataset (see envelope_panel for a row's fields)."""
    fig, axes = plt.subplots(len(panels), 3, figsize=(16, 4.8 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels):
        _envelope_row(fig, row, panel, show_name=len(panels) > 1)
    _layout(fig, len(panels))
    return fig


def _envelope_row(fig, axes, panel, show_name: bool):
    ax_c, ax_n, ax_d = axes
    env, fit = panel["envelope"], panel["fit"]
    norm = LogNorm(vmin=env.params.min(), vmax=max(env.params.max(), env.params.min() * 1.01))
    cmap = plt.get_cmap("viridis")
    for lx, sm, n in zip(env.curve_log_c, env.smoothed, env.params):
        ax_c.plot(10**lx, sm, color=cmap(norm(n)), lw=0.8, alpha=0.8, gid="curve")
    win = env.winners(np.ones((1, len(env.params)), dtype=bool))[0]
    on = win >= 0
    g = np.flatnonzero(on)
    c_env = 10 ** env.log_c[g]
    ax_c.scatter(c_env, env.loss[win[g], g], s=4, color="black", zorder=3, gid="envelope",
                 label=f"envelope (each run's last {fit['tail_frac']:.0%})")
    ax_c.set_xscale("log")
    _decades(ax_c)
    _loss_axis(ax_c)
    ax_c.set_xlabel("FLOPs")
    ax_c.set_ylabel("Training loss (smoothed)")
    ax_c.set_title(f"{panel['name']}: training curves" if show_name else "Training curves")
    ax_c.legend(loc="upper right", fontsize=8)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax_c, label="Parameters")

    n_env = env.params[win[g]]
    d_env = 10 ** env.log_d[win[g], g]
    cols = [cmap(norm(n)) for n in n_env]
    _projection_panel(ax_n, c_env, n_env, cols, fit, approach1.predict, "N", panel["projections"],
                      "Approach 1: parameters", axis=panel.get("axis"))
    _projection_panel(ax_d, c_env, d_env, cols, fit, approach1.predict, "D", panel["projections"],
                      "Approach 1: tokens", axis=panel.get("axis"))


# ---------------------------------------------------------------------------------------------


def figure_png(fig, dpi: int = 110) -> bytes:
    """PNG bytes of fig; closes it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()
