"""A sweep directory made by an older version of the code resumes: relaunching it trains nothing new.

The fixture (tests/data/old_sweep/, see its README) was planned and trained at commit 5827d6b.  New config
keys with defaults, the spec format version and the run-only `launch` section must leave its specs and its
sweep identity equal, so the relaunch finds every run finished for its spec.
"""
import json
import shutil

from helpers import REPO, finish, launch

FIXTURE = REPO / "tests" / "data" / "old_sweep"


def old_sweep_args(tmp_path):
    return [
        "data=local_text", "data.path=tests/data/old_sweep/corpus", "data.tokenizer=bpe:320", "data.val_percent=10",
        f"data.out={tmp_path / 'data'}", "model.head_dim=16", "model.aspect_ratio=32", "model.tie_embeddings=true",
        "model.min_layers=2", "recipe.seq_len=32", "recipe.batch_size=8", "recipe.min_steps=20", "recipe.lr=1e-2",
        "trainer.progress=false", "trainer.eval_tokens=4096", "trainer.num_threads=1", "sweep.name=old",
        "sweep.budgets=[3e9,1e10]", "sweep.sizes=[1.4e4,3.7e4,7e4]", "sweep.horizons=[2]", "sweep.seeds=2",
        f"hydra.sweep.dir={tmp_path / 'old'}",
    ]


def test_sweep_made_by_older_code_resumes_without_training(tmp_path):
    sweep_dir = tmp_path / "old"
    shutil.copytree(FIXTURE / "sweep", sweep_dir)
    before = {p.parent.name: p.read_text() for p in sweep_dir.glob("C*/attempts.jsonl")}
    results_before = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("C*/result.json")}
    assert len(before) == 15

    out = finish(launch(old_sweep_args(tmp_path)))
    assert "15 of 15 runs already finished" in out or "nothing to train" in out, out[-3000:]
    after = {p.parent.name: p.read_text() for p in sweep_dir.glob("C*/attempts.jsonl")}
    assert after == before  # no run was started again
    for rid, res in results_before.items():
        assert json.loads((sweep_dir / rid / "result.json").read_text()) == res
    assert not list(sweep_dir.glob("C*/weights.pt"))  # nothing was trained
    fit = json.loads((sweep_dir / "fit.json").read_text())  # the old results still load and fit
    assert fit["n_runs"] == 15 and fit["n_skipped"] == 0
