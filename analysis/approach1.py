"""Chinchilla Approach 1: the envelope of the training curves.

Hoffmann et al. 2022 (arXiv 2203.15556), Sec. 3.1 and Figure 2: smooth each run's training loss
curve, interpolate it onto 1,500 log-spaced FLOP values, and at each value take the run with the
lowest loss.  That run's parameters and the tokens it has seen there are N_opt(C) and D_opt(C);
straight lines in log-log through those points give N_opt ∝ C^a and D_opt ∝ C^b (Table 2:
a = b = 0.50).  Each run's curve is used only over its own FLOP range.

Chinchilla trained every size with 4 cosine lengths and found the envelope points within the last
15% of a run, where its cosine has (nearly) decayed 10x.  A run part-way through a longer cosine
still has a high learning rate: its loss there is above what a run of that length reaches, so it is
not a fair competitor.  In an isoFLOP sweep (one cosine per (N, budget)) such points dominate the
envelope between budgets, and with noisy small-model losses they even beat the finished runs at a
budget.  So by default each run's curve is used only over the last `tail_frac` = 15% of its own
FLOPs, i.e. only where Chinchilla's envelope points lay anyway; the envelope then exists near each
budget (and wherever runs' tails overlap).  tail_frac = 1 uses whole curves (Chinchilla literally),
and `share_in_tail` then reports how much of the envelope lies in the last 15% of its runs.
"""

from __future__ import annotations

import numpy as np

from analysis import approach2

from analysis.results import Curve
from analysis.stats import line_rows

N_GRID = 1500  # log-spaced FLOP values (Chinchilla Sec. 3.1)
TAIL_FRAC = 0.15  # "the last 15% of training"
SMOOTH_FRAC = 0.1  # LOWESS span: this share of a curve's points (at least SMOOTH_MIN)
SMOOTH_MIN = 5
MIN_COMPETITORS = 2  # runs that must cover a FLOP value for it to have an envelope point


def smooth(log_c: np.ndarray, loss: np.ndarray, frac: float = SMOOTH_FRAC, min_points: int = SMOOTH_MIN):
    """Local linear regression of loss on log FLOPs with tricube weights over each point's
    k = max(min_points, frac·n) nearest neighbours (LOWESS without the robustness passes).

    A local *line* (not a moving average) keeps the end of the curve unbiased: the window there is
    one-sided, and a mean over it would lag the falling loss.
    """
    x, y = np.asarray(log_c, dtype=float), np.asarray(loss, dtype=float)
    n = len(x)
    k = int(min(n, max(min_points, np.ceil(frac * n))))
    if k < 3:
        return y.copy()
    dist = np.abs(x[:, None] - x[None, :])  # (n, n): fine for the few hundred points a run logs
    h = np.partition(dist, k - 1, axis=1)[:, k - 1]  # distance to the k-th nearest neighbour
    h = np.where(h > 0, h * 1.0001, 1.0)
    w = np.clip(1 - (dist / h[:, None]) ** 3, 0, None) ** 3
    sw = w.sum(1)
    mx = (w * x).sum(1) / sw
    my = (w * y).sum(1) / sw
    dx = x[None, :] - mx[:, None]
    sxx = (w * dx * dx).sum(1)
    sxy = (w * dx * (y[None, :] - my[:, None])).sum(1)
    slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1), 0.0)
    return my + slope * (x - mx)


class Envelope:
    """Every run's smoothed curve on a common log-FLOP grid, and the envelope over any subset."""

    def __init__(self, curves: list[Curve], params, n_grid: int = N_GRID, tail_frac: float = TAIL_FRAC):
        self.run_ids = [c.run_id for c in curves]
        self.params = np.asarray(params, dtype=float)
        self.final_flops = np.array([c.flops[-1] for c in curves])  # a curve ends where its run did
        self.tail_frac = tail_frac
        # Each run competes over [start, end] of its own FLOPs: its last tail_frac, or all of it.
        self.start = np.array([max(c.flops[0], (1 - tail_frac) * c.flops[-1]) for c in curves])
        self.end = np.array([c.flops[-1] for c in curves])
        self.log_c = np.linspace(np.log10(self.start.min()), np.log10(self.end.max()), n_grid)
        R = len(curves)
        self.curve_log_c = [np.log10(c.flops) for c in curves]  # kept for the figure
        self.smoothed = [smooth(lx, c.loss) for lx, c in zip(self.curve_log_c, curves)]
        self.loss = np.full((R, n_grid), np.inf)  # inf where the run does not compete
        self.log_d = np.full((R, n_grid), np.nan)
        for r, c in enumerate(curves):
            lx = np.log10(c.flops)
            inside = (self.log_c >= np.log10(self.start[r]) - 1e-12) & (self.log_c <= lx[-1] + 1e-12)
            self.loss[r, inside] = np.interp(self.log_c[inside], lx, self.smoothed[r])
            self.log_d[r, inside] = np.interp(self.log_c[inside], lx, np.log10(c.tokens))
        # In the last 15% of the run's compute, near the end of its cosine (Chinchilla's observation).
        self.tail = 10.0 ** self.log_c[None, :] >= (1 - TAIL_FRAC) * self.final_flops[:, None]

    def winners(self, present: np.ndarray) -> np.ndarray:
        """(B, G) index of the lowest-loss run at each grid FLOP value among the runs present
        (B, R booleans); -1 where fewer than MIN_COMPETITORS present runs cover that value."""
        if not hasattr(self, "_order"):  # runs by loss at each grid value; uncovered (inf) last
            self._order = np.argsort(self.loss, axis=0, kind="stable")
            self._covered = np.isfinite(np.take_along_axis(self.loss, self._order, 0))
        G = self.loss.shape[1]
        ok = present[:, self._order] & self._covered[None]  # (B, R, G) booleans, best run first
        first = ok.argmax(1)  # the first present, covering run in loss order
        idx = self._order[first, np.arange(G)]
        # A value covered by one run has nothing to compare (e.g. the last few FLOPs of the run
        # that happened to overshoot its budget most): no envelope point there.
        return np.where(ok.sum(1) >= MIN_COMPETITORS, idx, -1)

    def fit_rows(self, win: np.ndarray):
        """Power laws through the envelope points of each row of winners (B, G):
        (a, a0, b, b0, ok, mask)."""
        G = len(self.log_c)
        cols = np.broadcast_to(np.arange(G), win.shape)
        w = np.where(win >= 0, win, 0)
        mask = win >= 0
        x = np.broadcast_to(self.log_c, win.shape)
        log_n = np.log10(self.params)[w]
        log_d = np.where(mask, self.log_d[w, cols], 0.0)
        a, a0, ok_a = line_rows(x, log_n, mask)
        b, b0, ok_b = line_rows(x, log_d, mask)
        # A single model size over the fitted range says nothing about how N_opt scales.
        n_masked = np.where(mask, log_n, np.nan)
        distinct = (np.nanmax(n_masked, 1, initial=-np.inf) - np.nanmin(n_masked, 1, initial=np.inf)) > 0
        return a, a0, b, b0, ok_a & ok_b & distinct, mask


