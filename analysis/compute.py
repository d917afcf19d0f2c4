"""The sweep's own compute axis: training FLOPs per token as a function of model size, fpt(N).

Approaches 1 and 2 fit N_opt(C) on the FLOPs each run counted (Chinchilla App. F, models/flops.py).  Turning a fit
into an allocation, N_opt(C) and D_opt(C), needs that same count: D_opt = C / fpt(N_opt), and Approach 3's N_opt(C)
minimises L(N, C / fpt(N)).  With fpt = 6N this is Chinchilla's closed form (App. D.2); at our sizes the counted
fpt is 1.4-2.1 x 6N (attention, embedding and logit terms), so the closed form would put Approach 3 on another axis
than Approaches 1 and 2.

Where fpt comes from, best first (``ComputeAxis.source``):
  ladder  a sweep dir whose multirun.yaml holds the ``model`` section (LadderConfig) that shaped its runs: every rung
          of that ladder (models.ladder) at the runs' vocab and sequence length, counted under the runs' convention
          (models.flops.flops_per_token, the trainer's own count), interpolated log-log between rungs.  Past the
          widest rung the ladder is extended by its own shape rule (a larger max_d_model) up to LADDER_EXTEND x its
          width; beyond that fpt/N is held (it is within 0.1% of its limit there).
  runs    results that give each run's FLOPs and tokens (or flops_per_token) but not the ladder (a CSV, a sweep
          copied without multirun.yaml): the runs' own fpt, interpolated log-log between their sizes.  Outside them
          fpt/N is held at the nearest size's value, an approximation that the report states.
  6ND     results without a count per token (tokens or FLOPs derived from the other): fpt = 6N.
Below the smallest rung or size, fpt/N is held as well.

Everything here is pure: rows in, numbers out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from models.flops import flops_per_token, param_counts
from models.ladder import LadderConfig, ladder
from models.transformer import ModelConfig

LADDER_EXTEND = 4  # the ladder is extended by its own rule up to this factor past its widest rung (d_model)
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "vocab_size", "seq_len", "tie_embeddings")
SEARCH_HALF_WIDTH = 6.0  # Approach 3's optimum is searched within +-6 in ln N of the 6N closed form (e^6 = 403x)
SEARCH_STEP = 0.05  # coarse grid in ln N, then golden-section search
GOLDEN_ITERS = 40  # bracket 0.1 -> 0.1 * 0.618^40 ~ 4e-10 in ln N


def _n_key(row: dict, params: str):
    return row["params"] if params == "total" else row["params_non_embedding"]


def _row_fpt(row: dict) -> float | None:
    """FLOPs per token as the run counted them: the spec's value, else its FLOPs over its tokens."""
    if row.get("flops_per_token"):
        return float(row["flops_per_token"])
    if row.get("tokens_derived") or row.get("flops_derived"):
        return None
    f, t = row.get("flops"), row.get("tokens")
    return float(f) / float(t) if f and t and f > 0 and t > 0 else None


