"""The trainer's whole-run tokens/s on this checkout against an earlier commit, at the smoke's three shapes.

    python scripts/bench_trainer_ab.py REV [--rounds 2] [overrides ...]

For the shapes of ``scripts/bench_cpu_throughput.py`` (the smoke plan's smallest, middle and largest sizes, each at
its shortest run, planned by this checkout) it runs ``python -m sweep.train`` on the same spec and the same prepared
data, one thread, once from this checkout and once from a ``git worktree`` of REV (removed after), in a shuffled
order within each of ``--rounds`` rounds, and prints each side's median tok/s (the run's tokens over its wall time,
``result.json``) and their ratio.  Run it on quiet cores; the two sides share the machine's state, so a change of
load hits both.
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_cpu_throughput import pick_shapes, smoke_plan, trainer_run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the commit to compare against, e.g. 41f6e47")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the smoke plan")
    a = ap.parse_args(argv)
    specs, data = smoke_plan(a.overrides)
    data = Path(data).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), a.rev], cwd=REPO, check=True)
        try:
            trees = {"this": REPO, a.rev: old}
            for spec in pick_shapes(specs):
                got = {k: [] for k in trees}
                for _ in range(a.rounds):
                    for k in random.sample(list(trees), len(trees)):
                        got[k].append(trainer_run(spec, data, 1, tree=trees[k])["tok_s"])
                med = {k: statistics.median(v) for k, v in got.items()}
                print(f"{spec.run_id}: this {med['this']:,.0f} tok/s, {a.rev} {med[a.rev]:,.0f} tok/s, "
                      f"ratio {med['this'] / med[a.rev]:.3f}  (rounds: "
                      + "; ".join(f"{k} " + "/".join(f"{x:,.0f}" for x in v) for k, v in got.items()) + ")", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
