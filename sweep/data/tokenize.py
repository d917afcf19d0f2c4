"""Tokenizers and encoding: a hub/local tokenizer or a byte-level BPE trained here, and the parallel encoder.

Encoding turns batches of documents into (ids with EOS after each document, tokens per doc, UTF-8 bytes per doc).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np

from sweep.data.sources import _hub_offline, _one_line

EOS = "<|endoftext|>"
BATCH_CHARS = 1 << 18  # text per tokenizer task (x4 for the in-process threads): amortises the hand-off, still streams


def load_pretrained_tokenizer(spec: str):
    """A local folder or hub id through AutoTokenizer; it must be a fast tokenizer with an eos_token."""
    from transformers import AutoTokenizer

    if not Path(spec).is_dir() and _hub_offline():
        raise ValueError(f"data.tokenizer={spec!r} is not a local folder and HF_HUB_OFFLINE is set; "
                         "use bpe:<vocab> or a local tokenizer folder")
    try:
        tok = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as e:
        raise ValueError(f"data.tokenizer={spec!r} could not be loaded ({_one_line(e)}); use bpe:<vocab> or a local tokenizer folder") from None
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise ValueError(f"data.tokenizer={spec!r} has no fast (tokenizers) version; choose one with a tokenizer.json")
    if tok.eos_token_id is None:
        raise ValueError(f"data.tokenizer={spec!r} defines no eos_token; choose one that does")
    return tok


def train_bpe(sample: list[str], vocab: int, progress: bool = False):
    """A byte-level BPE with EOS as its first (special) token, wrapped so that AutoTokenizer can reload it."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sample, vocab_size=vocab, min_frequency=2, special_tokens=[EOS], show_progress=progress)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS,
                                   clean_up_tokenization_spaces=False)


def _take_sample(stream, max_chars: int) -> tuple[list[str], list]:
    """The first training documents of ``stream`` up to ``max_chars`` characters, and everything read so far
    (to replay it).  Characters, not bytes, as the skeleton counted them, so the embedded corpus is unchanged."""
    sample, read, size = [], [], 0
    for item in stream:
        read.append(item)
        if item[0] == "train":
            sample.append(item[1])
            size += len(item[1])
            if size >= max_chars:
                break
    return sample, read


def _replay(read: list, rest):
    yield from read  # a generator (not itertools.chain), so that closing it closes the source too
    yield from rest




_WORKER: Optional["_Encode"] = None  # the encoder of a worker process (num_proc > 0)


class _Encode:
    def __init__(self, tokenizer_json: str, dtype: str, eos: int):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tokenizer_json)
        self.tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a document is text, not a boundary
        self.dtype, self.eos = np.dtype(dtype), eos
        # encode_batch_fast (tokenizers >= 0.20) gives the same ids without tracking character offsets,
        # which we never use: ~10-15% less CPU per token (benchmarks/tokenize.md)
        self.encode_batch = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encs = self.encode_batch(texts, add_special_tokens=False)
        lens = np.fromiter((len(e) + 1 for e in encs), dtype=np.int64, count=len(encs))
        ends = np.cumsum(lens)
        ids = np.empty(int(ends[-1]) if len(ends) else 0, dtype=self.dtype)
        for e, end, n in zip(encs, ends, lens):
            ids[end - n:end - 1] = e.ids
        ids[ends - 1] = self.eos
        nbytes = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts))
        return ids, lens, nbytes


def _init_worker(tokenizer_json: str, dtype: str, eos: int) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _WORKER = _Encode(tokenizer_json, dtype, eos)


def _encode_in_worker(texts: list[str]):
    return _WORKER(texts)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (a SLURM job's share, not the node's)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextmanager
def _serial_tokenizers():
    """TOKENIZERS_PARALLELISM=false while the block runs (tokenizers reads it on every call), restored after."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _executor(num_proc: int, tokenizer_json: str, dtype: str, eos: int):
    """(executor, encode function, text per task, tasks in flight).

    Every task encodes its batch single-threaded and turns it into arrays in the same thread, so that each
    thread frees only memory it allocated itself.

    num_proc=0 (the default): one thread per usable core in this process.  encode_batch releases the GIL, so the
    threads encode in parallel; only the conversion to arrays (~5% of the CPU) and the reading are serial.
    Letting encode_batch parallelise instead (its Rust thread pool, two batches in flight) was as fast when it
    was fast, but about one run in five on 2 cores took 3x as long with the same output: the pool's threads and
    the converting thread fought over glibc's malloc arena locks (perf: futex waits in __lll_lock_wait_private;
    benchmarks/tokenize.md).
    num_proc=N: N single-threaded worker processes; the conversion is parallel too, at the cost of pickling the
    text and the ids, which pays off on many cores (forkserver: no fork of this possibly threaded process).
    Results always come back in submission order, so the output does not depend on num_proc.
    """
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    import multiprocessing as mp

    if num_proc == 0:
        n = _cores()
        return ThreadPoolExecutor(max_workers=n), _Encode(tokenizer_json, dtype, eos), 4 * BATCH_CHARS, 2 * n
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=num_proc, mp_context=mp.get_context(method),
                               initializer=_init_worker, initargs=(tokenizer_json, dtype, eos))
    return pool, _encode_in_worker, BATCH_CHARS, 4 * num_proc


def _batches(stream, max_chars: int, max_docs: int = 16384):
    """Lists of documents of about ``max_chars`` characters; the first ones smaller (256 kB, doubling), so that
    the tokenizer starts early."""
    batch, size, limit = [], 0, min(BATCH_CHARS, max_chars)
    for item in stream:
        batch.append(item)
        size += len(item[1])
        if size >= limit or len(batch) >= max_docs:
            yield batch
            batch, size, limit = [], 0, min(2 * limit, max_chars)
    if batch:
        yield batch
