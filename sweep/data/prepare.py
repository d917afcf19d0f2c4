"""``prepare(cfg)``: a document source -> tokenizer -> shards + manifest, built in a temp dir and renamed into place."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter, deque
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sweep.data.config import DataConfig, bpe_vocab, config_hash, data_dir, validate
from sweep.data.shards import MANIFEST_VERSION, ShardWriter, sha256_file
from sweep.data.sources import SOURCES
from sweep.data.tokenize import _batches, _executor, _replay, _serial_tokenizers, _take_sample, load_pretrained_tokenizer, train_bpe
from sweep.rundir import fault_point

log = logging.getLogger(__name__)


def prepare(cfg: DataConfig) -> Path:
    """Build (or reuse) the data directory for ``cfg`` and return its path."""
    validate(cfg)  # again: the config is mutable
    out = data_dir(cfg)
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m.get("config_hash") == config_hash(cfg):
            return out
        raise ValueError(f"{out} holds data from another config; delete it or set data.out to a new folder")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a prepared data dir; delete it or set data.out to a new folder")

    t0 = time.perf_counter()
    vocab_target = bpe_vocab(cfg.tokenizer)
    tok = None if vocab_target else load_pretrained_tokenizer(cfg.tokenizer)  # fails fast, before any reading
    src = SOURCES[cfg.source](cfg)  # checks paths and the hub; reads no documents yet

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        streams = list(src.streams)
        if vocab_target:
            # train on the first training documents of the selection itself, then replay them
            limiting, first = streams[0]
            sample, read = _take_sample(first, cfg.tokenizer_train_bytes)
            if not sample:
                raise ValueError(f"data source {cfg.source!r} gave no training documents; check data.path and the filters")
            log.info("training a %d-token byte-level BPE on %.1f MB of training text", vocab_target, sum(map(len, sample)) / 1e6)
            tok = train_bpe(sample, vocab_target, cfg.progress)
            streams[0] = (limiting, _replay(read, first))
            del sample
        t_tok, cpu_tok = time.perf_counter(), time.process_time()
        tok.save_pretrained(tmp / "tokenizer")
        vocab = max(len(tok), tok.backend_tokenizer.get_vocab_size(with_added_tokens=True))
        dtype = np.uint16 if vocab < 2**16 else np.uint32
        tok_json = (tmp / "tokenizer" / "tokenizer.json").read_text()  # exactly what AutoTokenizer will reload

        writers = {s: ShardWriter(tmp, s, dtype, cfg.max_shard_tokens) for s in ("train", "val")}
        with _serial_tokenizers():  # each task is single-threaded: the parallelism is ours (see _executor)
            tags = _write_streams(cfg, streams, tok_json, np.dtype(dtype).name, tok.eos_token_id, writers)
        t_done, cpu_done = time.perf_counter(), time.process_time()
        for s, w in writers.items():
            if not w.documents:
                raise ValueError(f"data source {cfg.source!r} gave {writers['train'].documents} train and {writers['val'].documents} "
                                 "val documents; it needs both: add documents, raise data.max_tokens or change data.val_percent")

        shards = writers["train"].shards + writers["val"].shards
        splits = {s: {"tokens": w.tokens, "documents": w.documents, "bytes": w.bytes, "shards": len(w.shards)}
                  for s, w in writers.items()}
        m = {
            "version": MANIFEST_VERSION,
            "config_hash": config_hash(cfg),
            "config": {**asdict(cfg), "shuffle_buffer": src.info["selection"]["buffer"]},  # as resolved
            "source": src.info,
            "files": src.files,
            "skipped": dict(sorted(src.skipped.items())),
            **tags,
            "tokenizer": "tokenizer",  # relative to this folder; AutoTokenizer.from_pretrained(<out>/tokenizer)
            "tokenizer_spec": cfg.tokenizer,
            "tokenizer_sha256": sha256_file(tmp / "tokenizer" / "tokenizer.json"),
            "vocab_size": vocab,
            "eos_id": tok.eos_token_id,
            "eos_token": tok.eos_token,
            "dtype": np.dtype(dtype).name,
            "shards": shards,
            "splits": splits,
            "documents": sum(w.documents for w in writers.values()),
            "tokens": sum(w.tokens for w in writers.values()),
            "bytes": sum(w.bytes for w in writers.values()),
            # UTF-8 bytes per token on the validation split, EOS tokens included (they are predicted too):
            # bits per byte = loss (nats/token) / ln 2 / bytes_per_token
            "bytes_per_token": splits["val"]["bytes"] / splits["val"]["tokens"],
        }
        (tmp / "manifest.json").write_text(json.dumps(m, indent=2))
        seconds = t_done - t_tok
        stats = {"seconds_total": t_done - t0, "seconds_tokenizer": t_tok - t0, "seconds_tokenize_write": seconds,
                 "cpu_seconds_tokenize_write_this_process": cpu_done - cpu_tok,
                 "tokens_per_s": m["tokens"] / seconds, "mb_per_s": m["bytes"] / 1e6 / seconds,
                 "num_proc": cfg.num_proc, "cpus": os.cpu_count()}
        (tmp / "build_stats.json").write_text(json.dumps(stats, indent=2))
        fault_point("data:rename")  # chaos tests: a kill with the data built but not yet in place
        try:
            os.replace(tmp, out)  # atomic on one filesystem; fails if another job got there first
        except OSError:
            if not (out / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("prepared %s: %d documents, %d train / %d val tokens, vocab %d; %.1f MB in %.1f s (%.2f MB/s, %.0f tokens/s)",
             out, m["documents"], splits["train"]["tokens"], splits["val"]["tokens"], vocab, m["bytes"] / 1e6, seconds,
             stats["mb_per_s"], stats["tokens_per_s"])
    return out


def _write_streams(cfg: DataConfig, streams: list, tok_json: str, dtype: str, eos: int, writers: dict) -> dict:
    """Tokenize the streams in parallel and write them in order; stop each at its split's limit.

    Limits are checked before each document, so the document that reaches a limit is kept whole.  For a
    source with its own validation split (c4), validation is limited to val_percent of what was taken.
    Returns tag counts of the documents written (github_code: languages and licenses).
    """
    from tqdm.auto import tqdm

    pool, encode, batch_chars, depth = _executor(cfg.num_proc, tok_json, dtype, eos)
    limit_tokens = {"train": cfg.max_tokens or math.inf}
    limit_docs = {"train": cfg.max_docs or math.inf}
    ratio = cfg.val_percent / (100 - cfg.val_percent)
    langs, lics = Counter(), Counter()
    off = not cfg.progress
    bars = [tqdm(desc=f"read {cfg.source}", unit=" docs", disable=off, dynamic_ncols=True, position=0),
            tqdm(desc="tokenize", unit="tok", unit_scale=True, disable=off, dynamic_ncols=True, position=1,
                 total=int(cfg.max_tokens) if cfg.max_tokens else None),
            tqdm(desc="write", unit="B", unit_scale=True, disable=off, dynamic_ncols=True, position=2)]
    read_bar, tok_bar, write_bar = bars
    itemsize = np.dtype(dtype).itemsize
    try:
        for limiting, stream in streams:
            if limiting == "val":  # validation sized from the training split actually taken
                limit_tokens["val"] = writers["train"].tokens * ratio if cfg.max_tokens else math.inf
                limit_docs["val"] = writers["train"].documents * ratio if cfg.max_docs else math.inf
            lw = writers[limiting]
            full = lambda: lw.tokens >= limit_tokens[limiting] or lw.documents >= limit_docs[limiting]  # noqa: E731
            pending: deque = deque()
            batches = _batches(stream, batch_chars)
            try:
                while True:
                    # a few tasks in flight: bounded read-ahead, busy workers
                    while len(pending) < depth and not full():
                        batch = next(batches, None)
                        if batch is None:
                            break
                        read_bar.update(len(batch))
                        pending.append((batch, pool.submit(encode, [t for _, t, _ in batch])))
                    if not pending or full():
                        break
                    batch, fut = pending.popleft()
                    ids, lens, nbytes = fut.result()
                    # keep the documents before the limiting split reaches its limit (the one reaching it too)
                    lim = np.fromiter((it[0] == limiting for it in batch), dtype=bool, count=len(batch))
                    tok_before = lw.tokens + np.cumsum(np.where(lim, lens, 0)) - np.where(lim, lens, 0)
                    doc_before = lw.documents + np.cumsum(lim) - lim
                    keep = (tok_before < limit_tokens[limiting]) & (doc_before < limit_docs[limiting])
                    k = len(batch) if keep.all() else int(np.argmin(keep))
                    ends = np.concatenate([[0], np.cumsum(lens[:k])])
                    run = 0  # write runs of consecutive documents of one split at once
                    for i in range(1, k + 1):
                        if i == k or batch[i][0] != batch[run][0]:
                            writers[batch[run][0]].add(ids[ends[run]:ends[i]], lens[run:i], nbytes[run:i])
                            run = i
                    for _, _, tag in batch[:k]:
                        if tag:
                            langs[tag[0]] += 1
                            lics[tag[1]] += 1
                    tok_bar.update(int(ends[k]))
                    write_bar.update(int(ends[k]) * itemsize)
            finally:
                for _, fut in pending:
                    fut.cancel()
                if hasattr(stream, "close"):
                    stream.close()  # stops the reader (datasets' streaming iterators clean up here)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for w in writers.values():
            w.close()
        for b in bars:
            b.close()
    return {"languages": dict(sorted(langs.items())), "licenses": dict(sorted(lics.items()))} if langs else {}
