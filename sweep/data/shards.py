"""Token shards on disk: the shard writer, checksums and the manifest (sweep/data/__init__.py has the layout)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

MANIFEST_VERSION = 2


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


def read_manifest(path: Path) -> dict:
    p = Path(path) / "manifest.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: prepare the data first (the sweep does it) or fix data.out")
    return json.loads(p.read_text())
