"""The LR scan's fits (``sweep.mode=lr_scan``; its runs are planned by sweep/lrscan.py).

Per size (and, with forks, per length D): parabolas in log LR through the best run and its neighbours (3, and
up to 5 points) give the best peak LR, lr*, with a standard error that includes the curve's asymmetry (see
``fit_profile``).  A best
run at either end of the LRs tried means the optimum lies beyond them: the scan adds one LR there (``extensions``),
up to ``sweep.scan.extend`` per size.

Across sizes, ``recipe.lr_rule=power``,

    log lr* = log lr0 - p log(N / N0) + q log(D / D0),

by weighted least squares (weights 1 / SE(log lr*)^2; N0, D0 the geometric means of the scan's points), with
80% intervals from the parameters' covariance (scaled up by the reduced chi-square when the points scatter more
than their errors).  Without forks every size has one D, which cannot separate p from q: q stays 0.

``scan_outputs`` writes recipe.yaml (the recipe section to load in later sweeps), conf/recipe/lr_scan.yaml (the
same, where ``hydra.searchpath`` finds it as the group option ``recipe=lr_scan``), lr_scan.json and
figures/lr_scan.png into the scan's sweep directory.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sweep.rundir import read_plan, read_result, write_bytes_atomic, write_json_atomic

NOISE = 0.003  # nats: the floor on a profile's noise (seed-to-seed SD of the smallest CPU runs is ~0.002-0.005)
Z80 = 1.2816  # the normal quantile of an 80% two-sided interval (the project's CI level)
MAX_POINTS = 5
RECIPE_FILE = "recipe.yaml"
OPTION = "lr_scan"  # the group option name under <scan dir>/conf/recipe/


def scan_rows(sweep_dir: Path) -> list[dict]:
    """The finished lr_scan runs: N (params), D (tokens), peak LR and final validation loss."""
    rows = []
    for s in read_plan(sweep_dir).runs:
        r = read_result(Path(sweep_dir) / s.run_id)
        if s.kind == "lr_scan" and r is not None and r.status == "done" and r.final_val_loss is not None:
            rows.append({"run_id": s.run_id, "N": s.params, "D": s.tokens, "lr": s.recipe.lr, "loss": r.final_val_loss})
    return rows


def _parabola(x: np.ndarray, y: np.ndarray, noise: float):
    """(vertex, its SE, coefficients) of y = a x^2 + b x + c, or None without a minimum.  SE by the delta method:
    Var(x*) = g^T Cov(a, b) g with g = (b / (2 a^2), -1 / (2 a)); the noise is the residual variance, at least noise^2."""
    X = np.stack([x * x, x, np.ones_like(x)], 1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    a, b = coef[0], coef[1]
    if not a > 0:
        return None
    dof = len(x) - 3
    resid = y - X @ coef
    s2 = max(float(resid @ resid) / dof if dof > 0 else 0.0, noise * noise)
    cov = s2 * np.linalg.inv(X.T @ X)
    g = np.array([b / (2 * a * a), -1 / (2 * a)])
    return -b / (2 * a), float(math.sqrt(g @ cov[:2, :2] @ g)), coef


def fit_profile(lrs, losses, noise: float = NOISE) -> dict:
    """The best LR of one size (one length): {lr_opt, se_log_lr, edge (-1 low end, 1 high end, 0 inside), points}.

    x = ln lr.  The vertex comes from the parabola through the best run and its two neighbours, the least biased
    window when the curve is asymmetric (it usually is: the loss rises faster above the optimum).  The parabola
    through up to MAX_POINTS points around it measures that asymmetry: the two vertices' difference is added to the
    SE as a model error, SE^2 = SE_3^2 + (x*_3 - x*_5)^2; on synthetic asymmetric curves this covers the true optimum
    within one SE in 70-90% of replicates (tests/analysis/test_lrscan.py)."""
    order = np.argsort(lrs)
    x, y = np.log(np.asarray(lrs, dtype=float)[order]), np.asarray(losses, dtype=float)[order]
    n, k = len(x), int(np.argmin(y))
    edge = -1 if k == 0 else 1 if k == n - 1 else 0
    out = {"lr_opt": float(math.exp(x[k])), "se_log_lr": float("inf"), "edge": edge, "points": 0,
           "loss_min": float(y[k]), "lr_best_run": float(math.exp(x[k]))}
    if n < 3 or edge:
        return out  # no vertex to trust: the optimum lies beyond the LRs tried

    def window(m):
        i0 = max(0, min(k - m // 2, n - m))
        return x[i0:i0 + m], y[i0:i0 + m]

    three = _parabola(*window(3), noise)
    if three is None:
        return out
    x_opt, se, coef = three
    wide = _parabola(*window(min(n, MAX_POINTS)), noise) if n > 3 else None
    if wide is not None:
        se = math.hypot(se, x_opt - wide[0])
    out.update(lr_opt=float(math.exp(x_opt)), se_log_lr=float(se), points=int(min(n, MAX_POINTS)),
               loss_min=float(coef[2] - coef[1] ** 2 / (4 * coef[0])), coeffs=[float(c) for c in coef])
    return out


def profiles(rows: list[dict]) -> list[dict]:
    """fit_profile for every (N, D) of the scan, ascending."""
    keys = sorted({(r["N"], r["D"]) for r in rows})
    out = []
    for n, d in keys:
        pts = [r for r in rows if (r["N"], r["D"]) == (n, d)]
        fit = fit_profile([p["lr"] for p in pts], [p["loss"] for p in pts])
        out.append({"N": n, "D": d, "lrs": sorted(p["lr"] for p in pts), **fit})
    return out


def extensions(rows: list[dict], factor: float, n_lrs: int, extend: int) -> dict:
    """{N: every LR to train at that size}: the LRs tried, plus one beyond the edge of each profile whose best run is
    at an edge, while the size has fewer than ``extend`` LRs beyond the scan's own ``n_lrs``.  A pure function of the
    results, so a relaunch asks for the same runs."""
    out = {}
    for n in sorted({r["N"] for r in rows}):
        tried = sorted({r["lr"] for r in rows if r["N"] == n})
        new = set(tried)
        for p in profiles([r for r in rows if r["N"] == n]):
            if len(new) - n_lrs >= extend:
                break
            if p["edge"] < 0:
                new.add(min(tried) / factor)
            elif p["edge"] > 0:
                new.add(max(tried) * factor)
        out[n] = sorted(new)
    return out


def fit_rule(profs: list[dict]) -> dict:
    """The power rule through the profiles' best LRs (edge profiles, which are extrapolations, left out)."""
    use = [p for p in profs if p["edge"] == 0 and math.isfinite(p["se_log_lr"])]
    sizes = sorted({p["N"] for p in use})
    if len(sizes) < 2:
        raise ValueError(f"only {len(sizes)} size(s) have a best LR inside their scan; the rule needs >= 2: "
                         "widen sweep.scan.lr_factor or raise sweep.scan.extend")
    n0 = float(math.exp(np.mean([math.log(p["N"]) for p in use])))
    d0 = float(math.exp(np.mean([math.log(p["D"]) for p in use])))
    fit_q = any(len({p["D"] for p in use if p["N"] == n}) > 1 for n in sizes)
    y = np.array([math.log(p["lr_opt"]) for p in use])
    cols = [np.ones(len(use)), -np.log([p["N"] / n0 for p in use])]
    if fit_q:
        cols.append(np.log([p["D"] / d0 for p in use]))
    X = np.stack(cols, 1)
    w = 1 / np.array([p["se_log_lr"] for p in use]) ** 2
    XtW = X.T * w
    cov = np.linalg.inv(XtW @ X)
    beta = cov @ XtW @ y
    dof = len(use) - X.shape[1]
    chi2 = float(((y - X @ beta) ** 2 * w).sum())
    cov = cov * max(1.0, chi2 / dof) if dof > 0 else cov  # scatter beyond the errors widens the intervals
    se = np.sqrt(np.diag(cov))
    out = {"lr0": float(math.exp(beta[0])), "n0": n0, "d0": d0, "p": float(beta[1]), "p_se": float(se[1]),
           "q": float(beta[2]) if fit_q else 0.0, "q_se": float(se[2]) if fit_q else None, "q_fitted": fit_q,
           "chi2": chi2, "dof": int(dof), "points": len(use), "left_out": len(profs) - len(use)}
    out["p_ci"] = [out["p"] - Z80 * out["p_se"], out["p"] + Z80 * out["p_se"]]
    out["q_ci"] = [out["q"] - Z80 * out["q_se"], out["q"] + Z80 * out["q_se"]] if fit_q else None
    return out


