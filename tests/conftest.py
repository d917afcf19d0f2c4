"""Shared fixtures: a small real corpus (a slice of this Python's standard library) and offline settings."""
import os
import shutil
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def copy_stdlib_slice(dest: Path, max_bytes: int = 400_000) -> Path:
    """Copy real .py files (sorted, each < 40 kB) from the stdlib into ``dest`` until ~max_bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for sub in ("json", "email", "logging", "importlib", "concurrent", "xml", "http", "urllib", "unittest"):
        for f in sorted((root / sub).rglob("*.py")):
            size = f.stat().st_size
            if size > 40_000 or "test" in f.parts[-1]:
                continue
            target = dest / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            total += size
            if total >= max_bytes:
                return dest
    return dest


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return copy_stdlib_slice(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, corpus_dir):
    """A prepared data dir (BPE vocab 320) shared by the tests that only read it."""
    from sweep.data import DataConfig, prepare

    cfg = DataConfig(path=str(corpus_dir), tokenizer="bpe:320", val_percent=10.0,
                     out=str(tmp_path_factory.mktemp("data") / "d"))
    return cfg, prepare(cfg)
