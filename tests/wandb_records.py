"""Read the records of an offline wandb run file (``run-<id>.wandb``) without the network.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB blocks of
records, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) around a
serialised ``wandb_internal_pb2.Record``.
"""
import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a wandb run file"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer too small for a header: skip to the next block
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7: pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(buf)
            yield r
            buf = b""


def job_type(path: Path) -> str:
    for r in records(path):
        if r.WhichOneof("record_type") == "run":
            return r.run.job_type
    return ""


def history_and_summary(path: Path):
    history, summary, config = [], {}, {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            summary.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.summary.update})
        elif kind in ("config", "run"):  # the run record carries the initial config
            updates = r.config.update if kind == "config" else r.run.config.update
            config.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in updates})
    return history, summary, config
