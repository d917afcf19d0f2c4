"""Token shards and the batch stream.

``prepare(cfg)`` turns a document source into a data directory:

    <out>/tokenizer/            a transformers-loadable tokenizer (AutoTokenizer.from_pretrained) with an eos_token
    <out>/train-00000.bin ...   raw, headerless token ids: uint16 when the vocab < 65,536, else uint32
    <out>/val-00000.bin ...     held-out documents
    <out>/manifest.json         shards (path, split, tokens, sha256), counts, bytes, dtype, tokenizer, source, config
    <out>/build_stats.json      how long the build took (not part of the data; differs between runs)

Every document is written whole and unnormalised, followed by EOS; each shard starts with a document.
A literal "<|endoftext|>" inside a document is tokenized as text, so EOS only ever marks a boundary.
The directory is built in a temporary sibling and renamed into place, so a killed job never leaves a
half-written data set; a bad config fails before any heavy work with a one-line error naming the fix.

Sources (``data.source``; conf/data/<source>.yaml):

    stdlib_code   this Python's own standard library (.py files): real code on every machine, no network
    local_text    a folder (or glob) of UTF-8 text files, one document per file
    c4            allenai/c4 (config ``en``) or a local folder in the hub's layout, through
                  ``datasets.load_dataset(path, "en", split=..., streaming=True)``; its own validation split
    github_code   codeparrot/github-code-clean parquet (``hf://datasets/.../data/train-*.parquet``) or a local
                  folder of the same files, through ``load_dataset("parquet", ...)``; language/license filters;
                  validation held out by a stable hash of (repo_name, path)

Selection is deterministic: a seeded shuffle (``datasets``' shard + buffer shuffle for hub layouts, a seeded
permutation of the file list for folders), then documents are taken in that order until ``max_tokens``
training tokens or ``max_docs`` training documents.  The same config always gives byte-identical shards,
whatever ``num_proc`` is: tokenization runs in parallel on batches, but results are written in order.

``TokenData`` memmaps a prepared directory, verifies it against the manifest (sizes always; sha256 on first
use or on request) and serves batches: the batch at step k is a pure function of (seed, k), so a resumed
run sees exactly the batches it would have.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import sysconfig
import tempfile
import time
import warnings
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import numpy as np

from sweep.store import fault_point

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
MANIFEST_VERSION = 2
C4_HUB_ID = "allenai/c4"
GITHUB_CODE_HUB_ID = "codeparrot/github-code-clean"
GITHUB_CODE_COLUMNS = ["code", "repo_name", "path", "language", "license"]
BATCH_CHARS = 1 << 18  # text per tokenizer task (x4 for the in-process threads): amortises the hand-off, still streams
VERIFIED_STAMP = ".verified.json"  # which shards have passed sha256, keyed by (size, mtime, inode)


@dataclass
class DataConfig:
    """The ``data`` config section (mutable: Hydra overrides it; frozen dataclasses become read-only nodes)."""

    source: str = "stdlib_code"  # stdlib_code | local_text | c4 | github_code
    path: Optional[str] = None  # hub id, hf:// pattern, local folder or glob; None = the source's default
    subset: Optional[str] = None  # the dataset's config name (c4: 'en'); None = the source's default
    tokenizer: str = "bpe:1024"  # 'bpe:<vocab>' (byte-level BPE trained here on the subset), a local folder or a hub id
    max_tokens: float = 0  # stop once the training split has this many tokens (documents stay whole); 0 = no limit
    max_docs: int = 0  # stop once the training split has this many documents; 0 = no limit
    val_percent: float = 2.0  # % of documents held out by a hash of their name (c4: size of its validation subset)
    languages: List[str] = field(default_factory=list)  # github_code: keep only these languages (case-insensitive); [] = all
    licenses: List[str] = field(default_factory=list)  # github_code: keep only these licenses (case-insensitive); [] = all
    shuffle_buffer: Optional[int] = None  # seeded shuffle; 0 = the source's own order; None = source default (stdlib: 0, else 10,000)
    tokenizer_train_bytes: int = 8_000_000  # 'bpe:' trains on the first this many characters of the selected training docs
    max_shard_tokens: int = 1 << 28  # start a new shard (at a document boundary) past this many tokens
    num_proc: int = 0  # tokenizer worker processes; 0 = none: one thread per core in this process (best on few cores)
    progress: bool = True  # tqdm bars for reading, tokenizing and writing
    out: Optional[str] = None  # data directory; None = data_cache/<source>-<hash of this config>
    seed: int = 0  # the selection shuffle's seed

    def __post_init__(self):
        validate(self)


# fields that do not change the data; everything else is part of the config hash (and of a sweep's identity)
NOT_HASHED = ("out", "num_proc", "progress")


def validate(cfg: DataConfig) -> None:
    """Cheap checks of a config, with one-line errors that name the fix (paths and the hub are checked by prepare)."""
    if cfg.source not in SOURCES:
        raise ValueError(f"data.source={cfg.source!r}: use one of {', '.join(sorted(SOURCES))}")
    if not 0 < cfg.val_percent < 100:
        raise ValueError(f"data.val_percent must be in (0, 100), got {cfg.val_percent}")
    if cfg.max_tokens < 0 or cfg.max_docs < 0:
        raise ValueError(f"data.max_tokens and data.max_docs must be >= 0 (0 = no limit), got {cfg.max_tokens}, {cfg.max_docs}")
    if cfg.shuffle_buffer is not None and cfg.shuffle_buffer < 0:
        raise ValueError(f"data.shuffle_buffer must be >= 0 (0 = no shuffle) or null, got {cfg.shuffle_buffer}")
    if cfg.max_shard_tokens < 1 or cfg.tokenizer_train_bytes < 1 or cfg.num_proc < 0:
        raise ValueError("data.max_shard_tokens and data.tokenizer_train_bytes must be >= 1 and data.num_proc >= 0")
    if (cfg.languages or cfg.licenses) and cfg.source != "github_code":
        raise ValueError(f"data.languages / data.licenses filter github_code only; remove them for data.source={cfg.source}")
    if cfg.subset is not None and cfg.source != "c4":
        raise ValueError(f"data.subset selects a config of c4 only; remove it for data.source={cfg.source}")
    bpe_vocab(cfg.tokenizer)  # raises on a malformed 'bpe:' spec


def bpe_vocab(spec: str) -> Optional[int]:
    """The vocab size of a 'bpe:<vocab>' tokenizer spec, or None for a folder / hub id."""
    if not spec.startswith("bpe:"):
        return None
    try:
        vocab = int(spec.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"data.tokenizer={spec!r}: write bpe:<vocab size>, e.g. bpe:32768") from None
    if not 258 <= vocab < 2**32:
        raise ValueError(f"data.tokenizer={spec!r}: a byte-level BPE needs a vocab in [258, 2^32) (256 bytes + EOS + merges)")
    return vocab


def is_validation(name: str, val_percent: float) -> bool:
    """Stable split by document name: sha1(name) mod 10,000 < 100 · val_percent."""
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
    return h % 10_000 < round(100 * val_percent)


# ---------------------------------------------------------------------------------------------
# sources
#
# A source checks its paths (and the hub) when opened, then streams documents lazily.  A stream is an
# iterator of (split, text, tags) in selection order, with the split it is limited by: c4 has one stream
# per split; the others one stream whose documents are routed to train/val by a hash of their name.

@dataclass
class Source:
    streams: list  # [(limiting split, Iterator[(split, text, tags)])], consumed in order
    info: dict  # provenance for the manifest: name, hub id or folder, subset, filters, split rule, selection
    files: dict  # split (or "all") -> files read, relative to the folder or as hub URLs
    skipped: Counter = field(default_factory=Counter)  # documents not taken and why (counted as they are read)


def _shuffle_buffer(cfg: DataConfig, default: int) -> int:
    return default if cfg.shuffle_buffer is None else cfg.shuffle_buffer


def stdlib_documents(path: Optional[str]) -> Iterator[tuple[str, str]]:
    """The standard library's ``.py`` files (site-packages excluded) as (relative name, text), in sorted order."""
    root = Path(path or sysconfig.get_paths()["stdlib"])
    for name, f in _stdlib_files(root):
        text = _read_text(f)
        if text is not None and text.strip():
            yield name, text


