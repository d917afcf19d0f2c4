"""Benchmarks for the Approach 3 fit: speed of the bootstrap, and calibration of its intervals.

    python scripts/bench_fit.py speed                  # point fit + 1,000 bootstrap refits on 240 runs
    python scripts/bench_fit.py calibration            # 80% interval coverage on synthetic surfaces
    python scripts/bench_fit.py profile                # the same for the profile set over E (approach3.profile_e)

Each prints a markdown section; the recorded results are in benchmarks/fit_speed.md and
benchmarks/fit_calibration.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import approach3, load_results  # noqa: E402
from analysis.stats import dirichlet_weights, percentile_ci, run_counts  # noqa: E402
from analysis.synthetic import CHINCHILLA, KEYS, SIGMA_CHINCHILLA, coverage, isoflop_design, truth  # noqa: E402

EPOCH_CSV = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_fig4_epoch_extracted.csv"


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, numpy {np.__version__}; load average at start "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


def speed(args) -> None:
    # The Epoch extraction of Chinchilla's Figure 4 (240 runs after dropping the 5 highest losses).
    rows = sorted(load_results(EPOCH_CSV), key=lambda r: r["loss"])[:-5]
    N, C, L = (np.array([r[k] for r in rows]) for k in ("params", "flops", "loss"))
    D = C / (6 * N)
    print(f"## Approach 3 speed: {len(N)} runs, {args.boot} bootstrap refits\n")
    print(f"Machine: {machine()}\n")
    print("| step | seconds (best of %d) |" % args.repeat)
    print("|---|---|")
    t_fit, t_boot = [], {"dirichlet": [], "multinomial": []}
    for _ in range(args.repeat):
        t = time.perf_counter()
        fit = approach3.fit_approach3(N, D, L, method="grid")  # the start fit_speed.md records
        t_fit.append(time.perf_counter() - t)
        for scheme, draw in (("dirichlet", dirichlet_weights), ("multinomial", run_counts)):
            w = draw(np.random.default_rng(0), len(N), args.boot)
            t = time.perf_counter()
            samples = approach3.bootstrap_approach3(N, D, L, fit, w)
            t_boot[scheme].append(time.perf_counter() - t)
            assert len(samples["E"]) == args.boot
    print(f"| point estimate (4,500-point grid, successive halving, L-BFGS-B polish) | {min(t_fit):.2f} |")
    for scheme, ts in t_boot.items():
        print(f"| {args.boot} refits, {scheme} weights, warm-started | {min(ts):.2f} |")
    total = min(t_fit) + min(t_boot["dirichlet"])
    print(f"| **total, as `python -m analysis` runs it (dirichlet)** | **{total:.2f}** |\n")
    print(f"Point estimate: E = {fit['E']:.4f}, A = {fit['A']:.1f}, B = {fit['B']:.1f}, "
          f"alpha = {fit['alpha']:.4f}, beta = {fit['beta']:.4f}, a = {fit['a']:.4f}.  "
          f"95% intervals from the multinomial refits: " + ", ".join(
              f"{k} ({percentile_ci(samples[k], 0.95)[0]:.4g}, {percentile_ci(samples[k], 0.95)[1]:.4g})"
              for k in ("E", "A", "B", "alpha", "beta")))


def calibration(args) -> None:
    budgets = np.logspace(18, 22, args.budgets)
    N, D = isoflop_design(budgets=budgets, sizes=args.sizes)
    print(f"## Approach 3 calibration: {args.replicates} replicates, {len(N)} runs each\n")
    print(f"Machine: {machine()}\n")
    print(f"Truth: Chinchilla's fit {CHINCHILLA}.  Design: {args.budgets} budgets 1e18-1e22 x {args.sizes} sizes "
          f"within ±1 decade of N_opt, D = C/(6N).  Noise: log L + sigma·N(0, 1).  {args.boot} bootstrap refits "
          f"per replicate; {args.level:.0%} percentile intervals; Huber delta {args.delta:g}.  Seed {args.seed}.\n")
    print("| sigma | weights | " + " | ".join(KEYS) + " | seconds |")
    print("|---|---|" + "---|" * len(KEYS) + "---|")
    for sigma in args.sigma:
        for scheme in args.schemes:
            res = coverage(N, D, sigma=sigma, replicates=args.replicates, n_boot=args.boot, level=args.level,
                           scheme=scheme, seed=args.seed, delta=args.delta)
            cells = [f"{res['coverage'][k]:.2f} ({res['sd_ratio'][k]:.2f})" for k in KEYS]
            print(f"| {sigma:g} | {scheme} | " + " | ".join(cells) + f" | {res['seconds']:.0f} |", flush=True)
    print("\nEach cell: share of replicates whose interval covers the truth (mean bootstrap sd / sd of the "
          "point estimates across replicates).")


def profile(args) -> None:
    """Coverage of approach3.profile_e's set for E, beside the Dirichlet bootstrap's interval for E.  (The set's
    range of a is how far a moves with E alone, not an interval for a, so it is not scored.)"""
    budgets = np.logspace(18, 22, args.budgets)
    N, D = isoflop_design(budgets=budgets, sizes=args.sizes)
    t = truth()
    L_true = approach3.predict_loss(t, N, D)
    print(f"## Approach 3's profile set over E: {args.replicates} replicates, {len(N)} runs each\n")
    print(f"Machine: {machine()}\n")
    print(f"Truth: Chinchilla's fit {CHINCHILLA}.  Design: {args.budgets} budgets 1e18-1e22 x {args.sizes} sizes "
          f"within ±1 decade of N_opt, D = C/(6N).  Noise on log L: sigma x (normal, or Laplace of the same SD).  "
          f"Profile over analysis's default grid, E at {len(approach3.PROFILE_SHARES)} shares of the lowest loss "
          f"({min(approach3.PROFILE_SHARES):g}-{max(approach3.PROFILE_SHARES):g}), ends by bisection; "
          f"{args.boot} Dirichlet bootstrap refits "
          f"per replicate for comparison; {args.level:.0%} level.  Seed {args.seed}.\n")
    print("| sigma | noise | profile set: E covered | median width | bootstrap: E covered | median width | seconds |")
    print("|---|---|---|---|---|---|---|")
    for sigma in args.sigma:
        for noise in args.noise:
            rng, boot_rng = np.random.default_rng([args.seed, 0]), np.random.default_rng([args.seed, 1])
            hits = {"pE": 0, "bE": 0}
            wp, wb = [], []
            start = time.perf_counter()
            for _ in range(args.replicates):
                z = rng.standard_normal(len(N)) if noise == "normal" else rng.laplace(0, 1 / np.sqrt(2), len(N))
                L = L_true * np.exp(sigma * z)
                fit = approach3.fit_approach3(N, D, L)
                prof = approach3.profile_e(N, D, L, fit, level=args.level)
                ok = prof is not None and prof["E_set"] is not None
                hits["pE"] += ok and prof["E_set"][0] <= t["E"] <= prof["E_set"][1]
                wp.append(prof["E_set"][1] - prof["E_set"][0] if ok else np.nan)
                b = approach3.bootstrap_approach3(N, D, L, fit, dirichlet_weights(boot_rng, len(N), args.boot))
                ce = percentile_ci(b["E"], args.level)
                hits["bE"] += bool(ce and ce[0] <= t["E"] <= ce[1])
                wb.append(ce[1] - ce[0] if ce else np.nan)
            r = args.replicates
            print(f"| {sigma:g} | {noise} | {hits['pE'] / r:.2f} | {np.nanmedian(wp):.3f} | "
                  f"{hits['bE'] / r:.2f} | {np.nanmedian(wb):.3f} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--boot", type=int, default=1000)
    s.add_argument("--repeat", type=int, default=3)
    c = sub.add_parser("calibration")
    c.add_argument("--replicates", type=int, default=200)
    c.add_argument("--budgets", type=int, default=5)
    c.add_argument("--sizes", type=int, default=8)
    c.add_argument("--sigma", type=float, nargs="+", default=[SIGMA_CHINCHILLA, 0.02])
    c.add_argument("--schemes", nargs="+", default=["dirichlet", "multinomial"])
    c.add_argument("--boot", type=int, default=200)
    c.add_argument("--level", type=float, default=0.8)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--delta", type=float, default=approach3.DELTA, help="Huber threshold (1e-3: Chinchilla's)")
    p = sub.add_parser("profile")
    p.add_argument("--replicates", type=int, default=100)
    p.add_argument("--budgets", type=int, default=5)
    p.add_argument("--sizes", type=int, default=8)
    p.add_argument("--sigma", type=float, nargs="+", default=[SIGMA_CHINCHILLA, 0.02])
    p.add_argument("--noise", nargs="+", default=["normal", "laplace"], choices=["normal", "laplace"])
    p.add_argument("--boot", type=int, default=200)
    p.add_argument("--level", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    {"speed": speed, "calibration": calibration, "profile": profile}[args.cmd](args)


if __name__ == "__main__":
    main()
