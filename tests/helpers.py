"""Helpers shared by the tests (on sys.path through pytest's `pythonpath = ["tests"]`).

- launching the CLI in a subprocess the way users do (``sweep_args``, ``launch``, ``finish``, ``results``);
- synthetic results with known truth (Chinchilla's surface, ``isoflop_grid``, ``write_sweep``, ``write_run``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# the CLI in a subprocess

def sweep_args(tmp_path, corpus_dir, name="t", *extra):
    return [
        f"data.path={corpus_dir}", "data.tokenizer=bpe:320", "data.val_percent=10", f"data.out={tmp_path / 'data'}",
        "model.head_dim=16", "model.aspect_ratio=32", "model.tie_embeddings=true", "model.min_layers=2",
        "recipe.seq_len=32", "recipe.batch_size=8", "recipe.min_steps=20", "recipe.lr=1e-2",
        "trainer.progress=false", "trainer.eval_tokens=4096", "trainer.num_threads=1",
        f"sweep.name={name}", "sweep.budgets=[3e9,1e10]", "sweep.sizes=[1.4e4,3.7e4,7e4]",
        f"hydra.sweep.dir={tmp_path / name}", *extra,
    ]


def launch(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def results(sweep_dir):
    plan = json.loads((sweep_dir / "plan.json").read_text())
    return {r["run_id"]: json.loads((sweep_dir / r["run_id"] / "result.json").read_text()) for r in plan["runs"]}


def attempts(run_dir):
    return [json.loads(l) for l in (run_dir / "attempts.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# synthetic results

# Chinchilla's Approach 3 fit (Hoffmann et al. 2022, Sec. 3.3): E, A, B, alpha, beta.
E, A, B = 1.69, 406.4, 410.7
BUDGETS = np.logspace(18, 22, 5)


def chinchilla_loss(n, d, alpha, beta):
    """L(N, D) = E + A/N^alpha + B/D^beta."""
    return E + A / n**alpha + B / d**beta


def true_n_opt(c, alpha, beta):
    """Closed form (Hoffmann et al. App. D.2): N_opt = G (C/6)^(beta/(alpha+beta)),
    G = (alpha A / (beta B))^(1/(alpha+beta)), when D = C/(6N)."""
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return g * (c / 6) ** (beta / (alpha + beta))


def isoflop_grid(centre, alpha, beta, budgets=BUDGETS, sizes=7, half_width=1.0):
    """Runs at `sizes` log-spaced N within ±half_width decades of centre(C), D = C/(6N)."""
    cs, ns, ds, ls = [], [], [], []
    for c in budgets:
        for x in np.linspace(np.log10(centre(c)) - half_width, np.log10(centre(c)) + half_width, sizes):
            n = 10.0**x
            d = c / (6 * n)
            cs.append(c), ns.append(n), ds.append(d), ls.append(chinchilla_loss(n, d, alpha, beta))
    return cs, ns, ds, ls


# ---------------------------------------------------------------------------------------------
# fit_approach2 on synthetic truth


def write_sweep(root: Path, alpha=0.3, beta=0.3, budgets=(1e12, 1e13, 1e14), sizes=5, extra=True) -> Path:
    """A sweep dir shaped like the trainer's output: <run_id>/result.json per run."""
    root.mkdir(parents=True, exist_ok=True)
    for c in budgets:
        centre = np.log10(true_n_opt(c, alpha, beta))
        for x in np.linspace(centre - 0.6, centre + 0.6, sizes):
            n = 10**x
            d = c / (6 * n)
            run_id = f"C{c:.0e}-N{n:.1e}"
            loss = chinchilla_loss(n, d, alpha, beta)
            rec = {"run_id": run_id, "status": "done", "budget": c, "flops": c * 1.001,
                   "flops_convention": "6ND", "params": n, "params_non_embedding": 0.8 * n,
                   "tokens": d, "steps": 100, "epochs": 1.0, "final_train_loss": loss - 0.01,
                   "final_val_loss": loss}
            (root / run_id).mkdir()
            (root / run_id / "result.json").write_text(json.dumps(rec))
    if extra:
        for run_id, status, loss in (("Z-failed", "failed", None), ("Z-diverged", "diverged", float("nan")),
                                     ("Z-running", "running", None), ("Z-nan", "done", float("nan"))):
            (root / run_id).mkdir()
            (root / run_id / "result.json").write_text(json.dumps(
                {"run_id": run_id, "status": status, "budget": 1e13, "params": 1e5, "tokens": 1e7,
                 "final_val_loss": loss}))
        (root / ".hydra").mkdir()  # subdirs without result.json are ignored
        (root / "multirun.yaml").write_text("x: 1\n")
    return root


def write_run(sweep_dir, budget, n, loss):
    rid = f"C{budget:.3g}-N{n:.3g}"
    d = sweep_dir / rid
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({
        "run_id": rid, "status": "done", "budget": budget, "flops": budget, "params": n,
        "params_non_embedding": n, "tokens": budget / (6 * n), "final_val_loss": loss}))


# Copied from Stanford CS336 (spring 2025) assignment 3, `data/isoflops_curves.json`, 3 of its 9
# budgets: (parameters, compute_budget, final_loss).
CS336_SUBSET = [
    # C = 6e+18
    (49999999, 6e+18, 7.192784500319437),
    (78730505, 6e+18, 6.750171320661809),
    (123969849, 6e+18, 6.406639752150447),
    (195204177, 6e+18, 6.154368665155925),
    (307370470, 6e+18, 5.987783393573661),
    (483988649, 6e+18, 5.903434642394701),
    (762093419, 6e+18, 5.899930270214304),
    (1200000000, 6e+18, 5.977918696411691),
    # C = 1e+20
    (833333333, 1e+20, 4.806980275158798),
    (1312175088, 1e+20, 4.705629625958023),
    (2066164155, 1e+20, 4.6545468112048125),
    (3253402960, 1e+20, 4.6528929644335255),
    (5122841181, 1e+20, 4.701076948284828),
    (8066477497, 1e+20, 4.80077711983122),
    (12701556988, 1e+20, 4.9549955366411735),
    (20000000000, 1e+20, 5.168146276198128),
    # C = 3e+21
    (2499999999, 3e+21, 3.9889013607620307),
    (4234534950, 3e+21, 3.8781290516645894),
    (7172514497, 3e+21, 3.806898437824491),
    (12148905329, 3e+21, 3.773187514504335),
    (20577985689, 3e+21, 3.776238595631232),
    (34855279842, 3e+21, 3.8165457450037117),
    (59038360277, 3e+21, 3.8958849698872884),
    (100000000000, 3e+21, 4.017388664771504),
]
