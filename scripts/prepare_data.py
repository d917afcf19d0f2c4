"""Prepare token shards: a source through ``datasets`` -> tokenizer -> raw shards + manifest.json.

    python scripts/prepare_data.py                                   # the embedded stdlib corpus (offline)
    python scripts/prepare_data.py data=c4 data.max_tokens=1e9       # allenai/c4 en from the hub, GPT-2 tokenizer
    python scripts/prepare_data.py data=c4 data.path=/mirror/c4 data.tokenizer=bpe:32768 data.out=data_cache/c4-32k
    python scripts/prepare_data.py data=github_code data.languages=[Python,Go] data.licenses=[mit,apache-2.0]
    python scripts/prepare_data.py data=local_text data.path=/corpus data.tokenizer=/models/gpt2

The config group is conf/data/ (c4, github_code, stdlib_code, local_text); every key is a field of
sweep.data.DataConfig (unknown keys are errors).  The sweep (`python -m sweep data=c4 ...`) prepares the
same directory on first use, so running this first is optional: it is the way to prepare on a CPU node
before a GPU sweep, to watch progress, or to check a mirror.  A finished directory is reused.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from sweep.data import DataConfig, data_dir, prepare, read_manifest

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("prepare_data")


@dataclass
class PrepareConfig:
    # _self_ first: the data group's file overrides the schema's defaults; logs go to stdout only
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"data": "stdlib_code"},
                                                         {"override hydra/job_logging": "stdout"}])
    data: DataConfig = field(default_factory=DataConfig)
    # no run directory or .hydra/ output: the data directory (data.out) is this script's only output
    hydra: Any = field(default_factory=lambda: {"run": {"dir": "."}, "output_subdir": None,
                                                 "job": {"chdir": False}})


ConfigStore.instance().store(name="prepare_data", node=PrepareConfig)


@hydra.main(config_path=CONF_DIR, config_name="prepare_data", version_base="1.3")
def main(cfg) -> None:
    data: DataConfig = OmegaConf.to_object(cfg.data)
    reused = (data_dir(data) / "manifest.json").exists()
    out = prepare(data)
    m = read_manifest(out)
    stats_file = out / "build_stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    print(f"{out}")
    print(f"  source     {data.source}  {m['source'].get('hub_id') or m['source'].get('folder')}")
    print(f"  tokenizer  {m['tokenizer_spec']}  vocab {m['vocab_size']}  dtype {m['dtype']}  eos {m['eos_id']}")
    for split, s in m["splits"].items():
        print(f"  {split:<6} {s['documents']:>10,} docs {s['tokens']:>14,} tokens {s['bytes'] / 1e6:>10.1f} MB  {s['shards']} shard(s)")
    print(f"  bytes/token (val) {m['bytes_per_token']:.3f}")
    if m.get("languages"):
        print(f"  languages  {m['languages']}")
    if stats and not reused:
        workers = f"{stats['num_proc']} worker processes" if stats["num_proc"] else "in-process threads"
        print(f"  built in {stats['seconds_total']:.1f} s: tokenizer {stats['seconds_tokenizer']:.1f} s, "
              f"tokenize+write {stats['seconds_tokenize_write']:.1f} s = {stats['mb_per_s']:.2f} MB/s, "
              f"{stats['tokens_per_s']:,.0f} tokens/s ({workers})")
    else:
        print("  (reused: already prepared; delete the folder to rebuild)")


if __name__ == "__main__":
    main()
