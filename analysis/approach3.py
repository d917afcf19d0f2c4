"""Chinchilla Approach 3: fit the parametric loss L(N, D) = E + A/N^α + B/D^β.

Hoffmann et al. 2022 (arXiv 2203.15556), Sec. 3.3 and App. D.2.  The objective is theirs, as
Epoch AI re-ran it (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"):

    min over (a, b, e, α, β) of  Σ_i Huber_δ( LSE(a − α ln N_i, b − β ln D_i, e) − ln L_i ),  δ = 1e-3

with A = e^a, B = e^b, E = e^e, summed (not averaged) over runs, by L-BFGS.  Chinchilla started it from every
point of the grid α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25} (method "grid"); by default it
is started by variable projection (analysis.varpro, method "varpro"), which reaches the same minimum 2-5x faster
(benchmarks/fit_validation.md).  Minimising L(N, D) subject to C = 6ND gives (App. D.2)

    G = (αA / (βB))^(1/(α+β)),   N_opt = G (C/6)^a,   D_opt = G⁻¹ (C/6)^b,
    a = β/(α+β),   b = α/(α+β).

On the sweep's own FLOP count (C = fpt(N)·D, not 6ND) the allocation is analysis.compute.allocate.

Speed (the bootstrap refits this 1,000 times): every fit here is one *batched* quasi-Newton run
in numpy.  A batch row is (problem, start): the objective and its analytic gradient for all rows
are a handful of (rows × runs) array operations, and each row carries its own 5×5 inverse
Hessian (BFGS; with 5 parameters a full matrix is cheaper than L-BFGS's history).  A bootstrap
resample is the same data with multinomial counts as weights, so 1,000 resamples are one batch.

Point estimate with method "grid": the whole grid competes by successive halving.  The objective is evaluated at all
4,500 grid points; the best 10% run 10 quasi-Newton iterations; the best 20% of those run to
convergence; the winner is polished with scipy's L-BFGS-B.  On the Epoch data this finds the same
minimum as optimising all 4,500 starts fully (17 s) in about 0.3 s: 790 of the 4,500 starts reach
that minimum, and the 5 best grid points by their starting objective are among them.  Resamples
start from the point estimate and from any other local minimum the grid found within 2x of its
objective (warm starts), and keep whichever ends lowest.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

DELTA = 1e-3  # Huber threshold on log loss (Chinchilla Sec. 3.3)
# Chinchilla's initialisation grid (App. D.2), in the parameter order used throughout this file.
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
INIT_GRID = {
    "a": np.arange(0.0, 25.1, 5.0),
    "b": np.arange(0.0, 25.1, 5.0),
    "e": np.arange(-1.0, 1.01, 0.5),
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
}
MIN_RUNS = 6  # 5 parameters; fewer runs than that cannot pin the surface down at all
WARM_START_RATIO = 2.0  # resamples also start from other local minima within this factor of the best


def init_grid() -> np.ndarray:
    """Chinchilla's 6·6·5·5·5 = 4,500 starting points, rows (a, b, e, α, β)."""
    return np.array(list(itertools.product(*(INIT_GRID[k] for k in PARAM_NAMES))), dtype=float)


# ---------------------------------------------------------------------------------------------
# Objective


