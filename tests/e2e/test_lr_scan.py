"""The LR-scan stage end to end: a tiny scan through the Hydra app fits recipe.lr_rule=power and writes recipe.yaml;
a later sweep loads it with the printed override and trains each run at the rule's LR for its N and D."""
import json
import re

import pytest
from omegaconf import OmegaConf

from helpers import finish, launch, sweep_args
from sweep.plan import RunSpec

SCAN = ["sweep.mode=lr_scan", "sweep.scan.sizes=2", "sweep.scan.lrs=3", "sweep.scan.lr_factor=4",
        "sweep.scan.tokens_per_param=1", "sweep.scan.extend=1", "recipe.lr=1e-2"]


@pytest.mark.slow
def test_scan_writes_a_recipe_that_a_later_sweep_loads(tmp_path, corpus_dir):
    out = finish(launch(sweep_args(tmp_path, corpus_dir, "scan", *SCAN)), timeout=900)
    scan_dir = tmp_path / "scan"
    plan = [RunSpec.from_dict(r) for r in json.loads((scan_dir / "plan.json").read_text())["runs"]]
    assert plan and {s.kind for s in plan} == {"lr_scan"} and all(f"-lr{s.recipe.lr:.3g}" in s.run_id for s in plan)
    sizes = sorted({s.params for s in plan})
    assert len(sizes) == 2 and all(len({s.recipe.lr for s in plan if s.params == n}) >= 3 for n in sizes)
    for s in plan:  # D = tokens_per_param x N, within a step
        assert abs(s.tokens - s.params) <= s.recipe.tokens_per_step
    scan = json.loads((scan_dir / "lr_scan.json").read_text())
    rule = scan["rule"]
    assert (scan_dir / "figures" / "lr_scan.png").stat().st_size > 1000
    recipe = OmegaConf.load(scan_dir / "recipe.yaml")
    assert recipe.lr_rule == "power" and recipe.lr == pytest.approx(rule["lr0"]) and recipe.lr_p == pytest.approx(rule["p"])
    assert recipe.lr_q == 0.0 and not rule["q_fitted"]  # one length per size without forks
    override = re.search(r"load it in a later sweep with: (hydra\.searchpath=\S+ recipe=lr_scan)", out).group(1)
    assert override == scan["override"]

    # a relaunch of the scan makes the same choices: nothing new to train, the same rule
    again = finish(launch(sweep_args(tmp_path, corpus_dir, "scan", *SCAN)), timeout=900)
    assert "LR scan: extending" not in again
    assert json.loads((scan_dir / "lr_scan.json").read_text())["rule"] == rule

    # the next sweep: the recipe from the scan, every run at lr0 (N/N0)^-p (D/D0)^q of its own N and D
    args = sweep_args(tmp_path, corpus_dir, "grid", "launch.dry_run=false", *override.split())
    proc = launch([a for a in args if not a.startswith("recipe.lr=")] + ["sweep.budgets=[3e9]"])
    finish(proc, timeout=900)
    specs = [RunSpec.from_dict(r) for r in json.loads((tmp_path / "grid" / "plan.json").read_text())["runs"]]
    assert specs
    for s in specs:
        expected = rule["lr0"] * (s.params / rule["n0"]) ** -rule["p"] * (s.tokens / rule["d0"]) ** rule["q"]
        assert s.recipe.lr == pytest.approx(expected, rel=1e-12) and s.recipe.lr_rule == "constant"
