"""WSD trunks and cooldown forks end to end: a tiny forks sweep through the Hydra app, checked against its plan,
against the LR schedule, and against the same point trained as a standalone wsd run; then fitted."""
import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from helpers import REPO, finish, launch, results, sweep_args
from wandb_records import history_and_summary
from sweep.data import TokenData
from sweep.plan import RunSpec
from sweep.rundir import read_attempts, read_metrics
from sweep.train import TrainerConfig, lr_at, train

GRID = ["sweep.budgets=[3e9,1e10,2e10]", "sweep.sizes=[1.4e4,3.7e4,7e4]", "recipe.schedule=wsd", "recipe.warmup_frac=0.05",
        "trainer.log_every=1"]


@pytest.fixture(scope="module")
def forks_sweep(tmp_path_factory, corpus_dir):
    tmp = tmp_path_factory.mktemp("forks")
    out = finish(launch(sweep_args(tmp, corpus_dir, "f", *GRID, "sweep.forks=true", "launch.order=longest_first",
                                   "wandb.enabled=true", "wandb.project=test"), env={"WANDB_MODE": "offline"}),
                 timeout=900)
    return tmp, tmp / "f", out


def test_forks_sweep_trains_each_fork_from_its_trunk(forks_sweep):
    tmp, sweep_dir, out = forks_sweep
    plan = {r["run_id"]: RunSpec.from_dict(r) for r in json.loads((sweep_dir / "plan.json").read_text())["runs"]}
    trunks = {rid: s for rid, s in plan.items() if s.kind == "trunk"}
    forks = {rid: s for rid, s in plan.items() if s.kind == "fork"}
    assert trunks and len(forks) >= 6 and set(plan) == set(trunks) | set(forks)
    res = results(sweep_dir)
    assert all(r["status"] == "done" for r in res.values())
    spent = sum(r["flops_spent"] for r in res.values())
    alone = sum(r["flops"] for r in res.values() if r["kind"] != "trunk")
    assert f"{spent / alone:.3f} of the" in out  # the closing summary: measured ratio ...
    analytic = sum(s.flops_spent for s in plan.values()) / sum(s.flops for s in forks.values())
    assert f"analytic ratio: {analytic:.3f}" in out and spent / alone == pytest.approx(analytic, rel=1e-12)
    assert analytic < 1
    for rid, s in forks.items():
        r, trunk = res[rid], trunks[s.trunk]
        step_flops = s.recipe.tokens_per_step * s.flops_per_token
        assert abs(r["flops"] - s.budget) <= step_flops  # everything its model saw: trunk prefix + cooldown
        assert r["flops_spent"] == (s.steps - s.start_step) * step_flops and r["trunk"] == s.trunk
        assert s.start_step in trunk.branch_steps and s.recipe == trunk.recipe and s.warmup_steps == trunk.warmup_steps
        assert [a["start_step"] for a in read_attempts(sweep_dir / rid)] == [s.start_step]  # first step: the branch step
        metrics = read_metrics(sweep_dir / rid)
        assert [m["step"] for m in metrics] == list(range(s.start_step + 1, s.steps + 1))  # counted from the trunk's 0
        assert all(m["flops"] == m["step"] * step_flops for m in metrics)
        lrs = [m["lr"] for m in metrics]  # the cooldown: down from the peak to min_lr_ratio·peak at the last step
        assert lrs == [lr_at(m["step"] - 1, s) for m in metrics]
        assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[0] < s.recipe.lr
        assert lrs[-1] == pytest.approx(s.recipe.min_lr_ratio * s.recipe.lr)
        decay = s.steps - s.cooldown_steps  # 1-sqrt by default: lr at the cooldown's midpoint
        mid = decay + s.cooldown_steps // 2
        p = (mid - decay + 1) / s.cooldown_steps
        assert lr_at(mid, s) == pytest.approx(s.recipe.lr * (0.1 + 0.9 * (1 - math.sqrt(p))))
    logged = {}  # every run, trunk or fork, is its own wandb run
    for f in (sweep_dir / "wandb").glob("offline-run-*/run-*.wandb"):
        conf = history_and_summary(f)[2]
        if conf.get("spec"):
            logged.setdefault(conf["spec"]["run_id"], set()).add(f.parent.name)
    assert set(logged) == set(plan) and all(len(v) == 1 for v in logged.values())
    for rid, t in trunks.items():  # constant LR after the warm-up, to the longest fork's branch step
        metrics = read_metrics(sweep_dir / rid)
        assert metrics[-1]["step"] == t.steps == max(t.branch_steps)
        assert {m["lr"] for m in metrics if m["step"] > t.warmup_steps} == {t.recipe.lr}
        assert not list((sweep_dir / rid).glob("checkpoints/*.pt"))  # branch checkpoints removed once its forks are done
    # the basic launcher trains one run at a time: trunks, then forks, each phase longest first (launch.order)
    started = sorted(plan, key=lambda rid: read_attempts(sweep_dir / rid)[0]["time"])
    assert [plan[rid].kind for rid in started] == ["trunk"] * len(trunks) + ["fork"] * len(forks)
    for phase in (started[:len(trunks)], started[len(trunks):]):
        spent = [plan[rid].flops_spent for rid in phase]
        assert spent == sorted(spent, reverse=True) and spent[0] > spent[-1], phase


