"""analysis.compare: Approach 2's grid bias, reported only when the Approach 3 surface it is measured on agrees."""

from __future__ import annotations

import pytest

from analysis import fit_approach2, fit_approach3
from analysis.approach3 import predict_loss
from analysis.calibration import CODE_SURFACE, cpu_axis, cpu_design
from analysis.compare import approach2_bias, surface_agrees
from analysis.compute import allocation_slopes


@pytest.fixture(scope="module")
def fits():
    """The CPU sweep's real (drifting, ladder-rounded) design on a known surface, noise-free: Approach 2 on it is
    biased (its grid drifts off the optimum and the profiles are asymmetric), Approach 3 recovers the surface."""
    C, N, D = cpu_design()
    L = predict_loss(CODE_SURFACE, N, D)
    f2, f3 = fit_approach2(C, N, D, L), fit_approach3(N, D, L)
    f3.update(allocation_slopes(f3, f2["budgets"], cpu_axis()))
    return (C, N, D), f2, f3


def with_ci(fit, a, b):
    return {**fit, "ci": {"a": list(a), "b": list(b)}}


def test_bias_warned_when_the_surface_agrees(fits):
    (C, N, D), f2, f3 = fits
    res = {"approach2": with_ci(f2, (0.45, 0.6), (0.45, 0.6)), "approach3": with_ci(f3, (0.5, 0.56), (0.5, 0.56))}
    assert surface_agrees(res) is True
    bias = approach2_bias(C, N, D, res["approach2"], res["approach3"], axis=cpu_axis(), surface_agrees=True)
    assert bias["assessable"] and max(abs(bias["bias_a"]), abs(bias["bias_b"])) > 0.01  # measured -0.007, +0.011
    assert bias["a_approach2_on_surface"] == pytest.approx(f2["a"], abs=1e-6)
    assert any(w.startswith("Approach 2 is biased on this grid") for w in bias["warnings"])


def test_bias_not_assessed_when_the_surface_disagrees(fits):
    (C, N, D), f2, f3 = fits
    # Approach 3's interval for a far from Approach 2's: as on the first CPU study's code sweep before the filter
    res = {"approach2": with_ci(f2, (0.42, 0.6), (0.48, 0.63)), "approach3": with_ci(f3, (0.08, 0.23), (0.77, 0.92))}
    assert surface_agrees(res) is False
    bias = approach2_bias(C, N, D, res["approach2"], res["approach3"], axis=cpu_axis(), surface_agrees=False)
    assert not bias["assessable"]
    assert not any("is biased" in w for w in bias["warnings"])
    assert any("bias on this grid cannot be assessed" in w and "do not overlap" in w for w in bias["warnings"])
    # no intervals at all (--bootstrap 0): cannot be told either way
    assert surface_agrees({"approach2": f2, "approach3": f3}) is None
