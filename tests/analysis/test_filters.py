"""Which runs each approach fits: --min-tokens-per-param (Approach 3, default 4) and --min-steps (every approach)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from analysis import analyze
from analysis.approach3 import optimal_allocation, predict_loss
from analysis.synthetic import truth
from helpers import REPO

SURFACE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def optimisation_excess(n, d):
    """Extra loss of a run too short for its size: nothing at >= 4 tokens/param, growing below (as the CPU sweeps'
    large models at a few hundred steps show); E + A/N^α + B/D^β has no such term."""
    r = d / n
    return np.where(r < 4, 0.4 * (4 / r - 1), 0.0)


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    t = truth(SURFACE)
    lines = ["budget,params,tokens,loss,steps"]
    for c in (1e18, 1e19, 1e20, 1e21):
        n0 = optimal_allocation(t, c)[0]
        for x in np.linspace(-1.0, 1.0, 9):  # the right side of every profile is far below 4 tokens/param
            n = n0 * 10 ** x
            d = c / (6 * n)
            steps = int(d / 2e6)
            lines.append(f"{c},{n},{d},{float(predict_loss(t, n, d) + optimisation_excess(n, d))},{steps}")
    f = tmp_path_factory.mktemp("f") / "runs.csv"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_approach3_leaves_out_runs_below_4_tokens_per_param(runs_csv, tmp_path):
    rows = np.genfromtxt(runs_csv, delimiter=",", names=True)
    low = int((rows["tokens"] / rows["params"] < 4).sum())
    fit = analyze(runs_csv, tmp_path / "d", n_boot=0)
    f3 = fit["filters"]["approach3"]
    assert f3["min_tokens_per_param"] == 4 and f3["dropped"] == low and f3["runs"] == len(rows) - low > 0
    assert all("tokens/param < --min-tokens-per-param 4" in d["reason"] for d in f3["dropped_runs"])
    assert fit["approach3"]["n_runs"] == len(rows) - low
    # with the filter the surface is recovered; without it the short runs' excess bends the fit
    assert fit["approach3"]["alpha"] == pytest.approx(0.34, abs=0.01) and fit["approach3"]["beta"] == pytest.approx(0.28, abs=0.01)
    every = analyze(runs_csv, tmp_path / "all", n_boot=0, min_tokens_per_param=0)
    assert every["filters"]["approach3"]["dropped"] == 0 and every["approach3"]["n_runs"] == len(rows)
    assert abs(every["approach3"]["alpha"] - 0.34) > 0.05
    # Approach 2 never gets a tokens-per-parameter filter: it would cut off the right side of every profile
    f2 = fit["filters"]["approach2"]
    assert f2["min_tokens_per_param"] == 0 and f2["dropped"] == 0 and fit["approach2"]["parabolas"][0]["n_points"] == 9
    report = (tmp_path / "d" / "report.md").read_text()
    assert "| Approach 3 | >= 4 tokens/param |" in report and f"| {len(rows) - low} | {low} |" in report


def test_min_steps_applies_to_every_approach(runs_csv, tmp_path):
    rows = np.genfromtxt(runs_csv, delimiter=",", names=True)
    k = int(np.percentile(rows["steps"], 30))
    few = rows["steps"] < k
    fit = analyze(runs_csv, tmp_path, n_boot=0, min_steps=k, min_tokens_per_param=0)
    for ap in ("approach2", "approach3"):
        rec = fit["filters"][ap]
        assert rec["min_steps"] == k and rec["dropped"] == int(few.sum()), ap
        assert all(f"steps < --min-steps {k}" in d["reason"] for d in rec["dropped_runs"])
    assert fit["approach3"]["n_runs"] == len(rows) - few.sum()
    kept = rows[~few]
    per_budget = [int((kept["budget"] == c).sum()) for c in np.unique(kept["budget"])]
    assert few.any() and sum(p["n_points"] for p in fit["approach2"]["parabolas"]) == sum(k for k in per_budget if k >= 3)


def test_filter_flags_on_the_cli(runs_csv, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", runs_csv, "--out", tmp_path, "--bootstrap", "0",
                           "--min-tokens-per-param", "8", "--min-steps", "10"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["min_tokens_per_param"] == 8 and fit["filters"]["approach3"]["min_tokens_per_param"] == 8
    assert fit["filters"]["approach1"]["min_steps"] == 10
    proc = subprocess.run([sys.executable, "-m", "analysis", runs_csv, "--out", tmp_path / "x",
                           "--min-tokens-per-param", "-1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "--min-tokens-per-param" in proc.stderr
    assert not (tmp_path / "x").exists()
