"""C4 and GitHub-code through ``datasets``, on small copies of the hub layouts made in the test (offline)."""
import json
import os

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from sweep.data import DataConfig, TokenData, is_validation, prepare, read_manifest


def split_docs(path, split) -> list[str]:
    """Every document of a split, decoded from the raw shards (split at EOS, each shard from offset 0)."""
    m = read_manifest(path)
    tok = AutoTokenizer.from_pretrained(path / m["tokenizer"])
    docs = []
    for s in m["shards"]:
        if s["split"] != split:
            continue
        arr = np.memmap(path / s["path"], dtype=m["dtype"], mode="r")
        ends = np.flatnonzero(arr == m["eos_id"])
        assert len(ends) == s["documents"] and ends[-1] == len(arr) - 1  # one EOS after every document, none inside
        starts = np.concatenate([[0], ends[:-1] + 1])
        docs += [tok.decode(arr[a:b]) for a, b in zip(starts, ends)]
    return docs


def shas(path) -> list[str]:
    return [s["sha256"] for s in read_manifest(path)["shards"]]


@pytest.fixture
def spy_load_dataset(monkeypatch):
    """Records every datasets.load_dataset call (and still makes it)."""
    calls, real = [], datasets.load_dataset

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    return calls


def c4_cfg(c4_dir, out, **kw):
    return DataConfig(**{"source": "c4", "path": str(c4_dir), "subset": "en", "tokenizer": "bpe:300", "progress": False,
                         "out": str(out), **kw})


# ---------------------------------------------------------------------------------------------
# C4


def test_c4_local_folder_takes_the_hub_code_path(tmp_path, c4_dir, spy_load_dataset):
    folder, docs = c4_dir
    path = prepare(c4_cfg(folder, tmp_path / "d"))
    # the same call as for the hub (load_dataset("allenai/c4", "en", split=..., streaming=True)), on the folder
    assert [(a, k) for a, k in spy_load_dataset] == [((str(folder), "en"), {"split": "train", "streaming": True}),
                                                     ((str(folder), "en"), {"split": "validation", "streaming": True})]
    m = read_manifest(path)
    assert m["source"]["folder"] == str(folder.resolve()) and m["source"]["subset"] == "en"
    assert m["files"] == {"train": ["en/c4-train.00000-of-00002.json.gz", "en/c4-train.00001-of-00002.json.gz"],
                          "val": ["en/c4-validation.00000-of-00001.json.gz"]}
    # the dataset's own validation split; every document whole and exact (byte-level BPE round-trips)
    assert sorted(split_docs(path, "train")) == sorted(docs["train"])
    assert sorted(split_docs(path, "val")) == sorted(docs["validation"])
    assert m["splits"]["val"]["documents"] == len(docs["validation"])
    assert m["bytes"] == sum(len(t.encode()) for s in docs.values() for t in s)
    assert m["bytes_per_token"] == pytest.approx(m["splits"]["val"]["bytes"] / m["splits"]["val"]["tokens"])
    tok = AutoTokenizer.from_pretrained(path / "tokenizer")
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == m["eos_id"]


def test_c4_is_deterministic_whatever_the_parallelism(tmp_path, c4_dir, monkeypatch):
    folder, _ = c4_dir
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    a = prepare(c4_cfg(folder, tmp_path / "a"))  # threads, each encoding single-threaded
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"  # the user's setting is back after tokenization
    b = prepare(c4_cfg(folder, tmp_path / "b", num_proc=2))  # worker processes instead of threads
    assert shas(a) == shas(b)
    c = prepare(c4_cfg(folder, tmp_path / "c", seed=1))  # another seed: the same documents, shuffled differently
    assert shas(c) != shas(a) and sorted(split_docs(c, "train")) == sorted(split_docs(a, "train"))


def test_c4_subset_by_tokens_and_by_documents(tmp_path, c4_dir):
    folder, docs = c4_dir
    full = read_manifest(prepare(c4_cfg(folder, tmp_path / "full", tokenizer="bpe:300")))
    cap = full["splits"]["train"]["tokens"] // 3
    path = prepare(c4_cfg(folder, tmp_path / "t", max_tokens=cap, val_percent=10))
    m = read_manifest(path)
    train = m["splits"]["train"]
    # documents stay whole: the subset reaches the cap with its last document, and not one document earlier
    last = len(TokenData(path).shards["train"][-1])
    assert cap <= train["tokens"] and train["documents"] < full["splits"]["train"]["documents"]
    doc_lens = np.diff(np.concatenate([[-1], np.flatnonzero(np.asarray(TokenData(path).shards["train"][-1]) == m["eos_id"])]))
    assert train["tokens"] - doc_lens[-1] < cap and last == train["tokens"]
    # c4's validation subset is sized to val_percent of the whole subset
    assert 0 < m["splits"]["val"]["tokens"] <= train["tokens"] * 10 / 90 + max(len(t) for t in docs["validation"])
    assert set(split_docs(path, "train")) <= set(docs["train"])
    d = read_manifest(prepare(c4_cfg(folder, tmp_path / "d", max_docs=7)))
    assert d["splits"]["train"]["documents"] == 7
    assert d["splits"]["val"]["documents"] == round(7 * 2 / 98 + 0.5)  # ceil of 2% of the subset: at least one


