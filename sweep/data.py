"""Token shards and the batch stream.

``prepare(cfg)`` turns a document source into a data directory:

    <out>/tokenizer/        a transformers-loadable tokenizer (AutoTokenizer.from_pretrained)
    <out>/train.bin         raw token ids, uint16 when the vocab < 65,536 else uint32, no header
    <out>/val.bin           held-out documents (chosen by a stable hash of the document's name)
    <out>/manifest.json     counts, dtype, tokenizer, sources, sha256 of each shard

Every document is written whole and followed by EOS.  The directory is built in a temporary
sibling and renamed into place, so a killed job never leaves a half-written data set.

Sources are plain generators of ``(name, text)`` registered in ``SOURCES``.  The embedded default,
``stdlib_code``, is the running Python's own standard library: real code that is on every machine,
with no network.  (C4 and GitHub-code loaders plug in here.)

``TokenData`` memmaps a prepared directory (verifying the manifest) and serves batches: the batch
at step k is a pure function of (seed, k), so a resumed run sees exactly the batches it would have.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
MANIFEST_VERSION = 1


@dataclass
class DataConfig:
    """The ``data`` config section."""

    source: str = "stdlib_code"  # one of SOURCES
    path: Optional[str] = None  # where the source lives; None = the source's default (stdlib: this Python's)
    tokenizer: str = "bpe:1024"  # 'bpe:<vocab>' trains a byte-level BPE on the training split; or a local folder / hub id
    val_percent: float = 2.0  # % of documents held out for validation, chosen by a hash of their name
    max_docs: int = 0  # 0 = all documents
    tokenizer_train_bytes: int = 8_000_000  # BPE is trained on (at most) this much training text
    out: Optional[str] = None  # data directory; None = data_cache/<source>-<hash of this config>
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# sources

def stdlib_documents(path: Optional[str]) -> Iterator[tuple[str, str]]:
    """The standard library's ``.py`` files (site-packages excluded), in sorted order."""
    root = Path(path or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"data.path={str(root)!r} is not a directory; point it at a folder of .py files")
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of stdlib test files are deliberately not UTF-8
        if text.strip():
            yield f.relative_to(root).as_posix(), text


SOURCES: dict[str, Callable[[Optional[str]], Iterator[tuple[str, str]]]] = {
    "stdlib_code": stdlib_documents,
}


def is_validation(name: str, val_percent: float) -> bool:
    """Stable split by document name: sha1(name) mod 10,000 < 100 · val_percent."""
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
    return h % 10_000 < round(100 * val_percent)


# ---------------------------------------------------------------------------------------------
# preparation