def approach1_skip_reason(curves: dict, usable_ids) -> str | None:
    have = [r for r in usable_ids if r in curves]
    if not curves:
        return "no training curves (metrics.jsonl); only a sweep dir has them"
    if len(have) < 2:
        return f"only {len(have)} run(s) with a training curve; the envelope needs >= 2"
    return None


def fit_approach1(curves: list[Curve], params, *, n_grid: int = N_GRID,
                  tail_frac: float = TAIL_FRAC) -> tuple[dict, Envelope]:
    """Fit Approach 1 to training curves.

    curves: one Curve per run (ending where the run ended); params: N of each run (total or
    non-embedding).

    Returns (fit, envelope):
      fit: {a, a_intercept, b, b_intercept (log10 N_opt = a·log10 C + a_intercept, likewise D),
            n_grid, tail_frac, n_envelope (grid values with an envelope point), n_runs,
            runs_on_envelope, share_in_tail, flops_range,
            segments: [{run_id, N, flops_from, flops_to}] the envelope run by run}
    Raises ValueError when the envelope spans a single model size.
    """
    if len(curves) < 2:
        raise ValueError(f"only {len(curves)} run(s) with a training curve; the envelope needs >= 2")
    env = Envelope(curves, params, n_grid, tail_frac)
    win = env.winners(np.ones((1, len(curves)), dtype=bool))
    a, a0, b, b0, ok, mask = env.fit_rows(win)
    if not ok[0]:
        raise ValueError(
            f"the envelope ({int(mask.sum())} of {n_grid} FLOP values, each run's last {tail_frac:.0%}) "
            f"comes from a single model size, so N_opt(C) has no slope; add sizes or budgets")
    w = win[0]
    segments, start = [], 0
    for g in range(1, n_grid + 1):
        if g == n_grid or w[g] != w[start]:
            if w[start] >= 0:
                segments.append({"run_id": env.run_ids[w[start]], "N": float(env.params[w[start]]),
                                 "flops_from": float(10 ** env.log_c[start]),
                                 "flops_to": float(10 ** env.log_c[g - 1])})
            start = g
    # Chinchilla's observation, checked: what share of the envelope (above the smallest run's end)
    # comes from the last 15% of its run?  1 by construction unless tail_frac > 0.15.
    above = (10 ** env.log_c >= env.final_flops.min() * (1 - 1e-9)) & (w >= 0)
    in_tail = env.tail[np.where(w >= 0, w, 0), np.arange(n_grid)] & above
    fit = {
        "a": float(a[0]), "a_intercept": float(a0[0]), "b": float(b[0]), "b_intercept": float(b0[0]),
        "n_grid": int(n_grid), "tail_frac": float(tail_frac),
        "n_envelope": int((w >= 0).sum()), "n_runs": len(curves),
        "runs_on_envelope": sorted({seg["run_id"] for seg in segments}),
        "share_in_tail": float(in_tail.sum() / max(above.sum(), 1)),
        "flops_range": [float(10 ** env.log_c[0]), float(10 ** env.log_c[-1])],
        "segments": segments,
    }
    return fit, env


def bootstrap_approach1(env: Envelope, counts: np.ndarray, chunk_elems: int = 20_000_000):
    """(a, a0, b, b0, ok) arrays for each bootstrap resample of runs, given counts (B, R).

    A run drawn twice adds nothing to an envelope, so a resample is the set of runs drawn."""
    R, G = env.loss.shape
    per = max(1, chunk_elems // (R * G))
    outs = []
    for lo in range(0, len(counts), per):
        win = env.winners(counts[lo:lo + per] > 0)
        outs.append(env.fit_rows(win)[:5])
    return tuple(np.concatenate(parts) for parts in zip(*outs))


# (N_opt, D_opt) at compute C: the same power-law form (a, a_intercept, b, b_intercept) as Approach 2
predict = approach2.predict