def rule_lr(rule: dict, n: float, d: float) -> float:
    return rule["lr0"] * (n / rule["n0"]) ** -rule["p"] * (d / rule["d0"]) ** rule["q"]


def scan_outputs(sweep_dir: Path, recipe_section: dict) -> dict:
    """Fit the scan of ``sweep_dir`` and write its outputs (see the module docstring); returns lr_scan.json's
    content, with ``override``: the arguments that load the fitted recipe in a later sweep."""
    from omegaconf import OmegaConf

    sweep_dir = Path(sweep_dir).resolve()
    rows = scan_rows(sweep_dir)
    profs = profiles(rows)
    rule = fit_rule(profs)
    for p in profs:  # the fitted rule, and DeepSeek LLM's budget rule at each run's C = D x FLOPs per token
        p["lr_rule"] = rule_lr(rule, p["N"], p["D"])
    specs = {s.run_id: s for s in read_plan(sweep_dir).runs}
    for p in profs:
        c = next(s.flops for s in specs.values() if s.kind == "lr_scan" and (s.params, s.tokens) == (p["N"], p["D"]))
        p["lr_deepseek"] = 0.3118 * c ** -0.1250  # DeepSeek LLM (2024, sec. 3.1)
    recipe = {**recipe_section, "lr_rule": "power", "lr": rule["lr0"], "lr_n0": rule["n0"], "lr_p": rule["p"],
              "lr_d0": rule["d0"], "lr_q": rule["q"]}
    yaml = OmegaConf.to_yaml(OmegaConf.create(recipe))
    # the scan's folder as the user named it from here (relative when inside the working directory), so a recipe
    # copied into conf/recipe/ does not carry this machine's absolute path
    shown = sweep_dir.relative_to(Path.cwd()) if sweep_dir.is_relative_to(Path.cwd()) else sweep_dir
    head = (f"# Fitted by the LR scan in {shown} (python -m sweep ... sweep.mode=lr_scan):\n"
            f"#   lr = {rule['lr0']:.4g} * (N / {rule['n0']:.4g})^-{rule['p']:.4f} * (D / {rule['d0']:.4g})^{rule['q']:.4f}\n"
            f"#   p = {rule['p']:.4f} +- {rule['p_se']:.4f}" + (f", q = {rule['q']:.4f} +- {rule['q_se']:.4f}" if rule["q_fitted"]
                                                             else ", q = 0 (not fitted: one length per size)") + "\n")
    write_bytes_atomic(sweep_dir / RECIPE_FILE, (head + yaml).encode())
    write_bytes_atomic(sweep_dir / "conf" / "recipe" / f"{OPTION}.yaml", (head + yaml).encode())
    result = {"rule": rule, "profiles": profs, "recipe": recipe,
              "override": f"hydra.searchpath=[file://{sweep_dir / 'conf'}] recipe={OPTION}"}
    write_bytes_atomic(sweep_dir / "figures" / "lr_scan.png", scan_figure(rows, profs, rule))
    write_json_atomic(sweep_dir / "lr_scan.json", result)
    return result