def config_hash(cfg: DataConfig) -> str:
    d = asdict(cfg)
    d.pop("out")
    d["python"] = sys.version.split()[0] if cfg.source == "stdlib_code" and not cfg.path else None
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def data_dir(cfg: DataConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("data_cache") / f"{cfg.source}-{config_hash(cfg)}"


def prepare(cfg: DataConfig) -> Path:
    """Build (or reuse) the data directory for ``cfg`` and return its path."""
    out = data_dir(cfg)
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m.get("config_hash") == config_hash(cfg):
            return out
        raise ValueError(f"{out} holds data from another config; delete it or set data.out to a new folder")
    if cfg.source not in SOURCES:
        raise ValueError(f"data.source={cfg.source!r}: use one of {', '.join(sorted(SOURCES))}")
    if not 0 < cfg.val_percent < 100:
        raise ValueError(f"data.val_percent must be in (0, 100), got {cfg.val_percent}")

    docs = {"train": [], "val": []}
    for i, (name, text) in enumerate(SOURCES[cfg.source](cfg.path)):
        if cfg.max_docs and i >= cfg.max_docs:
            break
        docs["val" if is_validation(name, cfg.val_percent) else "train"].append(text)
    if not docs["train"] or not docs["val"]:
        raise ValueError(f"data source {cfg.source!r} gave {len(docs['train'])} train and {len(docs['val'])} val documents; "
                         "it needs both: add documents or change data.val_percent")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tok = load_or_train_tokenizer(cfg, docs["train"], tmp / "tokenizer")
        vocab = len(tok)
        dtype = np.uint16 if vocab < 2**16 else np.uint32
        splits = {}
        for split, texts in docs.items():
            n = write_shard(tok, texts, tmp / f"{split}.bin", dtype)
            splits[split] = {"file": f"{split}.bin", "tokens": n, "documents": len(texts),
                             "sha256": sha256_file(tmp / f"{split}.bin")}
        m = {
            "version": MANIFEST_VERSION,
            "config_hash": config_hash(cfg),
            "config": asdict(cfg),
            "source": cfg.source,
            "tokenizer": cfg.tokenizer,
            "vocab_size": vocab,
            "eos_id": tok.eos_token_id,
            "dtype": np.dtype(dtype).name,
            "splits": splits,
        }
        (tmp / "manifest.json").write_text(json.dumps(m, indent=2))
        try:
            os.replace(tmp, out)  # atomic on one filesystem; fails if another job got there first
        except OSError:
            if not (out / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("prepared %s: %d train / %d val tokens, vocab %d", out, splits["train"]["tokens"], splits["val"]["tokens"], vocab)
    return out


def load_or_train_tokenizer(cfg: DataConfig, train_texts: list[str], save_dir: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = cfg.tokenizer
    if spec.startswith("bpe:"):
        from tokenizers import ByteLevelBPETokenizer

        vocab = int(spec.split(":", 1)[1])
        if vocab < 257 + 1:
            raise ValueError(f"data.tokenizer={spec!r}: a byte-level BPE needs a vocab of at least 258")
        sample, size = [], 0
        for t in train_texts:  # the first tokenizer_train_bytes of the training split, in order
            sample.append(t)
            size += len(t)
            if size >= cfg.tokenizer_train_bytes:
                break
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(sample, vocab_size=vocab, min_frequency=2, special_tokens=[EOS], show_progress=False)
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    else:
        tok = AutoTokenizer.from_pretrained(spec)
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer {spec!r} defines no eos_token; choose one that does")
    tok.save_pretrained(save_dir)
    return tok


def write_shard(tok, texts: list[str], path: Path, dtype, batch: int = 256) -> int:
    """Tokenize ``texts`` (each followed by EOS) into a raw token file; returns the token count."""
    eos = tok.eos_token_id
    n = 0
    with open(path, "wb") as f:
        for i in range(0, len(texts), batch):
            ids = tok(texts[i:i + batch], add_special_tokens=False)["input_ids"]
            for doc in ids:
                doc.append(eos)
                np.asarray(doc, dtype=dtype).tofile(f)
                n += len(doc)
    return n


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path) -> dict:
    p = Path(path) / "manifest.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: prepare the data first (the sweep does it) or fix data.out")
    return json.loads(p.read_text())


# ---------------------------------------------------------------------------------------------
# the batch stream

class TokenData:
    """Memmapped train/val shards with deterministic batches."""

    def __init__(self, path: Path, verify: bool = False):
        self.path = Path(path)
        self.manifest = m = read_manifest(self.path)
        self.vocab_size = m["vocab_size"]
        self.eos_id = m["eos_id"]
        self.tokens = {}
        for split, info in m["splits"].items():
            f = self.path / info["file"]
            arr = np.memmap(f, dtype=m["dtype"], mode="r")
            if len(arr) != info["tokens"]:
                raise ValueError(f"{f} has {len(arr)} tokens but the manifest says {info['tokens']}; re-prepare the data")
            if verify and sha256_file(f) != info["sha256"]:
                raise ValueError(f"{f} does not match its sha256 in the manifest; re-prepare the data")
            self.tokens[split] = arr
        self._perm_cache: dict[tuple, np.ndarray] = {}

    @property
    def train_tokens(self) -> int:
        return len(self.tokens["train"])

    def n_windows(self, split: str, seq_len: int) -> int:
        # non-overlapping windows of seq_len inputs; the target of the last input is the next token
        return (len(self.tokens[split]) - 1) // seq_len

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

    def _gather(self, split: str, windows: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        toks = self.tokens[split]
        rows = np.stack([np.asarray(toks[w * seq_len: w * seq_len + seq_len + 1], dtype=np.int64) for w in windows])
        return rows[:, :-1], rows[:, 1:]
