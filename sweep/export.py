"""``python -m sweep.export <run dir | .pt file> --out <dir>``: a trained run as a Hugging Face Llama folder.

Which file to export, as the trainer leaves them (sweep/rundir.py):
    <run dir>/weights.pt                  the final weights
    <run dir>/checkpoints/step_<n>.pt     the newest, when the run has no weights.pt (still training, or killed)
    a path to either kind of .pt file

The tokenizer (optional) comes from ``--tokenizer DIR``, else ``<run dir>/tokenizer``, else the tokenizer folder
the run's result.json records.  The weight mapping itself is models/export.py; then
``LlamaForCausalLM.from_pretrained(<dir>)`` and ``AutoTokenizer.from_pretrained(<dir>)`` load the folder.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from models.export import load_weights, write_hf
from sweep.rundir import CHECKPOINT_DIR, WEIGHTS_FILE, read_result

_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def _step(p: Path) -> int:
    return int(_STEP_FILE.fullmatch(p.name).group(1))


def resolve_source(src: str | os.PathLike) -> Path:
    """The .pt file to export: ``src`` itself, ``src/weights.pt``, or the newest ``src/checkpoints/step_*.pt``."""
    p = Path(src)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"{p} does not exist; pass a run directory (with weights.pt or "
                                f"checkpoints/step_*.pt) or a .pt file")
    if (p / WEIGHTS_FILE).is_file():
        return p / WEIGHTS_FILE
    for d in (p / CHECKPOINT_DIR, p):  # a run dir, or its checkpoints/ folder given directly
        ckpts = [c for c in d.glob("step_*.pt") if c.is_file() and _STEP_FILE.fullmatch(c.name)]
        if ckpts:
            return max(ckpts, key=_step)
    raise FileNotFoundError(f"{p} has no weights.pt and no checkpoints/step_*.pt; pass a run directory that "
                            f"has trained (or a .pt file)")


def _run_dir(pt: Path) -> Path:
    """The run directory a .pt file belongs to (checkpoints/step_N.pt sits one level down)."""
    return pt.parent.parent if pt.parent.name == CHECKPOINT_DIR else pt.parent


def find_tokenizer(run_dir: Path) -> Path | None:
    """``<run dir>/tokenizer``, else the tokenizer folder recorded in the run's result."""
    if (run_dir / "tokenizer").is_dir():
        return run_dir / "tokenizer"
    res = read_result(run_dir)
    return Path(res.tokenizer_dir) if res is not None and res.tokenizer_dir else None


def export(src: str | os.PathLike, out_dir: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
           overwrite: bool = False) -> Path:
    """Export a run directory or a .pt file to ``out_dir``; returns it.  ``tokenizer``: a tokenizer folder to
    copy in; None looks for one next to the run.  ``overwrite``: replace an existing ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; remove it, choose another --out, or pass --force")
    pt = resolve_source(src)
    cfg, state = load_weights(pt)
    if tokenizer is not None:
        tok_dir = Path(tokenizer)
        if not tok_dir.is_dir():
            raise FileNotFoundError(f"tokenizer folder {tok_dir} does not exist; pass a folder written by "
                                    f"tokenizer.save_pretrained (e.g. <data dir>/tokenizer)")
    else:
        tok_dir = find_tokenizer(_run_dir(pt))
    return write_hf(cfg, state, out, tok_dir, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.export",
                                     description="Export a trained run to a Hugging Face LlamaForCausalLM folder.")
    parser.add_argument("src", help="run directory (weights.pt or checkpoints/step_*.pt) or a .pt file")
    parser.add_argument("--out", required=True, help="folder to write (must not exist unless --force)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder to copy in (default: <run>/tokenizer or the run's data dir)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Writing model shards" bar on stderr
    try:
        out = export(args.src, args.out, tokenizer=args.tokenizer, overwrite=args.force)
    except (OSError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{parser.prog}: error: {msg}", file=sys.stderr)  # one line, exit 2 like argparse
        return 2
    has_tok = any(out.glob("tokenizer*.json"))
    print(f"wrote {out} (LlamaForCausalLM, safetensors{', with tokenizer' if has_tok else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
