"""report.md: the fits as tables next to Chinchilla's published numbers, warnings, and the figures."""

from __future__ import annotations

from analysis.compare import LABEL, TABLE3, seeds_rows

# Published Approach 3 fits, for scale: Chinchilla Sec. 3.3 and Epoch AI's refit of the Figure 4
# data (Besiroglu et al. 2024, Table 1).
PARAMETRIC_SEEDS = {
    "Chinchilla (Hoffmann et al. 2022)": (1.69, 406.4, 410.7, 0.34, 0.28),
    "Epoch AI refit (Besiroglu et al. 2024)": (1.817, 482.01, 2085.43, 0.3478, 0.3659),
}
MAX_SKIPPED_LISTED = 20


def _g(v, fmt="{:.3g}"):
    return "-" if v is None else fmt.format(v)


def _ci(ci, fmt="{:.3g}"):
    return "" if not ci else f" ({fmt.format(ci[0])}, {fmt.format(ci[1])})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _noise_lines(nz) -> list[str]:
    """Run-to-run noise from repeated grid points, set against the isoFLOP profiles."""
    if not nz:
        return []
    L = [f"**Run-to-run noise** (sweep.seeds): σ = {nz['sigma']:.3g} nats, pooled over "
         f"{nz['repeated_points']} repeated grid points ({nz['dof']} degrees of freedom)."]
    if nz["depth_sigmas"]:
        depths = ", ".join(f"{c:.3g}: {d:.1f}σ" for c, d in zip(nz["budgets"], nz["depth_sigmas"]))
        L[-1] += f"  Profile depth (max - min point mean) per budget: {depths}."
    if nz["lack_of_fit"] is not None:
        L[-1] += (f"  Parabola residual RMS {nz['rms_residual']:.3g}, {nz['lack_of_fit']:.2f}× what the noise "
                  f"alone would give (~1 is a good fit).")
    return L + [""]