def format_scan(result: dict) -> str:
    r = result["rule"]
    lines = [f"{'N':>9} {'D':>10} {'LRs':>4} {'best lr':>9} {'+- (x)':>7} {'edge':>5} {'rule lr':>9} {'deepseek':>9}"]
    for p in result["profiles"]:
        lines.append(f"{p['N']:>9.3g} {p['D']:>10.3g} {len(p['lrs']):>4d} {p['lr_opt']:>9.3g} "
                     f"{math.exp(p['se_log_lr']) if math.isfinite(p['se_log_lr']) else float('inf'):>7.2f} "
                     f"{p['edge']:>5d} {p['lr_rule']:>9.3g} {p['lr_deepseek']:>9.3g}")
    q = (f", q = {r['q']:.3f} [{r['q_ci'][0]:.3f}, {r['q_ci'][1]:.3f}]" if r["q_fitted"] else ", q = 0 (one length per size)")
    lines.append(f"lr = {r['lr0']:.3g} (N/{r['n0']:.3g})^-p (D/{r['d0']:.3g})^q: p = {r['p']:.3f} "
                 f"[{r['p_ci'][0]:.3f}, {r['p_ci'][1]:.3f}]{q} (80%; {r['points']} profiles, {r['left_out']} at an edge left out)")
    lines.append(f"load it in a later sweep with: {result['override']}")
    return "\n".join(lines)


def scan_figure(rows: list[dict], profs: list[dict], rule: dict) -> bytes:
    """Loss against LR per size (and length) with each fitted minimum; lr*(N) with the rule."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("viridis")
    ns = sorted({p["N"] for p in profs})
    for p in profs:
        color = cmap(ns.index(p["N"]) / max(1, len(ns) - 1))
        pts = sorted((r["lr"], r["loss"]) for r in rows if (r["N"], r["D"]) == (p["N"], p["D"]))
        ax1.plot(*zip(*pts), "o-", color=color, ms=4, lw=1, label=f"N {p['N']:.3g}, D {p['D']:.3g}")
        if "coeffs" in p:
            xs = np.linspace(math.log(pts[0][0]), math.log(pts[-1][0]), 100)
            ax1.plot(np.exp(xs), np.polyval(p["coeffs"], xs), ":", color=color, lw=1)
        ax1.plot([p["lr_opt"]], [p["loss_min"]], "*", color=color, ms=10, mec="k", mew=0.5)
        err = [[p["lr_opt"] * (1 - math.exp(-p["se_log_lr"]))], [p["lr_opt"] * (math.exp(p["se_log_lr"]) - 1)]] \
            if math.isfinite(p["se_log_lr"]) else None
        ax2.errorbar([p["N"]], [p["lr_opt"]], yerr=err, fmt="o" if p["edge"] == 0 else "x", color=color, capsize=3)
    n_line = np.geomspace(min(ns) / 1.5, max(ns) * 1.5, 50)
    ax2.plot(n_line, [rule_lr(rule, n, rule["d0"]) for n in n_line], "k-", lw=1,
             label=f"lr* = {rule['lr0']:.3g} (N/{rule['n0']:.3g})^-{rule['p']:.2f}" + (
                 f" (D/{rule['d0']:.3g})^{rule['q']:.2f}, at D = {rule['d0']:.3g}" if rule["q_fitted"] else ""))
    ax1.set(xscale="log", xlabel="peak learning rate", ylabel="final validation loss", title="loss vs LR per size")
    ax2.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="best peak LR", title="lr*(N) and the fitted rule")
    ax1.legend(fontsize=6)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
