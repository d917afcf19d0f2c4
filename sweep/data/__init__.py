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
from sweep.data.config import NOT_HASHED, DataConfig, bpe_vocab, config_hash, data_dir, validate
from sweep.data.loader import TokenData
from sweep.data.prepare import prepare
from sweep.data.shards import read_manifest, sha256_file
from sweep.data.sources import SOURCES, is_validation, stdlib_documents
from sweep.data.tokenize import EOS, train_bpe

__all__ = ["DataConfig", "EOS", "NOT_HASHED", "SOURCES", "TokenData", "bpe_vocab", "config_hash", "data_dir",
           "is_validation", "prepare", "read_manifest", "sha256_file", "stdlib_documents", "train_bpe", "validate"]
