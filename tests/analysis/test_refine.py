"""launch.refine: the second pass re-centres each budget's grid on the optimum fitted from the first."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.refine import clamp_centre, ladder_range, refine_centres
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


def test_refined_centres_stay_on_the_ladder_and_move_at_most_one_half_width(tmp_path):
    # First-pass grids centred at 10^x0 (+-0.6 decades, half-width h = 0.6: size_span 16); exact parabolas with
    # their vertices at x0 + shift.  The ladder here spans 10^4-10^7.
    h, ladder = 0.6, (1e4, 1e7)
    cases = {1e12: (5.0, -2.6), 1e13: (5.5, +1.5), 1e14: (6.0, +0.2)}  # budget: (x0, vertex - x0)
    for c, (x0, shift) in cases.items():
        for dx in np.linspace(-h, h, 5):
            x = x0 + dx
            write_run(tmp_path, c, 10 ** x, 3.0 + 0.2 * (x - x0 - shift) ** 2)
    assert refine_centres(tmp_path)[1e12] == pytest.approx(10 ** 2.4, rel=1e-6)  # unclamped: below the ladder
    centres = refine_centres(tmp_path, ladder_range=ladder, half_width=h)
    # 1e12: the vertex 10^2.4 (like the prose sweep's N = 228) is below the ladder; one half-width down would put the
    # grid's lower end below 10^4, so the centre is 10^(4 + h) and the whole grid is on the ladder
    assert centres[1e12] == pytest.approx(10 ** (4 + h), rel=1e-9)
    assert centres[1e13] == pytest.approx(10 ** (5.5 + h), rel=1e-9)  # 1.5 decades up: moved by one half-width
    assert centres[1e14] == pytest.approx(10 ** 6.2, rel=1e-6)  # within reach and on the ladder: the vertex itself
    for c in centres.values():
        assert ladder[0] * (1 - 1e-9) <= c / 10 ** h and c * 10 ** h <= ladder[1] * (1 + 1e-9)


def test_clamp_centre_with_a_ladder_narrower_than_the_grid():
    assert clamp_centre(1e9, 1e5, 1.0, (1e4, 1e5)) == pytest.approx(10 ** 4.5)  # the ladder's middle
    assert clamp_centre(3e5, 1e5, None, None) == 3e5


def test_ladder_range_of_a_real_sweep():
    from models.flops import param_counts
    from models.ladder import LadderConfig, ladder

    from sweep.rundir import read_config_section

    sweep = Path(__file__).resolve().parents[1] / "data" / "old_sweep" / "sweep"
    cfg = LadderConfig(**read_config_section(sweep, "model"))
    shapes = ladder(320, 32, cfg)
    lo, hi = ladder_range(sweep, cfg)
    assert lo == param_counts(shapes[0])["params"] and hi == param_counts(shapes[-1])["params"]
    runs = [r for r in (sweep).iterdir() if r.is_dir()]
    assert all(lo <= float(json.loads((r / "result.json").read_text())["params"]) <= hi for r in runs)