class _Problem:
    """Data for a batch of fits.  x = ln N, y = ln D, l = ln L have shape (P, n) or (1, n) (shared
    by every problem); w (bootstrap counts) is None or (P, n).  A batch row refers to its problem by
    index; arrays with one row are broadcast instead of gathered."""

    def __init__(self, x, y, l, w=None, delta=DELTA):
        self.x, self.y, self.l = (np.atleast_2d(np.asarray(v, dtype=float)) for v in (x, y, l))
        self.w = None if w is None else np.atleast_2d(np.asarray(w, dtype=float))
        self.delta = delta

    def _rows(self, arr, prob):
        return arr if arr.shape[0] == 1 else arr[prob]

    def fg(self, theta: np.ndarray, prob: np.ndarray):
        """Objective (K,) and gradient (K, 5) at theta (K, 5) for batch rows of problems `prob`.

        Written with in-place operations: this is the whole cost of every fit.
        """
        x, y, l = self._rows(self.x, prob), self._rows(self.y, prob), self._rows(self.l, prob)
        a, b, e, alpha, beta = (theta[:, j:j + 1] for j in range(5))  # each (K, 1)
        p1 = x * -alpha
        p1 += a  # ln(A / N^α)
        p2 = y * -beta
        p2 += b  # ln(B / D^β)
        m = np.maximum(p1, p2)
        np.maximum(m, e, out=m)
        p1 -= m
        np.exp(p1, out=p1)
        p2 -= m
        np.exp(p2, out=p2)
        p3 = e - m
        np.exp(p3, out=p3)
        s = p1 + p2
        s += p3
        r = np.log(s)
        r += m
        r -= l  # LSE(...) − ln L: the residual in log loss
        d = self.delta
        absr = np.abs(r)
        c = np.minimum(absr, d)
        # Huber_δ(r) = c(c/2 − δ) + δ|r| with c = min(|r|, δ): r²/2 inside, δ(|r| − δ/2) outside.
        h = 0.5 * c
        h -= d
        h *= c
        absr *= d
        h += absr
        psi = np.copysign(c, r, out=c)  # Huber_δ'(r) = clip(r, −δ, δ)
        if self.w is not None:
            w = self.w[prob]
            f = np.einsum("kn,kn->k", h, w)
            psi *= w
        else:
            f = h.sum(1)
        psi /= s  # the LSE's softmax weights are p_k / s
        p1 *= psi
        p2 *= psi
        p3 *= psi
        g = np.empty((theta.shape[0], 5))
        g[:, 0] = p1.sum(1)  # ∂/∂a
        g[:, 1] = p2.sum(1)  # ∂/∂b
        g[:, 2] = p3.sum(1)  # ∂/∂e
        g[:, 3] = -(p1 @ x[0] if x.shape[0] == 1 else np.einsum("kn,kn->k", p1, x))  # ∂/∂α
        g[:, 4] = -(p2 @ y[0] if y.shape[0] == 1 else np.einsum("kn,kn->k", p2, y))  # ∂/∂β
        return f, g


def objective(params, N, D, L, delta=DELTA, weights=None):
    """Chinchilla's summed Huber objective at params (a, b, e, α, β), and its gradient (for tests
    and for scipy)."""
    prob = _Problem(np.log(N), np.log(D), np.log(L), None if weights is None else [weights], delta)
    f, g = prob.fg(np.atleast_2d(np.asarray(params, dtype=float)), np.zeros(1, dtype=int))
    return float(f[0]), g[0]


# ---------------------------------------------------------------------------------------------
# Batched BFGS


