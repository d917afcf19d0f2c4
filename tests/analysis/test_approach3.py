"""Approach 3 (the parametric fit): objective, gradient, closed form, optimiser, recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import huber, logsumexp

from analysis.approach3 import (DELTA, _polish, _Problem, approach3_skip_reason, deviance_scale, fit_approach3,
                                init_grid, objective, optimal_allocation, params_from_theta, predict_loss, profile_e,
                                profile_set, refit_batch)
from analysis.stats import run_counts

# Chinchilla's fit (Hoffmann et al. 2022, Sec. 3.3)
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
THETA = [math.log(TRUE["A"]), math.log(TRUE["B"]), math.log(TRUE["E"]), TRUE["alpha"], TRUE["beta"]]


def design(n_budgets=5, sizes=8, half_width=1.0, budgets=None):
    """An isoFLOP design: sizes log-spaced ±half_width decades around the true N_opt, D = C/(6N)."""
    truth = params_from_theta(THETA)
    budgets = np.logspace(18, 22, n_budgets) if budgets is None else budgets
    N, C = [], []
    for c in budgets:
        n0 = optimal_allocation(truth, c)[0]
        for x in np.linspace(-half_width, half_width, sizes):
            N.append(n0 * 10**x), C.append(c)
    N, C = np.array(N), np.array(C)
    return N, C / (6 * N)


def test_init_grid_is_chinchillas():
    g = init_grid()
    assert g.shape == (6 * 6 * 5 * 5 * 5, 5)  # a, b ∈ {0,5,…,25}; e ∈ {−1,…,1}; α, β ∈ {0,…,2}
    assert sorted(set(g[:, 0])) == [0, 5, 10, 15, 20, 25] and sorted(set(g[:, 2])) == [-1, -0.5, 0, 0.5, 1]
    assert sorted(set(g[:, 3])) == sorted(set(g[:, 4])) == [0, 0.5, 1, 1.5, 2]


def test_objective_is_chinchillas_huber_on_lse():
    # Independent implementation with scipy's huber and logsumexp, summed over runs.
    rng = np.random.default_rng(0)
    N, D = design()
    L = predict_loss(TRUE, N, D) * np.exp(0.02 * rng.standard_normal(len(N)))
    theta = np.array([6.1, 6.2, 0.4, 0.36, 0.3])
    a, b, e, al, be = theta
    r = logsumexp(np.stack([a - al * np.log(N), b - be * np.log(D), np.full(len(N), e)]), axis=0) - np.log(L)
    f, g = objective(theta, N, D, L)
    assert f == pytest.approx(huber(DELTA, r).sum(), rel=1e-12)
    w = rng.integers(0, 3, len(N))
    assert objective(theta, N, D, L, weights=w)[0] == pytest.approx((w * huber(DELTA, r)).sum(), rel=1e-12)
    # the analytic gradient against central differences
    eps = 1e-6
    num = [(objective(theta + eps * np.eye(5)[j], N, D, L)[0] - objective(theta - eps * np.eye(5)[j], N, D, L)[0])
           / (2 * eps) for j in range(5)]
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-10)


def test_closed_form_is_the_constrained_minimum():
    # N_opt = G (C/6)^(β/(α+β)) minimises L(N, C/(6N)) (App. D.2): check by direct 1-D minimisation.
    fit = params_from_theta(THETA)
    assert fit["a"] == pytest.approx(0.28 / 0.62) and fit["b"] == pytest.approx(0.34 / 0.62)
    for C in (1e19, 5.76e23, 1e26):
        n_opt, d_opt = optimal_allocation(fit, C)
        res = minimize_scalar(lambda x: predict_loss(fit, 10**x, C / (6 * 10**x)), bounds=(5, 15), method="bounded",
                              options={"xatol": 1e-10})
        assert n_opt == pytest.approx(10**res.x, rel=1e-6)
        assert 6 * n_opt * d_opt == pytest.approx(C, rel=1e-12)
    # Chinchilla's own fit gives a = 0.46 at their budgets (Table 2, Approach 3)
    assert round(fit["a"], 2) == 0.45 and round(0.28 / (0.34 + 0.28), 3) == 0.452
    n, c = optimal_allocation(fit, np.array([1e20, 1e21]))
    assert n.shape == (2,)


def test_noise_free_surface_recovered_exactly():
    N, D = design(n_budgets=4, sizes=6)
    fit = fit_approach3(N, D, predict_loss(TRUE, N, D))
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-5), k
    assert fit["objective"] < 1e-12


def test_irreducible_loss_at_its_bound_is_warned():
    # a surface with no irreducible loss: the fit can only put E at its bound of 0, and says so; Chinchilla's
    # surface (E = 1.69) is fitted without the warning
    N, D = design(n_budgets=4, sizes=6)
    no_e = {**TRUE, "E": 0.0}
    fit = fit_approach3(N, D, predict_loss(no_e, N, D))
    assert fit["E"] < 1e-3 * predict_loss(no_e, N, D).min()
    assert len(fit["warnings"]) == 1 and "E = " in fit["warnings"][0] and "at its bound of 0" in fit["warnings"][0]
    assert fit_approach3(N, D, predict_loss(TRUE, N, D))["warnings"] == []


def test_noisy_surface_exponents_recovered():
    # 240 runs, 1% multiplicative noise: the exponents come back to within a few hundredths.
    N, D = design(n_budgets=6, sizes=40)
    L = predict_loss(TRUE, N, D) * np.exp(0.01 * np.random.default_rng(7).standard_normal(len(N)))
    fit = fit_approach3(N, D, L)
    assert fit["alpha"] == pytest.approx(0.34, abs=0.03) and fit["beta"] == pytest.approx(0.28, abs=0.03)
    assert fit["a"] == pytest.approx(0.28 / 0.62, abs=0.01)
    assert fit["E"] == pytest.approx(1.69, abs=0.05)


def test_batched_optimiser_matches_scipy_lbfgsb():
    # The batched BFGS used for the bootstrap reaches the same minimum as scipy's L-BFGS-B (the
    # optimiser Chinchilla and Epoch used) on resampled data, from the same warm start.
    N, D = design()
    rng = np.random.default_rng(1)
    L = predict_loss(TRUE, N, D) * np.exp(0.02 * rng.standard_normal(len(N)))
    fit = fit_approach3(N, D, L)
    W = run_counts(rng, len(N), 12)
    theta = refit_batch(N, D, L, W, [fit["theta"]])
    for w, th in zip(W, theta):
        prob = _Problem(np.log(N), np.log(D), np.log(L), w[None, :])
        ref, f_ref = _polish(prob, np.array(fit["theta"]))
        f_ours = prob.fg(th[None, :], np.zeros(1, dtype=int))[0][0]
        assert f_ours <= f_ref * (1 + 1e-5)


def test_successive_halving_finds_the_full_grid_optimum():
    # The default schedule (screen all 4,500 starts, then halve) against optimising every grid
    # point fully: the same minimum.
    N, D = design(n_budgets=4, sizes=6)
    L = predict_loss(TRUE, N, D) * np.exp(0.02 * np.random.default_rng(2).standard_normal(len(N)))
    fast = fit_approach3(N, D, L)
    full = fit_approach3(N, D, L, halving=())
    assert fast["objective"] <= full["objective"] * (1 + 1e-6)
    for k in ("E", "alpha", "beta"):
        assert fast[k] == pytest.approx(full[k], rel=1e-3)


def test_bootstrap_refits_are_independent_problems():
    # A resample whose weights are all ones is the original problem: its refit is the point estimate.
    N, D = design()
    L = predict_loss(TRUE, N, D) * np.exp(0.02 * np.random.default_rng(3).standard_normal(len(N)))
    fit = fit_approach3(N, D, L)
    W = np.vstack([np.ones(len(N)), run_counts(np.random.default_rng(4), len(N), 3)])
    theta = refit_batch(N, D, L, W, [fit["theta"], fit["minima"][-1]["theta"]])
    assert objective(theta[0], N, D, L)[0] == pytest.approx(fit["objective"], rel=1e-6)
    assert not np.allclose(theta[1], theta[2])


def test_unidentifiable_designs_are_refused():
    N, D = design(n_budgets=1, sizes=8)  # one budget: ln D = ln(C/6) − ln N
    assert "collinear" in approach3_skip_reason(N, D)
    with pytest.raises(ValueError, match="collinear"):
        fit_approach3(N, D, predict_loss(TRUE, N, D))
    N, D = design(n_budgets=2, sizes=2)
    assert "only 4 runs" in approach3_skip_reason(N, D)
    with pytest.raises(ValueError, match="must be finite and positive"):
        fit_approach3([1e8] * 6, [1e9] * 6, [3.0, 2.0, np.nan, 2.0, 2.0, 2.0])


def test_params_without_optimum_give_nan_allocation():
    p = params_from_theta([5.0, 5.0, 0.5, 0.0, 0.3])  # α = 0: loss does not fall with N
    assert math.isnan(p["a"]) and math.isnan(p["G"])


def test_run_away_fit_on_real_tiny_model_runs_is_refused_not_crashed(tmp_path):
    """Our own first CPU prose pass (tests/data/cpu_prose_first_pass.csv: 37 runs, 18k-1.2M params): every
    minimum the optimiser finds has ln A in the thousands (alpha ~ 200), past exp's range.  The fit must say
    so in one line, and the analysis must go on without Approach 3 instead of crashing."""
    import csv
    from pathlib import Path

    from analysis import analyze

    f = Path(__file__).parents[1] / "data" / "cpu_prose_first_pass.csv"
    rows = list(csv.DictReader(open(f)))
    N, D, L = (np.array([float(r[k]) for r in rows]) for k in ("params", "tokens", "loss"))
    with pytest.raises(ValueError, match=r"ran away \(ln A = .*add model sizes or budgets"):
        fit_approach3(N, D, L)
    # every run, as before Approach 3's default filter (>= 4 tokens/param), which leaves out the runs that run away
    result = analyze(f, tmp_path, n_boot=0, min_tokens_per_param=0)  # before the fix: OverflowError from math.exp
    assert result["approach3"] is None and "ran away" in result["approaches_skipped"]["approach3"]
    assert result["approach2"] is not None
    assert (tmp_path / "fit.json").exists()


# ---------------------------------------------------------------------------------------------
# variable projection (the default start)


def test_varpro_nnls_grid_is_exact_nonnegative_least_squares():
    # Every grid point's (E, A, B) and residual against scipy's NNLS (Lawson & Hanson's active set), independently.
    from scipy.optimize import nnls

    from analysis.varpro import ALPHA_GRID, BETA_GRID, nnls_grid

    N, D = design()
    L = predict_loss(TRUE, N, D) * np.exp(0.02 * np.random.default_rng(5).standard_normal(len(N)))
    rss, coef = nnls_grid(N, D, L)
    rng = np.random.default_rng(6)
    for i, j in zip(rng.integers(0, len(ALPHA_GRID), 60), rng.integers(0, len(BETA_GRID), 60)):
        X = np.column_stack([np.ones_like(N), N ** -ALPHA_GRID[i], D ** -BETA_GRID[j]])
        c, rnorm = nnls(X, L)
        assert rss[i, j] == pytest.approx(rnorm ** 2, rel=1e-8, abs=1e-12)
        np.testing.assert_allclose(coef[i, j], c, rtol=1e-5, atol=1e-8 * np.abs(c).max())
    assert (coef >= 0).all()


def test_varpro_recovers_the_surface_noiseless_and_noisy():
    N, D = design(n_budgets=4, sizes=6)
    fit = fit_approach3(N, D, predict_loss(TRUE, N, D), method="varpro")
    assert fit["method"] == "varpro" and fit["objective"] < 1e-12
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-5), k
    N, D = design(n_budgets=6, sizes=40)
    L = predict_loss(TRUE, N, D) * np.exp(0.01 * np.random.default_rng(7).standard_normal(len(N)))
    fit = fit_approach3(N, D, L, method="varpro")
    grid = fit_approach3(N, D, L, method="grid")
    assert fit["alpha"] == pytest.approx(0.34, abs=0.03) and fit["beta"] == pytest.approx(0.28, abs=0.03)
    assert fit["a"] == pytest.approx(0.28 / 0.62, abs=0.01) and fit["E"] == pytest.approx(1.69, abs=0.05)
    # A and B trade off against the exponents (measured here +2.5%, -5.4%; -9 to -17% on two other noise seeds)
    assert fit["A"] == pytest.approx(406.4, rel=0.25) and fit["B"] == pytest.approx(410.7, rel=0.25)
    assert fit["objective"] <= grid["objective"] * (1 + 1e-9)  # the same estimator: Chinchilla's objective


def test_unknown_method_is_refused():
    N, D = design()
    with pytest.raises(ValueError, match="method must be one of varpro, grid"):
        fit_approach3(N, D, predict_loss(TRUE, N, D), method="newton")


def _held_e_minimum(N, D, L, e, start):
    """The Huber objective minimised over (a, b, α, β) with e held, by scipy's L-BFGS-B: the independent check."""
    from scipy.optimize import minimize

    def fun(th):
        f, g = objective([th[0], th[1], e, th[2], th[3]], N, D, L)
        return f, g[[0, 1, 3, 4]]

    return minimize(fun, start, jac=True, method="L-BFGS-B",
                    options={"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-12}).fun


def test_profile_over_e_refits_match_scipy_and_the_free_fit():
    # each held-E refit reaches scipy's minimum with E held there; at the fit's own E the deviance is 0, elsewhere
    # 2 (f_E - f_min) E[ψ']/E[ψ²]
    N, D = design(n_budgets=4, sizes=8)
    L = predict_loss(TRUE, N, D) * np.exp(0.01 * np.random.default_rng(3).standard_normal(len(N)))
    fit = fit_approach3(N, D, L)
    prof = profile_e(N, D, L, fit, shares=(0.0, 0.5, 0.9))
    # the 3 shares, the fit's own E and, at each end of the set (found by bisection), the last E inside and outside
    assert len(prof["E"]) == 8 and prof["E"] == sorted(prof["E"])
    assert not prof["E_set_open_above"]
    for end, side in zip(prof["E_set"], (-1, 1)):
        near = np.argsort(np.abs(np.array(prof["E"]) - end))
        i = int(next(j for j in near if prof["deviance"][j] <= prof["threshold"]))  # the last E inside
        assert 0 <= i + side < len(prof["E"])
        assert prof["E"][i] == pytest.approx(end, rel=1e-3)
        assert prof["deviance"][i] == pytest.approx(prof["threshold"], rel=0.05)
        assert prof["deviance"][i + side] > prof["threshold"]
        assert prof["E"][i + side] == pytest.approx(end, rel=1e-3)
    start = [fit["theta"][0], fit["theta"][1], fit["theta"][3], fit["theta"][4]]
    f_min = min(prof["objective"])
    for E, f, dev in zip(prof["E"], prof["objective"], prof["deviance"]):
        ref = _held_e_minimum(N, D, L, math.log(E), start)
        assert f <= ref * (1 + 1e-6) and f >= ref * (1 - 1e-3), E
        assert dev == pytest.approx(2 * prof["deviance_scale"] * (f - f_min), abs=1e-9)
    i = prof["E"].index(pytest.approx(fit["E"], rel=1e-9))
    assert prof["deviance"][i] == pytest.approx(0.0, abs=1e-6)
    assert prof["E_set"][0] <= fit["E"] <= prof["E_set"][1]
    assert prof["a_6ND_set"][0] <= fit["a"] <= prof["a_6ND_set"][1]
    # at E = 0 the surface has to stand in for 1.69 nats: far outside the set
    assert prof["deviance"][0] > 10 * prof["threshold"]


def test_profile_over_e_narrows_with_the_noise():
    # the same draws at 2% and 0.5% noise on Chinchilla's surface (E = 1.69): each set brackets its fit's E, and
    # the deviance's curvature goes as 1/σ², so the set is about 4x narrower at a quarter of the noise; with no
    # irreducible loss the fit puts E at its bound and the set starts there
    N, D = design(n_budgets=5, sizes=8)
    z = np.random.default_rng(5).standard_normal(len(N))
    widths = []
    for sigma in (0.02, 0.005):
        L = predict_loss(TRUE, N, D) * np.exp(sigma * z)
        fit = fit_approach3(N, D, L)
        prof = profile_e(N, D, L, fit, shares=np.linspace(0, 0.95, 77))
        assert prof["E_set"][0] < fit["E"] < prof["E_set"][1]
        assert prof["a_6ND_set"][0] < fit["a"] < prof["a_6ND_set"][1]
        widths.append(prof["E_set"][1] - prof["E_set"][0])
    assert 2.5 < widths[0] / widths[1] < 6.0
    L0 = predict_loss({**TRUE, "E": 0.0}, N, D) * np.exp(0.005 * z)
    fit0 = fit_approach3(N, D, L0)
    assert fit0["E"] < 1e-3 * L0.min()
    prof0 = profile_e(N, D, L0, fit0)
    assert prof0["E_set"][0] == pytest.approx(fit0["E"], rel=1e-6)
    assert prof0["E_set"][1] > prof0["E_set"][0]


def test_profile_set_interpolates_the_threshold_crossings():
    # deviance 0 at x = 2, rising 2 per unit to the left and 1 to the right: threshold 1.5 is crossed at
    # 2 - 1.5/2 = 1.25 and 3 + 0.5 = 3.5; the series y = x over the set spans exactly those ends, and a grid end
    # bounds a set that does not close
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    dev = [3.0, 2.0, 0.0, 1.0, 2.0]
    (lo, hi), (ylo, yhi) = profile_set(x, dev, 1.5, [x])
    assert (lo, hi) == (pytest.approx(1.25), pytest.approx(3.5))
    assert (ylo, yhi) == (pytest.approx(1.25), pytest.approx(3.5))
    (lo, hi), = profile_set(x, [0.0, 0.5, 1.0, 2.0, 9.0], 1.5, [])
    assert (lo, hi) == (0.0, pytest.approx(2.5))
    assert profile_set(x, [np.nan] * 5, 1.5, [x]) == (None, None)


def test_deviance_scale_against_monte_carlo_and_its_limits():
    # E[ψ']/E[ψ²] of Huber's ψ for N(0, σ²) errors: against a direct Monte Carlo average at δ = σ/5, and its limits,
    # least squares' 1/σ² for δ far above the noise and L1's 2φ(0)/(σδ) far below it
    sigma = 0.01
    r = sigma * np.random.default_rng(0).standard_normal(400_000)
    for delta in (sigma / 5, 1.0):
        mc = np.mean(np.abs(r) <= delta) / np.mean(np.clip(r, -delta, delta) ** 2)
        assert deviance_scale(r, delta) == pytest.approx(mc, rel=0.02), delta
    assert deviance_scale(r, 1.0) == pytest.approx(1 / sigma**2, rel=0.01)
    assert deviance_scale(r, 1e-6) == pytest.approx(2 / math.sqrt(2 * math.pi) / (sigma * 1e-6), rel=0.01)
    # the fitted parameters' share of the residuals' spread: sqrt(n/(n - p)) on σ
    few = r[:40]
    assert deviance_scale(few, 1.0, n_params=5) == pytest.approx(deviance_scale(few, 1.0) * 35 / 40, rel=1e-9)
