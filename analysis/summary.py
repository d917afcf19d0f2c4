"""format_summary(): a few lines of a fit.json for the console (ASCII, any console)."""

from __future__ import annotations

from analysis.fit import result_fits
from analysis.validation import summary_lines


def _ci_str(ci, fmt="{:.3f}"):
    return f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else ""


def format_summary(result: dict) -> str:
    """A few lines for humans (ASCII, any console)."""
    lines = []
    for f in result_fits(result):
        lines.append(f"{f['dataset']}: {f['n_runs']} runs ({f['n_skipped']} skipped) from {f['source']}")
        for note in f["notes"]:
            lines.append(f"  note: {note}")
        for name in ("approach1", "approach2", "approach3"):
            fit = f[name]
            label = name.replace("approach", "Approach ")
            if not fit:
                lines.append(f"  {label}: skipped ({f['approaches_skipped'][name]})")
                continue
            ci = fit.get("ci", {})
            a = "-" if fit["a"] is None else f"{fit['a']:.3f}"
            b = "-" if fit["b"] is None else f"{fit['b']:.3f}"
            lines.append(f"  {label}: N_opt ~ C^{a}{_ci_str(ci.get('a'))}   D_opt ~ C^{b}{_ci_str(ci.get('b'))}")
            if name == "approach3":
                lines.append(f"    E = {fit['E']:.4g}, A = {fit['A']:.4g}, B = {fit['B']:.4g}, "
                             f"alpha = {fit['alpha']:.4f}, beta = {fit['beta']:.4f}"
                             + (f"; on C = 6ND a = {fit['a_6ND']:.3f}" if "a_6ND" in fit else ""))
            filt = (f.get("filters") or {}).get(name)
            if filt and filt["dropped"]:
                lines.append(f"    {filt['dropped']} runs left out by the filter, {filt['runs']} fitted")
        if f["approach2"]:
            fit = f["approach2"]
            lines.append(f"    {'budget':>9} {'N_opt':>10} {'D_opt':>10} {'L_opt':>8} {'runs':>5}  in grid")
            for c, n, d, l, p in zip(fit["budgets"], fit["N_opt"], fit["D_opt"], fit["L_opt"], fit["parabolas"]):
                lines.append(f"    {c:9.3g} {n:10.3g} {d:10.3g} {l:8.4f} {p['n_points']:5d}  "
                             f"{'yes' if p['inside_grid'] else 'NO (extrapolated)'}")
            for d in fit["dropped"]:
                lines.append(f"    dropped {d['budget']:.3g}: {d['reason']}")
        if f.get("noise"):
            nz = f["noise"]
            lines.append(f"  run-to-run noise: sigma = {nz['sigma']:.3g} from {nz['repeated_points']} repeated points"
                         + (f"; parabola misfit {nz['lack_of_fit']:.2f}x noise" if nz["lack_of_fit"] is not None else ""))
        for proj in f["projections"]:
            parts = []
            for name in ("approach1", "approach2", "approach3"):
                p = proj[name]
                if p:
                    parts.append(f"{name[-1]}: N {p['N']:.3g}{_ci_str(p.get('N_ci'), '{:.3g}')}, "
                                 f"D {p['D']:.3g}{_ci_str(p.get('D_ci'), '{:.3g}')}")
            lines.append(f"  at C = {proj['flops']:.3g}: " + "; ".join(parts))
        if f.get("validation"):
            lines += [f"  {line}" for line in summary_lines(f["validation"])]
        for w in f["warnings"]:
            lines.append(f"  WARNING {w}")
    return "\n".join(lines)
