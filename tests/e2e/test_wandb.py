"""wandb in offline mode, for real: one run per training run with its history, summary and config, in the sweep's
group with FLOPs as the x-axis; a run killed after a checkpoint and resumed logs nothing twice; the sweep's Report
(``python -m analysis --wandb-report``) references only what the runs log; no secrets anywhere.

One sweep serves every test: its first launch is killed right after step 8 of its first run (checkpoints every
step), the relaunch resumes that run from step 7 and trains the others, and the Hydra callback logs the analysis
run.
Everything is read back from the offline ``.wandb`` files, nothing from the code's constants.
"""
import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
import torch

from analysis.__main__ import main as analysis_main
from helpers import REPO, attempts, sweep_args
from wandb_records import history_and_summary, logged_keys, metric_axes, run_info, table

SECRET = "wandb-secret-0123456789abcdef"
SWEEP = "w"
KILL_AT = 8  # a log step (log_every=2): killed after its optimizer step, before its record is written anywhere
pytestmark = pytest.mark.slow


def _env():
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_API_KEY": SECRET,
           "MY_TOKEN": SECRET, "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_ENTITY", None)
    env.pop("SCALING_SWEEP_FAULT", None)
    return env


def _run(args, env, module="sweep", timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, corpus_dir):
    tmp = tmp_path_factory.mktemp("wandb")
    args = sweep_args(tmp, corpus_dir, SWEEP, "wandb.enabled=true", "wandb.project=test", "trainer.log_every=2",
                      "trainer.keep_checkpoints=true")
    # a checkpoint after every step, then SIGKILL right after step KILL_AT (before its record is logged)
    killed = _run(args + ["trainer.checkpoint_every_s=1e-9"], {**_env(), "SCALING_SWEEP_FAULT": f"step:{KILL_AT}"})
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    resumed = _run(args, _env())  # the trainer section is not the sweep's identity: the relaunch resumes
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    return {"dir": tmp / SWEEP, "output": [killed, resumed]}


