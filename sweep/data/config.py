"""The ``data`` config section, its checks, and where a config's data directory lives (sweep/data/__init__.py)."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

SOURCE_NAMES = ("stdlib_code", "local_text", "c4", "github_code")  # sweep.data.sources.SOURCES opens each


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
    # Only for a dry run before the data is prepared (prepared data replaces both): the training tokens and the
    # vocab size to plan with (vocab 0 = from a bpe:<vocab> tokenizer or a local tokenizer folder); 0 = unknown.
    assumed_train_tokens: float = 0
    assumed_vocab_size: int = 0

    def __post_init__(self):
        validate(self)


# fields that do not change the data; everything else is part of the config hash (and of a sweep's identity).
# The assumed_* sizes only stand in for the data in a dry run before it exists, so they are not what is trained.
NOT_HASHED = ("out", "num_proc", "progress", "assumed_train_tokens", "assumed_vocab_size")


def validate(cfg: DataConfig) -> None:
    """Cheap checks of a config, with one-line errors that name the fix (paths and the hub are checked by prepare)."""
    if cfg.source not in SOURCE_NAMES:
        raise ValueError(f"data.source={cfg.source!r}: use one of {', '.join(sorted(SOURCE_NAMES))}")
    if not 0 < cfg.val_percent < 100:
        raise ValueError(f"data.val_percent must be in (0, 100), got {cfg.val_percent}")
    if cfg.max_tokens < 0 or cfg.max_docs < 0:
        raise ValueError(f"data.max_tokens and data.max_docs must be >= 0 (0 = no limit), got {cfg.max_tokens}, {cfg.max_docs}")
    if cfg.shuffle_buffer is not None and cfg.shuffle_buffer < 0:
        raise ValueError(f"data.shuffle_buffer must be >= 0 (0 = no shuffle) or null, got {cfg.shuffle_buffer}")
    if cfg.assumed_train_tokens < 0 or cfg.assumed_vocab_size < 0:
        raise ValueError("data.assumed_train_tokens and data.assumed_vocab_size must be >= 0 (0 = unknown)")
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
    if not 257 <= vocab < 2**32:
        raise ValueError(f"data.tokenizer={spec!r}: a byte-level BPE needs a vocab in [257, 2^32) "
                         "(256 bytes + EOS, then merges; bpe:257 is plain bytes)")
    return vocab



def config_hash(cfg: DataConfig) -> str:
    d = {k: v for k, v in asdict(cfg).items() if k not in NOT_HASHED}
    d["python"] = sys.version.split()[0] if cfg.source == "stdlib_code" and not cfg.path else None
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def data_dir(cfg: DataConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("data_cache") / f"{cfg.source}-{config_hash(cfg)}"