def _bfgs(problem: _Problem, theta: np.ndarray, prob: np.ndarray, max_iter: int,
          ftol: float = 1e-11, first_step: float = 0.1):
    """Minimise each row of theta (K, 5) independently; returns (theta, f, n_iter) arrays.

    Backtracking (Armijo) line search from the quasi-Newton step; the first step of each row is
    scaled to length `first_step` and the initial inverse Hessian to (s·y)/(y·y) (Nocedal & Wright
    eq. 6.20).  A row stops when its relative decrease is below ftol three iterations running, when
    no step along its direction decreases f, or at max_iter.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _bfgs_loop(problem, np.array(theta, dtype=float), prob, max_iter, ftol, first_step)


def _bfgs_loop(problem, theta, prob, max_iter, ftol, first_step):
    K = theta.shape[0]
    f, g = problem.fg(theta, prob)
    H = np.tile(np.eye(5), (K, 1, 1))
    fresh = np.ones(K, dtype=bool)  # no BFGS update yet: H is still the identity
    calm = np.zeros(K, dtype=int)  # consecutive iterations with a tiny decrease
    active = np.isfinite(f)
    iters = np.zeros(K, dtype=int)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi = g[idx]
        p = -np.einsum("kij,kj->ki", H[idx], gi)
        slope = (gi * p).sum(1)
        uphill = ~(slope < 0)  # lost positive definiteness numerically: restart from steepest descent
        if uphill.any():
            H[idx[uphill]] = np.eye(5)
            fresh[idx[uphill]] = True
            p[uphill] = -gi[uphill]
            slope[uphill] = -(gi[uphill] ** 2).sum(1)
        t = np.ones(idx.size)
        fr = fresh[idx]
        norm = np.abs(p[fr]).max(1)
        t[fr] = first_step / np.where(norm > 0, norm, 1.0)
        new_theta = np.empty_like(p)
        new_f = np.full(idx.size, np.inf)
        new_g = np.empty_like(p)
        pending = np.arange(idx.size)
        for _ls in range(40):
            cand = theta[idx[pending]] + t[pending, None] * p[pending]
            fc, gc = problem.fg(cand, prob[idx[pending]])
            ok = np.isfinite(fc) & (fc <= f[idx[pending]] + 1e-4 * t[pending] * slope[pending])
            done = pending[ok]
            new_theta[done], new_f[done], new_g[done] = cand[ok], fc[ok], gc[ok]
            pending = pending[~ok]
            if pending.size == 0:
                break
            t[pending] *= 0.25
        # Rows whose line search failed cannot make progress along any descent direction found.
        stuck = np.zeros(idx.size, dtype=bool)
        stuck[pending] = True
        moved = ~stuck
        mi = idx[moved]
        s = new_theta[moved] - theta[mi]
        y = new_g[moved] - g[mi]
        decrease = f[mi] - new_f[moved]
        theta[mi], f[mi], g[mi] = new_theta[moved], new_f[moved], new_g[moved]
        iters[idx] += 1
        sy = (s * y).sum(1)
        upd = sy > 1e-12 * np.sqrt((s * s).sum(1) * (y * y).sum(1))
        if upd.any():
            ui = mi[upd]
            su, yu, rho = s[upd], y[upd], 1.0 / sy[upd]
            first = fresh[ui]
            if first.any():  # scale the identity before the first update
                gamma = sy[upd][first] / (yu[first] ** 2).sum(1)
                H[ui[first]] = gamma[:, None, None] * np.eye(5)
                fresh[ui[first]] = False
            Hy = np.einsum("kij,kj->ki", H[ui], yu)
            yHy = (yu * Hy).sum(1)
            # H+ = H − ρ(s Hyᵀ + Hy sᵀ) + (ρ² yᵀHy + ρ) s sᵀ
            Hn = H[ui] + (-rho[:, None, None] * (su[:, :, None] * Hy[:, None, :] + Hy[:, :, None] * su[:, None, :])
                          + ((rho * rho * yHy + rho)[:, None, None]) * su[:, :, None] * su[:, None, :])
            bad = ~np.isfinite(Hn).all((1, 2))
            Hn[bad] = np.eye(5)
            fresh[ui[bad]] = True
            H[ui] = Hn
        small = decrease <= ftol * np.maximum(np.abs(f[mi]), 1e-300)
        calm[mi] = np.where(small, calm[mi] + 1, 0)
        active[mi[calm[mi] >= 3]] = False
        active[idx[stuck]] = False
    return theta, f, iters


def _polish(problem: _Problem, theta0: np.ndarray):
    """Refine one solution with scipy's L-BFGS-B (the optimiser Chinchilla and Epoch used)."""
    from scipy.optimize import minimize

    zero = np.zeros(1, dtype=int)

    def fun(th):
        f, g = problem.fg(th[None, :], zero)
        return float(f[0]), g[0]

    res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20})
    return (res.x, float(res.fun)) if np.isfinite(res.fun) else (theta0, float(fun(theta0)[0]))


def _distinct(thetas: np.ndarray, fs: np.ndarray, k: int, tol: float = 1e-2) -> np.ndarray:
    """Indices of up to k lowest-objective rows that differ from each other by more than tol."""
    chosen = []
    for i in np.argsort(fs):
        if not np.isfinite(fs[i]):
            break
        if all(np.abs(thetas[i] - thetas[j]).max() > tol for j in chosen):
            chosen.append(int(i))
            if len(chosen) == k:
                break
    return np.array(chosen, dtype=int)


# ---------------------------------------------------------------------------------------------
# Public API


def _check(N, D, L):
    N, D, L = (np.asarray(v, dtype=float).ravel() for v in (N, D, L))
    if not (len(N) == len(D) == len(L)):
        raise ValueError(f"N, D and L must have equal length (got {len(N)}, {len(D)}, {len(L)})")
    for name, v in (("N", N), ("D", D), ("L", L)):
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"{name} must be finite and positive; drop the bad runs first")
    return N, D, L