def _dataset_section(f: dict, level: float, heading: str) -> list[str]:
    pct = f"{level:.0%}"
    L = [f"{heading} {f['dataset']}", ""]
    L.append(f"Source `{f['source']}`: {f['n_runs']} runs fitted, {f['n_skipped']} skipped.")
    L.append("")
    for s in f["skipped"][:MAX_SKIPPED_LISTED]:
        L.append(f"- skipped run `{s['run_id']}`: {s['reason']}")
    if len(f["skipped"]) > MAX_SKIPPED_LISTED:
        L.append(f"- ... and {len(f['skipped']) - MAX_SKIPPED_LISTED} more (see results.csv)")
    for n in f["notes"]:
        L.append(f"- note: {n}")
    fitted = [LABEL[a] for a in ("approach1", "approach2", "approach3") if f[a]]
    L.append(f"- fitted: {', '.join(fitted) if fitted else 'none'}")
    for a, why in f["approaches_skipped"].items():
        L.append(f"- **{LABEL[a]} skipped**: {why}")
    L.append("")

    L.append(f"**Exponents** N_opt ∝ C^a, D_opt ∝ C^b ({pct} bootstrap intervals; Chinchilla's are "
             f"10th-90th percentiles):")
    L.append("")
    L += _table(["source", "a", "b"], [list(r) for r in seeds_rows(f, f["dataset"])])
    if f["approach2"] and f["approach2"].get("ci_runs"):
        w = f["approach2"]["ci_runs"]
        L.append(f"Approach 2's intervals resample runs within each budget (the design kept); resampling "
                 f"all runs pooled gives a{_ci(w.get('a'), '{:.3f}')}, b{_ci(w.get('b'), '{:.3f}')} "
                 f"(conservative with few runs per budget).  Approach 1 resamples runs; Approach 3 reweights "
                 f"them with Dirichlet(1, …, 1) weights (Bayesian bootstrap; benchmarks/fit_calibration.md).")
        L.append("")

    if f["projections"]:
        L.append(f"**Projections** (compute-optimal N and D at each budget, {pct} intervals):")
        L.append("")
        rows = []
        for p in f["projections"]:
            for a in ("approach1", "approach2", "approach3"):
                q = p[a]
                if q:
                    rows.append([f"{p['flops']:.3g}", LABEL[a], _g(q["N"]) + _ci(q.get("N_ci")),
                                 _g(q["D"]) + _ci(q.get("D_ci")), f"{q['D'] / q['N']:.3g}"])
            if p["flops"] in TABLE3:
                n, d = TABLE3[p["flops"]]
                rows.append([f"{p['flops']:.3g}", "Chinchilla Table 3 (Approach 1)", f"{n:.3g}", f"{d:.3g}",
                             f"{d / n:.3g}"])
        L += _table(["FLOPs", "approach", "N_opt", "D_opt", "tokens/param"], rows)

    f3 = f["approach3"]
    if f3:
        ci = f3.get("ci", {})
        L.append(f"**Approach 3** L(N, D) = E + A/N^α + B/D^β (Huber δ = 1e-3 on log loss, "
                 f"L-BFGS from Chinchilla's {f3['n_starts']}-point grid; {f3['n_runs']} runs):")
        L.append("")
        rows = [["this fit"] + [_g(f3[k], "{:.4g}") + _ci(ci.get(k), "{:.4g}")
                                for k in ("E", "A", "B", "alpha", "beta")]]
        rows += [[name, *(f"{v:g}" for v in vals)] for name, vals in PARAMETRIC_SEEDS.items()]
        L += _table(["", "E", "A", "B", "α", "β"], rows)
        if f3.get("E_bpb") is not None:
            L.append(f"E = {f3['E_bpb']:.4g} bits per byte ({f['bytes_per_token']:.4g} bytes per token).")
            L.append("")

    f2 = f["approach2"]
    if f2:
        bpb = f2.get("L_opt_bpb")
        L.append("**Approach 2** per budget (parabola vertices; ✗ = outside the sizes run):")
        L.append("")
        rows = []
        for i, (c, n, d, l, p) in enumerate(zip(f2["budgets"], f2["N_opt"], f2["D_opt"], f2["L_opt"],
                                                 f2["parabolas"])):
            rows.append([f"{c:.3g}", f"{n:.3g}", f"{d:.3g}", f"{l:.4f}" + (f" ({bpb[i]:.4f} bpb)" if bpb else ""),
                         p["n_points"], "✓" if p["inside_grid"] and f2["parabolas_D"][i]["inside_grid"] else "✗"])
        L += _table(["budget", "N_opt", "D_opt", "L_opt", "runs", "in grid"], rows)
        for d in f2["dropped"]:
            L.append(f"- dropped budget {d['budget']:.3g}: {d['reason']}")
        bias = f.get("approach2_bias") or {}
        if "bias_a" in bias:
            L.append(f"- grid check on the fitted Approach 3 surface: Approach 2 gives a = "
                     f"{bias['a_approach2_on_surface']:.3f}, b = {bias['b_approach2_on_surface']:.3f} "
                     f"where the surface's optima give {bias['a_surface']:.3f}, {bias['b_surface']:.3f} "
                     f"(bias {bias['bias_a']:+.3f}, {bias['bias_b']:+.3f}).")
        L.append("")
    L += _noise_lines(f.get("noise"))

    f1 = f["approach1"]
    if f1:
        L.append(f"**Approach 1**: envelope of {f1['n_runs']} smoothed training curves on {f1['n_grid']} "
                 f"log-spaced FLOP values, each run over its last {f1['tail_frac']:.0%}; "
                 f"{f1['n_envelope']} values have an envelope point, from "
                 f"{len(f1['runs_on_envelope'])} runs.")
        L.append("")

    if f["warnings"]:
        L.append("**Warnings**")
        L.append("")
        L += [f"- {w}" for w in f["warnings"]]
        L.append("")
    return L


def render_report(result: dict, figures: list[str]) -> str:
    level = result["ci_level"]
    multi = "datasets" in result
    fits = list(result["datasets"].values()) if multi else [result]
    L = ["# Compute-optimal scaling fit", ""]
    L.append(f"N = {result['params']} parameters; {result['bootstrap']} bootstrap resamples "
             f"(seed {result['seed']}); intervals are {level:.0%} percentile intervals.  "
             f"Approaches after Hoffmann et al. 2022 (Chinchilla); the isoFLOP figure after its "
             f"C4/GitHub figure, the envelope figure after its Figure 2.")
    L.append("")
    for f in fits:
        L += _dataset_section(f, level, "##" if multi else "## Dataset:")
    if figures:
        L.append("## Figures")
        L.append("")
        names = {"figures/isoflop.png": "Approach 2: isoFLOP profiles",
                 "figures/envelope.png": "Approach 1: training-curve envelope"}
        for fig in figures:
            L.append(f"![{names.get(fig, fig)}]({fig})")
            L.append("")
    return "\n".join(L)
