"""Chaos: SIGKILL a CPU sweep at many moments (data preparation, planning, training, checkpoint and result writes, analysis),
relaunch it each time, and check that nothing is lost, torn or retrained from scratch."""
import json

import pytest

from helpers import finish, launch, results, sweep_args

# Each entry is one launch that is killed at that moment; the sweep is relaunched after every kill.
KILLS = [
    {"SCALING_SWEEP_FAULT": "data:rename@1"},  # data prepared in its temp dir, not yet renamed into place
    {"SCALING_SWEEP_FAULT": "write:sweep.json@1"},  # the sweep's identity file, before its rename
    {"SCALING_SWEEP_FAULT": "write:plan.json@1"},  # the plan, before its rename
    {"SCALING_SWEEP_FAULT": "planned@1"},  # planned, nothing launched yet
    {"SCALING_SWEEP_FAULT": "step:7"},  # inside training, after a step
    {"SCALING_SWEEP_FAULT": "write:checkpoint@4"},  # between writing a checkpoint and renaming it
    {"SCALING_SWEEP_FAULT": "write:weights.pt@1"},  # the final weights, before their rename
    {"SCALING_SWEEP_FAULT": "write:result.json@1"},  # the result, before its rename
    {"SCALING_SWEEP_FAULT": "step:33"},
    {"SCALING_SWEEP_FAULT": "write:checkpoint@25"},
    {"SCALING_SWEEP_FAULT": "write:result.json@2"},
    {"SCALING_SWEEP_FAULT": "step:61"},
    {"SCALING_SWEEP_FAULT": "write:fit.json@1"},  # the analysis callback, before fit.json's rename
]


# A forks sweep (trunks, then their cooldown forks) killed where forks add new moments.
FORK_KILLS = [
    {"SCALING_SWEEP_FAULT": "step:150"},  # inside the first trunk, between its branch steps
    {"SCALING_SWEEP_FAULT": "write:branch@1"},  # a trunk's branch checkpoint, before its rename
    {"SCALING_SWEEP_FAULT": "forks@1"},  # every trunk done, no fork launched yet
    {"SCALING_SWEEP_FAULT": "step:300"},  # inside a fork's cooldown (the forks of 1e10 run from step 253 to 316)
    {"SCALING_SWEEP_FAULT": "write:result.json@2"},  # a fork's result, before its rename
]


def chaos(tmp_path, corpus_dir, grid, kills, min_killed):
    """Kill one launch per entry of ``kills``, relaunch once undisturbed, and compare with the uninterrupted sweep."""
    finish(launch(sweep_args(tmp_path, corpus_dir, "ref", *grid)))
    reference = results(tmp_path / "ref")
    assert len(reference) >= 8

    args = sweep_args(tmp_path, corpus_dir, "chaos", *grid, "trainer.checkpoint_every_s=1e-9",
                      f"data.out={tmp_path / 'data_chaos'}")  # its own data dir, so the first kill hits preparation
    killed = 0
    for env in kills:
        proc = launch(args, env=env)
        out, _ = proc.communicate(timeout=300)
        if proc.returncode == -9:
            killed += 1
        else:
            assert proc.returncode == 0, out[-3000:]
    assert killed >= min_killed, f"only {killed} launches were killed"
    finish(launch(args))  # the last, undisturbed relaunch
    sweep_dir = tmp_path / "chaos"

    res = results(sweep_dir)
    assert res.keys() == reference.keys()
    for rid, r in res.items():
        assert r["status"] == "done"
        assert abs(r["final_val_loss"] - reference[rid]["final_val_loss"]) <= 1e-6, rid
        run = sweep_dir / rid
        steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)), f"{rid}: metrics has repeated or torn lines"
        starts = [json.loads(l)["start_step"] for l in (run / "attempts.jsonl").read_text().splitlines()]
        assert starts == sorted(starts), f"{rid} was retrained from scratch after a checkpoint: {starts}"
        assert not list(run.glob("checkpoints/*.pt"))  # cleaned up once done
    for p in sweep_dir.rglob("*"):  # nothing partial or corrupt anywhere
        assert not p.name.endswith(".tmp") and ".tmp-" not in p.name, p
        if p.suffix == ".json":
            json.loads(p.read_text())
    fit = json.loads((sweep_dir / "fit.json").read_text()) if (sweep_dir / "fit.json").exists() else None
    assert fit is None or "approach2" in fit or "approach3" in fit or "datasets" in fit
    return res


@pytest.mark.slow
def test_chaos_kills_lose_nothing(tmp_path, corpus_dir):
    chaos(tmp_path, corpus_dir, ["sweep.budgets=[3e9,1e10,2e10]", "sweep.sizes=[1.4e4,3.7e4,7e4]"], KILLS, 10)


@pytest.mark.slow
def test_chaos_kills_lose_nothing_in_a_forks_sweep(tmp_path, corpus_dir):
    res = chaos(tmp_path, corpus_dir, ["sweep.budgets=[3e9,1e10,2e10]", "sweep.sizes=[1.4e4,3.7e4,7e4]",
                                       "recipe.schedule=wsd", "sweep.forks=true"], FORK_KILLS, 4)
    assert {r["kind"] for r in res.values()} == {"trunk", "fork"}