def approach3_skip_reason(N, D) -> str | None:
    """Why these (N, D) cannot support a parametric fit, or None."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    if len(N) < MIN_RUNS:
        return f"only {len(N)} runs; the 5-parameter fit needs >= {MIN_RUNS}"
    X = np.column_stack([np.log(N), np.log(D)])
    X = X - X.mean(0)
    sv = np.linalg.svd(X, compute_uv=False)
    if sv[-1] <= 1e-6 * max(sv[0], 1e-300):
        return ("ln N and ln D are collinear (e.g. a single isoFLOP budget), so A/N^α and B/D^β "
                "cannot be separated; add runs at another budget")
    return None


MAX_EXPONENT = 10.0  # alpha or beta above this is a run-away fit, not a power law (Chinchilla's init grid: 0-2)
# E = exp(e) is bounded below by 0 only; an E below this share of the lowest loss is at that bound
E_BOUND_SHARE = 1e-3


def params_from_theta(theta) -> dict:
    """(a, b, e, α, β) → {E, A, B, alpha, beta, a, b, G} as plain floats."""
    lna, lnb, e, alpha, beta = (float(v) for v in theta)
    out = {"E": math.exp(e), "A": math.exp(lna), "B": math.exp(lnb), "alpha": alpha, "beta": beta}
    s = alpha + beta
    if alpha > 0 and beta > 0:
        out["a"], out["b"] = beta / s, alpha / s
        # ln G = (ln α + ln A − ln β − ln B) / (α + β)
        out["G"] = math.exp((math.log(alpha) + lna - math.log(beta) - lnb) / s)
    else:  # no finite compute-optimal allocation
        out["a"] = out["b"] = out["G"] = float("nan")
    return out


def optimal_allocation(fit: dict, C):
    """N_opt, D_opt at compute C with C = 6ND (App. D.2); floats for scalar C."""
    c6 = np.asarray(C, dtype=float) / 6.0
    n_opt = fit["G"] * c6 ** fit["a"]
    d_opt = c6 ** fit["b"] / fit["G"]
    if np.ndim(n_opt) == 0:
        return float(n_opt), float(d_opt)
    return n_opt, d_opt


def predict_loss(fit: dict, N, D):
    """L(N, D) = E + A/N^α + B/D^β."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    with np.errstate(over="ignore"):  # a run-away bootstrap fit may overflow; callers drop non-finite values
        return fit["E"] + fit["A"] / N ** fit["alpha"] + fit["B"] / D ** fit["beta"]


METHODS = ("varpro", "grid")  # how the Huber fit is started: variable projection (default) or Chinchilla's grid
DEFAULT_METHOD = "varpro"
VARPRO_STARTS = 8  # grid points of the (alpha, beta) search that the Huber fit is polished from


