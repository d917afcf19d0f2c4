"""The isoFLOP sweeper under Hydra's real launchers, kills and concurrent launches (subprocesses, CPU)."""
import os
import signal
import time

import pytest

from helpers import attempts, finish, launch, results, sweep_args


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_dir):
    """The uninterrupted sweep, basic launcher."""
    tmp = tmp_path_factory.mktemp("ref")
    finish(launch(sweep_args(tmp, corpus_dir, "ref")))
    res = results(tmp / "ref")
    assert len(res) >= 5 and all(r["status"] == "done" for r in res.values())
    return res


def assert_same_losses(res, reference):
    assert res.keys() == reference.keys()
    for rid, r in res.items():
        assert r["status"] == "done"
        assert abs(r["final_val_loss"] - reference[rid]["final_val_loss"]) <= 1e-6, rid


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]],
                         ids=["joblib", "submitit_local"])
def test_sweep_through_launcher(tmp_path, corpus_dir, reference, launcher):
    finish(launch(sweep_args(tmp_path, corpus_dir, "l", *launcher)))
    res = results(tmp_path / "l")
    assert_same_losses(res, reference)
    assert (tmp_path / "l" / "fit.json").exists() or all(r["status"] == "done" for r in res.values())


def test_sigkill_mid_sweep_then_relaunch(tmp_path, corpus_dir, reference):
    args = sweep_args(tmp_path, corpus_dir, "k", "trainer.checkpoint_every_s=0.05")
    proc = launch(args)
    sweep_dir = tmp_path / "k"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once one run finished and another is under way with a checkpoint
        done = list(sweep_dir.glob("C*/result.json"))
        partial = [p for p in sweep_dir.glob("C*/checkpoints/step_*.pt")]
        if done and partial:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    finished_before = {p.parent.name for p in sweep_dir.glob("C*/result.json")}
    partial_before = {p.parent.parent.name for p in sweep_dir.glob("C*/checkpoints/step_*.pt")} - finished_before
    assert finished_before, "the kill came before any run finished"

    out = finish(launch(args))
    assert "already finished" in out or "training the other" in out
    res = results(sweep_dir)
    assert_same_losses(res, reference)
    for rid in finished_before:  # finished runs were not trained again
        assert len(attempts(sweep_dir / rid)) == 1
    for rid in partial_before:  # partial runs resumed from their checkpoint, not from scratch
        a = attempts(sweep_dir / rid)
        assert len(a) == 2 and a[1]["start_step"] > 0


def test_two_concurrent_launches_train_each_run_once(tmp_path, corpus_dir, reference):
    args = sweep_args(tmp_path, corpus_dir, "c")
    # the data must exist before both start, else both would prepare it (atomically, but twice)
    finish(launch(args + ["launch.dry_run=true"]))
    a, b = launch(args), launch(args)
    finish(a), finish(b)
    res = results(tmp_path / "c")
    assert_same_losses(res, reference)
    for rid in res:
        assert len(attempts(tmp_path / "c" / rid)) == 1, f"{rid} was trained twice"


def test_changed_config_in_same_dir_is_refused(tmp_path, corpus_dir, reference):
    args = sweep_args(tmp_path, corpus_dir, "r", "sweep.budgets=[3e9]", "sweep.sizes=[1.4e4,3.7e4]")
    finish(launch(args))
    proc = launch(args + ["recipe.lr=3e-3"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "different config" in out and "recipe.lr" in out
    finish(launch(args + ["recipe.lr=3e-3", "launch.allow_config_change=true"]))


def _submitit_task_pids():
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"submitit.core._submit" in cmd:
                pids.append(int(p))
    return pids


@pytest.mark.parametrize("when", ["mid_run", "setup"])
def test_preempted_submitit_job_requeues_and_resumes(tmp_path, corpus_dir, when):
    """USR2 mid-run (sent from outside at step 5 or later), or during the first attempt's set-up (the fault hook,
    before its first step): the trainer holds the signal until a step ends, checkpoints, and hands it to
    submitit, which requeues; the second attempt resumes from that checkpoint."""
    one = ["sweep.budgets=[6e10]", "sweep.sizes=[1.4e4]"]
    finish(launch(sweep_args(tmp_path, corpus_dir, "ref1", *one)))
    ref = results(tmp_path / "ref1")
    args = sweep_args(tmp_path, corpus_dir, "p", *one, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    if when == "setup":
        # setup:0 is passed by the first attempt only (the requeued one sets up at its checkpoint's step)
        finish(launch(args, env={"SCALING_SWEEP_FAULT": "setup:0!SIGUSR2"}))
    else:
        proc = launch(args)
        deadline = time.time() + 120
        pids = []
        while time.time() < deadline:
            runs = list((tmp_path / "p").glob("C*/metrics.jsonl"))
            if runs and len(runs[0].read_text().splitlines()) >= 5:
                pids = _submitit_task_pids()
                if pids:
                    break
            time.sleep(0.05)
        assert pids, "the submitit job did not start"
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)  # what SLURM sends before preempting (SUBMITIT_PREEMPT_SIGNAL)
        finish(proc)
    res = results(tmp_path / "p")
    assert_same_losses(res, ref)
    (rid,) = res
    a = attempts(tmp_path / "p" / rid)
    assert len(a) == 2 and a[1]["start_step"] > 0  # requeued by submitit, resumed from the checkpoint
    if when == "setup":
        assert a[1]["start_step"] == 1, a  # the signal waited for the first step, not for submitit's handler