def test_a_fork_equals_the_standalone_wsd_run_of_its_length(forks_sweep, tmp_path):
    """A fork = the wsd run of its length (same warm-up, same recipe) trained from step 0: batches are a pure function
    of (seed, step), so branching off the trunk's checkpoint changes nothing."""
    _, sweep_dir, _ = forks_sweep
    plan = [RunSpec.from_dict(r) for r in json.loads((sweep_dir / "plan.json").read_text())["runs"]]
    forked = results(sweep_dir)
    data = TokenData(json.loads((sweep_dir / "plan.json").read_text())["data"])
    longest = max((s for s in plan if s.kind == "fork"), key=lambda s: s.cooldown_steps)
    shortest = min((s for s in plan if s.kind == "fork"), key=lambda s: s.steps)
    for fork in (longest, shortest):
        alone = replace(fork, kind="grid", start_step=0, trunk=None)
        cfg = TrainerConfig(progress=False, eval_tokens=4096, num_threads=1, log_every=1)
        res = train(alone, cfg, data, tmp_path / fork.run_id)
        assert res.flops == forked[fork.run_id]["flops"] and res.flops_spent == res.flops
        assert abs(res.final_val_loss - forked[fork.run_id]["final_val_loss"]) <= 1e-6, fork.run_id


def test_analysis_fits_a_forks_sweep(forks_sweep):
    tmp, sweep_dir, _ = forks_sweep
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "analysis", str(sweep_dir), "--out", str(tmp / "fit"), "--bootstrap", "50"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    fit = json.loads((tmp / "fit" / "fit.json").read_text())
    res = results(sweep_dir)
    n_forks = sum(r["kind"] == "fork" for r in res.values())
    for p in (fit["approach2"] or {}).get("parabolas", []):  # each isoFLOP profile: that budget's forks, no trunk
        assert p["n_points"] == sum(r["kind"] == "fork" and r["budget"] == p["budget"] for r in res.values())
    assert fit["approach3"] is None or fit["approach3"]["n_runs"] == n_forks
    assert fit["approach1"] is None or set(fit["approach1"]["runs_on_envelope"]) <= set(results(sweep_dir))


def test_a_budget_added_to_a_forks_sweep_is_refused(forks_sweep, corpus_dir):
    tmp, sweep_dir, _ = forks_sweep
    args = sweep_args(tmp, corpus_dir, "f", *GRID, "sweep.forks=true", "sweep.budgets=[3e9,1e10,2e10,4e10]",
                      "launch.allow_config_change=true")
    proc = launch(args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "a forks sweep cannot add budgets or sizes later" in out, out[-2000:]


def test_new_trunks_beside_the_old_ones_are_allowed(forks_sweep):
    """An LR scan's edge extension adds trunks (a new LR) to a forks sweep: that is fine, a new trunk trains from
    scratch; a trunk of the old plan that would change (a new branch step) or go is refused."""
    from hydra_plugins.isoflop_sweeper.isoflop_sweeper import _check_trunks
    from sweep.rundir import read_plan

    _, sweep_dir, _ = forks_sweep
    specs = list(read_plan(sweep_dir).runs)
    trunk = next(s for s in specs if s.kind == "trunk")
    extra = replace(trunk, run_id=trunk.run_id.replace("-trunk", "-lr0.1-trunk"), recipe=replace(trunk.recipe, lr=0.1))
    _check_trunks(sweep_dir, specs + [extra])  # no error
    moved = replace(trunk, branch_steps=tuple(trunk.branch_steps) + (trunk.steps // 3,))
    for plan in ([s for s in specs if s is not trunk] + [extra], [s if s is not trunk else moved for s in specs]):
        with pytest.raises(ValueError, match="a forks sweep cannot add budgets or sizes later"):
            _check_trunks(sweep_dir, plan)


def test_forks_need_the_wsd_schedule(tmp_path, corpus_dir):
    proc = launch(sweep_args(tmp_path, corpus_dir, "x", "sweep.forks=true", "launch.dry_run=true"))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "set recipe.schedule=wsd" in out
