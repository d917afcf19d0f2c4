"""wandb in offline mode, for real: one run per training run with its history, summary and config; no secrets."""
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO
from helpers import sweep_args
from wandb_records import history_and_summary, job_type

SECRET = "wandb-secret-0123456789abcdef"


def test_offline_wandb_runs_hold_history_and_no_secrets(tmp_path, corpus_dir):
    args = sweep_args(tmp_path, corpus_dir, "w", "sweep.budgets=[3e9,1e10]", "sweep.sizes=[1.4e4,3.7e4,7e4]",
                      "wandb.enabled=true", "wandb.project=test")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_API_KEY": SECRET,
           "MY_TOKEN": SECRET, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "sweep", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    sweep_dir = tmp_path / "w"
    plan = json.loads((sweep_dir / "plan.json").read_text())
    run_files = {}
    for f in (sweep_dir / "wandb").glob("offline-run-*/run-*.wandb"):
        hist, summ, conf = history_and_summary(f)
        if conf.get("spec"):
            run_files[conf["spec"]["run_id"]] = (hist, summ, conf)
    assert set(run_files) == {r["run_id"] for r in plan["runs"]}  # one wandb run per training run
    for rid, (hist, summ, conf) in run_files.items():
        metrics = [json.loads(l) for l in (sweep_dir / rid / "metrics.jsonl").read_text().splitlines()]
        logged = [h for h in hist if "loss" in h]
        assert [h["flops"] for h in logged] == [m["flops"] for m in metrics]  # FLOPs as the x-axis
        assert [h["loss"] for h in logged] == [m["loss"] for m in metrics]
        result = json.loads((sweep_dir / rid / "result.json").read_text())
        assert summ["final_val_loss"] == result["final_val_loss"] and summ["status"] == "done"
    # the analysis run holds the fit table and the figures
    (analysis,) = [f for f in (sweep_dir / "wandb").glob("offline-run-*/run-*.wandb") if job_type(f) == "analysis"]
    hist, summ, _ = history_and_summary(analysis)
    (table_file,) = analysis.parent.glob("files/media/table/fit_table*.table.json")
    table = json.loads(table_file.read_text())
    fit = json.loads((sweep_dir / "fit.json").read_text())
    assert table["columns"][:3] == ["quantity", "approach", "value"] and table["data"]
    exponents = [row for row in table["data"] if row[0] in ("a", "b")]
    assert exponents
    for quantity, approach, value, *_ in exponents:
        assert value == pytest.approx(fit[approach][quantity])
    assert list(analysis.parent.glob("files/media/images/figures/*.png"))
    # no secret anywhere in the output tree (configs, logs, results, wandb files) or in what was printed
    assert SECRET not in proc.stdout + proc.stderr
    for p in sweep_dir.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
