"""Document sources: stdlib_code, local_text, c4 and github_code (see sweep/data/__init__.py).

A source checks its paths (and the hub) when opened, then streams documents lazily.  A stream is an
iterator of (split, text, tags) in selection order, with the split it is limited by: c4 has one stream
per split; the others one stream whose documents are routed to train/val by a hash of their name.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import os
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from sweep.data.config import SOURCE_NAMES, DataConfig

C4_HUB_ID = "allenai/c4"
GITHUB_CODE_HUB_ID = "codeparrot/github-code-clean"
GITHUB_CODE_COLUMNS = ["code", "repo_name", "path", "language", "license"]


def is_validation(name: str, val_percent: float) -> bool:
    """Stable split by document name: sha1(name) mod 10,000 < 100 · val_percent."""
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
    return h % 10_000 < round(100 * val_percent)


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
assert tuple(SOURCES) == SOURCE_NAMES
