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
