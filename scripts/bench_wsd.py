"""WSD trunks and cooldown forks against cosine runs of the same points: benchmarks/wsd.md.

    python scripts/bench_wsd.py [--datasets stdlib code] [--out benchmarks/wsd.md] [--jobs 2]

For each dataset (the embedded stdlib corpus, and the code set of ../shared/corpora, built by
../shared/corpora/build.py into data_cache/corpora) and each design it trains the same points twice, as
independent cosine runs and as trunks + forks (recipe.schedule=wsd sweep.forks=true), with the tiny preset of
the smoke experiment, then reports:

- per point, loss(fork) - loss(cosine), beside the run-to-run noise of cosine runs (2 seeds at 3 points);
- the FLOP ratio, measured (sum of the results' flops_spent over the cosine results' flops) and analytic (the
  plan's), and the wall-time ratio (sum of the runs' wall_time_s);
- the two Approach 2 fits (python -m analysis), side by side.

Designs: (a) the smoke grid (+experiment=smoke); (b) a denser study design: 5 budgets 2x apart, 5 sizes each, and
Approach 1's 0.25x and 4x horizons.  The cosine and the forks sweep of a design run side by side, one thread each
(--jobs 2).  Every sweep resumes, so a killed benchmark picks up where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweep.rundir import read_plan, read_result  # noqa: E402

DATASETS = {
    "stdlib": [],
    "code": ["data=github_code", "data.path=data_cache/corpora/github-code-like", "data.max_tokens=3e7"],
}
DESIGNS = {
    "a": [],  # the smoke grid
    # (b): 5 budgets sqrt(2) apart, so that each rung serves several budgets (analytic FLOP ratio 0.585; budgets 2x
    # apart share too few rungs: 0.73 for [3e11..4.8e12])
    "b": ["sweep.budgets=[3e11,4.2e11,6e11,8.5e11,1.2e12]", "sweep.sizes_per_budget=5", "sweep.horizons=[0.25,4]"],
}
COSINE = ["recipe.schedule=cosine", "sweep.forks=false"]
FORKS = ["recipe.schedule=wsd", "sweep.forks=true"]
# the smoke's grid and model at one plain recipe (lr 3e-3), not the smoke's own fitted recipe and forks
# one run after another (hydra/launcher=basic): the two sweeps of a pair run side by side, one core each
COMMON = ["+experiment=smoke", "recipe=default", "hydra.callbacks.analysis.holdout_top=false", "trainer.num_threads=1",
          "hydra/launcher=basic", "trainer.progress=false", "wandb.enabled=false"]


def sweep(name: str, args: list[str], log: Path) -> Path:
    sweep_dir = REPO / "outputs" / "bench_wsd" / name
    cmd = [sys.executable, "-m", "sweep", *COMMON, *args, f"sweep.name=bench_wsd_{name}", f"hydra.sweep.dir={sweep_dir}"]
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
        f.write(f"# rc={rc} in {time.time() - t0:.0f} s\n")
    if rc != 0:
        raise SystemExit(f"error: {name} failed (rc {rc}); see {log}")
    return sweep_dir


def fit_a2(sweep_dir: Path) -> dict:
    out = sweep_dir.parent / f"{sweep_dir.name}_fit"
    subprocess.run([sys.executable, "-m", "analysis", str(sweep_dir), "--out", str(out), "--bootstrap", "500"],
                   cwd=REPO, check=False, capture_output=True)
    f = out / "fit.json"
    return json.loads(f.read_text()).get("approach2") or {} if f.exists() else {}


def runs(sweep_dir: Path) -> dict:
    plan = read_plan(sweep_dir)
    return {s.run_id: (s, read_result(sweep_dir / s.run_id)) for s in plan.runs}


def noise_sigma(sweep_dir: Path) -> tuple[float, int]:
    """Pooled SD of the final val loss over points trained with 2 seeds (run ids ``X`` and ``X-s1``)."""
    res = {rid: r for rid, (_, r) in runs(sweep_dir).items()}
    diffs = [res[rid].final_val_loss - res[rid[:-3]].final_val_loss for rid in res if rid.endswith("-s1")]
    return float(np.sqrt(np.mean(np.square(diffs)) / 2)), len(diffs)  # var(a - b) = 2 sigma^2


def compare(cos_dir: Path, fork_dir: Path) -> dict:
    cos, frk = runs(cos_dir), runs(fork_dir)
    points = []
    for rid, (s, r) in sorted(cos.items(), key=lambda kv: (kv[1][0].budget, kv[1][0].params)):
        if rid in frk and r is not None and frk[rid][1] is not None:
            f = frk[rid][1]
            points.append({"run_id": rid, "kind": s.kind, "budget": s.budget, "params": s.params, "cosine": r.final_val_loss,
                           "fork": f.final_val_loss, "delta": f.final_val_loss - r.final_val_loss})
    spent = sum(r.flops_spent for _, r in frk.values())
    alone = sum(r.flops for s, r in frk.values() if s.kind != "trunk")
    analytic = sum(s.flops_spent for s, _ in frk.values()) / sum(s.flops for s, _ in frk.values() if s.kind != "trunk")
    wall = sum(r.wall_time_s for _, r in frk.values()) / sum(r.wall_time_s for _, r in cos.values())
    return {"points": points, "measured": spent / alone, "analytic": analytic, "wall": wall,
            "cosine_fit": fit_a2(cos_dir), "fork_fit": fit_a2(fork_dir),
            "n_trunks": sum(s.kind == "trunk" for s, _ in frk.values())}


def fmt_fit(f: dict) -> str:
    if not f:
        return "not fitted"
    ci = f.get("ci", {})
    a, b = ci.get("a") or [float("nan")] * 2, ci.get("b") or [float("nan")] * 2
    return f"a = {f['a']:.3f} [{a[0]:.3f}, {a[1]:.3f}], b = {f['b']:.3f} [{b[0]:.3f}, {b[1]:.3f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "wsd.md")
    ap.add_argument("--jobs", type=int, default=2, help="sweeps side by side (one thread each)")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every sweep, e.g. recipe.cooldown_frac=0.3")
    a = ap.parse_args(argv)
    log = REPO / "outputs" / "bench_wsd" / "commands.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    store = a.out.parent / f"{a.out.stem}.json"  # every (dataset, design) measured so far, so runs can be split
    sections = json.loads(store.read_text()).get("sections", {}) if store.exists() else {}
    if isinstance(sections, list):
        sections = {}
    for ds in a.datasets:
        if ds == "code" and not (REPO / "data_cache/corpora/github-code-like").is_dir():
            raise SystemExit("error: data_cache/corpora/github-code-like is missing; build it with "
                             ".venv/bin/python ../shared/corpora/build.py --out data_cache/corpora")
        base = DATASETS[ds] + list(a.extra)
        noise_dir = sweep(f"{ds}_noise", base + COSINE + ["sweep.budgets=[1e12]", "sweep.sizes_per_budget=3", "sweep.size_span=4",
                                                 "sweep.seeds=2"], log)
        sigma, n_pairs = noise_sigma(noise_dir)
        for design in a.designs:
            args = base + DESIGNS[design]
            with ThreadPoolExecutor(max_workers=a.jobs) as pool:
                cos_f = pool.submit(sweep, f"{ds}_{design}_cosine", args + COSINE, log)
                fork_f = pool.submit(sweep, f"{ds}_{design}_forks", args + FORKS, log)
                cos_dir, fork_dir = cos_f.result(), fork_f.result()
            c = compare(cos_dir, fork_dir)
            deltas = np.array([p["delta"] for p in c["points"]])
            lines = [f"### {ds}, design ({design})", "",
                     f"Overrides: `{' '.join(COMMON + args) or '(the smoke grid)'}`; cosine runs add `{' '.join(COSINE)}`, forks `{' '.join(FORKS)}`.", "",
                     f"- points: {len(c['points'])} ({c['n_trunks']} trunks); loss(fork) - loss(cosine): mean "
                     f"{deltas.mean():+.4f}, median {np.median(deltas):+.4f}, min {deltas.min():+.4f}, max {deltas.max():+.4f}; "
                     f"run-to-run noise of cosine runs: sigma = {sigma:.4f} ({n_pairs} points x 2 seeds at 1e12), so a "
                     f"difference of two runs has SD {np.sqrt(2) * sigma:.4f}",
                     f"- FLOP ratio (forks / independent cosine runs): measured {c['measured']:.4f}, analytic "
                     f"{c['analytic']:.4f} (difference {100 * (c['measured'] / c['analytic'] - 1):+.2f}%)",
                     f"- wall-time ratio (sum of the runs' wall_time_s): {c['wall']:.3f}",
                     f"- Approach 2: cosine {fmt_fit(c['cosine_fit'])}; forks {fmt_fit(c['fork_fit'])}", "",
                     "| run id | kind | budget | N | loss cosine | loss fork | fork - cosine |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {p['run_id']} | {p['kind']} | {p['budget']:.3g} | {p['params']:.3g} | {p['cosine']:.4f} | "
                      f"{p['fork']:.4f} | {p['delta']:+.4f} |" for p in c["points"]]
            sections[f"{ds}/{design}"] = "\n".join(lines)
            store.write_text(json.dumps({"sections": sections}, indent=1))
    head = [f"# WSD forks against cosine runs (generated by `python {' '.join(['scripts/bench_wsd.py', *sys.argv[1:]])}`)",
            "", f"Measured {time.strftime('%Y-%m-%d')} on 2 CPU cores shared with other work; losses are final "
            "validation losses (nats per byte: the tiny preset's tokens are bytes).", ""]
    reading = a.out.with_name(f"{a.out.stem}_reading.md")  # the hand-written reading, kept at the head
    body = (reading.read_text() + "\n---\n\n" if reading.exists() else "") + "\n".join(head) + "\n"
    body += "\n\n".join(sections[k] for k in sorted(sections))
    a.out.write_text(body + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
