"""Bad input to `python -m sweep`: one line on stderr naming the problem, exit 2, nothing created."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO

CASES = {
    "+recipe.foo=1": "unknown config key 'recipe.foo'",
    "+foo=1": "unknown config key 'foo'",
    "recipe.lrr=1": "unknown config key 'recipe.lrr'; valid keys of recipe: batch_multiple, batch_rule",
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
    "launch.device=V100": "launch.device='V100' is not in the peak table; use H100",
    "launch.assumed_mfu=2": "launch.assumed_mfu must be in (0, 1]",
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


# ---------------------------------------------------------------------------------------------
# Problems found while planning: the data, the output dir, the budget.  Same contract: one line,
# exit 2, no outputs/ dir, nothing trained.

def sweep_cli(cwd, *overrides, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "sweep", "+experiment=smoke", "data.progress=false", *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line(proc, needle):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [l for l in lines if not l.startswith("[")]  # Hydra's INFO log lines start with a timestamp
    assert len(errors) == 1 and errors[0].startswith("error: ") and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, corpus_dir):
    """A data dir prepared through the CLI itself (a dry run), and the overrides that select it."""
    root = tmp_path_factory.mktemp("bad_data")
    data = root / "data"
    args = [f"data.path={corpus_dir}", "data.tokenizer=bpe:320", "data.val_percent=10", f"data.out={data}",
            "sweep.budgets=[3e10]"]
    proc = sweep_cli(root, *args, "launch.dry_run=true")
    assert proc.returncode == 0 and (data / "manifest.json").exists(), proc.stderr
    assert not (root / "outputs").exists()  # a dry run creates no sweep dir
    return data, [a for a in args if not a.startswith("data.out=")]


def data_copy(small_data, tmp_path):
    data, args = small_data
    shutil.copytree(data, tmp_path / "data")
    (tmp_path / "run").mkdir()
    return tmp_path / "data", args + [f"data.out={tmp_path / 'data'}"], tmp_path / "run"


def train_shard(data):
    m = json.loads((data / "manifest.json").read_text())
    return data / next(s["path"] for s in m["shards"] if s["split"] == "train")


def test_missing_data_dir(tmp_path):
    assert_one_line(sweep_cli(tmp_path, "data=local_text", f"data.path={tmp_path / 'nope'}"), "is not a directory")
    assert list(tmp_path.iterdir()) == []


def test_truncated_shard(small_data, tmp_path):
    data, args, cwd = data_copy(small_data, tmp_path)
    f = train_shard(data)
    f.write_bytes(f.read_bytes()[:-10])
    assert_one_line(sweep_cli(cwd, *args), "is truncated")
    assert list(cwd.iterdir()) == []


def test_checksum_mismatch(small_data, tmp_path):
    data, args, cwd = data_copy(small_data, tmp_path)
    f = train_shard(data)
    b = bytearray(f.read_bytes())
    b[100] ^= 1  # same size, one token changed
    f.write_bytes(bytes(b))
    assert_one_line(sweep_cli(cwd, *args), "does not match its sha256")
    assert list(cwd.iterdir()) == []


def test_swapped_tokenizer(small_data, tmp_path):
    data, args, cwd = data_copy(small_data, tmp_path)
    from sweep.data import train_bpe

    train_bpe(["a different tokenizer entirely " * 50], 300).save_pretrained(data / "tokenizer")
    assert_one_line(sweep_cli(cwd, *args), "is not the tokenizer these shards were made with")
    assert list(cwd.iterdir()) == []


def test_sequence_longer_than_the_data(small_data, tmp_path):
    data, args, cwd = data_copy(small_data, tmp_path)
    m = json.loads((data / "manifest.json").read_text())
    seq = 2 * m["splits"]["train"]["tokens"]
    proc = sweep_cli(cwd, *args, f"recipe.seq_len={seq}", "recipe.batch_size=1", "recipe.min_steps=1", "sweep.budgets=[1e17]")
    assert_one_line(proc, f"recipe.seq_len={seq} is longer than the train split")
    assert list(cwd.iterdir()) == []


def test_offline_hub_id_without_cache(tmp_path):
    proc = sweep_cli(tmp_path, "data=c4", "data.tokenizer=gpt2", env_extra={"HF_HUB_OFFLINE": "1"})
    assert_one_line(proc, "HF_HUB_OFFLINE is set")
    assert list(tmp_path.iterdir()) == []


def test_budget_too_small_for_one_step(tmp_path):
    assert_one_line(sweep_cli(tmp_path, "sweep.budgets=[1e6]", "data.tokenizer=bpe:320"), "every budget is too small")
    assert list(tmp_path.iterdir()) == []  # found before any data is prepared


def test_output_dir_that_cannot_be_written(small_data, tmp_path):
    data, args, cwd = data_copy(small_data, tmp_path)
    (cwd / "a_file").write_text("")
    assert_one_line(sweep_cli(cwd, *args, f"hydra.sweep.dir={cwd / 'a_file' / 'sweep'}"), "cannot write the sweep dir")
    assert [p.name for p in cwd.iterdir()] == ["a_file"]


def test_output_dir_holding_another_sweep(small_data, tmp_path):
    data, args, cwd = data_copy(small_data, tmp_path)
    sweep_dir = cwd / "outputs" / "smoke"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.json").write_text(json.dumps({"config": {"recipe.lr": 0.1}}))
    assert_one_line(sweep_cli(cwd, *args), "holds a sweep with a different config")
    assert [p.name for p in sweep_dir.iterdir()] == ["sweep.json"]


def test_vocab_larger_than_the_model_vocab(small_data, tmp_path):
    """A run spec planned for a smaller vocab than the data's (e.g. data re-prepared under a plan)."""
    from models.ladder import LadderConfig
    from sweep.plan import SweepConfig, plan
    from sweep.recipe import RecipeConfig

    data, _ = small_data
    spec = plan(SweepConfig(budgets=[3e10], sizes_per_budget=1), LadderConfig(head_dim=16, aspect_ratio=32),
                RecipeConfig(seq_len=64, batch_size=4, min_steps=1), vocab_size=64)[0]
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "sweep.train", "--spec", str(tmp_path / "spec.json"), "--data", str(data),
                           "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: the data's vocab is"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_sweep_identity_ignores_how_a_sweep_runs(tmp_path):
    """Progress bars, the data dir's location or the sweep's name do not make a relaunch 'another sweep'."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sweep.app import CONF_DIR
    from sweep.config import identity, register
    from sweep.rundir import check_identity

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=smoke"])
    GlobalHydra.instance().clear()
    ident, defaults = identity(cfg)
    run_only = {"data.out", "data.num_proc", "data.progress", "sweep.name", "sweep.dry_run", "sweep.refine"}
    assert "recipe.lr" in ident and "sweep.budgets" in ident and not set(ident) & run_only
    assert not [k for k in ident if k.startswith(("launch.", "trainer.", "wandb."))]
    # a sweep.json written with other run-only settings (as older versions wrote them) is the same sweep
    (tmp_path / "sweep.json").write_text(json.dumps({"config": {**ident, "data.progress": False, "data.out": "/x"}}))
    check_identity(tmp_path, ident, defaults, allow_change=False)
    (tmp_path / "sweep.json").write_text(json.dumps({"config": {**ident, "recipe.lr": 1.0}}))
    with pytest.raises(ValueError, match=r"different config \(recipe.lr changed\)"):
        check_identity(tmp_path, ident, defaults, allow_change=False)