@dataclass
class ComputeAxis:
    """fpt(N): a table of (ln N, ln fpt), ascending in N (see the module docstring for the sources)."""

    source: str  # ladder | runs | 6ND
    params: str = "total"
    log_n: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_f: np.ndarray = field(default_factory=lambda: np.zeros(0))
    convention: str | None = None
    ladder: dict | None = None  # LadderConfig fields (source "ladder")
    vocab_size: int | None = None
    seq_len: int | None = None
    max_d_model: int | None = None  # the width the table reaches now (grows by extension)
    run_points: list = field(default_factory=list)  # [[N, fpt]] at the runs' own sizes
    note: str = ""

    def fpt(self, N):
        """Training FLOPs per token at N (array-like); float for a scalar."""
        N = np.asarray(N, dtype=float)
        if self.source == "6ND":
            out = 6.0 * N
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.log(N)
            y = np.interp(x, self.log_n, self.log_f) if len(self.log_n) > 1 else np.full_like(x, self.log_f[0])
            # outside the table fpt/N is held: ln fpt = ln fpt_end + (ln N - ln N_end)
            y = np.where(x < self.log_n[0], self.log_f[0] + (x - self.log_n[0]), y)
            y = np.where(x > self.log_n[-1], self.log_f[-1] + (x - self.log_n[-1]), y)
            out = np.exp(y)
        return float(out) if out.ndim == 0 else out

    def tokens(self, C, N):
        """D = C / fpt(N): the tokens that compute C buys a model of N parameters."""
        return np.asarray(C, dtype=float) / self.fpt(N)

    def cover(self, n_max: float) -> None:
        """Extend a ladder table by its shape rule until it reaches n_max (at most LADDER_EXTEND x its width)."""
        if self.source != "ladder" or not np.isfinite(n_max) or n_max <= math.exp(self.log_n[-1]):
            return
        base = LadderConfig(**self.ladder)
        limit = base.max_d_model * LADDER_EXTEND
        md = self.max_d_model
        while n_max > math.exp(self.log_n[-1]) and md < limit:
            md = min(2 * md, limit)
            self.log_n, self.log_f = _ladder_table(base, self.vocab_size, self.seq_len, self.convention,
                                                   self.params, md)
        self.max_d_model = md

    def describe(self) -> str:
        """One line for the report."""
        if self.source == "6ND":
            return f"fpt = 6N (C = 6ND): {self.note or 'the results carry no FLOP count per token'}"
        ratio = [f / (6 * n) for n, f in self.run_points]
        span = f"; at the runs' sizes fpt is {min(ratio):.3g}-{max(ratio):.3g} x 6N" if ratio else ""
        if self.source == "ladder":
            return (f"fpt(N) from the sweep's ladder ({self.convention} count, models/flops.py; vocab {self.vocab_size}, "
                    f"seq_len {self.seq_len}), log-log between rungs, the shape rule past the widest{span}")
        return (f"fpt(N) from the runs' own FLOPs per token, log-log between their sizes; outside "
                f"{math.exp(self.log_n[0]):.3g}-{math.exp(self.log_n[-1]):.3g} fpt/N is held (an approximation; "
                f"analyse the sweep dir for the exact ladder){span}")

    def to_json(self) -> dict:
        out = {"source": self.source, "params": self.params, "convention": self.convention,
               "description": self.describe(), "run_points": self.run_points}
        if self.source == "ladder":
            out.update({"ladder": self.ladder, "vocab_size": self.vocab_size, "seq_len": self.seq_len,
                        "rungs": int(len(self.log_n)), "max_d_model": self.max_d_model})
        elif self.source == "runs":
            out["table"] = [[math.exp(n), math.exp(f)] for n, f in zip(self.log_n, self.log_f)]
        if self.note:
            out["note"] = self.note
        return out


def _ladder_table(cfg: LadderConfig, vocab: int, seq_len: int, convention: str, params: str, max_d_model: int):
    shapes = ladder(vocab, seq_len, dataclasses.replace(cfg, max_d_model=max_d_model))
    key = "params" if params == "total" else "params_non_embedding"
    n = np.array([param_counts(s)[key] for s in shapes], dtype=float)
    f = np.array([flops_per_token(s, convention) for s in shapes], dtype=float)
    keep = np.concatenate([[True], np.diff(n) > 0])  # strictly increasing N for the interpolation
    return np.log(n[keep]), np.log(f[keep])


def _ladder_axis(rows, params: str, ladder_cfg: dict, conventions: set) -> tuple[ComputeAxis | None, str]:
    """The axis from the sweep's ladder, or (None, why not)."""
    models = [r.get("model") for r in rows]
    if any(not isinstance(m, dict) for m in models):
        return None, "some runs record no model shape"
    if len(conventions) != 1:
        return None, f"the runs use {len(conventions)} FLOP conventions"
    vocab = {int(m["vocab_size"]) for m in models}
    seq = {int(m["seq_len"]) for m in models}
    if len(vocab) != 1 or len(seq) != 1:
        return None, "the runs differ in vocab size or sequence length"
    known = {f.name for f in dataclasses.fields(LadderConfig)}
    try:
        cfg = LadderConfig(**{k: v for k, v in ladder_cfg.items() if k in known})
        (convention,) = conventions
        vocab, seq = vocab.pop(), seq.pop()
        shapes = ladder(vocab, seq, cfg)
    except (TypeError, ValueError) as e:
        return None, f"its model section does not build a ladder ({e})"
    rungs = {tuple(getattr(s, k) for k in SHAPE_KEYS) for s in shapes}
    for r, m in zip(rows, models):
        if tuple(m.get(k) for k in SHAPE_KEYS) not in rungs:
            return None, f"run {r['run_id']}'s shape is not a rung of the ladder in multirun.yaml"
        fpt = _row_fpt(r)
        ours = flops_per_token(ModelConfig(**{k: m[k] for k in SHAPE_KEYS}), convention)
        if fpt is not None and abs(fpt / ours - 1) > 1e-9:
            return None, f"run {r['run_id']} counted {fpt:.6g} FLOPs per token, the ladder {ours:.6g}"
    log_n, log_f = _ladder_table(cfg, vocab, seq, convention, params, cfg.max_d_model)
    return ComputeAxis("ladder", params, log_n, log_f, convention, dataclasses.asdict(cfg), vocab, seq,
                       cfg.max_d_model), ""


