"""A run that raises is recorded as failed, the sweep trains the others and exits non-zero, and only
``launch.retry_failed=true`` trains it again (CLI in a subprocess, basic launcher, CPU)."""
import json

from helpers import attempts, finish, launch, results, sweep_args

# two runs: 95 and 21 steps; the fault hook raises at step 30, which only the first reaches
GRID = ["sweep.budgets=[3e9]", "sweep.sizes=[1.4e4,7e4]"]


def test_failed_run_is_recorded_reported_and_retried_only_when_asked(tmp_path, corpus_dir):
    args = sweep_args(tmp_path, corpus_dir, "f", *GRID)
    sweep_dir = tmp_path / "f"
    proc = launch(args, env={"SCALING_SWEEP_FAULT": "step:30!raise"})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    plan = json.loads((sweep_dir / "plan.json").read_text())["runs"]
    fails = {r["run_id"] for r in plan if r["steps"] >= 30}
    assert len(fails) == 1 and len(plan) == 2
    (bad,) = fails
    (good,) = {r["run_id"] for r in plan} - fails

    res = results(sweep_dir)
    assert res[good]["status"] == "done"  # the sweep carried on past the failure
    r = res[bad]
    assert r["status"] == "failed" and r["error"].startswith("InjectedFault: fault injected at step:30")
    tb = (sweep_dir / bad / "traceback.txt").read_text()
    assert r["traceback"] == str((sweep_dir / bad / "traceback.txt").resolve())
    assert "Traceback" in tb and "InjectedFault" in tb and "run_loop" in tb  # where it was raised
    last = out.strip().splitlines()[-1]  # the one-line report at the end names the failure and the way to retry it
    assert last.startswith("error: 1 of 2 runs failed") and bad in last and "traceback.txt" in last
    assert "launch.retry_failed=true" in last

    # a plain relaunch keeps the failure (it would fail again), trains nothing
    out = finish(launch(args))
    assert "failed run(s) not retried" in out and bad in out
    assert results(sweep_dir)[bad]["status"] == "failed" and len(attempts(sweep_dir / bad)) == 1

    # launch.retry_failed=true retrains exactly the failed run
    finish(launch(args + ["launch.retry_failed=true"]))
    res = results(sweep_dir)
    assert res[bad]["status"] == "done" and res[bad]["traceback"] is None and res[bad]["error"] is None
    assert not (sweep_dir / bad / "traceback.txt").exists()
    assert len(attempts(sweep_dir / bad)) == 2 and len(attempts(sweep_dir / good)) == 1
    print(f"{bad} failed at step 30 (InjectedFault), {good} done; retried with launch.retry_failed=true: done")