def fit_approach3(N, D, L, *, method: str = DEFAULT_METHOD, delta: float = DELTA, grid: np.ndarray | None = None,
                  halving: tuple = ((0, 0.1), (10, 0.2)), max_iter: int = 400, n_keep: int = 4) -> dict:
    """Fit E + A/N^α + B/D^β by Chinchilla's objective (Huber δ on log loss, L-BFGS).

    N, D, L: run parameters, tokens and final loss (equal-length array-likes).
    method: how the optimiser is started.
      "varpro": variable projection (analysis.varpro): a grid over (α, β) with (E, A, B) solved by non-negative
        least squares at each point; its VARPRO_STARTS best distinct points are polished on the Huber objective.
      "grid": Chinchilla's 4,500-point grid over all five parameters (or `grid`), by successive halving:
        halving is the schedule, (iterations, fraction kept) per stage (0 iterations: rank by the objective at
        the start); the survivors run to convergence.  halving=() optimises every grid point fully (slow).
    Either way the best end point is polished with scipy's L-BFGS-B.

    Returns {E, A, B, alpha, beta, a, b, G (App. D.2's C = 6ND closed form), objective, n_runs, method,
    theta [a, b, e, α, β], minima: up to n_keep distinct local minima [(theta, objective)], n_starts}.
    """
    if method not in METHODS:
        raise ValueError(f"Approach 3 method must be one of {', '.join(METHODS)}, got {method!r}")
    N, D, L = _check(N, D, L)
    why = approach3_skip_reason(N, D)
    if why:
        raise ValueError(why)
    problem = _Problem(np.log(N), np.log(D), np.log(L), delta=delta)
    if method == "varpro":
        from analysis import varpro

        theta = varpro.starts(N, D, L, VARPRO_STARTS)
        n_starts = len(varpro.ALPHA_GRID) * len(varpro.BETA_GRID)
    else:
        theta = init_grid() if grid is None else np.atleast_2d(np.asarray(grid, dtype=float))
        n_starts = len(theta)
    prob = np.zeros(len(theta), dtype=int)
    for iters, keep in (halving if method == "grid" else ()):
        if iters:
            theta, f, _ = _bfgs(problem, theta, prob, iters)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                f = problem.fg(theta, prob)[0]
        order = np.argsort(np.where(np.isfinite(f), f, np.inf), kind="stable")
        theta = theta[order[: max(n_keep, int(math.ceil(keep * len(theta))))]]
        prob = prob[: len(theta)]
    theta, f, _ = _bfgs(problem, theta, prob, max_iter)
    keep_idx = _distinct(theta, f, n_keep)
    if keep_idx.size == 0:
        raise ValueError("the Approach 3 objective is not finite at any start; check the losses")
    best, best_f = _polish(problem, theta[keep_idx[0]])
    if best_f > f[keep_idx[0]]:
        best, best_f = theta[keep_idx[0]], float(f[keep_idx[0]])
    # A run-away minimum means the runs do not pin the surface down: an exponent above MAX_EXPONENT makes
    # A/N^α a step over the grid rather than a power law (and ln A then heads past exp's range, ~709).
    # Take the best minimum that is a power law with finite parameters, if there is one.
    candidates = [(best, best_f)] + [(theta[i], float(f[i])) for i in keep_idx[1:]]
    finite = [(t, v) for t, v in candidates if _power_law(t)]
    if not finite:
        raise ValueError(f"the fit ran away (ln A = {best[0]:.3g}, ln B = {best[1]:.3g}, alpha = {best[3]:.3g}, "
                         f"beta = {best[4]:.3g}): these runs do not constrain E + A/N^alpha + B/D^beta; "
                         "add model sizes or budgets")
    best, best_f = finite[0]
    out = params_from_theta(best)
    # A fit that drives E to 0 has let A/N^alpha stand in for the irreducible loss: these runs do not identify E,
    # and the exponents (so a and b) lean on that trade.  It is still the objective's best fit: warn, not refuse.
    warnings, l_min = [], float(L.min())
    if out["E"] < E_BOUND_SHARE * l_min:
        warnings.append(f"E = {out['E']:.2g} is at its bound of 0 (below {E_BOUND_SHARE:.1%} of the lowest loss, "
                        f"{l_min:.4g}): these runs do not identify the irreducible loss, which "
                        f"A/N^alpha (alpha = {out['alpha']:.3g}) absorbs, so Approach 3's a and b lean on that; "
                        "add budgets, or read Approaches 1 and 2")
    out.update({
        "warnings": warnings,
        "objective": best_f,
        "n_runs": int(len(N)),
        "theta": [float(v) for v in best],
        "minima": [{"theta": [float(v) for v in theta[i]], "objective": float(f[i])} for i in keep_idx],
        "n_starts": int(n_starts),
        "method": method,
    })
    return out


