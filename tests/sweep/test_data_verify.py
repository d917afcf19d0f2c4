"""The loader refuses bad data with one-line errors that name the fix; bad configs fail before any work."""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import sweep.data.loader as data_mod  # TokenData's own module: where it looks up sha256_file
from sweep.data import DataConfig, TokenData, prepare, read_manifest

from helpers import REPO


@pytest.fixture
def copy(tmp_path, prepared):
    """A private copy of the shared prepared dir (the copy has new inodes: nothing is verified yet)."""
    dst = tmp_path / "copy"
    shutil.copytree(prepared[1], dst)
    return dst


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_truncated_shard_is_refused_without_hashing(copy, monkeypatch):
    real = data_mod.sha256_file
    monkeypatch.setattr(data_mod, "sha256_file",
                        lambda p: real(p) if Path(p).suffix == ".json" else pytest.fail("sizes come before any hashing"))
    f = copy / "train-00000.bin"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size - 2)
    with pytest.raises(ValueError, match="truncated") as e:
        TokenData(copy)
    assert "re-prepare" in one_line(e)


def test_corrupted_shard_is_refused_on_first_use(copy):
    with open(copy / "val-00000.bin", "r+b") as f:  # same size, different bytes
        f.seek(4)
        f.write(b"\x07\x00")
    with pytest.raises(ValueError, match="sha256") as e:
        TokenData(copy)  # first use: hashed although verify=False
    assert "re-prepare" in one_line(e)


def test_verified_shards_are_not_hashed_again(tmp_path, prepared, monkeypatch):
    dst = tmp_path / "d"
    shutil.copytree(prepared[1], dst)
    calls = []
    real = data_mod.sha256_file
    monkeypatch.setattr(data_mod, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    TokenData(dst)
    assert sorted(c for c in calls if c.endswith(".bin")) == ["train-00000.bin", "val-00000.bin"]
    calls.clear()
    TokenData(dst)  # remembered in .verified.json: only the (small) tokenizer is hashed
    assert not [c for c in calls if c.endswith(".bin")]
    TokenData(dst, verify=True)  # on request: hashed again
    assert sorted(c for c in calls if c.endswith(".bin")) == ["train-00000.bin", "val-00000.bin"]
    calls.clear()
    os.utime(dst / "val-00000.bin", ns=(1, 1))  # touched (e.g. rewritten): hashed again
    TokenData(dst)
    assert [c for c in calls if c.endswith(".bin")] == ["val-00000.bin"]


def test_tokenizer_mismatch_is_refused(copy, tmp_path, c4_dir):
    other = prepare(DataConfig(source="c4", path=str(c4_dir[0]), subset="en", tokenizer="bpe:300", progress=False,
                               out=str(tmp_path / "other")))
    shutil.copyfile(other / "tokenizer" / "tokenizer.json", copy / "tokenizer" / "tokenizer.json")
    with pytest.raises(ValueError, match="not the tokenizer") as e:
        TokenData(copy)
    assert "re-prepare" in one_line(e)


def test_vocab_that_does_not_fit_the_model_is_refused(prepared):
    _, path = prepared
    TokenData(path, model_vocab_size=384)  # the planner pads 320 up to a multiple of 64
    with pytest.raises(ValueError, match="plan the sweep against this data dir") as e:
        TokenData(path, model_vocab_size=256)
    one_line(e)


def test_old_manifest_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**m, "version": 1}))
    with pytest.raises(ValueError, match="manifest version 1"):
        TokenData(copy)


def test_shards_split_at_document_boundaries(tmp_path, corpus_dir, prepared):
    cfg, one = prepared
    path = prepare(DataConfig(**{**cfg.__dict__, "max_shard_tokens": 20_000, "out": str(tmp_path / "many")}))
    m = read_manifest(path)
    train = [s for s in m["shards"] if s["split"] == "train"]
    assert len(train) > 3 and [s["path"] for s in train[:2]] == ["train-00000.bin", "train-00001.bin"]
    eos = m["eos_id"]
    joined = []
    for s in train:
        arr = np.asarray(np.memmap(path / s["path"], dtype=m["dtype"], mode="r"))
        assert arr[-1] == eos and s["documents"] == int((arr == eos).sum())  # whole documents only
        assert s["tokens"] <= 20_000 or s["documents"] == 1  # a new shard starts once the next document would not fit
        joined.append(arr)
    single = np.memmap(one / "train-00000.bin", dtype=m["dtype"], mode="r")
    assert np.array_equal(np.concatenate(joined), single)  # the same token stream, cut differently
    d = TokenData(path)
    n = d.n_windows("train", 64)
    assert n == sum((s["tokens"] - 1) // 64 for s in train)  # windows never cross a shard
    x, y = d.train_batch(3, 8, 64, seed=0)
    assert x.shape == (8, 64) and np.array_equal(x[:, 1:], y[:, :-1])
    assert d.train_tokens == m["splits"]["train"]["tokens"]


def test_warns_past_max_epochs(prepared):
    d = TokenData(prepared[1], max_epochs=1.0)
    n = d.n_windows("train", 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d.train_batch(0, n, 64, seed=0)  # exactly one epoch: fine
    with pytest.warns(RuntimeWarning, match="Muennighoff"):
        d.train_batch(1, n, 64, seed=0)


@pytest.mark.parametrize("kw, exc, match", [
    ({"tokenizer": "bpe:abc"}, ValueError, "bpe:<vocab size>"),
    ({"tokenizer": "bpe:100"}, ValueError, "257"),
    ({"source": "c4", "languages": ["Python"]}, ValueError, "github_code only"),
    ({"source": "github_code", "subset": "en"}, ValueError, "c4 only"),
    ({"max_tokens": -1}, ValueError, "max_tokens"),
    ({"source": "local_text"}, ValueError, "data.path is required"),
    ({"source": "local_text", "path": "/nonexistent/folder"}, FileNotFoundError, "data.path"),
    ({"tokenizer": "gpt2"}, ValueError, "HF_HUB_OFFLINE"),  # a hub tokenizer, offline: before reading anything
    ({"tokenizer": "/nonexistent/tokenizer/dir"}, ValueError, "data.tokenizer"),
])
def test_bad_configs_fail_early_and_leave_nothing(tmp_path, kw, exc, match):
    with pytest.raises(exc, match=match) as e:
        prepare(DataConfig(**{"out": str(tmp_path / "out"), **kw}))
    one_line(e)
    assert not list(tmp_path.iterdir())  # no output dir, no temporary sibling


def test_data_group_selects_each_source():
    """`data=c4` etc. compose into the sweep's app (struct mode: unknown keys are errors)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from sweep.config import register

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for name in ("c4", "github_code", "stdlib_code", "local_text"):
            cfg = compose("config", overrides=[f"data={name}", "data.path=/somewhere", "data.max_tokens=1e6"])
            data = OmegaConf.to_object(cfg.data)
            assert isinstance(data, DataConfig) and data.source == name and data.max_tokens == 1e6
        assert compose("config").data.source == "stdlib_code"
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["data=c4", "data.langauges=[Python]"])


def test_prepare_data_script(tmp_path, c4_dir):
    out = tmp_path / "d"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "data=c4", f"data.path={c4_dir[0]}",
           "data.tokenizer=bpe:300", "data.max_tokens=2000", f"data.out={out}", "data.progress=false"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tokens/s" in r.stdout and read_manifest(out)["splits"]["train"]["tokens"] >= 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no Hydra run dir or .hydra/ left behind
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "reused" in r.stdout
