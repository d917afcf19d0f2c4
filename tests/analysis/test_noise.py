"""Run-to-run noise from repeated grid points (sweep.seeds > 1): estimated, and set against the profiles."""
import json

import numpy as np
import pytest

from analysis import analyze, approach2, approach3
from analysis.synthetic import isoflop_design, truth


def repeated_design(sigma, seeds=5, half_width=0.5, seed=0):
    """Chinchilla's surface on a centred isoFLOP design, every point trained `seeds` times with
    additive Gaussian noise of SD sigma (the truth the estimate must recover)."""
    budgets = np.logspace(18, 21, 4)
    N, D = isoflop_design(budgets=budgets, sizes=7, half_width=half_width)
    C = np.repeat(budgets, 7)
    L = approach3.predict_loss(truth(), N, D)
    rng = np.random.default_rng(seed)
    rep = lambda a: np.tile(a, seeds)  # noqa: E731
    return rep(C), rep(N), rep(D), rep(L) + sigma * rng.standard_normal(len(L) * seeds)


def test_no_repeats_no_estimate():
    C, N, D, L = repeated_design(0.01, seeds=1)
    assert approach2.repeat_noise(C, N, L) is None


@pytest.mark.parametrize("sigma", [0.003, 0.03])
def test_sigma_recovered_and_parabolas_fit_to_noise(sigma):
    C, N, D, L = repeated_design(sigma)
    fit = approach2.fit_approach2(C, N, D, L)
    nz = approach2.repeat_noise(C, N, L, fit)
    assert nz["dof"] == 4 * 7 * 4 and nz["repeated_points"] == 28
    assert nz["sigma"] == pytest.approx(sigma, rel=0.2)  # dof 112: the estimate's SD is ~7%
    # pooled sums of squares, computed independently
    means = {}
    for c, n, l in zip(C, N, L):
        means.setdefault((c, n), []).append(l)
    ss = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in means.values())
    assert nz["sigma"] == pytest.approx(np.sqrt(ss / 112), rel=1e-12)
    # +-0.5 decade around the optimum: the surface is parabolic to well within this noise
    assert 0.4 < nz["lack_of_fit"] < 2.0 and not any("parabolas miss" in w for w in nz["warnings"])
    assert len(nz["depth_sigmas"]) == 4


def test_flat_profile_and_misfit_are_warned_about():
    # noise larger than the profiles' depth: no budget's minimum is resolved
    C, N, D, L = repeated_design(0.2, half_width=0.3, seed=1)
    nz = approach2.repeat_noise(C, N, L, approach2.fit_approach2(C, N, D, L))
    assert any("not resolved" in w and "sweep.size_span" in w for w in nz["warnings"])
    # almost no noise over a +-1.5 decade span: the parabolas miss the (asymmetric) profiles
    C, N, D, L = repeated_design(1e-5, half_width=1.5)
    nz = approach2.repeat_noise(C, N, L, approach2.fit_approach2(C, N, D, L))
    assert nz["lack_of_fit"] > 10 and any("parabolas miss" in w for w in nz["warnings"])
    assert not any("not resolved" in w for w in nz["warnings"])


def test_analyze_reports_the_noise(tmp_path):
    C, N, D, L = repeated_design(0.01)
    rows = [{"run_id": f"r{i}", "budget": c, "params": n, "tokens": d, "loss": l}
            for i, (c, n, d, l) in enumerate(zip(C, N, D, L))]
    src = tmp_path / "runs.json"
    src.write_text(json.dumps(rows))
    result = analyze([str(src)], tmp_path / "out", n_boot=0)
    assert result["noise"]["sigma"] == pytest.approx(0.01, rel=0.2)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Run-to-run noise" in report and f"{result['noise']['sigma']:.3g}" in report
    assert json.loads((tmp_path / "out" / "fit.json").read_text())["noise"]["dof"] == 112