def refit_batch(N, D, L, weights: np.ndarray, starts: np.ndarray, *, delta: float = DELTA,
                max_iter: int = 400, chunk: int = 20000) -> np.ndarray:
    """Refit many weighted versions of one data set at once (the bootstrap's inner loop).

    weights: (P, n) nonnegative weights per problem (bootstrap counts).
    starts: (S, 5) starting points tried for every problem; the lowest end point wins.
    Returns theta (P, 5), rows (a, b, e, α, β); NaN rows where no start gave a finite objective.
    """
    N, D, L = _check(N, D, L)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    P, S = len(weights), len(starts)
    problem = _Problem(np.log(N), np.log(D), np.log(L), weights, delta)
    out = np.full((P, 5), np.nan)
    best_f = np.full(P, np.inf)
    per = max(1, chunk // S)  # problems per chunk: bounds the (rows × runs) temporaries
    for lo in range(0, P, per):
        ps = np.arange(lo, min(P, lo + per))
        prob = np.repeat(ps, S)
        theta, f, _ = _bfgs(problem, np.tile(starts, (len(ps), 1)), prob, max_iter)
        f = np.where(np.isfinite(f), f, np.inf).reshape(len(ps), S)
        j = np.argmin(f, 1)
        fb = f[np.arange(len(ps)), j]
        th = theta.reshape(len(ps), S, 5)[np.arange(len(ps)), j]
        ok = np.isfinite(fb)
        out[ps[ok]], best_f[ps[ok]] = th[ok], fb[ok]
    return out



def bootstrap_approach3(N, D, L, fit: dict, weights: np.ndarray, *, delta: float = DELTA) -> dict:
    """Refit fit_approach3's result for each row of bootstrap weights (B, n).

    Warm starts: the point estimate, plus any other local minimum the grid found whose objective
    is within WARM_START_RATIO of the best (a resample could prefer it); each resample keeps the
    lowest end point.  Returns {E, A, B, alpha, beta, a, b, G}: arrays over the resamples that
    converged to a finite objective, and "n_starts".
    """
    best = fit["minima"][0]["objective"] if fit.get("minima") else fit["objective"]
    starts = [fit["theta"]] + [m["theta"] for m in fit.get("minima", [])[1:]
                               if m["objective"] <= WARM_START_RATIO * best]
    theta = refit_batch(N, D, L, weights, np.array(starts), delta=delta)
    theta = theta[np.isfinite(theta).all(1)]
    lna, lnb, e, alpha, beta = theta.T
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s = alpha + beta
        ok = (alpha > 0) & (beta > 0)
        G = np.where(ok, np.exp((np.log(np.where(ok, alpha, 1)) + lna - np.log(np.where(ok, beta, 1)) - lnb) / s),
                     np.nan)
        out = {"E": np.exp(e), "A": np.exp(lna), "B": np.exp(lnb), "alpha": alpha, "beta": beta,
               "a": np.where(ok, beta / s, np.nan), "b": np.where(ok, alpha / s, np.nan), "G": G}
    out["n_starts"] = len(starts)
    return out


# ---------------------------------------------------------------------------------------------
# Profile over E

PROFILE_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # E held at these shares of the lowest loss
E_ZERO_SHARE = 1e-9  # "E = 0": e = ln(1e-9 min L), where E's term no longer moves the LSE


def deviance_scale(r, delta: float = DELTA, n_params: int = 0) -> float:
    """E[ψ'] / E[ψ²] for Huber_δ (ψ(r) = clip(r, -δ, δ)), the factor that turns twice an objective difference into
    a χ²₁ statistic (``profile_e``), for errors N(0, σ²) with σ the residuals' robust SD (1.4826 MAD, times
    sqrt(n/(n - n_params)) for the fitted parameters): E[ψ'] = P(|r| <= δ) = 2Φ(δ/σ) - 1 and
    E[ψ²] = σ² (2Φ(c) - 1 - 2c φ(c)) + 2δ² (1 - Φ(c)) with c = δ/σ.  Not the residuals' own shares: with δ below the
    noise the fit passes through about as many runs as it has parameters (L1's interpolation), which would count as
    a density at 0.  For heavier tails than Gaussian (Laplace) the density at 0 is higher than assumed and the
    statistic is understated, by itself the conservative side (measured coverage of the profile set: 80% with
    Gaussian noise, 73-77% with Laplace, benchmarks/fit_calibration.md)."""
    from scipy.stats import norm

    r = np.asarray(r, dtype=float)
    n = len(r)
    sigma = 1.4826 * float(np.median(np.abs(r - np.median(r)))) * math.sqrt(n / max(n - n_params, 1))
    if sigma <= 0:
        return float("inf")
    c = delta / sigma
    inside = 2.0 * norm.cdf(c) - 1.0
    psi2 = sigma**2 * (inside - 2.0 * c * norm.pdf(c)) + 2.0 * delta**2 * (1.0 - norm.cdf(c))
    return inside / psi2


class _HeldE(_Problem):
    """The objective with e held where it starts: its gradient in e is zeroed, so the quasi-Newton steps (from an
    identity inverse Hessian, whose e row and column then stay zero off the diagonal) never move it."""

    def fg(self, theta, prob):
        f, g = super().fg(theta, prob)
        g[:, 2] = 0.0
        return f, g


def profile_e(N, D, L, fit: dict, *, level: float = 0.8, shares=PROFILE_SHARES, delta: float = DELTA) -> dict:
    """Approach 3 refitted with E held fixed: how much the runs pin down the irreducible loss, and how much a and
    b lean on it.

    For each E in ``shares`` x the lowest loss (and the fit's own E), (A, B, α, β) are refitted with E held (the
    batched quasi-Newton fit, started from the free fit and from each other local minimum it found).  The deviance
    of each is the robust likelihood-ratio statistic of an M-estimator (Schrader & Hettmansperger 1980, "Robust
    analysis of variance based upon a likelihood ratio criterion"): 2 (f_E - f_min) E[ψ'] / E[ψ²], ψ = Huber_δ',
    asymptotically χ²₁ at E's true value when E[ψ'] and E[ψ²] are the errors' own (here those of a Gaussian with the
    residuals' robust SD, ``deviance_scale``).  With δ above the noise it is least squares' ΔRSS / σ²; with
    δ = 1e-3 below it, the L1 statistic of Koenker & Bassett (1982).  The E whose deviance is below χ²₁'s ``level``
    quantile form the profile set (Wilks; each end found by bisection between grid points, the last E inside it
    added to the lists; ``profile_set``).  ``a_6ND_set``/``b_6ND_set`` are the exponents' range over it (App. D.2's
    a = β/(α+β), b = α/(α+β)): how far they move with E alone, not intervals for them.

    Returns {E, objective, deviance, alpha, beta, a_6ND, b_6ND: lists over the E values (ascending),
    deviance_scale, threshold, level, E_set [lo, hi], E_set_open_above (the set reaches the grid's top), a_6ND_set,
    b_6ND_set, params: the refitted parameter dicts (params_from_theta)}, or None if no refit is a power law.

    At E's bound of 0 the statistic is no longer χ²₁ but an even mixture of χ²₀ and χ²₁ (Self & Liang 1987), whose
    80% quantile (0.71) is below χ²₁'s: there the set is conservative.  With few runs the residuals' MAD is biased
    low (the fit passes through about five of them), which inflates the deviance and narrows the set."""
    from scipy.stats import chi2

    N, D, L = _check(N, D, L)
    problem = _HeldE(np.log(N), np.log(D), np.log(L), delta=delta)
    # every E from the free fit and from each other local minimum it found that is a power law (fit_approach3's
    # test), as one batch with e held; a refit that runs away counts as no fit at that E
    starts = np.array([t for t in [fit["theta"]] + [m["theta"] for m in fit.get("minima", [])[1:]]
                       if _power_law(t)], dtype=float)

    def held(es: np.ndarray):
        theta0 = np.repeat(starts[None], len(es), 0)  # (E, S, 5)
        theta0[:, :, 2] = np.log(es)[:, None]
        theta, f, _ = _bfgs(problem, theta0.reshape(-1, 5), np.zeros(theta0[:, :, 0].size, dtype=int), 400)
        f = np.where(np.isfinite(f) & _power_law(theta.T), f, np.inf).reshape(len(es), len(starts))
        best = np.argmin(f, 1)
        return theta.reshape(len(es), len(starts), 5)[np.arange(len(es)), best], f[np.arange(len(es)), best]

    l_min = float(L.min())
    es = {max(s, E_ZERO_SHARE) * l_min for s in shares}
    if fit["E"] < E_BOUND_SHARE * l_min:  # the fit's E is at the bound: it stands for E = 0
        es.discard(E_ZERO_SHARE * l_min)
    es = np.array(sorted(es | {float(fit["E"])}))
    thetas, objs = held(es)
    if not np.isfinite(objs).any():
        return None
    f_min = min(float(fit["objective"]), float(objs.min()))
    scale = deviance_scale(np.log(predict_loss(fit, N, D)) - np.log(L), delta, n_params=5)
    threshold = float(chi2.ppf(level, 1))

    def dev(f):
        gap = np.maximum(np.asarray(f) - f_min, 0.0)
        with np.errstate(invalid="ignore"):  # an exact fit (scale inf): every other E is infinitely far
            return np.where(gap > 0, 2.0 * scale * gap, 0.0)

    # each end of the set: bisection in E between the last grid point inside and the next one outside, to 1/4096
    # of the grid step (a deviance linear between grid points would misplace an end by up to half a step); the
    # last E inside and the last outside of each end join the lists, so profile_set interpolates across that step
    lo, hi = _run_below(dev(objs), threshold)
    ends = [[(es[i], None), (es[j], None)] for i, j in ((lo, lo - 1), (hi, hi + 1)) if 0 <= j < len(es)]
    for _ in range(12 if ends else 0):
        mids = np.array([(inn[0] + out[0]) / 2 for inn, out in ends])
        th, fo = held(mids)
        for k, (m, t, f) in enumerate(zip(mids, th, fo)):
            ends[k][0 if dev(f) <= threshold else 1] = (m, (t, f))
    for end in ends:
        for e, tf in end:
            if tf is not None:
                es, thetas, objs = np.append(es, e), np.vstack([thetas, tf[0]]), np.append(objs, tf[1])
    order = np.argsort(es)
    thetas, objs = thetas[order], objs[order]
    f_min = min(f_min, float(objs.min()))  # a bisection refit below the free fit (it would be a better fit)
    deviance = dev(objs)
    params = [params_from_theta(t) for t in thetas]
    out = {"E": [p["E"] for p in params], "objective": [float(v) for v in objs],
           "deviance": [float(v) for v in deviance], "alpha": [p["alpha"] for p in params],
           "beta": [p["beta"] for p in params], "a_6ND": [p["a"] for p in params], "b_6ND": [p["b"] for p in params],
           "deviance_scale": scale, "threshold": threshold, "level": level, "params": params}
    out["E_set"], out["a_6ND_set"], out["b_6ND_set"] = profile_set(out["E"], out["deviance"], threshold,
                                                                   [out["a_6ND"], out["b_6ND"]])
    # a set that reaches the grid's top (the top share of the lowest loss) is open above: E may go higher still
    out["E_set_open_above"] = _run_below(np.asarray(out["deviance"]), threshold)[1] == len(out["E"]) - 1
    return out


def _power_law(theta) -> np.ndarray:
    """fit_approach3's test that a solution (a, b, e, α, β) is a power law with finite parameters (not a run-away),
    for one row or for the columns of a (5, K) array."""
    t = np.asarray(theta, dtype=float)
    with np.errstate(invalid="ignore"):
        return (np.maximum(np.maximum(t[0], t[1]), t[2]) < 700) & (np.maximum(t[3], t[4]) <= MAX_EXPONENT)


def _run_below(dev: np.ndarray, threshold: float) -> tuple[int, int]:
    """First and last index of the run of grid points at or below ``threshold`` around the minimum of ``dev``."""
    i0 = int(np.nanargmin(dev))
    lo, hi = i0, i0
    while lo > 0 and dev[lo - 1] <= threshold:
        lo -= 1
    while hi < len(dev) - 1 and dev[hi + 1] <= threshold:
        hi += 1
    return lo, hi


def profile_set(x, deviance, threshold: float, values) -> tuple:
    """The profile set around the deviance's minimum on the grid x (ascending): [lo, hi] where the deviance,
    linear between grid points, crosses ``threshold`` (a grid end where it does not), and for each series in
    ``values`` its range over that set (linear between grid points too).  (None, ...) without finite deviances."""
    x, dev = np.asarray(x, dtype=float), np.asarray(deviance, dtype=float)
    if not np.isfinite(dev).any():
        return (None,) * (1 + len(values))
    lo_i, hi_i = _run_below(dev, threshold)

    def cross(i_in, i_out):  # the fraction of the way from grid point i_in (inside) to i_out (outside)
        d_in, d_out = dev[i_in], dev[i_out]
        return (threshold - d_in) / (d_out - d_in) if np.isfinite(d_out) and d_out > d_in else 0.0

    ends = []  # (index inside, index outside or None, fraction)
    for i_in, i_out in ((lo_i, lo_i - 1), (hi_i, hi_i + 1)):
        ends.append((i_in, i_out, cross(i_in, i_out)) if 0 <= i_out < len(x) else (i_in, None, 0.0))

    def at(series, end):
        i_in, i_out, t = end
        return series[i_in] if i_out is None else series[i_in] + t * (series[i_out] - series[i_in])

    out = [[float(at(x, ends[0])), float(at(x, ends[1]))]]
    for series in values:
        v = np.asarray(series, dtype=float)
        pts = [at(v, ends[0]), at(v, ends[1]), *v[lo_i:hi_i + 1]]
        pts = [p for p in pts if np.isfinite(p)]
        out.append([float(min(pts)), float(max(pts))] if pts else None)
    return tuple(out)
