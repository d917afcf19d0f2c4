"""analyze() and the CLI end to end on synthetic sweeps with training curves: fit.json, results.csv,
report.md, the figures' data, several datasets, --params, bits per byte, bad input, atomic writes."""

from __future__ import annotations

import csv
import json
import math
import shutil
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import analyze, fit_dataset, load_dataset
from analysis import plots
from analysis.approach3 import optimal_allocation, predict_loss
from analysis.synthetic import truth

from helpers import REPO
BPT = 3.7  # bytes per token in the fake manifest


def write_sweep(root: Path, *, alpha=0.34, beta=0.28, budgets=(1e16, 1e17, 1e18, 1e19), sizes=7, noise=0.003,
                seed=0, manifest: dict | None = None, data_path: str | None = None) -> Path:
    """A sweep dir as the trainer writes it: <run_id>/result.json and metrics.jsonl, from the
    surface E + A/N^alpha + B/D^beta (Chinchilla's E, A, B) with multiplicative noise, and a data
    dir whose manifest.json gives bytes_per_token."""
    rng = np.random.default_rng(seed)
    t = truth({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": alpha, "beta": beta})
    data = root.parent / f"{root.name}_data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "manifest.json").write_text(json.dumps(manifest if manifest is not None else
                                                   {"version": 1, "bytes_per_token": BPT}))
    for c in budgets:
        n0 = optimal_allocation(t, c)[0]
        for x in np.linspace(-0.75, 0.75, sizes):
            n = float(n0 * 10**x)
            d_final = c / (6 * n)
            run_id = f"C{c:.0e}-N{n:.2e}"
            (root / run_id).mkdir(parents=True)
            steps = np.linspace(0.02, 1.0, 120)
            loss = (predict_loss(t, n, d_final * steps) + 0.2 * (1 - steps)) * np.exp(noise * rng.standard_normal(120))
            with open(root / run_id / "metrics.jsonl", "w") as fh:
                for i, (s, l) in enumerate(zip(steps, loss)):
                    fh.write(json.dumps({"step": i + 1, "tokens": d_final * s, "flops": c * s, "loss": float(l),
                                         "lr": 1e-3}) + "\n")
            final = float(predict_loss(t, n, d_final) * math.exp(noise * rng.standard_normal()))
            rec = {"run_id": run_id, "status": "done", "error": None, "budget": c, "flops": c,
                   "flops_convention": "6N", "params": n, "params_non_embedding": 0.8 * n, "tokens": d_final,
                   "final_train_loss": float(loss[-1]), "final_val_loss": final,
                   "data": {"path": data_path if data_path is not None else str(data), "source": "synthetic"}}
            (root / run_id / "result.json").write_text(json.dumps(rec))
    return root


def run_cli(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("s") / "c4")


