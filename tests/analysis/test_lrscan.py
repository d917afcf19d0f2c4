"""analysis.lrscan: the best LR per size on synthetic, asymmetric, noisy loss-vs-LR curves with a known optimum;
the extension at an edge; the power rule's exponents recovered from known truth."""
import math

import numpy as np
import pytest

from analysis.lrscan import extensions, fit_profile, fit_rule, profiles


def curve(x, x_opt, k, curvature=0.05):
    """Loss against x = ln lr with its minimum at x_opt: a parabola (k = 0), or steeper above the optimum than below
    (k > 0: 2c/k^2 (e^{k d} - 1 - k d), whose second derivative at the optimum is 2c too)."""
    d = x - x_opt
    return 2.0 + (curvature * d * d if k == 0 else curvature * 2 / k ** 2 * (np.exp(k * d) - 1 - k * d))


@pytest.mark.parametrize("k", [0.0, 1.0, 2.0])
def test_best_lr_is_recovered_within_its_standard_error(k):
    rng = np.random.default_rng(int(10 * k))
    lrs = 3e-3 * 2.0 ** np.arange(-2, 3)  # the scan's 5 LRs, a factor 2 apart
    within1 = within2 = n = 0
    for _ in range(300):
        x_opt = math.log(3e-3) + rng.uniform(-0.6, 0.6)  # the truth, somewhere between the middle three LRs
        losses = curve(np.log(lrs), x_opt, k) + 0.003 * rng.standard_normal(5)
        f = fit_profile(lrs, losses)
        if f["edge"]:
            continue  # the noise put the best run at an edge: the scan would extend, not fit
        n += 1
        err = abs(math.log(f["lr_opt"]) - x_opt)
        within1 += err <= f["se_log_lr"]
        within2 += err <= 2 * f["se_log_lr"]
    assert n >= 250
    assert within1 / n >= 0.6 and within2 / n >= 0.85, (within1 / n, within2 / n)  # a calibrated SE: 68% and 95%


def rows_for(n, lrs, x_opt, d=1e6):
    return [{"run_id": f"r{n}-{lr}", "N": n, "D": d, "lr": lr, "loss": float(curve(math.log(lr), x_opt, 1.0))}
            for lr in lrs]


def test_an_edge_minimum_extends_the_scan_deterministically():
    lrs = [1e-3, 2e-3, 4e-3]
    rows = rows_for(1e5, lrs, math.log(2e-2)) + rows_for(3e5, lrs, math.log(2e-3))  # size 1: best beyond the top
    first = extensions(rows, factor=2.0, n_lrs=3, extend=2)
    assert first == {1e5: [1e-3, 2e-3, 4e-3, 8e-3], 3e5: lrs}  # one LR beyond the edge; the inside size unchanged
    assert extensions(rows, 2.0, 3, 2) == first  # a relaunch asks for the same
    rows += rows_for(1e5, [8e-3], math.log(2e-2))
    second = extensions(rows, 2.0, 3, 2)
    assert second[1e5] == [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    rows += rows_for(1e5, [1.6e-2], math.log(2e-2))
    assert extensions(rows, 2.0, 3, 2)[1e5] == second[1e5]  # the limit: 2 LRs beyond the scan's own 3
    assert [p["edge"] for p in profiles(rows) if p["N"] == 1e5] == [1]  # still at the edge: left out of the rule fit


def test_the_power_rule_is_recovered_from_known_exponents():
    rng = np.random.default_rng(3)
    lr0, n0, d0, p, q = 3e-3, 1e5, 1e7, 0.4, 0.2
    profs = []
    for n in (2e4, 5e4, 1e5, 3e5, 1e6):
        for d in (2e6, 5e6, 2e7):
            truth = math.log(lr0 * (n / n0) ** -p * (d / d0) ** q)
            se = 0.05
            profs.append({"N": n, "D": d, "lr_opt": math.exp(truth + se * rng.standard_normal()), "se_log_lr": se, "edge": 0})
    rule = fit_rule(profs)
    assert rule["q_fitted"] and rule["points"] == 15
    assert abs(rule["p"] - p) <= 3 * rule["p_se"] and abs(rule["q"] - q) <= 3 * rule["q_se"]
    assert rule["p_ci"][0] < rule["p"] < rule["p_ci"][1]
    one_length = fit_rule([pr for pr in profs if pr["D"] == 5e6])  # one D per size: q cannot be separated from p
    assert not one_length["q_fitted"] and one_length["q"] == 0.0 and abs(one_length["p"] - p) <= 3 * one_length["p_se"]
    with pytest.raises(ValueError, match="the rule needs >= 2"):
        fit_rule([pr for pr in profs if pr["N"] == 1e5])
