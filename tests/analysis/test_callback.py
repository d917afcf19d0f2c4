"""analysis.callback: the Hydra callback fits when a multirun ends and never raises."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from analysis.callback import AnalyzeOnMultirunEnd
from helpers import REPO, write_sweep


def _hydra_config(sweep_dir):
    from omegaconf import OmegaConf

    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_callback_fits_and_never_raises(tmp_path, caplog, monkeypatch):
    cb = AnalyzeOnMultirunEnd(bootstrap=50)
    caplog.set_level(logging.INFO, logger="analysis.callback")

    sweep = write_sweep(tmp_path / "ok")
    cb.on_multirun_end(_hydra_config(sweep))
    assert (sweep / "fit.json").exists() and "N_opt" in caplog.text

    caplog.clear()
    (tmp_path / "dry").mkdir()
    cb.on_multirun_end(_hydra_config(tmp_path / "dry"))  # dry run: nothing to fit
    assert [r.levelname for r in caplog.records] == ["INFO"] and "nothing to fit" in caplog.text

    caplog.clear()
    bad = write_sweep(tmp_path / "bad", budgets=(1e12,), extra=False)
    cb.on_multirun_end(_hydra_config(bad))  # fit fails: warning, no exception, nothing written
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "at least 2 budgets" in caplog.text
    assert not (bad / "fit.json").exists()

    caplog.clear()
    import analysis.run

    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(analysis.run, "render_report", boom, raising=False)
    monkeypatch.setattr("analysis.report.render_report", boom)
    cb.on_multirun_end(_hydra_config(write_sweep(tmp_path / "bug")))  # a crash is logged, not raised
    assert [r.levelname for r in caplog.records] == ["ERROR"] and "crashed" in caplog.text
    assert not (tmp_path / "bug" / "fit.json").exists()


def test_callback_holdout_top_prints_the_self_check_it_writes(tmp_path, caplog):
    cb = AnalyzeOnMultirunEnd(bootstrap=50, holdout_top=True)
    caplog.set_level(logging.INFO, logger="analysis.callback")
    sweep = write_sweep(tmp_path / "ok", budgets=(1e12, 1e13, 1e14, 1e15))
    cb.on_multirun_end(_hydra_config(sweep))
    full = json.loads((sweep / "fit.json").read_text())
    held = json.loads((sweep / "holdout_top" / "fit.json").read_text())
    assert full["approach2"]["budgets"] == [1e12, 1e13, 1e14, 1e15] and "validation" not in full
    v = held["validation"]  # fitted on the three lower budgets, checked at the top one
    assert v["budget"] == 1e15 and v["fitted_budgets"] == [1e12, 1e13, 1e14]
    assert "holdout check at C = 1e+15 (fitted on 1e+12, 1e+13, 1e+14)" in caplog.text
    assert f"N_opt measured {v['N_opt_measured']:.3g}; predicted " in caplog.text
    assert f"2: {v['N_opt_pred']['approach2']:.3g}" in caplog.text

    caplog.clear()  # too few budgets below the top one: the sweep's fit stands, the self-check is a warning
    two = write_sweep(tmp_path / "two", budgets=(1e12, 1e13))
    cb.on_multirun_end(_hydra_config(two))
    assert (two / "fit.json").exists() and not (two / "holdout_top").exists()
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"] and "self-check was not possible" in caplog.text


def test_callback_in_a_real_hydra_multirun(tmp_path):
    # The callback as the project configures it: hydra.callbacks.analysis._target_.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(
        "budget: 1e12\nx: 0.0\n"
        "hydra:\n"
        f"  sweep:\n    dir: {tmp_path / 'multirun'}\n    subdir: ${{hydra.job.num}}\n"
        "  callbacks:\n    analysis:\n      _target_: analysis.callback.AnalyzeOnMultirunEnd\n"
        "      bootstrap: 100\n")
    (tmp_path / "task.py").write_text(
        "import json, math, hydra\n"
        "from hydra.core.hydra_config import HydraConfig\n"
        "@hydra.main(version_base=None, config_path='conf', config_name='config')\n"
        "def main(cfg):\n"
        "    c = float(cfg.budget)\n"
        "    n = math.sqrt(c / 6) * 10 ** cfg.x\n"  # alpha = beta, A = B: N_opt = sqrt(C/6)
        "    d = c / (6 * n)\n"
        "    out = HydraConfig.get().runtime.output_dir\n"
        "    rec = dict(run_id=f'C{c:.0e}-x{cfg.x}', status='done', budget=c, params=n, tokens=d,\n"
        "               final_val_loss=1.7 + 400 / n ** 0.3 + 400 / d ** 0.3)\n"
        "    json.dump(rec, open(out + '/result.json', 'w'))\n"
        "main()\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(tmp_path / "task.py"), "-m", "budget=1e12,1e14",
                           "x=-0.5,-0.25,0,0.25,0.5"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fit = json.loads((tmp_path / "multirun" / "fit.json").read_text())
    assert fit["n_runs"] == 10 and fit["approach2"]["a"] == pytest.approx(0.5, abs=1e-9)
    assert fit["bootstrap"] == 100 and fit["approach2"]["ci"]["a"] is not None
    assert (tmp_path / "multirun" / "figures" / "isoflop.png").exists()
