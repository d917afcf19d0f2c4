"""The sweep under ``hydra/launcher=slurm`` (submitit) on a real SLURM cluster (tests/slurm_cluster.py).

Three sweeps run side by side on the cluster, each compared with the same runs trained by the basic launcher:

- the tiny grid, with two of its jobs interrupted mid-run: one by ``scancel --signal=USR2`` (what SLURM sends
  before preempting: submitit requeues the job) and one by ``scontrol requeue`` (SIGTERM, SLURM requeues it);
- one run under a one-minute time limit that it outlasts (submitit's warning signal, then a requeue);
- one run as two SLURM tasks (``tasks_per_node=2``): one data-parallel run over gloo.

The grid's steps are slowed by the fault hook (``step:*!sleep=<s>``) so that a signal lands mid-run and the
time-limited run needs more than its minute; sleeping changes no loss.
"""
import json
import time

import pytest

from helpers import attempts, finish, launch, results, sweep_args
from slurm_cluster import PARTITION

pytestmark = pytest.mark.slow

# the overrides of a CPU-only node (README: "SLURM")
SLURM = ["hydra/launcher=slurm", f"hydra.launcher.partition={PARTITION}", "hydra.launcher.account=null",
         "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
LONG = ["sweep.budgets=[1e10]", "sweep.sizes=[1.4e4]"]  # the grid's longest run (316 steps)
# a short run at the DDP tests' learning rate (tests/sweep/test_train_resume_ddp.py): at the grid's 1e-2 the
# rounding differences of a two-rank all-reduce grow to 1e-3 of the loss within 95 steps
DP = ["sweep.budgets=[3e9]", "sweep.sizes=[3.7e4]", "recipe.lr=3e-3"]


def _interrupt(sweep_dir, cluster, proc, timeout=300):
    """Interrupt the grid's two longest runs once each is past step 20 (with no checkpoint before: the trainer
    saves on signals only here): the longest by USR2, the other by a requeue.  Returns {run id: SLURM job id}."""
    deadline = time.time() + timeout
    while not (sweep_dir / "plan.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the SLURM sweep did not plan"
        time.sleep(0.2)
    runs = sorted(json.loads((sweep_dir / "plan.json").read_text())["runs"], key=lambda r: -r["steps"])[:2]
    how = {runs[0]["run_id"]: ("scancel", "--signal=USR2"), runs[1]["run_id"]: ("scontrol", "requeue")}
    done = {}
    while len(done) < len(how):
        assert proc.poll() is None and time.time() < deadline, f"not every run was interrupted: {done}"
        for rid, (tool, arg) in how.items():
            run_dir = sweep_dir / rid
            if rid in done or not (run_dir / "metrics.jsonl").exists() or not (run_dir / "attempts.jsonl").exists():
                continue
            assert not (run_dir / "result.json").exists(), f"{rid} finished before it could be interrupted"
            if len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3:  # steps 1, 10, 20 logged
                job = attempts(run_dir)[0]["SLURM_JOB_ID"]
                getattr(cluster, tool)(arg, job)
                done[rid] = job
        time.sleep(0.1)
    return done


@pytest.fixture(scope="module")
def slurm_sweeps(tmp_path_factory, corpus_dir, slurm_cluster):
    tmp = tmp_path_factory.mktemp("slurm")
    finish(launch(sweep_args(tmp, corpus_dir, "ref")))  # the basic launcher's grid; prepares tmp/data for all
    procs = {
        # SLURM checks limits every 30 s and sends the warning up to 60 s early: with signal_delay_s=5 it came
        # 25-55 s into the job here, after the trainer started; ~50 s of steps need a second job start at least
        "time_limit": launch(sweep_args(tmp, corpus_dir, "tl", *LONG, *SLURM, "hydra.launcher.timeout_min=1",
                                        "hydra.launcher.signal_delay_s=5"),
                             env={"SCALING_SWEEP_FAULT": "step:*!sleep=0.15"}),
        "two_tasks": launch(sweep_args(tmp, corpus_dir, "dp", *DP, *SLURM, "hydra.launcher.tasks_per_node=2")),
        "grid": launch(sweep_args(tmp, corpus_dir, "grid", *SLURM), env={"SCALING_SWEEP_FAULT": "step:*!sleep=0.1"}),
        "one_process": launch(sweep_args(tmp, corpus_dir, "dp_ref", *DP)),  # the basic launcher, here
    }
    try:
        interrupted = _interrupt(tmp / "grid", slurm_cluster, procs["grid"])
        for p in procs.values():
            finish(p, timeout=600)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
    return {"dir": tmp, "ref": results(tmp / "ref"), "dp_ref": results(tmp / "dp_ref"), "interrupted": interrupted}


def assert_same_losses(res, ref, tol=1e-6):
    for rid, r in res.items():
        assert r["status"] == "done", rid
        assert r["spec"] == ref[rid]["spec"], rid  # the same planned run
        assert abs(r["final_val_loss"] - ref[rid]["final_val_loss"]) <= tol, rid


def test_slurm_grid_matches_basic_launcher_through_preemption_and_requeue(slurm_sweeps):
    d, ref = slurm_sweeps["dir"] / "grid", slurm_sweeps["ref"]
    res = results(d)
    assert res.keys() == ref.keys() and len(res) == 6
    assert_same_losses(res, ref)
    interrupted = slurm_sweeps["interrupted"]
    assert len(interrupted) == 2
    for rid in res:
        a = attempts(d / rid)
        assert all(x.get("SLURM_JOB_ID") for x in a), f"{rid}: an attempt without its SLURM job id: {a}"
        assert len({x["SLURM_JOB_ID"] for x in a}) == 1, f"{rid}: a requeued job keeps its id: {a}"
        if rid in interrupted:
            # requeued, resumed from the checkpoint the signal left (past step 20), not from scratch
            assert a[0]["SLURM_JOB_ID"] == interrupted[rid]
            assert len(a) >= 2 and a[-1]["start_step"] >= 20, a
        else:
            assert len(a) == 1, f"{rid} was started more than once: {a}"
    print(f"grid: {len(res)} runs equal the basic launcher's; interrupted {interrupted}")


def test_slurm_time_limit_checkpoints_requeues_and_finishes(slurm_sweeps):
    d, ref = slurm_sweeps["dir"] / "tl", slurm_sweeps["ref"]
    res = results(d)
    (rid,) = res
    assert_same_losses(res, ref)
    a = attempts(d / rid)
    assert len(a) >= 2 and len({x["SLURM_JOB_ID"] for x in a}) == 1, a  # the same job, requeued
    assert max(x["start_step"] for x in a) > 0, a  # resumed from the checkpoint taken on the warning signal
    log = "".join(p.read_text(errors="replace") for p in (d / rid).glob("*.log"))  # the Hydra job's log
    assert "stopped by signal 12" in log  # SIGUSR2: the warning signal_delay_s before the limit
    print(f"time limit: {rid} finished in {len(a)} attempts of job {a[0]['SLURM_JOB_ID']}, "
          f"starting at steps {[x['start_step'] for x in a]}")


def test_slurm_two_tasks_train_one_data_parallel_run(slurm_sweeps):
    d, ref = slurm_sweeps["dir"] / "dp", slurm_sweeps["dp_ref"]
    res = results(d)
    (rid,) = res
    r = res[rid]
    assert r["status"] == "done" and r["world_size"] == 2 and r["spec"] == ref[rid]["spec"]
    a = attempts(d / rid)
    assert len(a) == 1 and a[0]["world_size"] == 2 and a[0]["SLURM_JOB_ID"]  # rank 0 alone records the attempt
    # the single process's curve, within the DDP tests' tolerance
    one = [json.loads(l) for l in (slurm_sweeps["dir"] / "dp_ref" / rid / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(l) for l in (d / rid / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in one] == [x["step"] for x in two] and len(one) > 3
    for x, y in zip(one, two):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        if "val_loss" in x:
            assert y["val_loss"] == pytest.approx(x["val_loss"], rel=1e-5)
    assert r["final_val_loss"] == pytest.approx(ref[rid]["final_val_loss"], rel=1e-5)
    print(f"two tasks: {rid} trained with world_size 2 in job {a[0]['SLURM_JOB_ID']}; its curve is one process's")
