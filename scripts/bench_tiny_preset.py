"""The tiny preset (conf/model/tiny.yaml), measured: benchmarks/tiny_preset.md.

    python scripts/bench_tiny_preset.py [--skip-train]

1. The ladders of the candidate presets: vocab (bytes or a 512 BPE), head_dim 8 or 16, and the depth rule
   (n_layers = d_model / aspect_ratio, at least 2): their smallest rung, its embedding share, the rungs' spacing and
   the depths used between 1e11 and 1e13 (the sizes a 16x grid around the prior's optimum asks for).
2. Depth against width on real runs: the same 6 target sizes at 1e12 FLOPs with aspect ratio 8, 12 and 16.
3. The centring prior: a 3-budget profile (3e11, 1e12, 3e12) over wide size spans on the embedded corpus, with the
   sizes of each budget given explicitly (1e12's are section 2's d/12 runs); each budget's best run must lie
   strictly inside its sizes, and the measured optimum gives tokens per parameter.

Every sweep resumes (outputs/bench_tiny/), so a killed run picks up where it stopped.  Losses are nats per byte.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from ladder_table import ladder_config, rows  # noqa: E402
from models.ladder import shape_for_params  # noqa: E402
from sweep.rundir import read_plan, read_result  # noqa: E402

OUT = REPO / "outputs" / "bench_tiny"
RECIPE = ["recipe.batch_size=16", "recipe.lr=3e-3", "recipe.min_steps=50"]
CANDIDATES = {  # name: (overrides, vocab)
    "bytes, head_dim 8, d/12 (chosen)": (["model=tiny"], 257),
    "bytes, head_dim 8, d/8": (["model=tiny", "model.aspect_ratio=8"], 257),
    "bytes, head_dim 8, d/16": (["model=tiny", "model.aspect_ratio=16"], 257),
    "bytes, head_dim 16, d/16": (["model=tiny", "model.head_dim=16", "model.aspect_ratio=16"], 257),
    "BPE 512, head_dim 8, d/12": (["model=tiny", "model.vocab_multiple=64"], 512),
    "old smoke: BPE 512, head_dim 16, d/32": (["model=llama", "model.head_dim=16", "model.aspect_ratio=32",
                                               "model.tie_embeddings=true", "model.min_layers=2"], 512),
}
SHAPE_SIZES = "[1.1e4,2.5e4,5e4,1e5,2e5,4e5]"
PROFILE = {3e11: "[3.82e3,1.1e4,2e4,4.6e4,7e4]", 3e12: "[2.03e4,4.63e4,7.04e4,1.24e5,2.06e5,3.93e5]"}  # 1e12: shape_ar12


def sweep(name: str, args: list[str]) -> Path:
    d = OUT / name
    cmd = [sys.executable, "-m", "sweep", *args, "trainer.num_threads=1", "trainer.progress=false", f"sweep.name={name}",
           f"hydra.sweep.dir={d}"]
    log = OUT / f"{name}.log"
    t0 = time.time()
    with open(log, "a") as f:
        rc = subprocess.call(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    if rc != 0:
        raise SystemExit(f"error: {name} failed (rc {rc}) after {time.time() - t0:.0f} s; see {log}")
    return d


def results(d: Path) -> list:
    return [(s, read_result(d / s.run_id)) for s in read_plan(d).runs]


def ladder_section() -> list[str]:
    lines = ["## 1. The candidate ladders", "",
             "Smallest rung, its embedding share, rungs up to 1M parameters (and their largest N ratio), and the depths of "
             "the rungs a 5-size, 16x grid centred on N* = sqrt(C / (6 x 20)) uses between 1e11 and 1e13 FLOPs "
             "(`scripts/ladder_table.py` prints any of these in full).", "",
             "| candidate | smallest N | embedding | rungs <= 1M | max gap | depths used, 1e11-1e13 |", "|---|---|---|---|---|---|"]
    for name, (overrides, vocab) in CANDIDATES.items():
        cfg = ladder_config(overrides)
        rs = rows(vocab, 128, cfg, 1e6)
        ns = [r["N"] for r in rs]
        lo, hi = math.sqrt(1e11 / 120) / 4, math.sqrt(1e13 / 120) * 4
        used = sorted({shape_for_params(n, vocab, 128, cfg).n_layers for n in
                       [lo * (hi / lo) ** (i / 40) for i in range(41)] if ns[0] <= n <= rs[-1]["N"]})
        gap = max(b / a for a, b in zip(ns, ns[1:]))
        lines.append(f"| {name} | {ns[0]:,} | {100 * rs[0]['emb']:.0f}% | {len(rs)} | {gap:.2f}x | {used[0]}-{used[-1]} |")
    cfg = ladder_config(["model=tiny"])
    lines += ["", "The chosen ladder (`model=tiny`, bytes padded to 264, seq_len 128):", "",
              "| N | non-embedding | embedding | L | d | heads | d_ff | FLOPs/token / 6N | attention share of FLOPs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows(257, 128, cfg, 1.2e6):
        s = r["shape"]
        lines.append(f"| {r['N']:,} | {r['N_ne']:,} | {100 * r['emb']:.1f}% | {s.n_layers} | {s.d_model} | {s.n_heads} | "
                     f"{s.d_ff} | {r['fpt_6N']:.2f} | {100 * r['attn']:.1f}% |")
    return lines


def shape_section(dirs: dict) -> list[str]:
    lines = ["", "## 2. Depth against width at 1e12 FLOPs", "",
             f"The same target sizes {SHAPE_SIZES} at C = 1e12 on the embedded corpus (bytes), batch 16 x 128, peak LR 3e-3, "
             "cosine; final validation loss per rung (L x d):", "", "| aspect ratio | runs (N: L x d, loss) | best |", "|---|---|---|"]
    for ar, d in dirs.items():
        rs = sorted(((s, r) for s, r in results(d) if r is not None), key=lambda sr: sr[0].params)
        cells = ", ".join(f"{s.params / 1e3:.0f}k: {s.model.n_layers}x{s.model.d_model} {r.final_val_loss:.4f}" for s, r in rs)
        best = min(rs, key=lambda sr: sr[1].final_val_loss)
        lines.append(f"| {ar} | {cells} | {best[1].final_val_loss:.4f} ({best[0].params / 1e3:.0f}k) |")
    return lines


def profile_section(dirs: dict) -> list[str]:
    """Approach 2 through the three budgets' runs (one results CSV), and each budget's profile."""
    import csv

    rows = [(s, r) for d in dirs.values() for s, r in results(d) if r is not None and r.status == "done"]
    table = OUT / "profile.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "budget", "flops", "params", "params_non_embedding", "tokens", "loss"])
        for s, r in rows:
            w.writerow([s.run_id, s.budget, r.flops, s.params, s.params_non_embedding, r.tokens, r.final_val_loss])
    fit_dir = OUT / "profile_fit"
    subprocess.run([sys.executable, "-m", "analysis", str(table), "--out", str(fit_dir), "--bootstrap", "500"], cwd=REPO,
                   capture_output=True)
    fit = json.loads((fit_dir / "fit.json").read_text()) if (fit_dir / "fit.json").exists() else {}
    a2 = fit.get("approach2") or {}
    lines = ["", "## 3. The centring prior: a 3-budget profile", "",
             f"`model=tiny` on the embedded corpus ({', '.join(RECIPE)}, cosine), sizes per budget: 3e11 {PROFILE[3e11]}, "
             f"1e12 {SHAPE_SIZES} (section 2), 3e12 {PROFILE[3e12]}.", "",
             "| budget | sizes (N: loss) | best run | inside? | vertex N_opt | D_opt | D_opt / N_opt | r = C / (6 N_opt^2) |",
             "|---|---|---|---|---|---|---|---|"]
    for c in sorted({s.budget for s, _ in rows}):
        rs = sorted(((s, r) for s, r in rows if s.budget == c), key=lambda sr: sr[0].params)
        k = min(range(len(rs)), key=lambda i: rs[i][1].final_val_loss)
        inside = 0 < k < len(rs) - 1
        cells = ", ".join(f"{s.params / 1e3:.1f}k: {r.final_val_loss:.4f}" for s, r in rs)
        vertex = "- | - | - | -"
        if c in a2.get("budgets", []):
            i = a2["budgets"].index(c)
            n, dd = a2["N_opt"][i], a2["D_opt"][i]
            vertex = f"{n:.3g} | {dd:.3g} | {dd / n:.1f} | {c / (6 * n * n):.1f}"
        lines.append(f"| {c:.0e} | {cells} | {rs[k][0].params / 1e3:.1f}k | {'yes' if inside else 'NO'} | {vertex} |")
    if a2:
        ci = a2.get("ci", {})
        def span(k):  # the 80% interval, or nothing when the fit gave none
            return f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci.get(k) else ""

        lines += ["", f"Approach 2 through the vertices: a = {a2['a']:.3f}{span('a')}, b = {a2['b']:.3f}{span('b')}."]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-train", action="store_true", help="only the ladder tables")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "tiny_preset.md")
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# The tiny preset (`model=tiny`), measured", "",
             f"Generated by `python scripts/bench_tiny_preset.py` on {time.strftime('%Y-%m-%d')} (2 CPU cores, shared).", ""]
    reading = a.out.with_name("tiny_preset_reading.md")
    if reading.exists():
        lines += [reading.read_text(), "---", ""]
    lines += ladder_section()
    if not a.skip_train:
        shape = {ar: ["model=tiny", f"model.aspect_ratio={ar}", *RECIPE, "sweep.budgets=[1e12]", f"sweep.sizes={SHAPE_SIZES}"]
                 for ar in (8, 12, 16)}
        prof = {c: ["model=tiny", *RECIPE, f"sweep.budgets=[{c:.0e}]", f"sweep.sizes={sizes}"] for c, sizes in PROFILE.items()}
        with ThreadPoolExecutor(max_workers=2) as pool:
            top = pool.submit(sweep, "profile_3e12", prof[3e12])  # the longest: one thread from the start
            dirs = {ar: sweep(f"shape_ar{ar}", shape[ar]) for ar in shape}
            low = sweep("profile_3e11", prof[3e11])
            lines += shape_section(dirs)
            lines += profile_section({3e11: low, 1e12: dirs[12], 3e12: top.result()})
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
