"""A real LR scan per dataset with the tiny preset: benchmarks/lr_scan.md and the named recipes under conf/recipe/.

    python scripts/bench_lr_scan.py [--datasets stdlib code prose] [--max-flops 3e13]

Each scan is ``python -m sweep +experiment=<its sweep> sweep.mode=lr_scan`` over the size range of the sweep that will
use it (the smoke grid for stdlib, the CPU study's grid for code and prose), with forks so that q can be fitted,
capped at ``--max-flops`` (about 30 minutes on one core).  It records the best LR per size with its standard error,
the fitted p and q with 80% intervals, the figure, and how far the rule's LR is from DeepSeek's budget rule on the
same runs; and copies each fitted recipe to conf/recipe/tiny_<dataset>.yaml, which the experiments load.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = {  # name: (experiment, overrides)
    "stdlib": ("smoke", ["recipe=default"]),  # the scan starts from the plain recipe, not the one it fits
    "code": ("cpu_sweep", ["data=github_code", "data.path=data_cache/corpora/github-code-like", "data.max_tokens=6e7"]),
    "prose": ("cpu_sweep", ["data=c4", "data.path=data_cache/corpora/c4-like", "data.max_tokens=6e7"]),
}
SCAN = ["sweep.mode=lr_scan", "sweep.scan.sizes=4", "sweep.scan.lrs=5", "sweep.scan.lr_factor=2", "recipe.schedule=wsd",
        "sweep.scan.tokens_per_param=50",  # the sweeps' measured optimum (benchmarks/tiny_preset.md), not the default 20
        "sweep.forks=true", "recipe.lr_rule=constant", "recipe.lr=3e-3", "trainer.num_threads=1", "trainer.progress=false"]


def scan(name: str, max_flops: float) -> tuple[Path, float, float]:
    exp, extra = DATASETS[name]
    d = REPO / "outputs" / "bench_lr_scan" / name
    cmd = [sys.executable, "-m", "sweep", f"+experiment={exp}", *extra, *SCAN, f"sweep.scan.max_flops={max_flops:g}",
           f"sweep.name=lr_scan_{name}", f"hydra.sweep.dir={d}"]
    d.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(d.parent / f"{name}.log", "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
        _, status, usage = os.wait4(p.pid, 0)  # the scan's own CPU time, apart from the other scan beside it
        p.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"error: the {name} scan failed (rc {rc}); see {d.parent / (name + '.log')}")
    return d, time.time() - t0, usage.ru_utime + usage.ru_stime


def section(name: str, d: Path, seconds: float, cpu_s: float, measured: str) -> list[str]:
    res = json.loads((d / "lr_scan.json").read_text())
    r = res["rule"]
    target = REPO / "conf" / "recipe" / f"tiny_{name}.yaml"
    shutil.copyfile(d / "recipe.yaml", target)
    lines = [f"## {name}", "", f"`python -m sweep +experiment={DATASETS[name][0]} {' '.join(DATASETS[name][1] + SCAN)}` "
             f"(log: `outputs/bench_lr_scan/{name}.log`), {seconds / 60:.0f} minutes wall, {cpu_s / 60:.0f} CPU minutes; "
             f"fitted recipe copied to `conf/recipe/{target.name}` (`recipe=tiny_{name}`). {measured}", "",
             "| N | D | LRs | best LR | SE (x/÷) | at an edge | rule's LR | DeepSeek's LR | rule / DeepSeek |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in res["profiles"]:
        se = f"{math.exp(p['se_log_lr']):.2f}" if p["se_log_lr"] is not None and math.isfinite(p["se_log_lr"]) else "-"
        lines.append(f"| {p['N']:.3g} | {p['D']:.3g} | {len(p['lrs'])} | {p['lr_opt']:.3g} | {se} | "
                     f"{'yes' if p['edge'] else 'no'} | {p['lr_rule']:.3g} | {p['lr_deepseek']:.3g} | "
                     f"{p['lr_rule'] / p['lr_deepseek']:.2f} |")
    q = (f"q = {r['q']:.3f} (80%: {r['q_ci'][0]:.3f} to {r['q_ci'][1]:.3f})" if r["q_fitted"] else "q = 0 (not fitted)")
    lines += ["", f"Rule: lr = {r['lr0']:.3g} (N / {r['n0']:.3g})^-p (D / {r['d0']:.3g})^q with p = {r['p']:.3f} "
              f"(80%: {r['p_ci'][0]:.3f} to {r['p_ci'][1]:.3f}), {q}; {r['points']} profiles fitted, {r['left_out']} "
              f"left out at an edge; chi^2 = {r['chi2']:.1f} on {r['dof']} dof.", "",
              f"![LR scan, {name}](lr_scan_{name}.png)", ""]
    shutil.copyfile(d / "figures" / "lr_scan.png", REPO / "benchmarks" / f"lr_scan_{name}.png")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["stdlib", "code"], choices=list(DATASETS))
    ap.add_argument("--max-flops", type=float, default=3e13)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "lr_scan.md")
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    with ThreadPoolExecutor(max_workers=2) as pool:  # side by side, one thread each
        done = list(pool.map(lambda n: (n, *scan(n, a.max_flops)), a.datasets))
    # each section is rewritten only by the run that scans its dataset, so each says when and how it was measured
    out = ["# LR scans with the tiny preset (each section generated by "
           "`python scripts/bench_lr_scan.py --datasets NAME`)", ""]
    measured = (f"Measured {time.strftime('%Y-%m-%d')} with `python scripts/bench_lr_scan.py {' '.join(sys.argv[1:])}` "
                f"on {os.cpu_count()} CPU cores, one thread per scan; 1-minute load average {load0:.1f} at the start and "
                f"{os.getloadavg()[0]:.1f} at the end.")
    reading = a.out.with_name("lr_scan_reading.md")
    if reading.exists():
        out += [reading.read_text(), "---", ""]
    old = a.out.read_text().split("\n## ")[1:] if a.out.exists() else []
    kept = {s.split("\n", 1)[0]: "## " + s for s in old}  # sections of datasets not rerun this time are kept
    for name, d, seconds, cpu_s in done:
        kept[name] = "\n".join(section(name, d, seconds, cpu_s, measured))
    a.out.write_text("\n".join(out) + "\n" + "\n".join(kept[k] for k in DATASETS if k in kept) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
