"""analysis.run: analyze() and the CLI on a sweep dir and a CSV; bad input exits 2 with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from analysis import analyze
from helpers import A, B, CS336_SUBSET, E, REPO, write_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_analyze_writes_fit_and_figure(tmp_path):
    sweep = write_sweep(tmp_path / "sweep")
    result = analyze(sweep, n_boot=50)
    written = json.loads((sweep / "fit.json").read_text())
    assert written == result
    assert written["n_runs"] == 15 and written["n_skipped"] == 4 and written["source"] == str(sweep)
    assert written["approach2"]["a"] == pytest.approx(0.5, abs=1e-9)
    # Noise-free losses from L = E + A/N^0.3 + B/D^0.3: Approach 3 recovers the surface.
    f3 = written["approach3"]
    assert [f3["E"], f3["A"], f3["B"], f3["alpha"], f3["beta"]] == pytest.approx([E, A, B, 0.3, 0.3], rel=1e-3)
    assert written["approach1"] is None and "metrics.jsonl" in written["approaches_skipped"]["approach1"]
    assert (sweep / "figures" / "isoflop.png").read_bytes()[:8] == PNG_SIGNATURE
    for f in (sweep / "fit.json", sweep / "figures" / "isoflop.png"):
        assert f.stat().st_mode & 0o044 == 0o044  # readable by others, unlike mkstemp's 0600


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_sweep_dir(tmp_path):
    sweep = write_sweep(tmp_path / "sweep")
    proc = run_cli(sweep, "--bootstrap", 50)
    assert proc.returncode == 0, proc.stderr
    assert "Approach 2: N_opt ~ C^0.500" in proc.stdout and "1e+12" in proc.stdout
    fit = json.loads((sweep / "fit.json").read_text())
    assert set(fit) >= {"approach2", "n_runs", "n_skipped", "source"}
    png = sweep / "figures" / "isoflop.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_SIGNATURE


def test_cli_csv_with_out_dir(tmp_path):
    f = tmp_path / "data" / "r.json"
    f.parent.mkdir()
    f.write_text(json.dumps([{"parameters": n, "compute_budget": c, "final_loss": l} for n, c, l in CS336_SUBSET]))
    proc = run_cli(f, "--out", tmp_path / "out", "--bootstrap", 50)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "fit.json").exists() and (tmp_path / "out" / "figures" / "isoflop.png").exists()
    assert sorted(p.name for p in f.parent.iterdir()) == ["r.json"]


@pytest.mark.parametrize("case", ["missing", "empty_dir", "one_budget"])
def test_cli_bad_input_exit_2_nothing_written(tmp_path, case):
    target = tmp_path / "target"
    if case == "empty_dir":
        target.mkdir()
    elif case == "one_budget":
        write_sweep(target, budgets=(1e12,), extra=False)
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli(target)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert proc.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a temp file
