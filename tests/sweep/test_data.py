import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from sweep.data import DataConfig, TokenData, is_validation, prepare, sha256_file, stdlib_documents


def test_manifest_matches_shards(prepared):
    cfg, path = prepared
    m = json.loads((path / "manifest.json").read_text())
    assert m["dtype"] == "uint16" and m["vocab_size"] == 320 and m["tokenizer"] == "tokenizer"
    assert [s["split"] for s in m["shards"]] == ["train", "val"]
    for info in m["shards"]:
        arr = np.memmap(path / info["path"], dtype=m["dtype"], mode="r")  # raw, headerless
        assert len(arr) == info["tokens"] == m["splits"][info["split"]]["tokens"] > 0
        assert sha256_file(path / info["path"]) == info["sha256"]
        assert int((arr == m["eos_id"]).sum()) == info["documents"]  # one EOS after every document
        assert arr[-1] == m["eos_id"]
    for split in ("train", "val"):
        docs = [t for n, t in stdlib_documents(cfg.path) if is_validation(n, cfg.val_percent) == (split == "val")]
        assert m["splits"][split]["bytes"] == sum(len(t.encode()) for t in docs)
    assert m["bytes_per_token"] == m["splits"]["val"]["bytes"] / m["splits"]["val"]["tokens"]
    assert m["documents"] == m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"]
    assert m["config"]["tokenizer"] == "bpe:320" and m["source"]["folder"] == cfg.path


def test_documents_whole_and_in_order(prepared, corpus_dir):
    cfg, path = prepared
    tok = AutoTokenizer.from_pretrained(path / "tokenizer")  # transformers loads the saved BPE
    assert tok.eos_token == "<|endoftext|>"
    train_docs = [t for name, t in stdlib_documents(str(corpus_dir)) if not is_validation(name, cfg.val_percent)]
    arr = np.memmap(path / "train-00000.bin", dtype=np.uint16, mode="r")
    eos = np.flatnonzero(arr == tok.eos_token_id)
    first = tok.decode(arr[: eos[0]])  # the first document starts at offset 0
    assert first == train_docs[0]  # byte-level BPE round-trips exactly
    second = tok.decode(arr[eos[0] + 1: eos[1]])
    assert second == train_docs[1]


def test_validation_held_out_by_name(prepared, corpus_dir):
    cfg, path = prepared
    names = [n for n, _ in stdlib_documents(str(corpus_dir))]
    val = [n for n in names if is_validation(n, cfg.val_percent)]
    m = json.loads((path / "manifest.json").read_text())
    assert m["splits"]["val"]["documents"] == len(val) > 0
    assert m["splits"]["train"]["documents"] == len(names) - len(val)


def test_prepare_is_deterministic_and_reused(tmp_path, corpus_dir, prepared):
    cfg, path = prepared
    again = prepare(DataConfig(**{**cfg.__dict__, "out": str(tmp_path / "again")}))
    for f in ("train-00000.bin", "val-00000.bin"):
        assert sha256_file(again / f) == sha256_file(path / f)
    assert prepare(cfg) == path  # second call reuses the finished directory


def test_batches_pure_function_of_seed_and_step(prepared):
    _, path = prepared
    d = TokenData(path, verify=True)
    a = [d.train_batch(k, 4, 32, seed=1) for k in (0, 5, 3)]
    d2 = TokenData(path)
    b = [d2.train_batch(k, 4, 32, seed=1) for k in (3, 5, 0)][::-1]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    x, y = a[0]
    assert x.shape == (4, 32) and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert not np.array_equal(d.train_batch(0, 4, 32, seed=2)[0], x)


def test_an_epoch_visits_every_window_once(prepared):
    _, path = prepared
    d = TokenData(path)
    n = d.n_windows("train", 64)
    seen = np.concatenate([d.train_batch(k, 1, 64, seed=0)[0][:, 0] for k in range(n)])
    starts = np.asarray(d.shards["train"][0][np.arange(n) * 64], dtype=np.int64)
    assert sorted(seen.tolist()) == sorted(starts.tolist())


def test_each_rank_reads_only_its_rows(prepared):
    """Data-parallel ranks ask for their slice of the global batch and read only those windows; together they
    are the whole batch, also across an epoch boundary (sample j of step k = window (k·B + j) of the order)."""
    _, path = prepared
    d = TokenData(path)
    T, B, world = 32, 8, 2
    n = d.n_windows("train", T)
    read = []
    window = d.window
    d.window = lambda split, w, seq_len: read.append(w) or window(split, w, seq_len)  # records, then reads
    for step in (3, n // B):  # the second batch crosses from epoch 0 into epoch 1 (n is not a multiple of 8)
        assert (n // B) * B < n < (n // B + 1) * B
        want = [int(np.random.default_rng([1, i // n]).permutation(n)[i % n]) for i in range(step * B, (step + 1) * B)]
        full_x, full_y = d.train_batch(step, B, T, seed=1)
        for r in range(world):
            rows = slice(r * B // world, (r + 1) * B // world)
            read.clear()
            x, y = d.train_batch(step, B, T, seed=1, rows=rows)
            assert read == want[rows]  # only this rank's windows, in order
            assert np.array_equal(x, full_x[rows]) and np.array_equal(y, full_y[rows])


def test_corrupt_shard_is_detected(tmp_path, prepared):
    import shutil

    _, path = prepared
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    with open(bad / "train-00000.bin", "r+b") as f:
        f.seek(10)
        f.write(b"\x01\x02")
    with pytest.raises(ValueError, match="sha256"):
        TokenData(bad, verify=True)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="data.source"):
        prepare(DataConfig(source="nope", out=str(tmp_path / "x")))
    with pytest.raises(FileNotFoundError, match="data.path"):
        prepare(DataConfig(path=str(tmp_path / "missing"), out=str(tmp_path / "y")))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bpe_257_is_plain_bytes(tmp_path, corpus_dir):
    """bpe:257 (the tiny preset's tokenizer): 256 byte tokens + EOS, no merges, so one token per UTF-8 byte."""
    cfg = DataConfig(path=str(corpus_dir), tokenizer="bpe:257", val_percent=10.0, out=str(tmp_path / "d"))
    m = json.loads((prepare(cfg) / "manifest.json").read_text())
    assert m["vocab_size"] == 257
    for split in ("train", "val"):  # tokens = bytes + one EOS per document
        s = m["splits"][split]
        assert s["tokens"] == s["bytes"] + s["documents"]
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "d" / "tokenizer"))
    text = "naïve café — 東京 🚀"
    assert len(tok.encode(text, add_special_tokens=False)) == len(text.encode()) and tok.decode(tok.encode(text)) == text