@pytest.fixture(scope="module")
def analysed(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return analyze(sweep, out, project=[5.76e23, 1e24], n_boot=200), out


def test_all_three_approaches_with_intervals(analysed):
    result, out = analysed
    assert json.loads((out / "fit.json").read_text()) == result
    a_true = 0.28 / 0.62
    for ap in ("approach1", "approach2", "approach3"):
        fit = result[ap]
        assert fit is not None, result["approaches_skipped"]
        assert fit["a"] == pytest.approx(a_true, abs=0.06), ap
        lo, hi = fit["ci"]["a"]
        assert lo <= fit["a"] <= hi
    f3 = result["approach3"]
    assert set(f3) >= {"E", "A", "B", "alpha", "beta", "a", "b", "ci"}
    assert set(f3["ci"]) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    assert f3["ci"]["alpha"][0] <= 0.34 <= f3["ci"]["alpha"][1]
    # top-level approach2 keeps the fields the callback and older readers use
    assert set(result["approach2"]) >= {"a", "b", "budgets", "N_opt", "D_opt", "L_opt", "parabolas", "ci", "ci_runs"}
    assert result["approaches_skipped"] == {} and result["n_runs"] == 28
    assert result["params"] == "total" and result["bootstrap"] == 200 and result["ci_level"] == 0.8
    # the profile over E: a and b on the sweep's axis for every held E, and a set around Chinchilla's E = 1.69
    prof = f3["e_profile"]
    assert len(prof["a"]) == len(prof["b"]) == len(prof["E"]) == len(prof["deviance"]) > 10
    assert prof["E_set"][0] < f3["E"] < prof["E_set"][1] and not prof["E_set_open_above"]
    assert prof["a_set"][0] <= f3["a"] <= prof["a_set"][1]


def test_projections(analysed):
    result, _ = analysed
    projs = result["projections"]
    assert [p["flops"] for p in projs] == [5.76e23, 1e24]
    n_true = optimal_allocation(truth({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}), 1e24)[0]
    for p in projs:
        for ap in ("approach1", "approach2", "approach3"):
            q = p[ap]
            assert set(q) == {"N", "D", "N_ci", "D_ci"}
            assert q["N_ci"][0] <= q["N"] <= q["N_ci"][1] and q["D_ci"][0] <= q["D"] <= q["D_ci"][1]
            assert 6 * q["N"] * q["D"] == pytest.approx(p["flops"], rel=0.3)  # C = 6ND (up to the fits)
    # 5 decades of extrapolation: within a factor 2 of the true optimum
    for ap in ("approach1", "approach2", "approach3"):
        assert 0.5 < projs[1][ap]["N"] / n_true < 2, ap


def test_results_csv_and_bits_per_byte(analysed, sweep):
    result, out = analysed
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 28 and {r["dataset"] for r in rows} == {"c4"}
    for r in rows:
        rec = json.loads((sweep / r["run_id"] / "result.json").read_text())
        assert float(r["loss"]) == rec["final_val_loss"]
        assert float(r["loss_bpb"]) == pytest.approx(rec["final_val_loss"] / math.log(2) / BPT, rel=1e-12)
        assert r["has_curve"] == "True" and r["skip_reason"] == "" and float(r["N"]) == rec["params"]
    assert result["bytes_per_token"] == BPT
    assert result["approach3"]["E_bpb"] == pytest.approx(result["approach3"]["E"] / math.log(2) / BPT)
    assert result["approach2"]["L_opt_bpb"][0] == pytest.approx(result["approach2"]["L_opt"][0] / math.log(2) / BPT)


def test_report(analysed):
    _, out = analysed
    report = (out / "report.md").read_text()
    # this fit next to Chinchilla's Table 2 (10th-90th percentiles) and Table A2
    assert "| Chinchilla Table 2: Approach 1 | 0.500 (0.488, 0.502) | 0.500 (0.501, 0.512) |" in report
    assert "| Chinchilla Table 2: Approach 2 | 0.490 (0.462, 0.534) | 0.510 (0.483, 0.529) |" in report
    assert "| Chinchilla Table 2: Approach 3 | 0.460 (0.454, 0.455) | 0.540 (0.542, 0.543) |" in report
    assert "| Chinchilla Table 2: Kaplan et al. 2020 | 0.730 | 0.270 |" in report
    # the sweep dir is called c4, so its Table A2 row is marked
    assert "| Chinchilla Table A2: C4 (this dataset) | 0.500 | 0.500 |" in report
    assert "| Chinchilla Table A2: GitHub | 0.530 | 0.470 |" in report
    assert "this fit: Approach 3" in report and "Chinchilla Table 3 (Approach 1) | 6.7e+10 | 1.5e+12" in report
    assert "![Approach 2: isoFLOP profiles](figures/isoflop.png)" in report
    assert "![Approach 1: training-curve envelope](figures/envelope.png)" in report
    assert "bits per byte" in report
    assert "Approach 3 with E held fixed" in report and "Over the profile set E = " in report


def test_figures_data(sweep):
    ds = load_dataset(sweep)
    fit = fit_dataset(ds, project=[5.76e23], n_boot=0)
    plot = fit.pop("_plot")
    n_budgets = len(fit["approach2"]["budgets"])

    fig = plots.isoflop_figure([plots.isoflop_panel(fit, plot)])
    ax_l, ax_n, ax_d = fig.axes
    assert all(ax.get_xscale() == ax.get_yscale() == "log" for ax in fig.axes)
    gids = lambda ax, gid: [a for a in ax.get_children() if a.get_gid() == gid]  # noqa: E731
    assert len(gids(ax_l, "parabola")) == n_budgets  # one curve per budget
    minima = np.vstack([m.get_offsets() for m in gids(ax_l, "minimum")])
    np.testing.assert_allclose(minima, np.column_stack([fit["approach2"]["N_opt"], fit["approach2"]["L_opt"]]))
    for ax, key in ((ax_n, "N"), (ax_d, "D")):
        (proj,) = gids(ax, "projection")
        np.testing.assert_allclose(proj.get_offsets(), [[5.76e23, fit["projections"][0]["approach2"][key]]])
        labels = [t.get_text() for t in ax.texts]
        assert plots.human(fit["projections"][0]["approach2"][key]) in labels
        optima = gids(ax, "optima")[0].get_offsets()
        np.testing.assert_allclose(optima[:, 1], fit["approach2"][f"{key}_opt"])
        assert len(gids(ax, "fit")) == 1
    png = plots.figure_png(fig)
    assert png[:4] == b"\x89PNG"

    fig = plots.envelope_figure([plots.envelope_panel(fit, plot)])
    ax_c, ax_n, ax_d = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert all(ax.get_xscale() == ax.get_yscale() == "log" for ax in (ax_c, ax_n, ax_d))
    assert len(gids(ax_c, "curve")) == fit["n_runs"]  # every run's curve
    env_pts = gids(ax_c, "envelope")[0].get_offsets()
    assert len(env_pts) == fit["approach1"]["n_envelope"]
    assert [t.get_text() for t in ax_n.texts] == [plots.human(fit["projections"][0]["approach1"]["N"])]
    plots.figure_png(fig)


def test_power_law_bands_bracket_the_fit_and_widen_away_from_the_data(sweep):
    from analysis import approach1, approach2

    fit = fit_dataset(load_dataset(sweep), project=[5.76e23, 1e24], n_boot=50)
    plot = fit.pop("_plot")
    budgets, axis = fit["approach2"]["budgets"], plot["axis"]
    for name, predict in (("approach1", approach1.predict), ("approach2", approach2.predict)):
        band = fit[name]["band"]
        c = np.array(band["flops"])
        assert len(c) == 41 and c[0] < min(budgets) / 3 and c[-1] > 1e24 * 3  # past the data and the projections
        n_line = predict(fit[name], c)[0]
        d_line = axis.tokens(c, n_line)  # the figures' D line: C / fpt(N_opt(C)), as every projection
        for key, line in (("N_ci", n_line), ("D_ci", d_line)):
            lo, hi = np.array(band[key]).T
            assert np.all(lo <= line * (1 + 1e-9)) and np.all(line <= hi * (1 + 1e-9)), (name, key)
            width = np.log10(hi / lo)
            mid = np.argmin(abs(np.log10(c) - np.mean(np.log10(budgets))))
            # tightest among the budgets, fanning out towards the projections (the exponent's spread times log C)
            assert width[-1] > 3 * width[mid], (name, key)
        # at C = 5.76e23 the band agrees with that projection's own interval (the same bootstrap fits; log-log
        # interpolation between the band's C values)
        proj = fit["projections"][0][name]["N_ci"]
        got = [10 ** np.interp(np.log10(5.76e23), np.log10(c), np.log10(np.array(band["N_ci"])[:, k])) for k in (0, 1)]
        assert got == pytest.approx(proj, rel=0.05), name

    # each N_opt and D_opt panel shades its band once
    for fig in (plots.isoflop_figure([plots.isoflop_panel(fit, plot)]),
                plots.envelope_figure([plots.envelope_panel(fit, plot)])):
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert [sum(a.get_gid() == "band" for a in ax.get_children()) for ax in axes] == [0, 1, 1]


def test_human_labels():
    assert [plots.human(v) for v in (67e9, 1.5e12, 4e8, 8.01e4, 12.0, 2.2e15)] == \
        ["67B", "1.5T", "400M", "80.1K", "12", "2.2e+15"]


def test_several_datasets_one_figure_row_each(tmp_path):
    c4 = write_sweep(tmp_path / "sweeps" / "c4", seed=1)
    gh = write_sweep(tmp_path / "sweeps" / "gh", alpha=0.30, beta=0.34, seed=2)
    out = tmp_path / "out"
    # --min-tokens-per-param 0: the GitHub-like surface's optimum lies at ~0.1 tokens per parameter, so Approach 3's
    # default filter (>= 4, for real runs' optimisation excess) would leave it almost no runs
    proc = run_cli(f"C4={c4}", f"GitHub={gh}", "--out", out, "--bootstrap", 50, "--project", 1e24,
                   "--min-tokens-per-param", 0)
    assert proc.returncode == 0, proc.stderr
    fit = json.loads((out / "fit.json").read_text())
    assert set(fit["datasets"]) == {"C4", "GitHub"} and "approach2" not in fit
    for name, a_true in (("C4", 0.28 / 0.62), ("GitHub", 0.34 / 0.64)):
        d = fit["datasets"][name]
        assert d["approach3"]["a"] == pytest.approx(a_true, abs=0.05)
        assert [p["flops"] for p in d["projections"]] == [1e24]
        assert all(d[ap] for ap in ("approach1", "approach2", "approach3"))
    assert fit["datasets"]["GitHub"]["approach3"]["a"] > fit["datasets"]["C4"]["approach3"]["a"]
    import matplotlib.image

    img = matplotlib.image.imread(out / "figures" / "isoflop.png")
    assert 0.5 < img.shape[0] / img.shape[1] < 0.8  # two rows of three panels
    report = (out / "report.md").read_text()
    assert "## C4" in report and "## GitHub" in report
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["dataset"] for r in rows} == {"C4", "GitHub"} and len(rows) == 56
    # the default name is the sweep dir's name
    proc = run_cli(c4, gh, "--out", tmp_path / "out2", "--bootstrap", 0)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads((tmp_path / "out2" / "fit.json").read_text())["datasets"]) == {"c4", "gh"}


