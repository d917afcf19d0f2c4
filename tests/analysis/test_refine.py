"""launch.refine: the second pass re-centres each budget's grid on the optimum fitted from the first."""
import math

import pytest

from analysis.refine import refine_centres
from helpers import write_run


def test_refine_centres_are_the_isoflop_vertices(tmp_path):
    # exact parabolas in log10 N with vertices on N_opt = 0.1 * C^0.5 (so the truth is known)
    truth = {}
    for c in (1e12, 1e13, 1e14):
        x0 = math.log10(0.1 * c ** 0.5)
        truth[c] = 10 ** x0
        for dx in (-0.9, -0.45, 0.0, 0.45, 0.9):
            x = x0 + 0.3 + dx  # the first pass was off-centre by 0.3 decades
            write_run(tmp_path, c, 10 ** x, 3.0 + 0.2 * (x - x0) ** 2)
    centres = refine_centres(tmp_path)
    assert centres.keys() == truth.keys()
    for c, n in truth.items():
        assert centres[c] == pytest.approx(n, rel=1e-6)


def test_refine_without_a_first_pass_says_so(tmp_path):
    write_run(tmp_path, 1e12, 1e5, 3.0)
    with pytest.raises(ValueError, match="launch.refine needs a finished first pass"):
        refine_centres(tmp_path)
