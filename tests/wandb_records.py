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


def run_info(path: Path) -> dict:
    """The run record: wandb id, display name, group, job type, project (as the file holds them)."""
    for r in records(path):
        if r.WhichOneof("record_type") == "run":
            x = r.run
            return {"id": x.run_id, "name": x.display_name, "group": x.run_group, "job_type": x.job_type,
                    "project": x.project}
    raise AssertionError(f"{path} has no run record")


def metric_axes(path: Path) -> dict:
    """{metric name: its step_metric ('' for none)} from the run's define_metric records."""
    return {r.metric.name: r.metric.step_metric for r in records(path) if r.WhichOneof("record_type") == "metric"}


def logged_keys(path: Path) -> tuple[dict, dict]:
    """({history key: kind}, {summary key: kind}) by top-level key; kind is a media value's ``_type``
    (``table-file``, ``image-file``) or ``value``; wandb's own keys (``_step`` ...) are left out."""
    out = ({}, {})
    for r in records(path):
        kind = r.WhichOneof("record_type")
        items = r.history.item if kind == "history" else r.summary.update if kind == "summary" else ()
        keys = out[0] if kind == "history" else out[1]
        for i in items:
            parts = [i.key] if i.key else list(i.nested_key)
            if parts[0].startswith("_"):
                continue
            if len(parts) > 1 and parts[-1] == "_type":
                keys[parts[0]] = json.loads(i.value_json)
            else:
                keys.setdefault(parts[0], "value")
    return out


def table(path: Path, key: str) -> dict:
    """The last wandb.Table logged under ``key`` by this run (its files/ JSON: columns, data)."""
    _, summary, _ = history_and_summary(path)
    return json.loads((Path(path).parent / "files" / summary[f"{key}/path"]).read_text())
