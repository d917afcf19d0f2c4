"""``TokenData``: the prepared shards, memmapped and verified, and the deterministic batch stream the trainer reads."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from sweep.data.shards import MANIFEST_VERSION, read_manifest, sha256_file

VERIFIED_STAMP = ".verified.json"  # which shards have passed sha256, keyed by (size, mtime, inode)


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
        tok = self.path / m["tokenizer"]  # a folder saved beside the shards, or a hub id
        self.tokenizer_dir: Optional[str] = str(tok.resolve()) if tok.is_dir() else None
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

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int,
                    rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (int64, (B, T)) of optimizer step ``step``: a pure function of (seed, step).

        The training windows are visited in a seeded random order, epoch after epoch; sample j of step k
        is the (k·B + j)-th window of that sequence.  ``rows`` picks samples of the batch (a data-parallel
        rank's share, e.g. ``slice(r * B // W, (r + 1) * B // W)``): only their windows are read.
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
        i = step * batch_size + np.arange(batch_size, dtype=np.int64)[rows]  # positions in the window sequence
        idx = np.empty(len(i), dtype=np.int64)
        for epoch in np.unique(i // n):  # one epoch, or two where the batch crosses an epoch boundary
            here = i // n == epoch
            idx[here] = self._order(seed, int(epoch), n)[i[here] % n]
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