# ---------------------------------------------------------------------------------------------
# the noise drives the fit (analysis.noise)


def heteroscedastic(sigmas, seeds=3, seed=0):
    """The repeated design with a different noise SD at each of its 4 budgets."""
    C, N, D, L0 = repeated_design(0.0, seeds=seeds, seed=seed)
    labels = approach2.group_budgets(C)
    sd = np.asarray(sigmas)[labels]
    return C, N, D, L0 + sd * np.random.default_rng(seed).standard_normal(len(L0)), sd


def test_repeat_sigmas_per_budget():
    from analysis.noise import repeat_sigmas

    sigmas = [0.002, 0.004, 0.008, 0.03]
    C, N, D, L, sd = heteroscedastic(sigmas, seeds=6)
    rep = repeat_sigmas(C, N, L)
    assert rep["source"] == "repeats" and rep["dof"] == 4 * 7 * 5
    got = [b["sigma"] for b in rep["budgets"]]
    np.testing.assert_allclose(got, sigmas, rtol=0.25)  # 35 dof per budget: the SD of each estimate is ~12%
    assert all(b["dof"] == 35 and b["own"] for b in rep["budgets"])
    np.testing.assert_allclose(rep["sigma_runs"], np.asarray(got)[approach2.group_budgets(C)])


def test_weighting_by_the_repeats_sigma_makes_the_exponent_more_accurate():
    # One budget 15x noisier than the others: unweighted, its wandering vertex pulls the power law; weighted by
    # 1/se² of each vertex (from σ), it counts for little.  Truth: the centred grid's slope is exactly a = β/(α+β).
    from analysis.noise import repeat_sigmas

    a_true = truth()["a"]
    err = {"weighted": [], "unweighted": []}
    for s in range(40):
        C, N, D, L, _ = heteroscedastic([0.002, 0.002, 0.03, 0.002], seed=100 + s)
        rep = repeat_sigmas(C, N, L)
        err["weighted"].append(approach2.fit_approach2(C, N, D, L, sigma=rep["sigma_runs"])["a"] - a_true)
        err["unweighted"].append(approach2.fit_approach2(C, N, D, L)["a"] - a_true)
    rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in err.items()}
    assert rms["weighted"] < 0.6 * rms["unweighted"], rms


def test_analyze_with_repeats_weights_and_bootstraps_from_their_sigma(tmp_path):
    C, N, D, L = repeated_design(0.01, seeds=3)
    rows = [{"run_id": f"r{i}", "budget": c, "params": n, "tokens": d, "loss": l}
            for i, (c, n, d, l) in enumerate(zip(C, N, D, L))]
    src = tmp_path / "runs.json"
    src.write_text(json.dumps(rows))
    result = analyze([str(src)], tmp_path / "out", n_boot=200)
    f2 = result["approach2"]
    assert f2["weighted"] and f2["noise_model"]["source"] == "repeats"
    assert f2["noise_model"]["sigma"] == pytest.approx(0.01, rel=0.25)
    assert "parametric bootstrap" in f2["ci_method"] and "seed repeats" in f2["ci_method"]
    assert all(p["vertex_se"] > 0 for p in f2["parabolas"])
    lo, hi = f2["ci"]["a"]
    assert lo < f2["a"] < hi and set(f2["ci_within"]) == set(f2["ci_runs"]) == {"a", "b"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "parametric bootstrap from the noise SD" in report and "of the seed repeats" in report
    # without repeats: the same bootstrap from the parabolas' residual SD, and the report says so
    rows1 = rows[: len(rows) // 3]  # the first seed only
    src1 = tmp_path / "one.json"
    src1.write_text(json.dumps(rows1))
    result = analyze([str(src1)], tmp_path / "one", n_boot=100)
    assert not result["approach2"]["weighted"] and result["approach2"]["noise_model"]["source"] == "residuals"
    assert "parabolas' residuals (no seed repeats)" in result["approach2"]["ci_method"]
