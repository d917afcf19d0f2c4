"""The Hydra app end to end, in-process: the isoFLOP sweeper, the basic launcher, the analysis callback."""
import json
import math
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from sweep.runid import parse_run_id


@pytest.fixture
def run_app(monkeypatch):
    def run(*overrides):
        from sweep.app import main

        GlobalHydra.instance().clear()
        monkeypatch.setattr(sys, "argv", ["sweep", *overrides])
        try:
            main()
        finally:
            GlobalHydra.instance().clear()
    return run


def tiny(tmp_path, corpus_dir, *extra):
    return [
        f"data.path={corpus_dir}", "data.tokenizer=bpe:320", "data.val_percent=10", f"data.out={tmp_path / 'data'}",
        "model.head_dim=16", "model.aspect_ratio=32", "model.tie_embeddings=true", "model.min_layers=2",
        "recipe.seq_len=32", "recipe.batch_size=8", "recipe.min_steps=20", "recipe.lr=1e-2",
        "trainer.progress=false", "trainer.eval_tokens=4096",
        "sweep.name=tiny", "sweep.budgets=[3e9,1e10,3e10]", "sweep.sizes=[1.4e4,3.7e4,7e4]",
        f"hydra.sweep.dir={tmp_path / 'out'}", *extra,
    ]


def test_dry_run_prints_plan_and_trains_nothing(tmp_path, corpus_dir, run_app, capsys):
    run_app(*tiny(tmp_path, corpus_dir, "launch.dry_run=true"))
    out = capsys.readouterr().out
    assert "run id" in out and "C3e+09-N" in out and "est." in out
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("C*"))