def compute_axis(rows: list[dict], params: str = "total", ladder_cfg: dict | None = None) -> ComputeAxis:
    """The compute axis of these (usable) runs; ladder_cfg: the sweep's `model` section, if known."""
    fpts = [_row_fpt(r) for r in rows]
    missing = sum(f is None for f in fpts)
    if not rows or missing:
        return ComputeAxis("6ND", params, note=f"{missing} of {len(rows)} runs have no FLOP count per token "
                                               f"(their tokens or FLOPs are derived)")
    sizes: dict[float, list[float]] = {}
    for r, f in zip(rows, fpts):
        sizes.setdefault(float(_n_key(r, params)), []).append(f)
    points = [[n, float(np.median(v))] for n, v in sorted(sizes.items())]
    conventions = {r.get("flops_convention") for r in rows} - {None}
    why = "the results have no ladder (multirun.yaml)"
    if ladder_cfg:
        axis, why = _ladder_axis(rows, params, ladder_cfg, conventions)
        if axis is not None:
            axis.run_points = points
            return axis
        why = f"multirun.yaml's ladder not used: {why}"
    n, f = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return ComputeAxis("runs", params, n, f, conventions.pop() if len(conventions) == 1 else None,
                       run_points=points, note=why)


# ---------------------------------------------------------------------------------------------
# allocations on the axis


def allocate(fit: dict, C, axis: ComputeAxis | None):
    """(N_opt, D_opt) minimising L(N, D) = E + A/N^α + B/D^β subject to C = fpt(N)·D.

    fit: {E, A, B, alpha, beta} as floats or equal-shape arrays (bootstrap samples, shape S); C: scalar or (K,).
    Returns arrays of shape broadcast(S, K) (floats for scalars); NaN where the surface has no interior optimum.
    With fpt = 6N this is App. D.2's closed form N_opt = G (C/6)^(β/(α+β)); otherwise the minimum of
    f(u) = A e^(-αu) + B (C / fpt(e^u))^(-β) over u = ln N, on a grid within ±SEARCH_HALF_WIDTH of the closed
    form's u and then by golden-section search.
    """
    alpha, beta = (np.asarray(fit[k], dtype=float) for k in ("alpha", "beta"))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lnA, lnB = np.log(np.asarray(fit["A"], dtype=float)), np.log(np.asarray(fit["B"], dtype=float))
        ok = (alpha > 0) & (beta > 0) & np.isfinite(lnA) & np.isfinite(lnB)
        s = np.where(ok, alpha + beta, 1.0)
        lnG = np.where(ok, (np.log(np.where(ok, alpha, 1.0)) + lnA - np.log(np.where(ok, beta, 1.0)) - lnB) / s,
                       np.nan)
        lnC = np.log(np.asarray(C, dtype=float))
        scalar = np.ndim(lnC) == 0 and np.ndim(alpha) == 0
        squeeze = np.ndim(lnC) == 0 and np.ndim(alpha) > 0  # samples at one budget: return shape (S,)
        if np.ndim(alpha):
            alpha, beta, lnA, lnB, lnG, s = (v[:, None] for v in (alpha, beta, lnA, lnB, lnG, s))
        u6 = lnG + beta / s * (lnC - math.log(6.0))  # ln N_opt when fpt = 6N
        if axis is None or axis.source == "6ND":
            u = u6
        else:
            axis.cover(float(np.exp(np.nanmedian(u6) + 3.0)) if np.isfinite(u6).any() else np.nan)

            def f(uu):
                return np.exp(lnA - alpha * uu) + np.exp(lnB - beta * (lnC - np.log(axis.fpt(np.exp(uu)))))

            offs = np.arange(-SEARCH_HALF_WIDTH, SEARCH_HALF_WIDTH + 1e-9, SEARCH_STEP)
            grid = np.asarray(u6)[..., None] + offs  # (..., G)
            vals = _eval_grid(f, u6, offs)
            vals = np.where(np.isfinite(vals), vals, np.inf)
            i = np.argmin(vals, axis=-1)
            interior = (i > 0) & (i < len(offs) - 1) & np.isfinite(np.take_along_axis(vals, i[..., None], -1)[..., 0])
            lo = np.take_along_axis(grid, np.clip(i - 1, 0, None)[..., None], -1)[..., 0]
            hi = np.take_along_axis(grid, np.clip(i + 1, None, len(offs) - 1)[..., None], -1)[..., 0]
            u = _golden(f, lo, hi)
            u = np.where(interior, u, np.nan)
        n_opt = np.exp(u)
        d_opt = (np.exp(lnC) / (6.0 * n_opt)) if axis is None or axis.source == "6ND" else axis.tokens(np.exp(lnC), n_opt)
    if scalar:
        return float(n_opt), float(d_opt)
    if squeeze:
        return n_opt[:, 0], d_opt[:, 0]
    return n_opt, d_opt


