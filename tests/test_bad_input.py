"""Bad input to `python -m sweep`: one line on stderr naming the problem, exit 2, nothing created."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

CASES = {
    "+recipe.foo=1": "unknown config key 'recipe.foo'",
    "+foo=1": "unknown config key 'foo'",
    "recipe.lrr=1": "Key 'lrr' not in 'RecipeConfig'",
    "sweep.budgets=[]": "sweep.budgets is empty",
    "sweep.budgets=[-1]": "sweep.budgets must be positive numbers",
    "sweep.budgets=[abc]": "sweep.budgets must be positive numbers",
    "recipe.flops_convention=7N": "use one of chinchilla",
    "trainer.device=tpu": "trainer.device='tpu'",
    "recipe.lr=1e-3,3e-3": "expands budgets x sizes itself",
    "model.head_dim=0": "head_dim must be a positive int",
    "model.head_dim=15": "must be even",
    "data=nope": "Could not find 'data/nope'",
    "recipe.batch_size=abc": "could not be converted to Integer",
    "recipe.batch_size=0": "recipe.batch_size must be >= 1",
    "sweep.seeds=0": "sweep.seeds must be >= 1",
}


@pytest.mark.parametrize("override", list(CASES))
def test_bad_override_one_line_exit_2_nothing_created(tmp_path, override):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "sweep", "+experiment=smoke", override], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and CASES[override] in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no data_cache/