def test_c4_hub_id_offline_fails_fast_naming_the_fix(tmp_path, spy_load_dataset):
    with pytest.raises(ValueError, match="local mirror"):
        prepare(DataConfig(source="c4", path="allenai/c4", subset="en", tokenizer="bpe:300", out=str(tmp_path / "x")))
    assert not spy_load_dataset and not (tmp_path / "x").exists() and not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="C4 mirror"):
        prepare(DataConfig(source="c4", path=str(tmp_path / "nope"), out=str(tmp_path / "y")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="hub layout"):
        prepare(DataConfig(source="c4", path=str(tmp_path / "empty"), out=str(tmp_path / "z")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ---------------------------------------------------------------------------------------------
# GitHub code


def gh_cfg(gh_dir, out, **kw):
    return DataConfig(**{"source": "github_code", "path": str(gh_dir), "tokenizer": "bpe:300", "val_percent": 20,
                         "progress": False, "out": str(out), **kw})


def test_github_code_local_folder_takes_the_parquet_path(tmp_path, github_dir, spy_load_dataset, quick_parquet_shutdown):
    folder, rows = github_dir
    a = prepare(gh_cfg(folder, tmp_path / "a"))
    (args, kwargs), = spy_load_dataset
    # what the hub takes with hf://datasets/codeparrot/github-code-clean/data/train-*.parquet; no loading script
    assert args == ("parquet",) and kwargs["data_files"] == {"train": str(folder / "data/train-*.parquet")}
    assert kwargs["split"] == "train" and kwargs["streaming"] is True
    m = read_manifest(a)
    assert m["files"] == {"all": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]}
    # validation held out by a stable hash of (repo_name, path): disjoint, and exactly the hashed rows
    val = [r["code"] for r in rows if is_validation(f"{r['repo_name']}/{r['path']}", 20)]
    train = [r["code"] for r in rows if not is_validation(f"{r['repo_name']}/{r['path']}", 20)]
    assert val and train
    assert sorted(split_docs(a, "val")) == sorted(val) and sorted(split_docs(a, "train")) == sorted(train)
    assert m["languages"] == {"GO": 24, "Python": sum(r["language"] == "Python" for r in rows), "Rust": 24}
    b = prepare(gh_cfg(folder, tmp_path / "b"))
    assert shas(a) == shas(b)


def test_github_code_language_and_license_filters(tmp_path, github_dir, quick_parquet_shutdown):
    folder, rows = github_dir
    path = prepare(gh_cfg(folder, tmp_path / "f", languages=["python", "Go"], licenses=["MIT", "apache-2.0"]))
    keep = [r for r in rows if r["language"] in ("Python", "GO") and r["license"] in ("mit", "apache-2.0")]
    got = split_docs(path, "train") + split_docs(path, "val")
    assert sorted(got) == sorted(r["code"] for r in keep)  # matched case-insensitively: the hub spells Go "GO"
    m = read_manifest(path)
    assert set(m["languages"]) == {"Python", "GO"} and set(m["licenses"]) == {"mit", "apache-2.0"}
    assert m["skipped"]["language"] + m["skipped"]["license"] == len(rows) - len(keep)
    assert m["source"]["filters"] == {"languages": ["python", "Go"], "licenses": ["MIT", "apache-2.0"]}


def test_github_code_hub_pattern_offline_fails_fast(tmp_path):
    for path in ("codeparrot/github-code-clean", "hf://datasets/codeparrot/github-code-clean/data/train-*.parquet"):
        with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
            prepare(DataConfig(source="github_code", path=path, tokenizer="bpe:300", out=str(tmp_path / "x")))
    assert not list(tmp_path.iterdir())


def test_local_text_folder(tmp_path):
    src = tmp_path / "txt"
    (src / "sub").mkdir(parents=True)
    texts = {f"sub/{i}.txt" if i % 2 else f"{i}.txt": f"Document {i}: " + "lorem ipsum dolor " * (i + 5) for i in range(40)}
    for name, t in texts.items():
        (src / name).write_text(t)
    (src / "ignored.md").write_text("not a .txt file")
    path = prepare(DataConfig(source="local_text", path=str(src), tokenizer="bpe:300", val_percent=20, progress=False,
                              out=str(tmp_path / "d")))
    assert sorted(split_docs(path, "val")) == sorted(t for n, t in texts.items() if is_validation(n, 20))
    assert sorted(split_docs(path, "train") + split_docs(path, "val")) == sorted(texts.values())
    assert json.loads((path / "manifest.json").read_text())["source"]["folder"] == str(src)