def test_chinchilla_appc_dry_run_plans_without_data(tmp_path, run_app, capsys, monkeypatch):
    """The seed figure's grid: its dry run prints every run with memory, GPU-hours and epochs over the configured
    data, from the assumed data size and the bpe vocab alone: nothing is prepared, downloaded or created."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download would fail
    run_app("+experiment=chinchilla_appc", "launch.dry_run=true",
            f"data.out={tmp_path / 'data'}", f"hydra.sweep.dir={tmp_path / 'out'}")
    out = capsys.readouterr().out
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()
    assert "data not prepared: planned with 1.5e+11 training tokens" in out
    head = next(l for l in out.splitlines() if l.startswith("run id"))
    assert all(col in head for col in ("epochs", "mem/GPU", "fits?", "GPU-h"))
    rows = [l.split() for l in out.splitlines() if l.startswith("C") and "-N" in l.split()[0]]
    assert {float(r[1]) for r in rows} == {1e19, 1e20, 6e20, 1e21} and len(rows) >= 30
    for r in rows:  # run id, budget, params, shape (3 words), tokens, steps, lr, batch, beta2, warm, D/N, epochs, ...
        tokens, epochs = float(r[6]), float(r[13])
        assert epochs == pytest.approx(tokens / 1.5e11, abs=0.006)
        assert r[-4] in ("GiB", "MiB") and float(r[-1].replace(",", "")) > 0  # memory (value, unit), micro, fits?, GPU-h
    assert "GPU-hours in total" in out and "8 GPUs per run (fsdp); GPU-hours on H100 SXM" in out
    assert all(r[-2] == "ok" for r in rows)  # the design fits: 8 H100s per run, FSDP, one sequence per micro-batch
    run_app("+experiment=chinchilla_appc", "launch.dry_run=true", "launch.gpus_per_run=1", "trainer.micro_batch_size=4",
            f"data.out={tmp_path / 'data'}", f"hydra.sweep.dir={tmp_path / 'out'}")
    one_gpu = [l.split() for l in capsys.readouterr().out.splitlines() if l.startswith("C1e+21-N")]
    assert one_gpu[0][-2] == "ok" and one_gpu[-1][-2].startswith("fsdp>=")  # 11.6B params do not fit one H100


def test_dry_run_of_unprepared_data_needs_a_known_vocab(tmp_path, run_app, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = ["+experiment=chinchilla_appc", "launch.dry_run=true", "data.tokenizer=gpt2", f"data.out={tmp_path / 'data'}",
            f"hydra.sweep.dir={tmp_path / 'out'}", "sweep.budgets=[1e19]"]
    with pytest.raises(SystemExit):
        run_app(*base)
    assert "set data.assumed_vocab_size" in capsys.readouterr().err
    run_app(*base, "data.assumed_vocab_size=50257")  # gpt2's
    out = capsys.readouterr().out
    assert "C1e+19-N" in out and not (tmp_path / "data").exists()


def test_multirun_trains_grid_fits_and_resumes(tmp_path, corpus_dir, run_app):
    run_app(*tiny(tmp_path, corpus_dir))
    out = tmp_path / "out"
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["runs"]) >= 8
    for spec in plan["runs"]:
        res = json.loads((out / spec["run_id"] / "result.json").read_text())  # outputs/<name>/<run_id>/
        assert res["status"] == "done"
        step_flops = spec["recipe"]["batch_size"] * spec["recipe"]["seq_len"] * spec["flops_per_token"]
        assert abs(res["flops"] - spec["budget"]) <= step_flops
        c, n = parse_run_id(spec["run_id"])
        assert c == pytest.approx(res["budget"], rel=5e-3) and n == pytest.approx(res["params"], rel=5e-3)
        assert (out / spec["run_id"] / "metrics.jsonl").exists()
    # The analysis callback ran when the multirun ended.  Runs this small need not show an isoFLOP minimum
    # (the fit itself is tested on known truth in tests/analysis/), so compare with the standalone analysis:
    # the callback wrote exactly what `analyze` makes of these results, or nothing when the fit is impossible.
    from analysis import analyze

    written = json.loads((out / "fit.json").read_text()) if (out / "fit.json").exists() else None
    try:
        expected = analyze(out, out=tmp_path / "standalone")
    except ValueError:
        expected = None
    assert (written is None) == (expected is None)
    if written is not None:
        assert written["approach2"] == expected["approach2"]
        assert (out / "figures" / "isoflop.png").stat().st_size > 1000

    # relaunching the same sweep resumes it: finished runs are not trained again
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("C*/result.json")}
    run_app(*tiny(tmp_path, corpus_dir))
    assert {p: p.stat().st_mtime_ns for p in out.glob("C*/result.json")} == mtimes


def test_sweep_overrides_are_rejected(tmp_path, corpus_dir, run_app, capsys):
    with pytest.raises(SystemExit) as e:
        run_app(*tiny(tmp_path, corpus_dir, "recipe.lr=1e-3,3e-3"))
    assert e.value.code != 0
    assert "sweep override" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_key_is_an_error(tmp_path, corpus_dir, run_app, capsys):
    with pytest.raises(SystemExit):
        run_app(*tiny(tmp_path, corpus_dir, "recipe.lrr=1e-3"))
    assert "lrr" in capsys.readouterr().err


def test_refine_dry_run_recentres_on_first_pass(tmp_path, corpus_dir, run_app, capsys):
    from helpers import write_run

    out = tmp_path / "out"
    for c, n_opt in ((1e10, 4e4), (3e10, 6e4)):  # a synthetic first pass with known isoFLOP vertices
        for f in (0.25, 0.5, 1, 2, 4):
            write_run(out, c, n_opt * f, 3.0 + 0.1 * math.log10(f) ** 2)
    run_app(*tiny(tmp_path, corpus_dir, "launch.refine=true", "launch.dry_run=true", "sweep.budgets=[1e10,3e10]",
                  "sweep.sizes=[]", "sweep.sizes_per_budget=3", "sweep.size_span=4"))
    printed = capsys.readouterr().out
    assert "refined grid centres: C=1e+10: N=4e+04, C=3e+10: N=6e+04" in printed
