"""sweep.rundir: the run directory's files, the result record, spec versions, the sweep identity, the fault hook."""
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

import sweep.plan as plan_mod
from helpers import REPO
from models.ladder import LadderConfig
from sweep.plan import RunSpec, SweepConfig, plan
from sweep.recipe import RecipeConfig
import sweep.rundir as rundir
from sweep.rundir import (RESULT_VERSION, InjectedFault, RunResult, atomic_file, fault_point, finished, identity_changes,
                          read_metrics, read_plan, read_result, truncate_metrics, write_failure, write_result)

FIXTURE = REPO / "tests" / "data" / "old_sweep" / "sweep"


def specs():
    return plan(SweepConfig(budgets=[1e12], sizes_per_budget=3, size_span=4, horizons=[2]),
                LadderConfig(head_dim=16, aspect_ratio=32, tie_embeddings=True), RecipeConfig(seq_len=64, min_steps=5),
                vocab_size=512)


def test_version_1_specs_are_written_and_read_back_unchanged():
    # The old sweep's plan.json was written by the version-1 code: reading and re-writing gives the same bytes.
    raw = json.loads((FIXTURE / "plan.json").read_text())["runs"]
    assert {r["kind"] for r in raw} == {"isoflop", "horizon"} and not any("version" in r for r in raw)
    runs = read_plan(FIXTURE).runs
    assert {s.kind for s in runs} == {"grid", "horizon"}
    assert [s.to_dict() for s in runs] == raw
    # specs of kinds version 1 knew are still written as version 1; other kinds carry the version
    grid = specs()[0]
    assert grid.kind == "grid" and grid.to_dict()["kind"] == "isoflop" and "version" not in grid.to_dict()
    fork = replace(grid, kind="fork")
    assert fork.to_dict()["version"] == plan_mod.SPEC_VERSION and fork.to_dict()["kind"] == "fork"
    assert RunSpec.from_dict(fork.to_dict()) == fork and RunSpec.from_dict(grid.to_dict()) == grid
    with pytest.raises(ValueError, match="newer than this code"):
        RunSpec.from_dict({**fork.to_dict(), "version": plan_mod.SPEC_VERSION + 1})
    with pytest.raises(ValueError, match="unknown run kind"):
        replace(grid, kind="isoflop")


def test_keys_added_with_defaults_leave_specs_and_results_equal(monkeypatch, tmp_path):
    # Declare grad_clip (default 1.0) as if it had been added after version 1: specs that keep the default are
    # written without it, specs that change it carry it, and both read back equal.
    monkeypatch.setitem(plan_mod.ADDED_KEYS, "recipe", {"grad_clip": 1.0})
    s = specs()[0]
    assert "grad_clip" not in s.to_dict()["recipe"]
    changed = replace(s, recipe=replace(s.recipe, grad_clip=0.5))
    assert changed.to_dict()["recipe"]["grad_clip"] == 0.5 and RunSpec.from_dict(changed.to_dict()) == changed
    monkeypatch.setitem(plan_mod.ADDED_KEYS, "recipe", {})
    # A result written before the key existed (its spec lacks it) is finished for today's spec with the default.
    old_spec = s.to_dict()
    del old_spec["recipe"]["grad_clip"]
    (tmp_path / "result.json").write_text(json.dumps({"run_id": s.run_id, "status": "done", "spec": old_spec}))
    assert finished(tmp_path, s) and not finished(tmp_path, changed)


def test_result_record_round_trip_and_version_1_files(tmp_path):
    rec = RunResult(run_id="C1e+12-N9e+04", status="done", kind="fork", flops=1e12, final_val_loss=float("nan"),
                    bytes_per_token=3.5, tokenizer_dir="/tok")
    write_result(tmp_path, rec)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["version"] == RESULT_VERSION and on_disk["final_val_loss"] is None  # strict JSON, no NaN
    back = read_result(tmp_path)
    assert back == replace(rec, final_val_loss=None)
    # a version-1 file (the old sweep's) reads: its kind from its spec, its data info from the data dir it names
    run = tmp_path / "sweep" / "C6e+09-N1.34e+04"
    run.parent.mkdir()
    old = json.loads((FIXTURE / run.name / "result.json").read_text())
    data = tmp_path / "data"
    (data / "tokenizer").mkdir(parents=True)
    (data / "tokenizer" / "tokenizer.json").write_text("{}")
    (data / "manifest.json").write_text(json.dumps({"bytes_per_token": 2.25}))
    run.mkdir()
    (run / "result.json").write_text(json.dumps({**old, "data": {**old["data"], "path": str(data)}}))
    v1 = read_result(run)
    assert v1.version == 1 and v1.kind == "horizon" and v1.final_val_loss == old["final_val_loss"]
    assert v1.bytes_per_token == 2.25 and v1.tokenizer_dir == str((data / "tokenizer").resolve())
    (run / "result.json").write_text("{torn")
    assert read_result(run) is None
    with pytest.raises(ValueError, match="cannot be read"):
        read_result(run, strict=True)