def _current(sweep_dir) -> dict:
    """{wandb id: its offline run file}: one each, the directories of earlier attempts being moved aside."""
    files = defaultdict(list)
    for f in sorted((sweep_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        files[run_info(f)["id"]].append(f)
    assert all(len(v) == 1 for v in files.values()), dict(files)
    return {k: v[0] for k, v in files.items()}


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _training_files(sweep):
    out = {}
    for f in _current(sweep["dir"]).values():
        _, _, conf = history_and_summary(f)
        if conf.get("spec"):
            out[conf["spec"]["run_id"]] = f
    return out


def test_offline_wandb_runs_hold_history_layout_and_no_secrets(sweep):
    sweep_dir = sweep["dir"]
    plan = json.loads((sweep_dir / "plan.json").read_text())
    run_files = _training_files(sweep)
    assert set(run_files) == {r["run_id"] for r in plan["runs"]}  # one wandb run per training run
    for rid, f in run_files.items():
        hist, summ, _ = history_and_summary(f)
        metrics = _metrics(sweep_dir / rid)
        logged = [h for h in hist if "loss" in h]
        assert [h["flops"] for h in logged] == [m["flops"] for m in metrics]  # FLOPs as the x-axis
        assert [h["loss"] for h in logged] == [m["loss"] for m in metrics]
        result = json.loads((sweep_dir / rid / "result.json").read_text())
        assert summ["final_val_loss"] == result["final_val_loss"] and summ["status"] == "done"
        # the layout: the sweep's group, one job type for training runs, the run id as the name
        info = run_info(f)
        assert (info["group"], info["job_type"], info["name"], info["project"]) == (SWEEP, "train", rid, "test")
        # every logged metric but the axes is plotted against FLOPs (define_metric with step_metric)
        defined = metric_axes(f)
        axes = {k for k, step_metric in defined.items() if not step_metric}
        history_keys, _ = logged_keys(f)
        assert "flops" in axes and axes <= set(history_keys)
        plotted = set(history_keys) - axes
        assert plotted >= {"loss", "val_loss", "lr"} and all(defined.get(k) == "flops" for k in plotted), defined
    # the analysis run holds the fit table and the figures, in the same group with its own job type
    analysis = [f for f in _current(sweep_dir).values() if run_info(f)["job_type"] != "train"]
    assert [(run_info(f)["group"], run_info(f)["job_type"]) for f in analysis] == [(SWEEP, "analysis")]
    fit_table = table(analysis[0], "fit_table")
    fit = json.loads((sweep_dir / "fit.json").read_text())
    assert fit_table["columns"][:3] == ["quantity", "approach", "value"] and fit_table["data"]
    exponents = [row for row in fit_table["data"] if row[0] in ("a", "b")]
    assert exponents
    for quantity, approach, value, *_ in exponents:
        assert value == pytest.approx(fit[approach][quantity])
    assert list(analysis[0].parent.glob("files/media/images/figures/*.png"))
    # no secret anywhere in the output tree (configs, logs, results, wandb files) or in what was printed
    for proc in sweep["output"]:
        assert SECRET not in proc.stdout + proc.stderr
    for p in sweep_dir.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_resumed_run_logs_nothing_twice(sweep):
    sweep_dir = sweep["dir"]
    (rid,) = [r.name for r in sweep_dir.glob("C*") if len(attempts(r)) > 1]  # the run the kill hit
    run_dir = sweep_dir / rid
    first, second = attempts(run_dir)
    assert first["start_step"] == 0 and second["start_step"] == KILL_AT - 1  # resumed from the last checkpoint
    metrics = _metrics(run_dir)
    f = _training_files(sweep)[rid]
    hist, _, _ = history_and_summary(f)
    steps, flops = [h["step"] for h in hist if "step" in h], [h["flops"] for h in hist if "flops" in h]
    assert steps == sorted(set(steps)) and flops == sorted(set(flops))  # strictly increasing: no point twice
    assert steps == [m["step"] for m in metrics] and flops == [m["flops"] for m in metrics]
    assert [h["_step"] for h in hist] == steps  # wandb's own step is the optimizer step
    # the killed attempt's offline directory (same wandb id) is set aside: only the complete one is synced
    wandb_id = run_info(f)["id"]
    (old,) = (sweep_dir / "wandb" / "superseded").glob(f"offline-run-*-{wandb_id}/run-*.wandb")
    old_steps = [h["step"] for h in history_and_summary(old)[0] if "step" in h]
    assert set(old_steps) <= {m["step"] for m in metrics if m["step"] < KILL_AT}  # what it kept, if anything
    # every checkpoint (the killed attempt's last two, kept) holds the wandb id and the last step logged
    ckpt_files = sorted((run_dir / "checkpoints").glob("*.pt"))
    assert len(ckpt_files) == 2
    for ckpt_file in ckpt_files:
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        assert ckpt["loop"]["wandb"] == {"id": wandb_id, "step": max(s for s in steps if s <= ckpt["step"])}


def _filters(runset):
    """{(section, name): value} of a run set's (AND-ed) filters."""
    return {(f["key"]["section"], f["key"]["name"]): (f["op"], f["value"]) for f in runset["filters"]["filters"]}


def _selected(runset, runs):
    """The runs (run_info dicts) a run set's filters select."""
    filt = _filters(runset)
    assert set(filt) <= {("run", "group"), ("run", "jobType"), ("run", "displayName"), ("run", "name")}, filt
    def holds(op, value, v):
        return v in value if op == "IN" else op == "=" and v == value

    def fields(r):
        return {("run", "group"): r["group"], ("run", "jobType"): r["job_type"], ("run", "displayName"): r["name"],
                ("run", "name"): r["id"]}

    return [r for r in runs if all(holds(op, value, fields(r)[k]) for k, (op, value) in filt.items())]


def _weave_keys(node):
    """The summary keys a Weave panel's expression picks."""
    if isinstance(node, dict):
        if node.get("name") == "pick" and node.get("inputs", {}).get("key", {}).get("nodeType") == "const":
            yield node["inputs"]["key"]["val"]
        for v in node.values():
            yield from _weave_keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from _weave_keys(v)


def test_wandb_report_references_what_the_runs_log(sweep, monkeypatch, capsys):
    sweep_dir = sweep["dir"]
    spec_file = sweep_dir / "wandb_report.json"
    # offline, wandb-workspaces cannot look the default entity up: one line naming the fix, nothing written
    before = (sweep_dir / "fit.json").stat().st_mtime_ns
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert analysis_main([str(sweep_dir), "--wandb-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "--wandb-entity" in err, err
    assert not spec_file.exists() and (sweep_dir / "fit.json").stat().st_mtime_ns == before

    proc = _run([str(sweep_dir), "--wandb-report", "--wandb-entity", "team-x", "--bootstrap", "50"], _env(),
                module="analysis")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "offline" in proc.stdout and str(spec_file) in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr + spec_file.read_text()
    spec = json.loads(spec_file.read_text())
    assert spec["project"] == {"name": "test", "entityName": "team-x"}

    # the runs as their current offline files say (the report command re-logged the analysis run)
    current = _current(sweep_dir)
    runs = [run_info(f) for f in current.values()]
    logged = {r["id"]: logged_keys(current[r["id"]]) for r in runs}
    summaries = {r["id"]: history_and_summary(current[r["id"]])[1] for r in runs}

    grids = [b["metadata"] for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    kinds = defaultdict(int)
    profile_names = []
    for grid in grids:
        chosen = [_selected(rs, runs) for rs in grid["runSets"]]
        assert all(chosen), "a run set that selects no run"
        for rs, sel in zip(grid["runSets"], chosen):
            assert {r["group"] for r in sel} == {SWEEP}
            names = _filters(rs).get(("run", "displayName"))
            if names:  # an isoFLOP profile: the runs of one budget
                assert sorted(r["name"] for r in sel) == sorted(names[1])
                assert len({summaries[r["id"]]["budget"] for r in sel}) == 1
                profile_names += names[1]
        selected = [r for sel in chosen for r in sel]
        for panel in grid["panelBankSectionConfig"]["panels"]:
            view, cfg = panel["viewType"], panel["config"]
            kinds[view] += 1
            for r in selected:
                history, summary = logged[r["id"]]
                if view == "Run History Line Plot":
                    assert {cfg["xAxis"], *cfg["metrics"]} <= set(history), (cfg, r["name"])
                elif view == "Scatter Plot":
                    for axis in (cfg["xAxis"], cfg["yAxis"]):
                        section, key = axis.split(":", 1)
                        assert section == "summary" and key in summary, (axis, r["name"])
                elif view == "Vega2":
                    (q,) = [q for q in cfg["userQuery"]["queryFields"][0]["fields"] if q["name"] == "summaryTable"]
                    key = q["args"][0]["value"]
                    assert summary.get(key) == "table-file"
                    assert set(cfg["fieldSettings"].values()) <= set(table(current[r["id"]], key)["columns"])
                elif view == "Weave":
                    keys = list(_weave_keys(cfg))
                    assert keys and all(summary.get(k) == "table-file" for k in keys), keys
                elif view == "Media Browser":
                    assert cfg["mediaKeys"] and all(history.get(k) == "image-file" for k in cfg["mediaKeys"])
                else:
                    raise AssertionError(f"unexpected panel {view}")
    # every kind of content is there: profiles (scatter + lines), curves, the fit table, the figures
    assert kinds["Scatter Plot"] and kinds["Vega2"] and kinds["Run History Line Plot"] >= 2 and kinds["Weave"]
    assert kinds["Media Browser"] == len(list((sweep_dir / "figures").glob("*.png"))) > 0
    grid_runs = {r["run_id"] for r in json.loads((sweep_dir / "plan.json").read_text())["runs"]}
    assert sorted(profile_names) == sorted(grid_runs)  # every isoFLOP point in exactly one budget's run set
    # the headline: a and b of every fitted approach, as fit.json has them
    (headline,) = [b["content"] for b in spec["spec"]["blocks"] if b["type"] == "markdown-block"]
    fit = json.loads((sweep_dir / "fit.json").read_text())
    fitted = [ap for ap in ("approach1", "approach2", "approach3") if fit[ap]]
    assert fitted
    for ap in fitted:
        if fit[ap]["a"] is None:  # fitted without an exponent (e.g. alpha <= 0 on this tiny grid): shown as "-"
            assert f"| {ap.replace('approach', 'Approach ')} | - | - |" in headline
            continue
        assert f"{fit[ap]['a']:.3f} [{fit[ap]['ci']['a'][0]:.3f}, {fit[ap]['ci']['a'][1]:.3f}]" in headline
        assert f"{fit[ap]['b']:.3f}" in headline
    assert f"{fit['projections'][0]['flops']:.3g}" in headline


def test_wandb_report_needs_a_sweep_logged_to_wandb(tmp_path, capsys):
    (tmp_path / "multirun.yaml").write_text("sweep:\n  name: x\nwandb:\n  enabled: false\n  project: p\n")
    assert analysis_main([str(tmp_path), "--wandb-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "wandb.enabled=true" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "multirun.yaml"]  # nothing written