def test_params_non_embedding(sweep, analysed, tmp_path):
    result, _ = analysed
    ne = analyze(sweep, tmp_path, params="non_embedding", project=[1e24], n_boot=0)
    # params_non_embedding = 0.8·params exactly: every N_opt scales by 0.8, the exponents do not move
    np.testing.assert_allclose(ne["approach2"]["N_opt"], 0.8 * np.array(result["approach2"]["N_opt"]), rtol=1e-9)
    assert ne["approach2"]["a"] == pytest.approx(result["approach2"]["a"], abs=1e-9)
    assert ne["params"] == "non_embedding"
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert all(float(r["N"]) == pytest.approx(0.8 * float(r["params"])) for r in rows)


def test_missing_bytes_per_token_and_relative_data_path(tmp_path):
    # The manifest has no bytes_per_token yet: no bits per byte, a note, nothing fails.  The data
    # path is relative (as the trainer records it) to the sweep's parent dir.
    root = write_sweep(tmp_path / "outputs" / "s", manifest={"version": 1}, data_path="s_data", budgets=(1e16, 1e17))
    fit = analyze(root, tmp_path / "o", n_boot=0)
    assert fit["bytes_per_token"] is None and "E_bpb" not in fit["approach3"]
    assert any("no bytes_per_token" in n for n in fit["notes"])
    rows = list(csv.DictReader(open(tmp_path / "o" / "results.csv")))
    assert all(r["loss_bpb"] == "" for r in rows)
    # with the field, the relative path is found and used
    (tmp_path / "outputs" / "s_data" / "manifest.json").write_text(json.dumps({"bytes_per_token": 4.0}))
    assert analyze(root, tmp_path / "o", n_boot=0)["bytes_per_token"] == 4.0


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing"], "does not exist"),
    (["{sweep}", "{sweep}", "--out", "{tmp}/o"], "both named"),
    (["{sweep}", "{csv}"], "need --out"),
    (["{csv}", "--params", "non_embedding", "--out", "{tmp}/o"], "params_non_embedding column"),
    (["{sweep}", "--bootstrap", "-1", "--out", "{tmp}/o"], "--bootstrap must be >= 0"),
    (["{sweep}", "--project", "lots", "--out", "{tmp}/o"], "invalid float value"),
    (["{sweep}", "--project", "0", "--out", "{tmp}/o"], "--project budgets must be positive"),
    (["{csv}", "--params", "embedding", "--out", "{tmp}/o"], "invalid choice"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, sweep, args, message):
    csv_file = tmp_path / "r.csv"
    csv_file.write_text("params,flops,loss\n1e8,1e18,3.0\n2e8,1e18,2.9\n")
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli(*[a.format(tmp=tmp_path, sweep=sweep, csv=csv_file) for a in args])
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert proc.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_csv_too_small_for_any_approach(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("params,tokens,loss\n1e8,2e9,3.0\n2e8,1e9,2.9\n")
    proc = run_cli(f)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no approach could be fitted" in proc.stderr and "approach3: only 2 runs" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_writes_are_atomic(sweep, tmp_path, monkeypatch):
    # A failure while writing (here: the report) leaves no temp file and no fit.json; fit.json is
    # written last, so its presence means everything else is complete.
    import analysis.run as run

    real = os.replace

    def flaky(src, dst):
        if str(dst).endswith("report.md"):
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(run.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        analyze(sweep, tmp_path, n_boot=0)
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert "fit.json" not in names and "report.md" not in names
    assert not [n for n in names if n.endswith(".tmp")]


def test_isoflop_figure_without_an_approach2_fit(tmp_path):
    # Two sizes per budget: no parabola anywhere, but Approaches 1 and 3 fit; the isoFLOP figure
    # still shows the runs per budget (what tells the user to widen the grid), and says why.
    root = write_sweep(tmp_path / "s", sizes=2)
    fit = analyze(root, tmp_path / "o", n_boot=0, min_tokens_per_param=0)  # every run: Approach 3 needs >= 6
    assert fit["approach2"] is None and "4 had < 3 distinct sizes" in fit["approaches_skipped"]["approach2"]
    assert fit["approach1"] and fit["approach3"]
    assert (tmp_path / "o" / "figures" / "isoflop.png").stat().st_size > 1000
    ds = load_dataset(root)
    f = fit_dataset(ds, n_boot=0)
    fig = plots.isoflop_figure([plots.isoflop_panel(f, f.pop("_plot"))])
    ax_l, ax_n, _ = fig.axes
    assert len([a for a in ax_l.get_children() if a.get_gid() == "runs"]) == 4  # one colour per budget
    assert not [a for a in ax_l.get_children() if a.get_gid() == "parabola"]
    assert "Approach 2 skipped: need at least 2 budgets" in ax_n.texts[0].get_text().replace("\n", " ")
    plots.figure_png(fig)


def test_stale_figure_removed(tmp_path):
    # Re-analysing into a dir that has an envelope figure from data with curves, now without:
    # the old figure would contradict the new report, so it goes.
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "envelope.png").write_bytes(b"old")
    f = tmp_path / "r.json"
    f.write_text((REPO / "tests" / "data" / "cs336_isoflops_curves.json").read_text())
    analyze(f, tmp_path, n_boot=0)
    assert not (tmp_path / "figures" / "envelope.png").exists() and (tmp_path / "figures" / "isoflop.png").exists()


def test_horizon_runs_feed_approaches_1_and_3_not_the_isoflop_profiles(tmp_path):
    """A sweep's extra token horizons (spec kind "horizon") were trained to their own budget C x h;
    with 3+ sizes they would look like an off-centre isoFLOP profile, biasing Approach 2."""
    base = write_sweep(tmp_path / "base" / "c4", budgets=(1e16, 1e17, 1e18), sizes=5, seed=3)
    hor = write_sweep(tmp_path / "hor" / "c4", budgets=(4e16,), sizes=5, seed=4)
    mixed = tmp_path / "mixed" / "c4"
    shutil.copytree(base, mixed)
    for d in hor.iterdir():  # same surface, but tagged as horizon runs and all far off this budget's optimum
        rec = json.loads((d / "result.json").read_text())
        rec["spec"] = {"kind": "horizon"}
        shutil.copytree(d, mixed / d.name)
        (mixed / d.name / "result.json").write_text(json.dumps(rec))
    plain = fit_dataset(load_dataset(base), n_boot=0)
    both = fit_dataset(load_dataset(mixed), n_boot=0)
    assert both["approach2"]["budgets"] == plain["approach2"]["budgets"] == [1e16, 1e17, 1e18]
    assert both["approach2"]["a"] == pytest.approx(plain["approach2"]["a"], rel=1e-12)
    assert both["n_runs"] == plain["n_runs"] + 5  # Approach 3 sees every run
    assert any("horizon runs" in n for n in both["notes"])
    rows = load_dataset(mixed).usable
    assert sorted(r["kind"] for r in rows).count("horizon") == 5


def test_budget_with_two_sizes_is_skipped_with_a_warning(tmp_path):
    """A budget with < 3 sizes cannot have a parabola: it is dropped with the reason, the rest is fitted."""
    t = truth({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28})
    lines = ["budget,params,tokens,loss"]
    for c, k in ((1e18, 5), (1e19, 5), (1e20, 5), (1e21, 2)):
        n0 = optimal_allocation(t, c)[0]
        for x in np.linspace(-0.5, 0.5, k):
            n = n0 * 10**x
            lines.append(f"{c},{n},{c / (6 * n)},{float(predict_loss(t, n, c / (6 * n)))}")
    f = tmp_path / "r.csv"
    f.write_text("\n".join(lines) + "\n")
    proc = run_cli(f, "--bootstrap", 0)
    assert proc.returncode == 0, proc.stderr
    assert "dropped 1e+21: only 2 distinct model size(s); a parabola needs >= 3" in proc.stdout
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["approach2"]["budgets"] == [1e18, 1e19, 1e20]
    assert "dropped budget 1e+21" in (tmp_path / "report.md").read_text()


def test_inside_grid_only_drops_extrapolated_vertices(tmp_path):
    t = truth({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28})
    lines = ["budget,params,tokens,loss"]
    for c, offsets in ((1e18, (-0.5, 0.5)), (1e19, (-0.5, 0.5)), (1e20, (-0.5, 0.5)), (1e21, (0.4, 1.2))):
        n0 = optimal_allocation(t, c)[0]
        for x in np.linspace(*offsets, 5):  # the last budget's sizes all lie above its optimum
            n = n0 * 10**x
            lines.append(f"{c},{n},{c / (6 * n)},{float(predict_loss(t, n, c / (6 * n)))}")
    f = tmp_path / "r.csv"
    f.write_text("\n".join(lines) + "\n")
    everything = analyze(f, tmp_path / "all", n_boot=20)["approach2"]
    assert everything["budgets"] == [1e18, 1e19, 1e20, 1e21]
    assert not everything["parabolas"][-1]["inside_grid"]
    inside = analyze(f, tmp_path / "in", n_boot=20, inside_grid_only=True)["approach2"]
    assert inside["budgets"] == [1e18, 1e19, 1e20]
    assert {"budget": 1e21, "reason": "vertex outside the sizes run (--inside-grid-only)"} in inside["dropped"]
    # the same as fitting the three centred budgets alone
    (tmp_path / "r3.csv").write_text("\n".join(l for l in lines if not l.startswith("1e+21")) + "\n")
    alone = analyze(tmp_path / "r3.csv", tmp_path / "alone", n_boot=0)["approach2"]
    assert inside["a"] == pytest.approx(alone["a"], rel=1e-12) and inside["b"] == pytest.approx(alone["b"], rel=1e-12)
    proc = run_cli(f, "--inside-grid-only", "--bootstrap", 0, "--out", tmp_path / "cli")
    assert proc.returncode == 0 and "dropped 1e+21: vertex outside the sizes run" in proc.stdout, proc.stderr


@pytest.mark.parametrize("ci", [[2e11, 3e11], [1e10, float("inf")]])
def test_projection_interval_not_containing_the_estimate_is_drawn(ci):
    """A bootstrap percentile interval can miss the point estimate (or reach inf when a resampled
    exponent is wild): the figure must still be drawn (matplotlib refuses negative error bars)."""
    import matplotlib.pyplot as plt

    from analysis import approach2

    fit = {"a": 0.5, "a_intercept": -0.5, "b": 0.5, "b_intercept": 0.5}
    fig, ax = plt.subplots()
    plots._projection_panel(ax, [1e18, 1e19], [1e8, 3e8], ["k", "k"], fit, approach2.predict, "N",
                            [{"flops": 1e24, "N": 1e11, "N_ci": ci}], "t")
    fig.canvas.draw()
    assert [a.get_gid() for a in ax.collections].count("projection") == 1
    plt.close(fig)
