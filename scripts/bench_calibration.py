"""Benchmarks for issue 19's fits: interval coverage on our CPU design, Approach 3's starts, and the first CPU
study's code sweep (benchmarks/cpu_sweep_v1/).

    python scripts/bench_calibration.py noise             # the noise SD the first CPU study's sweeps measure
    python scripts/bench_calibration.py coverage          # Approach 2's 80% intervals: coverage on the CPU design
    python scripts/bench_calibration.py approach3-init    # variable projection vs Chinchilla's grid, same objective
    python scripts/bench_calibration.py code-sweep        # Approach 3 before/after, and --holdout-top at 1e13

Each prints a markdown section; the recorded results are in benchmarks/fit_calibration.md (coverage, noise) and
benchmarks/fit_validation.md (approach3-init, code-sweep).  Correctness runs: the seconds are indicative only.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import approach2, approach3, load_results  # noqa: E402
from analysis.calibration import (CODE_SURFACE, CPU_BUDGETS, CPU_LADDER, CPU_RECIPE, CPU_SIGMA, CPU_VOCAB,  # noqa: E402
                                  METHODS, TARGETS, approach2_coverage, cpu_design)
from analysis.fit import fit_dataset  # noqa: E402
from analysis.noise import residual_sigma  # noqa: E402
from analysis.results import APPROACH2_KINDS, load_dataset  # noqa: E402
from analysis.run import holdout_fit  # noqa: E402
from analysis.synthetic import CHINCHILLA, isoflop_design  # noqa: E402
from models.flops import param_counts  # noqa: E402
from models.ladder import ladder  # noqa: E402

CPU_RESULTS = ROOT / "benchmarks" / "cpu_sweep_v1" / "results.csv"  # the first CPU study (its README)
EPOCH_CSV = ROOT / "tests" / "data" / "chinchilla_fig4_epoch_extracted.csv"


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, numpy {np.__version__}; load average at start {load[0]:.2f}")


def cpu_rows(name: str) -> list[dict]:
    return [r for r in csv.DictReader(open(CPU_RESULTS)) if r["dataset"] == name]


# ---------------------------------------------------------------------------------------------


def noise(args) -> None:
    print("## Noise in the committed CPU sweeps\n")
    print(f"`{CPU_RESULTS.relative_to(ROOT)}` has no seed repeats, so the noise is the pooled residual SD of each "
          "dataset's isoFLOP parabolas (analysis.noise.residual_sigma: Σ RSS / Σ (runs − 3) over the budgets; lack of "
          "fit included, so an upper bound on run-to-run noise).\n")
    print("| dataset | budgets (runs) | sigma (nats) | dof |")
    print("|---|---|---|---|")
    for name in ("code", "prose"):
        rows = [r for r in cpu_rows(name) if r["kind"] in ("grid", "isoflop")]
        C, N, D, L = (np.array([float(r[k]) for r in rows]) for k in ("budget", "params", "tokens", "loss"))
        fit = approach2.fit_approach2(C, N, D, L)
        nz = residual_sigma(C, N, L, fit)
        counts = ", ".join(f"{c:.3g} ({int((C == c).sum())})" for c in np.unique(C))
        print(f"| {name} | {counts} | {nz['sigma']:.3f} | {nz['dof']} |")
    print()


def coverage(args) -> None:
    print(f"## Approach 2: 80% interval coverage on the CPU design, {args.replicates} replicates\n")
    print(f"Machine: {machine()}\n")
    print("Each cell: share of replicates whose 80% interval holds the truth (target 0.70-0.90); in brackets the "
          "median interval width over the 10-90% spread of the point estimates (1 is right).\n")
    grid = "centred on the true optimum (a refined pass)" if args.centred else "around the 20 tokens/param prior"
    print(f"Grids {grid}.\n")
    print("| budgets | runs | sigma | seeds | method | a | b | N_opt(10x top) | failed | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for nb in args.budgets:
        for sigma in args.sigma:
            for seeds in args.seeds:
                r = approach2_coverage(budgets=CPU_BUDGETS[nb], sigma=sigma, seeds=seeds, replicates=args.replicates,
                                       n_boot=args.boot, methods=METHODS, seed=args.seed, centred=args.centred)
                for m in METHODS:
                    cells = [f"{r['coverage'][m][k]:.2f} ({r['width'][m][k] / r['spread'][k]:.2f})" for k in TARGETS]
                    print(f"| {nb} | {r['runs']} | {sigma:g} | {seeds} | {m} | " + " | ".join(cells)
                          + f" | {r['failed']} | {r['seconds']:.0f} |")
                t, b = r["truth"], r["bias"]
                print(f"|  |  |  |  | truth a {t['a']:.3f}, b {t['b']:.3f}, N_opt({t['C_proj']:.3g}) {t['N_proj']:.3g}; "
                      f"median bias a {b['a']:+.3f}, b {b['b']:+.3f}, N {b['N_proj']:+.1%} |  |  |  |  |  |")
    print()


def approach3_init(args) -> None:
    print("## Approach 3: variable projection against Chinchilla's grid, on the same objective\n")
    print(f"Machine: {machine()}\n")
    print("Objective: Chinchilla's summed Huber (δ = 1e-3) on log loss.  'same' = equal to 1e-6 relative.\n")
    print("| data | replicates | varpro lower | same | grid lower | seconds varpro | seconds grid |")
    print("|---|---|---|---|---|---|---|")
    rows = sorted(load_results(EPOCH_CSV), key=lambda r: r["loss"])[:-5]
    N, C, L = (np.array([r[k] for r in rows]) for k in ("params", "flops", "loss"))
    D = C / (6 * N)
    res = {m: approach3.fit_approach3(N, D, L, method=m) for m in ("varpro", "grid")}
    t = {m: min(_time(lambda: approach3.fit_approach3(N, D, L, method=m)) for _ in range(3)) for m in res}
    d = res["varpro"]["objective"] / res["grid"]["objective"] - 1
    print(f"| Epoch's Fig. 4 extraction (240 runs) | 1 | {int(d < -1e-6)} | {int(abs(d) <= 1e-6)} | {int(d > 1e-6)} | "
          f"{t['varpro']:.2f} | {t['grid']:.2f} |")
    cases = [("Chinchilla surface, 5 x 8 runs, 0.5% noise", *isoflop_design(sizes=8), CHINCHILLA, 0.005, True),
             ("Chinchilla surface, 5 x 8 runs, 2% noise", *isoflop_design(sizes=8), CHINCHILLA, 0.02, True),
             ("Chinchilla surface, 6 x 40 runs, 0.5% noise", *isoflop_design(budgets=np.logspace(18, 22, 6), sizes=40),
              CHINCHILLA, 0.005, True)]
    _, Nc, Dc = cpu_design(CPU_BUDGETS[4])
    cases += [(f"code surface, CPU design (19 runs), noise {s:g} nats", Nc, Dc, CODE_SURFACE, s, False)
              for s in (0.03, CPU_SIGMA["code"])]
    cases += [("alpha 1.6 surface (the unfiltered code fit), CPU design, 0.03 nats", Nc, Dc,
               {"E": 3.156, "A": 5.66e6, "B": 154.2, "alpha": 1.601, "beta": 0.335}, 0.03, False)]
    for name, n, dd, surface, sigma, mult in cases:
        rng = np.random.default_rng(args.seed)
        counts, secs = {"vp": 0, "same": 0, "grid": 0}, {"varpro": 0.0, "grid": 0.0}
        L0 = approach3.predict_loss(surface, n, dd)
        for _ in range(args.replicates):
            eps = rng.standard_normal(len(n))
            L = L0 * np.exp(sigma * eps) if mult else L0 + sigma * eps
            obj = {}
            for m in secs:
                t0 = time.perf_counter()
                obj[m] = approach3.fit_approach3(n, dd, L, method=m)["objective"]
                secs[m] += time.perf_counter() - t0
            d = obj["varpro"] / obj["grid"] - 1
            counts["vp" if d < -1e-6 else "grid" if d > 1e-6 else "same"] += 1
        print(f"| {name} | {args.replicates} | {counts['vp']} | {counts['same']} | {counts['grid']} | "
              f"{secs['varpro'] / args.replicates:.2f} | {secs['grid'] / args.replicates:.2f} |")
    print()
    for m, f in res.items():
        print(f"- Epoch data, {m}: objective {f['objective']:.10g}, E {f['E']:.4f}, A {f['A']:.1f}, B {f['B']:.1f}, "
              f"alpha {f['alpha']:.4f}, beta {f['beta']:.4f}")
    print()


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def code_dataset():
    """The first CPU study's code runs (benchmarks/cpu_sweep_v1/results.csv) with their model shapes: its ladder
    (conf/experiment/cpu_sweep.yaml as of a2cddb8) has one rung per parameter count, and each run's FLOPs per token
    must equal that rung's exact count (analysis.compute checks it), so the sweep's own axis is rebuilt exactly."""
    ds = load_dataset(CPU_RESULTS, "code")
    shapes = {param_counts(s)["params"]: s for s in ladder(CPU_VOCAB, CPU_RECIPE.seq_len, CPU_LADDER)}
    for r in ds.rows:
        r["model"] = dataclasses.asdict(shapes[int(r["params"])])
        r["flops_convention"] = CPU_RECIPE.flops_convention
    ds.ladder = dataclasses.asdict(CPU_LADDER)
    return ds


def code_sweep(args) -> None:
    print("## The first CPU study's code sweep: Approach 3 before and after, and the hold-out check\n")
    print(f"Data: the `code` rows of `{CPU_RESULTS.relative_to(ROOT)}` (45 runs: 23 grid, 22 horizon).  "
          f"{args.boot} bootstrap resamples, seed 0.\n")
    ds = code_dataset()
    rows = ds.usable
    N, D, L = (np.array([r[k] for r in rows]) for k in ("params", "tokens", "loss"))
    print("| fit | runs | alpha | beta | a (C = 6ND closed form) | a on the sweep's axis (80% CI) | b on the axis |")
    print("|---|---|---|---|---|---|---|")
    old = approach3.fit_approach3(N, D, L, method="grid")
    print(f"| before: every run, grid start, a = β/(α+β) (the committed fit.json) | {old['n_runs']} | "
          f"{old['alpha']:.3f} | {old['beta']:.3f} | {old['a']:.3f} | - | - |")
    for label, mtpp in (("every run, on the sweep's axis", 0.0), ("after: >= 4 tokens/param (default)", 4.0)):
        f = fit_dataset(ds, project=[], n_boot=args.boot, min_tokens_per_param=mtpp)["approach3"]
        ci, cib = f["ci"]["a"], f["ci"]["b"]
        print(f"| {label} | {f['n_runs']} | {f['alpha']:.3f} | {f['beta']:.3f} | {f['a_6ND']:.3f} | "
              f"{f['a']:.3f} ({ci[0]:.3f}, {ci[1]:.3f}) | {f['b']:.3f} ({cib[0]:.3f}, {cib[1]:.3f}) |")
    full = fit_dataset(ds, project=[], n_boot=args.boot, inside_grid_only=True)
    f2 = full["approach2"]
    print(f"| Approach 2, --inside-grid-only (for comparison) | {sum(p['n_points'] for p in f2['parabolas'])} | - | - | - | "
          f"{f2['a']:.3f} ({f2['ci']['a'][0]:.3f}, {f2['ci']['a'][1]:.3f}) | "
          f"{f2['b']:.3f} ({f2['ci']['b'][0]:.3f}, {f2['ci']['b'][1]:.3f}) |")
    print(f"\nCompute axis: {full['compute_axis']['description']}.\n")
    fit = holdout_fit(ds, project=[1e14], n_boot=args.boot, inside_grid_only=True)
    v = fit["validation"]
    print(f"### --holdout-top --inside-grid-only: fitted on {', '.join(f'{c:.3g}' for c in v['fitted_budgets'])} "
          f"(Approach 2; Approach 3 on the {fit['approach3']['n_runs']} runs below 1e13 with >= 4 tokens/param), "
          f"predicted at {v['budget']:.3g}\n")
    print("| quantity | predicted (80% CI) | measured (parabola through the 7 runs at 1e13) | inside |")
    print("|---|---|---|---|")
    for ap, n in v["N_opt_pred"].items():
        ci = v["N_opt_pred_ci"][ap]
        print(f"| N_opt, {ap} | {n:.3g} ({ci[0]:.3g}, {ci[1]:.3g}) | {v['N_opt_measured']:.3g} | "
              f"{v['inside_ci']['N_opt'][ap]} |")
    for ap, d in v["D_opt_pred"].items():
        ci = v["D_opt_pred_ci"][ap]
        print(f"| D_opt, {ap} | {d:.3g} ({ci[0]:.3g}, {ci[1]:.3g}) | {v['D_opt_measured']:.3g} | |")
    for name, l in v["L_pred"].items():
        ci = v["L_pred_ci"][name]
        print(f"| L_opt, {name} | {l:.4f} ({ci[0]:.4f}, {ci[1]:.4f}) | {v['L_measured']:.4f} | {v['inside_ci']['L'][name]} |")
    b = v["measured"]["best_run"]
    print(f"\nBest measured run at 1e13: {b['run_id']}, L = {b['L']:.4f}.  Loss power law: "
          f"{fit['approach2']['loss_law']['form']}; held-out Approach 3: E = {fit['approach3']['E']:.3f}, "
          f"alpha = {fit['approach3']['alpha']:.3f}, beta = {fit['approach3']['beta']:.3f}.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("noise")
    c = sub.add_parser("coverage")
    c.add_argument("--budgets", type=int, nargs="+", default=[3, 4, 5], choices=sorted(CPU_BUDGETS))
    c.add_argument("--sigma", type=float, nargs="+", default=[CPU_SIGMA["code"], CPU_SIGMA["prose"], 0.03])
    c.add_argument("--seeds", type=int, nargs="+", default=[1])
    c.add_argument("--replicates", type=int, default=200)
    c.add_argument("--boot", type=int, default=400)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--centred", action="store_true", help="grids centred on the true optimum (a refined pass)")
    i = sub.add_parser("approach3-init")
    i.add_argument("--replicates", type=int, default=20)
    i.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("code-sweep")
    s.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args(argv)
    {"noise": noise, "coverage": coverage, "approach3-init": approach3_init, "code-sweep": code_sweep}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