def _stdlib_files(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise FileNotFoundError(f"data.path={str(root)!r} is not a directory; point it at a folder of .py files")
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    return [(f.relative_to(root).as_posix(), f) for f in files]


def _read_text(f: Path) -> Optional[str]:
    try:
        return f.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # e.g. a handful of stdlib test files are deliberately not UTF-8


def _file_source(cfg: DataConfig, root: Path, files: list[tuple[str, Path]], shuffle_default: int) -> Source:
    """Documents = whole files, named by their path relative to ``root``; validation by a hash of the name."""
    order = list(range(len(files)))
    if _shuffle_buffer(cfg, shuffle_default) > 0:  # the file list is known: shuffle it all, no buffer needed
        order = np.random.default_rng(cfg.seed).permutation(len(files)).tolist()
    skipped: Counter = Counter()

    def stream():
        for i in order:
            name, f = files[i]
            text = _read_text(f)
            if text is None:
                skipped["not utf-8"] += 1
            elif not text.strip():
                skipped["empty"] += 1
            else:
                yield ("val" if is_validation(name, cfg.val_percent) else "train"), text, ()

    info = {"name": cfg.source, "folder": str(root), "split": f"sha1(relative path) mod 10000 < {round(100 * cfg.val_percent)}",
            "selection": _selection(cfg, shuffle_default, "seeded permutation of the sorted file list")}
    return Source([("train", stream())], info, {"all": [n for n, _ in files]}, skipped)


def _selection(cfg: DataConfig, shuffle_default: int, how: str) -> dict:
    buf = _shuffle_buffer(cfg, shuffle_default)
    return {"shuffle": how if buf > 0 else "none (source order)", "seed": cfg.seed, "buffer": buf,
            "max_tokens": cfg.max_tokens, "max_docs": cfg.max_docs}


def open_stdlib_code(cfg: DataConfig) -> Source:
    # sorted and unshuffled by default, so the embedded corpus (and `make smoke`) stays what it always was
    root = Path(cfg.path or sysconfig.get_paths()["stdlib"])
    src = _file_source(cfg, root, _stdlib_files(root), shuffle_default=0)
    src.info["python"] = sys.version.split()[0]
    return src


def open_local_text(cfg: DataConfig) -> Source:
    """``data.path``: a folder (every ``*.txt`` below it) or a glob such as ``/corpus/**/*.md``."""
    if not cfg.path:
        raise ValueError("data.path is required for local_text: a folder of .txt files or a glob like /corpus/**/*.md")
    if globlib.has_magic(cfg.path):
        root = _glob_root(cfg.path)
        found = [Path(p) for p in globlib.glob(cfg.path, recursive=True)]
    else:
        root = Path(cfg.path)
        if not root.is_dir():
            raise FileNotFoundError(f"data.path={cfg.path!r} is not a directory; point it at a folder of .txt files or a glob")
        found = list(root.rglob("*.txt"))
    files = sorted((p.relative_to(root).as_posix(), p) for p in found if p.is_file())
    if not files:
        raise FileNotFoundError(f"data.path={cfg.path!r} matches no files; point it at a folder of .txt files or a glob")
    return _file_source(cfg, root, files, shuffle_default=10_000)


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob, before its first wildcard: documents are named relative to it."""
    parts = []
    for part in Path(pattern).parts:
        if globlib.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _require_hub(what: str) -> None:
    if _hub_offline():
        raise ValueError(f"data.path={what!r} is on the Hugging Face hub but HF_HUB_OFFLINE is set; "
                         "point data.path at a local mirror in the hub's layout")


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _relative_files(files, root: Optional[Path]) -> list[str]:
    out = []
    for f in files:
        f = str(f)
        if root is not None and f.startswith(str(root.resolve()) + os.sep):
            f = f[len(str(root.resolve())) + 1:]
        out.append(f)
    return out


def open_c4(cfg: DataConfig) -> Source:
    """allenai/c4 or a local folder in its hub layout (README ``configs:``, en/c4-{train,validation}.*.json.gz).

    Both go through the same call, ``load_dataset(path, "en", split=..., streaming=True)``.
    """
    path, subset = cfg.path or C4_HUB_ID, cfg.subset or "en"
    local = Path(path).is_dir()
    if not local:
        if Path(path).is_absolute() or path.startswith(".") or path.count("/") != 1:
            raise FileNotFoundError(f"data.path={path!r} is neither a folder nor a hub id; point it at a C4 mirror "
                                    "(README.md with configs:, en/c4-train.*.json.gz) or use allenai/c4")
        _require_hub(path)
    import datasets

    try:
        builder = datasets.load_dataset_builder(path, subset)
        files = {k: list(v) for k, v in (builder.config.data_files or {}).items()}
    except (ConnectionError, OSError, ValueError) as e:
        raise ValueError(f"data.path={path!r} (config {subset!r}) could not be opened: {_one_line(e)}; a local C4 mirror "
                         "needs the hub layout: README.md with configs:, en/c4-train.*.json.gz, en/c4-validation.*.json.gz") from None
    if not files.get("train") or not files.get("validation"):
        raise ValueError(f"data.path={path!r} (config {subset!r}) has splits {sorted(files)}; C4 needs train and validation")
    features = builder.info.features
    if features is not None and "text" not in features:
        raise ValueError(f"data.path={path!r} has columns {sorted(features)}, not 'text'; is it really C4?")
    buf = _shuffle_buffer(cfg, 10_000)

    def stream(split: str, as_split: str):
        ds = datasets.load_dataset(path, subset, split=split, streaming=True).select_columns(["text"])
        if buf > 0:  # shuffles the order of the files, then a buffer of documents, both seeded
            ds = ds.shuffle(seed=cfg.seed, buffer_size=buf)
        for batch in ds.iter(batch_size=1000):
            for text in batch["text"]:
                if text and text.strip():
                    yield as_split, text, ()
                else:
                    src.skipped["empty"] += 1

    root = Path(path) if local else None
    info = {"name": "c4", ("folder" if local else "hub_id"): str(Path(path).resolve()) if local else path, "subset": subset,
            "split": "the dataset's own validation split",
            "selection": _selection(cfg, 10_000, "datasets IterableDataset.shuffle (files, then a buffer)")}
    src = Source([("train", stream("train", "train")), ("val", stream("validation", "val"))], info,
                 {"train": _relative_files(files["train"], root), "val": _relative_files(files["validation"], root)})
    return src


def _github_pattern(spec: str) -> tuple[str, Optional[Path]]:
    """The parquet data_files pattern for data.path and the local folder it lives in (None on the hub)."""
    if spec.startswith("hf://"):
        return spec, None
    p = Path(spec)
    if p.is_dir():
        for pattern in ("data/train-*.parquet", "train-*.parquet", "**/*.parquet"):
            if globlib.glob(str(p / pattern), recursive=True):
                return str(p / pattern), p
        raise FileNotFoundError(f"data.path={spec!r} holds no .parquet files; point it at a github-code mirror (data/train-*.parquet)")
    if globlib.has_magic(spec):
        if not globlib.glob(spec, recursive=True):
            raise FileNotFoundError(f"data.path={spec!r} matches no files; point it at a github-code mirror (data/train-*.parquet)")
        return spec, _glob_root(spec)
    if p.is_absolute() or spec.startswith(".") or spec.count("/") != 1:
        raise FileNotFoundError(f"data.path={spec!r} is neither a folder, a glob nor a hub id; point it at a github-code mirror")
    return f"hf://datasets/{spec}/data/train-*.parquet", None


def open_github_code(cfg: DataConfig) -> Source:
    """github-code parquet (code, repo_name, path, language, license, size) from the hub or a local folder.

    Both go through ``load_dataset("parquet", data_files={"train": pattern}, split="train", streaming=True)``:
    dataset scripts no longer load in datasets >= 4, so the repo's loading script is not used.
    """
    pattern, root = _github_pattern(cfg.path or GITHUB_CODE_HUB_ID)
    if root is None:
        _require_hub(pattern)
    import datasets

    try:
        builder = datasets.load_dataset_builder("parquet", data_files={"train": pattern})
        files = list(builder.config.data_files["train"])
    except (ConnectionError, OSError, ValueError) as e:
        raise ValueError(f"data.path={pattern!r} could not be opened: {_one_line(e)}; point it at a github-code mirror") from None
    if root is not None:
        import pyarrow.parquet as pq

        missing = [c for c in GITHUB_CODE_COLUMNS if c not in pq.read_schema(files[0]).names]
        if missing:
            raise ValueError(f"{files[0]} lacks columns {missing}; github-code parquet has {', '.join(GITHUB_CODE_COLUMNS)}")
    langs = {s.casefold() for s in cfg.languages}
    lics = {s.casefold() for s in cfg.licenses}
    buf = _shuffle_buffer(cfg, 10_000)

    def stream():
        ds = datasets.load_dataset("parquet", data_files={"train": pattern}, split="train", streaming=True,
                                   columns=GITHUB_CODE_COLUMNS)
        if buf > 0:
            ds = ds.shuffle(seed=cfg.seed, buffer_size=buf)
        for b in ds.iter(batch_size=1000):
            for code, repo, path, lang, lic in zip(b["code"], b["repo_name"], b["path"], b["language"], b["license"]):
                if langs and (lang or "").casefold() not in langs:
                    src.skipped["language"] += 1
                elif lics and (lic or "").casefold() not in lics:
                    src.skipped["license"] += 1
                elif not code or not code.strip():
                    src.skipped["empty"] += 1
                else:
                    split = "val" if is_validation(f"{repo}/{path}", cfg.val_percent) else "train"
                    yield split, code, (lang, lic)

    info = {"name": "github_code", ("folder" if root is not None else "hub_id"): str(root.resolve()) if root else pattern,
            "pattern": pattern, "filters": {"languages": list(cfg.languages), "licenses": list(cfg.licenses)},
            "split": f"sha1(repo_name + '/' + path) mod 10000 < {round(100 * cfg.val_percent)}",
            "selection": _selection(cfg, 10_000, "datasets IterableDataset.shuffle (files, then a buffer)")}
    src = Source([("train", stream())], info, {"all": _relative_files(files, root)})
    return src


SOURCES: dict[str, Callable[[DataConfig], Source]] = {
    "stdlib_code": open_stdlib_code,
    "local_text": open_local_text,
    "c4": open_c4,
    "github_code": open_github_code,
}


# ---------------------------------------------------------------------------------------------
# tokenizer

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


# ---------------------------------------------------------------------------------------------
# tokenization: batches of documents -> (ids with EOS after each document, tokens per doc, UTF-8 bytes per doc)

_WORKER: Optional["_Encode"] = None


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


# ---------------------------------------------------------------------------------------------
# shards

class ShardWriter:
    """Appends whole documents to ``<split>-NNNNN.bin`` files, hashing as it writes; a new shard starts at a
    document boundary once the current one holds ``max_tokens``."""

    def __init__(self, folder: Path, split: str, dtype, max_tokens: int):
        self.folder, self.split, self.dtype, self.max_tokens = folder, split, np.dtype(dtype), max_tokens
        self.shards: list[dict] = []
        self._f = None
        self.counts = {"tokens": 0, "documents": 0, "bytes": 0}

    def add(self, ids: np.ndarray, lens: np.ndarray, nbytes: np.ndarray) -> None:
        """Append consecutive whole documents: ``ids`` is their tokens (EOS included), ``lens`` their lengths."""
        ends = np.cumsum(lens)
        i = 0
        while i < len(lens):
            cur = self.shards[-1] if self._f is not None else None
            if cur is None or (cur["tokens"] and cur["tokens"] + lens[i] > self.max_tokens):
                self._roll()
                cur = self.shards[-1]
            start = int(ends[i - 1]) if i else 0
            # as many documents as fit in this shard, at least one
            j = max(i + 1, int(np.searchsorted(ends, start + self.max_tokens - cur["tokens"], side="right")))
            chunk = ids[start:int(ends[j - 1])]
            self._f.write(chunk)
            self._sha.update(chunk)
            nb = int(nbytes[i:j].sum())
            for c in (cur, self.counts):
                c["tokens"] += len(chunk)
                c["documents"] += j - i
                c["bytes"] += nb
            i = j

    @property
    def tokens(self) -> int:
        return self.counts["tokens"]

    @property
    def documents(self) -> int:
        return self.counts["documents"]

    @property
    def bytes(self) -> int:
        return self.counts["bytes"]

    def _roll(self) -> None:
        self.close()
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._f = open(self.folder / name, "wb", buffering=1 << 20)
        self._sha = hashlib.sha256()
        self.shards.append({"path": name, "split": self.split, "tokens": 0, "documents": 0, "bytes": 0, "sha256": None})

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self.shards[-1]["sha256"] = self._sha.hexdigest()
            self._f = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# preparation

def config_hash(cfg: DataConfig) -> str:
    d = {k: v for k, v in asdict(cfg).items() if k not in NOT_HASHED}
    d["python"] = sys.version.split()[0] if cfg.source == "stdlib_code" and not cfg.path else None
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def data_dir(cfg: DataConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("data_cache") / f"{cfg.source}-{config_hash(cfg)}"


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


def read_manifest(path: Path) -> dict:
    p = Path(path) / "manifest.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: prepare the data first (the sweep does it) or fix data.out")
    return json.loads(p.read_text())


# ---------------------------------------------------------------------------------------------
# the batch stream

class TokenData:
    """Memmapped train/val shards, verified against the manifest, with deterministic batches.

    Shard sizes and the tokenizer's checksum are checked every time; shard sha256 on first use (remembered in
    ``.verified.json`` by size, mtime and inode, so a copied or rewritten shard is checked again) or always
    with ``verify=True``.  ``model_vocab_size`` rejects data whose token ids a model could not embed.
    ``max_epochs``: warn when a batch reads past this many epochs of the training split (Muennighoff et al. 2023:
    repeated tokens lose value quickly beyond ~4 epochs).
    """

    def __init__(self, path: Path, verify: bool = False, model_vocab_size: Optional[int] = None, max_epochs: float = 4.0):
        self.path = Path(path)
        self.manifest = m = read_manifest(self.path)
        fix = f"re-prepare the data (delete {self.path} and rerun the sweep or scripts/prepare_data.py)"
        if m.get("version") != MANIFEST_VERSION:
            raise ValueError(f"{self.path} has manifest version {m.get('version')}, this code reads {MANIFEST_VERSION}; {fix}")
        self.vocab_size = m["vocab_size"]
        self.eos_id = m["eos_id"]
        self.max_epochs = max_epochs
        self._warned = False
        self._check_tokenizer(fix)
        if model_vocab_size is not None:
            self.check_model_vocab(model_vocab_size)
        dtype = np.dtype(m["dtype"])
        stamp_path = self.path / VERIFIED_STAMP
        try:
            stamps = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            stamps = {}
        changed = False
        self.shards: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        for info in m["shards"]:
            f = self.path / info["path"]
            if not f.exists():
                raise FileNotFoundError(f"{f} is missing; {fix}")
            st = f.stat()
            if st.st_size != info["tokens"] * dtype.itemsize:
                what = "truncated" if st.st_size < info["tokens"] * dtype.itemsize else "too long"
                raise ValueError(f"{f} is {what}: {st.st_size} bytes, the manifest says {info['tokens']} {dtype.name} tokens; {fix}")
            key = [st.st_size, st.st_mtime_ns, st.st_ino, info["sha256"]]
            if verify or stamps.get(info["path"]) != key:
                if sha256_file(f) != info["sha256"]:
                    raise ValueError(f"{f} does not match its sha256 in the manifest (corrupted); {fix}")
                stamps[info["path"]] = key
                changed = True
            self.shards[info["split"]].append(np.memmap(f, dtype=dtype, mode="r"))
        if changed:
            try:  # best effort: a read-only data dir is simply verified again next time
                tmp = stamp_path.with_name(f"{VERIFIED_STAMP}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(stamps))
                os.replace(tmp, stamp_path)
            except OSError:
                pass
        for split in ("train", "val"):
            if not self.shards[split]:
                raise ValueError(f"{self.path} has no {split} shard; {fix}")
        self._offsets: dict[tuple, np.ndarray] = {}
        self._perm_cache: dict[tuple, np.ndarray] = {}

    def _check_tokenizer(self, fix: str) -> None:
        m = self.manifest
        if not (self.path / m["tokenizer"]).is_dir():
            return  # a hub id: nothing saved here to compare
        tj = self.path / m["tokenizer"] / "tokenizer.json"
        if not tj.exists() or sha256_file(tj) != m["tokenizer_sha256"]:
            raise ValueError(f"{tj.parent} is not the tokenizer these shards were made with (sha256 differs); {fix}")

    def check_model_vocab(self, model_vocab_size: int) -> None:
        if model_vocab_size < self.vocab_size:
            raise ValueError(f"the data's vocab is {self.vocab_size} but the model embeds {model_vocab_size} tokens; "
                             "plan the sweep against this data dir (the planner pads its vocab to a multiple of 64)")

    @property
    def train_tokens(self) -> int:
        return sum(len(a) for a in self.shards["train"])

    def _window_offsets(self, split: str, seq_len: int) -> np.ndarray:
        # windows never cross a shard: shard i holds (len_i - 1) // seq_len of them (one shard: as before)
        key = (split, seq_len)
        if key not in self._offsets:
            counts = [max(0, (len(a) - 1) // seq_len) for a in self.shards[split]]
            self._offsets[key] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return self._offsets[key]

    def n_windows(self, split: str, seq_len: int) -> int:
        # non-overlapping windows of seq_len inputs; the target of the last input is the next token
        return int(self._window_offsets(split, seq_len)[-1])

    def _order(self, seed: int, epoch: int, n: int) -> np.ndarray:
        key = (seed, epoch, n)
        if key not in self._perm_cache:
            self._perm_cache.clear()  # one epoch at a time is all a run needs
            self._perm_cache[key] = np.random.default_rng([seed, epoch]).permutation(n)
        return self._perm_cache[key]

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (int64, (B, T)) of optimizer step ``step``: a pure function of (seed, step).

        The training windows are visited in a seeded random order, epoch after epoch; sample j of step k
        is the (k·B + j)-th window of that sequence.
        """
        n = self.n_windows("train", seq_len)
        if n < 1:
            raise ValueError(f"the training split has fewer than seq_len+1={seq_len + 1} tokens")
        last = (step + 1) * batch_size
        if last > self.max_epochs * n and not self._warned:
            self._warned = True
            warnings.warn(f"step {step} reads epoch {last / n:.2f} of the training data (> {self.max_epochs} epochs: "
                          "repeated tokens lose value, Muennighoff et al. 2023); prepare more data or lower the budget",
                          RuntimeWarning, stacklevel=2)
        idx = np.empty(batch_size, dtype=np.int64)
        for j in range(batch_size):
            i = step * batch_size + j
            idx[j] = self._order(seed, i // n, n)[i % n]
        return self._gather("train", idx, seq_len)

    def val_batches(self, seq_len: int, batch_size: int, max_tokens: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Fixed validation windows, evenly spaced over the val split, about ``max_tokens`` in all."""
        n = self.n_windows("val", seq_len)
        if n < 1:
            raise ValueError(f"the validation split has fewer than seq_len+1={seq_len + 1} tokens")
        k = max(1, min(n, max_tokens // seq_len))
        idx = np.linspace(0, n - 1, k).round().astype(np.int64)
        for i in range(0, k, batch_size):
            yield self._gather("val", idx[i:i + batch_size], seq_len)

    def window(self, split: str, w: int, seq_len: int) -> np.ndarray:
        """Tokens of window ``w`` (seq_len + 1 of them: inputs and the last target)."""
        offs = self._window_offsets(split, seq_len)
        s = int(np.searchsorted(offs, w, side="right")) - 1
        start = (w - int(offs[s])) * seq_len
        return np.asarray(self.shards[split][s][start:start + seq_len + 1], dtype=np.int64)

    def _gather(self, split: str, windows: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.stack([self.window(split, int(w), seq_len) for w in windows])
        return rows[:, :-1], rows[:, 1:]
