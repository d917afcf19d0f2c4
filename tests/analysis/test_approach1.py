"""Approach 1 (the training-curve envelope) on synthetic curves with a known optimum."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis.approach1 import bootstrap_approach1, fit_approach1, predict, smooth
from analysis.approach3 import optimal_allocation, predict_loss
from analysis.results import Curve, read_curve
from analysis.stats import percentile_ci, run_counts
from analysis.synthetic import truth

TRUTH = truth()  # Chinchilla's surface: a = 0.28/0.62 = 0.4516
A_TRUE, B_TRUE = TRUTH["a"], TRUTH["b"]


def run_curve(n, flops, penalty=0.1, points=200, noise=0.0, rng=None, run_id=None) -> Curve:
    """A run of n parameters to `flops` (C = 6ND): loss on the surface at each point plus an
    unfinished-schedule penalty penalty·(1 − t/T) (the learning rate has not decayed yet), so only
    the end of a run sits on the surface."""
    d_final = flops / (6 * n)
    d = d_final * np.linspace(0.02, 1.0, points)
    loss = predict_loss(TRUTH, n, d) + penalty * (1 - d / d_final)
    if noise:
        loss = loss * np.exp(noise * rng.standard_normal(points))
    return Curve(run_id or f"C{flops:.0e}-N{n:.2e}", 6 * n * d, d, loss)


def isoflop_runs(budgets=np.logspace(18, 22, 9), sizes=15, half_width=1.0, **kw):
    runs = []
    for c in budgets:
        n0 = optimal_allocation(TRUTH, c)[0]
        for x in np.linspace(-half_width, half_width, sizes):
            runs.append(run_curve(n0 * 10**x, c, **kw))
    return runs


def test_isoflop_sweep_envelope_recovers_exponents():
    # 9 budgets x 15 sizes (1/7-decade steps): the envelope over each run's last 15% picks the size
    # nearest the optimum, so N_opt(C) is right to within half a size step and a, b to ~0.01.
    runs = isoflop_runs()
    fit, env = fit_approach1(runs, [r.flops[-1] / (6 * r.tokens[-1]) for r in runs])
    assert fit["a"] == pytest.approx(A_TRUE, abs=0.01)  # measured 0.4515 (truth 0.4516)
    assert fit["b"] == pytest.approx(B_TRUE, abs=0.01)
    n_opt, d_opt = predict(fit, 1e24)
    n_true, d_true = optimal_allocation(TRUTH, 1e24)
    assert n_opt == pytest.approx(n_true, rel=0.15) and d_opt == pytest.approx(d_true, rel=0.15)
    assert fit["share_in_tail"] == 1.0 and fit["n_grid"] == 1500 and fit["tail_frac"] == 0.15
    # the envelope exists only near each budget (the runs' tails), never from a single run
    assert 0 < fit["n_envelope"] < 1500 and len(fit["runs_on_envelope"]) >= 9
    covered = (env.loss < np.inf).sum(0)
    assert (covered[env.winners(np.ones((1, len(runs)), bool))[0] >= 0] >= 2).all()


@pytest.mark.parametrize("penalty", [0.0, 0.1, 1.0])
def test_whole_curves_agree_on_a_centred_design(penalty):
    # tail_frac = 1 (Chinchilla literally: every point of every curve competes).  On this design
    # mid-run points of the next budget's runs fill the envelope between budgets (only ~14% of it
    # lies in a run's last 15%), and they are on the surface up to the penalty, so a is still right.
    runs = isoflop_runs(penalty=penalty)
    params = [r.flops[-1] / (6 * r.tokens[-1]) for r in runs]
    whole, _ = fit_approach1(runs, params, tail_frac=1.0)
    assert whole["a"] == pytest.approx(A_TRUE, abs=0.01)
    assert whole["n_envelope"] > 1400 and whole["share_in_tail"] < 0.2


def test_share_in_tail_reproduces_chinchillas_observation():
    # Chinchilla's design: every size trained to several horizons (here 5-80 tokens per parameter).
    # With a strong unfinished-schedule penalty, the envelope of whole curves lies (>85%) in the
    # runs' last 15%, as the paper found; by construction it is 100% with the default tail_frac.
    runs = [run_curve(n, 6 * n * n * k, penalty=1.0) for n in np.logspace(7.5, 10.5, 25)
            for k in (5, 10, 20, 40, 80)]
    params = [r.flops[-1] / (6 * r.tokens[-1]) for r in runs]
    assert fit_approach1(runs, params, tail_frac=1.0)[0]["share_in_tail"] > 0.85
    assert fit_approach1(runs, params)[0]["share_in_tail"] == 1.0


def test_bootstrap_interval_contains_truth_with_noise():
    rng = np.random.default_rng(0)
    runs = isoflop_runs(budgets=np.logspace(18, 22, 5), sizes=9, noise=0.003, rng=rng)
    params = [r.flops[-1] / (6 * r.tokens[-1]) for r in runs]
    fit, env = fit_approach1(runs, params)
    a, a0, b, b0, ok = bootstrap_approach1(env, run_counts(rng, len(runs), 300))
    assert ok.mean() > 0.95
    lo, hi = percentile_ci(a[ok], 0.9)
    assert lo <= A_TRUE <= hi and lo <= fit["a"] <= hi and hi - lo < 0.2
    # a resample with every run once is the fit itself
    full = bootstrap_approach1(env, np.ones((1, len(runs)), dtype=int))
    assert full[0][0] == pytest.approx(fit["a"], rel=1e-12)


def test_single_size_envelope_is_refused():
    runs = [run_curve(1e8, c) for c in (1e17, 1e18)] + [run_curve(1e8, 2e17)]
    with pytest.raises(ValueError, match="single model size"):
        fit_approach1(runs, [1e8] * 3)
    with pytest.raises(ValueError, match="needs >= 2"):
        fit_approach1(runs[:1], [1e8])


def test_smooth_tracks_a_falling_curve_without_lag():
    # Local-linear smoothing recovers the noiseless curve to within the noise / sqrt(window), at the
    # end of the run too, where a trailing moving average would lag behind a falling loss.
    rng = np.random.default_rng(1)
    x = np.linspace(9, 12, 300)
    f = 2 + 3 * np.exp(-(x - 9))
    y = f + 0.02 * rng.standard_normal(len(x))
    s = smooth(x, y)
    assert np.abs(s - f)[5:-5].max() < 0.02 and abs(s[-1] - f[-1]) < 0.01
    moving = np.convolve(y, np.ones(30) / 30, mode="valid")[-1]
    assert abs(moving - f[-1]) > 3 * abs(s[-1] - f[-1])


def test_read_curve_skips_bad_lines(tmp_path):
    f = tmp_path / "metrics.jsonl"
    lines = [{"step": i, "tokens": 100 * i, "flops": 600.0 * i, "loss": 5.0 - 0.1 * i} for i in range(1, 6)]
    f.write_text("\n".join(json.dumps(r) for r in lines) + "\n" + '{"step": 6, "flo')  # half-written
    c = read_curve(tmp_path, "r", final_tokens=500, final_flops=3000)
    assert list(c.flops) == [600.0 * i for i in range(1, 6)] and c.loss[-1] == pytest.approx(4.5)
    f.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "tokens"}) for r in lines))
    c = read_curve(tmp_path, "r", final_tokens=500, final_flops=3000)  # no tokens: D scales with FLOPs
    assert c.tokens == pytest.approx([100.0 * i for i in range(1, 6)])
    assert read_curve(tmp_path, "r") is None  # ... unless the final counts are unknown
    f.write_text('{"flops": 1, "loss": 2}\n{"flops": 2, "loss": NaN}\n')
    assert read_curve(tmp_path, "r", 1, 1) is None  # fewer than 3 usable points
    assert math.isfinite(smooth(np.arange(4.0), np.arange(4.0))[0])
