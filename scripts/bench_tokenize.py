"""Tokenization throughput: the data pipeline (``sweep.data.prepare``) against raw ``tokenizers`` encode_batch.

    python scripts/bench_tokenize.py --source c4 --path data_cache/corpora/c4-like \\
        --tokenizer data_cache/c4-like-bpe32k/tokenizer
    python scripts/bench_tokenize.py --source github_code --path data_cache/corpora/github-code-like \\
        --languages Python Go --tokenizer data_cache/ghc-like-pygo-bpe32k/tokenizer

Both sides tokenize exactly the same documents (the pipeline's own selection, read once into memory for the
raw side) with the same tokenizer.json, and count tokens the same way (one EOS per document).  BPE training is
excluded: pass an already trained tokenizer folder (any prepared data dir has one).

* raw:      ``Tokenizer.encode_batch`` over the texts in memory, TOKENIZERS_PARALLELISM=true so that it uses
            every core (chunks of ~16 MB of text, to bound the memory the Encoding objects take).
* pipeline: a full ``prepare()`` into a temporary folder: streaming read through ``datasets``, parallel
            tokenization, in-order writing with sha256.  "stream" counts its read+tokenize+write phase
            (build_stats.json); "end to end" the whole call, fixed costs included.

Runs alternate (raw, pipeline, raw, ...) so that load from other users of a shared machine hits both alike.
Both the medians and the best runs are compared: on a shared machine the best of N is the least disturbed.
Every run is a fresh process, as a user runs ``prepare_data.py``: repeated ``prepare()`` calls in one process
slow down ~3% each (each builds a new ``tokenizers.Tokenizer``, and the library keeps ~12 MB of each one
alive), which measured that artifact rather than the pipeline.
"""
from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "true"  # before tokenizers is imported: the raw side uses every core
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweep.data import SOURCES, DataConfig, prepare, read_manifest


def selected_texts(cfg: DataConfig) -> list[str]:
    """The documents the pipeline would tokenize, in its order (no limits)."""
    texts = []
    for _, stream in SOURCES[cfg.source](cfg).streams:
        texts.extend(text for _, text, _ in stream)
    return texts


def bench_raw(tokenizer_json: Path, texts: list[str], chunk_chars: int = 16 << 20) -> tuple[int, float]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.encode_special_tokens = True  # as the pipeline does
    t0 = time.perf_counter()
    n, i = 0, 0
    while i < len(texts):
        j, size = i, 0
        while j < len(texts) and size < chunk_chars:
            size += len(texts[j])
            j += 1
        n += sum(len(e) for e in tok.encode_batch(texts[i:j], add_special_tokens=False)) + (j - i)  # + EOS per doc
        i = j
    return n, time.perf_counter() - t0


def bench_pipeline(cfg: DataConfig) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory(dir="data_cache") as tmp:
        cfg.out = str(Path(tmp) / "d")
        t0 = time.perf_counter()
        out = prepare(cfg)
        wall = time.perf_counter() - t0
        stats = json.loads((out / "build_stats.json").read_text())
        return read_manifest(out)["tokens"], wall, stats["seconds_tokenize_write"]


def child(a, cfg: DataConfig) -> None:
    """One measured run in this (fresh) process; prints one JSON line."""
    if a.one == "raw":
        n, s = bench_raw(Path(a.tokenizer) / "tokenizer.json", selected_texts(cfg))  # reading is not timed
        print(json.dumps({"tokens": n, "seconds": s}))
    else:
        n, wall, stream = bench_pipeline(DataConfig(**{**cfg.__dict__, "num_proc": int(a.one)}))
        print(json.dumps({"tokens": n, "seconds": stream, "wall": wall}))


def run_child(what) -> dict:
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", str(what)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="c4", choices=sorted(SOURCES))
    ap.add_argument("--path", required=True)
    ap.add_argument("--tokenizer", required=True, help="a trained tokenizer folder (with tokenizer.json)")
    ap.add_argument("--languages", nargs="*", default=[])
    ap.add_argument("--num-proc", type=int, nargs="+", default=[0], help="data.num_proc values to compare")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measured run (raw or a num_proc value)
    a = ap.parse_args()
    Path("data_cache").mkdir(exist_ok=True)

    cfg = DataConfig(source=a.source, path=a.path, tokenizer=a.tokenizer, languages=a.languages, max_tokens=0,
                     progress=False, subset="en" if a.source == "c4" else None)
    if a.one is not None:
        return child(a, cfg)
    texts = selected_texts(cfg)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} documents, {mb:.1f} MB of text; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    raw, pipe, e2e = [], {p: [] for p in a.num_proc}, {p: [] for p in a.num_proc}
    ratios = {p: [] for p in a.num_proc}  # per round: pipeline / the raw run beside it
    for r in range(a.repeats):
        order = ["raw", *a.num_proc] if r % 2 == 0 else [*a.num_proc, "raw"]  # alternate, against drift
        got, toks = {}, {}
        for what in order:
            r1 = run_child(what)  # a fresh process per run
            toks[what] = r1["tokens"]
            if what == "raw":
                n, s = r1["tokens"], r1["seconds"]
                got["raw"] = n / s
                print(f"  raw encode_batch    {n:>12,} tokens {s:7.2f} s {n / s:>10,.0f} tokens/s {mb / s:6.2f} MB/s", flush=True)
            else:
                n2, wall, stream = r1["tokens"], r1["wall"], r1["seconds"]
                got[what] = (n2 / stream, n2 / wall)
                print(f"  pipeline num_proc={what} {n2:>12,} tokens {stream:7.2f} s {n2 / stream:>10,.0f} tokens/s {mb / stream:6.2f} MB/s"
                      f"   (end to end {wall:.1f} s: {n2 / wall:,.0f} tokens/s)", flush=True)
        if len(set(toks.values())) != 1:  # both sides must have tokenized exactly the same documents
            raise SystemExit(f"token counts differ between raw and pipeline: {toks}")
        raw.append(got["raw"])
        for p in a.num_proc:
            pipe[p].append(got[p][0])
            e2e[p].append(got[p][1])
            ratios[p].append(got[p][0] / got["raw"])
    n = n2
    r_med, r_best = statistics.median(raw), max(raw)
    res = {"source": a.source, "path": a.path, "languages": a.languages, "tokenizer": a.tokenizer, "documents": len(texts),
           "mb": mb, "tokens": n, "raw_tokens_per_s": raw, "cpus": os.cpu_count(), "python": platform.python_version(),
           "load_average_end": os.getloadavg()[0], "pipeline": {}}
    print(f"raw encode_batch: median {r_med:,.0f} tokens/s ({mb * r_med / n:.2f} MB/s), best {r_best:,.0f}")
    for p in a.num_proc:
        p_med, e_med, p_best = statistics.median(pipe[p]), statistics.median(e2e[p]), max(pipe[p])
        q = statistics.median(ratios[p])
        res["pipeline"][p] = {"tokens_per_s": pipe[p], "end_to_end_tokens_per_s": e2e[p], "paired_ratios": ratios[p],
                              "ratio_paired_median": q, "ratio_best": p_best / r_best, "ratio_end_to_end_median": e_med / r_med}
        print(f"pipeline num_proc={p}: median {p_med:,.0f} tokens/s ({mb * p_med / n:.2f} MB/s); vs raw: paired median "
              f"{q:.2f}x, best/best {p_best / r_best:.2f}x; end to end (median) {e_med:,.0f} tokens/s = {e_med / r_med:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
