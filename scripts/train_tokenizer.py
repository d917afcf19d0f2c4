"""Train one byte-level BPE on a mix of datasets, so that several sweeps share a tokenizer.

    python scripts/train_tokenizer.py --vocab 2048 --out data_cache/bpe2k-mix \\
        c4=data_cache/corpora/c4-like github_code=data_cache/corpora/github-code-like

Each ``source=path`` contributes the first ``--chars`` characters of its training documents, in the
same seeded selection order as ``scripts/prepare_data.py`` (validation documents are never used).
The result is a transformers-loadable folder; pass it to the sweeps as ``data.tokenizer=<out>``.
An existing folder is reused; the folder appears atomically, so a killed run leaves nothing behind.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sweep.data import SOURCES, DataConfig, train_bpe  # noqa: E402
from sweep.data.tokenize import _take_sample  # noqa: E402


def mixed_sample(inputs: list[tuple[str, str]], chars: int, languages: list[str]) -> list[str]:
    """The first ``chars`` characters of training text from each (source, path), interleaved by source."""
    sample = []
    for source, path in inputs:
        cfg = DataConfig(source=source, path=path, tokenizer="bpe:258", progress=False,
                         languages=languages if source == "github_code" else [])
        streams = SOURCES[source](cfg).streams
        docs, _ = _take_sample(streams[0][1], chars)
        for _, s in streams:
            getattr(s, "close", lambda: None)()
        if not docs:
            raise ValueError(f"{source}={path} gave no training documents; check the path")
        print(f"{source}: {len(docs):,} documents, {sum(map(len, docs)) / 1e6:.1f}M characters")
        sample += docs
    return sample


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="SOURCE=PATH", help="e.g. c4=/mirror/c4 github_code=/mirror/ghc")
    ap.add_argument("--vocab", type=int, required=True, help="vocab size, EOS and the 256 bytes included")
    ap.add_argument("--out", required=True, help="output folder (AutoTokenizer.from_pretrained loads it)")
    ap.add_argument("--chars", type=float, default=4e6, help="training characters per source (default 4e6)")
    ap.add_argument("--languages", nargs="*", default=[], help="github_code languages to keep (default: all)")
    args = ap.parse_args(argv)
    try:
        inputs = []
        for item in args.inputs:
            source, sep, path = item.partition("=")
            if not sep or source not in SOURCES:
                raise ValueError(f"{item!r}: write SOURCE=PATH with SOURCE one of {', '.join(sorted(SOURCES))}")
            inputs.append((source, path))
        out = Path(args.out)
        if (out / "tokenizer.json").exists():
            print(f"{out} exists; reusing it")
            return 0
        sample = mixed_sample(inputs, int(args.chars), args.languages)
        tok = train_bpe(sample, args.vocab, progress=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            tok.save_pretrained(tmp)
            tmp.replace(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except ValueError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    print(f"wrote {out} (vocab {len(tok)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