def _eval_grid(f, u6, offs):
    """f on u6[..., None] + offs, broadcasting f's own (S, 1) parameters against the grid's last axis."""
    u6 = np.asarray(u6)
    out = np.empty(u6.shape + (len(offs),))
    for j, o in enumerate(offs):  # a loop over ~240 offsets keeps the temporaries at the size of u6
        out[..., j] = f(u6 + o)
    return out


def _golden(f, lo, hi):
    """Golden-section minimum of f on [lo, hi] (elementwise arrays)."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = np.array(lo, dtype=float), np.array(hi, dtype=float)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(GOLDEN_ITERS):
        left = fc < fd  # the minimum lies in [a, d]
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        c_new = np.where(left, b - g * (b - a), d)
        d_new = np.where(left, c, a + g * (b - a))
        fc_new = np.where(left, f(c_new), fd)
        fd_new = np.where(left, fc, f(d_new))
        c, d, fc, fd = c_new, d_new, fc_new, fd_new
    return (a + b) / 2.0


SLOPE_POINTS_PER_DECADE = 20  # the slopes are fitted over a dense grid of C: N_opt(C) is jagged on a real ladder


def allocation_slopes(fit: dict, budgets, axis: ComputeAxis | None) -> dict | None:
    """Approach 3's compute-optimal exponents on the sweep's axis: log-log lines through (C, N_opt(C)) and
    (C, D_opt(C)) for C log-spaced over the span of the given budgets (the isoFLOP budgets, so the same range of C
    that Approaches 1 and 2 fit).

    A dense grid of C, not the budgets alone: on a real ladder the count per token jumps where n_layers or d_ff
    step up, so N_opt(C) is a staircase-like curve whose local slope swings between ~0 and ~2 (the CPU ladder);
    its trend, what a power law describes, needs many points.  With fpt = 6N every point lies on the line."""
    budgets = np.asarray(sorted({float(f"{c:.6g}") for c in budgets}), dtype=float)  # one per isoFLOP profile
    if len(budgets) < 2:
        return None
    grid = slope_grid(budgets)
    n, d = allocate(fit, grid, axis)
    if not (np.isfinite(n).all() and np.isfinite(d).all()):
        return None
    lc = np.log10(grid)
    a, a0 = np.polyfit(lc, np.log10(n), 1)
    b, b0 = np.polyfit(lc, np.log10(d), 1)
    return {"a": float(a), "a_intercept": float(a0), "b": float(b), "b_intercept": float(b0),
            "slope_budgets": [float(c) for c in budgets], "slope_grid": int(len(grid))}


def slope_grid(budgets) -> np.ndarray:
    """The C grid allocation_slopes uses for these budgets (for the bootstrap, which refits the slopes)."""
    budgets = np.asarray(sorted({float(f"{c:.6g}") for c in budgets}), dtype=float)
    lo, hi = np.log10(budgets[0]), np.log10(budgets[-1])
    return np.logspace(lo, hi, max(11, int(math.ceil((hi - lo) * SLOPE_POINTS_PER_DECADE)) + 1))


def slope_budgets(rows: list[dict]) -> list[float]:
    """Budgets at which Approach 3's exponents are read: the isoFLOP budgets, else 5 log-spaced values over the
    runs' FLOPs (external results without budgets)."""
    budgets = sorted({float(f"{r['budget']:.6g}") for r in rows if r.get("budget")})
    if len(budgets) >= 2:
        return budgets
    flops = [float(r["flops"]) for r in rows if r.get("flops")]
    if not flops or min(flops) == max(flops):
        return []
    return [float(c) for c in np.logspace(np.log10(min(flops)), np.log10(max(flops)), 5)]