def test_identity_changes_count_missing_keys_as_defaults():
    defaults = {"recipe.lr": 3e-3, "recipe.schedule": "cosine"}
    new = {"recipe.lr": 1e-2, "recipe.schedule": "cosine"}
    assert identity_changes({"recipe.lr": 1e-2}, new, defaults) == []  # made before recipe.schedule existed
    assert identity_changes({"recipe.lr": 1e-2, "data.progress": True}, new, defaults) == []  # an old run-only key
    assert identity_changes({"recipe.lr": 3e-3}, new, defaults) == ["recipe.lr"]
    assert identity_changes({"recipe.lr": 1e-2}, {**new, "recipe.schedule": "wsd"}, defaults) == ["recipe.schedule"]


def test_metrics_reader_skips_torn_lines_and_truncates(tmp_path):
    lines = [json.dumps({"step": k, "loss": 5.0 - k}) for k in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 40, "lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20, 30]
    truncate_metrics(tmp_path, 20)
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(lines[:2]) + "\n"


def test_atomic_file_keeps_the_old_content_on_error(tmp_path):
    p = tmp_path / "f.json"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(p) as f:
            f.write("new, half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old" and sorted(q.name for q in tmp_path.iterdir()) == ["f.json"]


@pytest.mark.parametrize("spec, printed, signum", [("step:3", 2, signal.SIGKILL), ("x@2!SIGTERM", 1, signal.SIGTERM),
                                                  ("step:3!USR2,x@9", 2, signal.SIGUSR2)])
def test_fault_hook_grammar(spec, printed, signum):
    # five passes through the points step:<k> and x; the signal comes at the named pass, before its print
    code = ("from sweep.rundir import fault_point\n"
            "for k in range(1, 6):\n    fault_point(f'step:{k}'); fault_point('x'); print(k, flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCALING_SWEEP_FAULT": spec}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signum and proc.stdout.split() == [str(k) for k in range(1, printed + 1)]


def test_fault_hook_raise_and_sleep(monkeypatch):
    # `raise` fails the n-th pass; `sleep=<s>` sleeps at every pass from the n-th on, at points matched by a prefix*
    slept = []
    monkeypatch.setattr("time.sleep", slept.append)
    monkeypatch.setenv("SCALING_SWEEP_FAULT", "step:*@2!sleep=0.25,x:b!raise")
    monkeypatch.setattr(rundir, "_FAULTS", {"spec": None, "items": {}, "counts": {}})
    for k in range(1, 5):
        fault_point(f"step:{k}")
    fault_point("x:a")
    assert slept == [0.25, 0.25, 0.25]  # passes 2, 3 and 4
    with pytest.raises(InjectedFault, match="x:b"):
        fault_point("x:b")
    fault_point("x:b")  # only the first pass raises


def test_failed_run_is_recorded_and_retried_only_when_asked(tmp_path):
    s = specs()[0]
    try:
        raise ValueError("bad\nshard")
    except ValueError as e:
        rec = write_failure(tmp_path, s, e)
    on_disk = read_result(tmp_path)
    assert on_disk == rec and rec.status == "failed" and rec.error == "ValueError: bad shard"
    tb = (tmp_path / "traceback.txt").read_text()
    assert rec.traceback == str((tmp_path / "traceback.txt").resolve()) and "raise ValueError" in tb and "bad" in tb
    assert finished(tmp_path, s) and not finished(tmp_path, s, retry_failed=True)
    # a result written before the traceback field existed reads, without one
    d = json.loads((tmp_path / "result.json").read_text())
    del d["traceback"]
    (tmp_path / "result.json").write_text(json.dumps(d))
    assert read_result(tmp_path).traceback is None and read_result(tmp_path).status == "failed"
