"""WSD trunks and cooldown forks (``sweep.forks=true``): one constant-LR run per model shape serves every budget.

Hägele et al. 2024 (arXiv 2405.18392): warm-up, a constant LR, then a short cooldown (~20%) matches a cosine
run of the same length, so the constant part can be shared.  For each (shape, seed) of the grid:

    trunk    kind "trunk": warm-up, then the peak LR up to the start of its longest fork's cooldown; it keeps a
             checkpoint at every fork's branch step
    fork     kind "fork" (a grid point) or "horizon" (Approach 1's extra lengths, kept out of Approach 2):
             starts from the trunk's checkpoint at step S(1 - cooldown_frac) and cools down over the last
             cooldown_frac of its S steps, exactly as a standalone wsd run of S steps would (batches are a pure
             function of (seed, step), so a fork equals that run)

Choices:
- **One recipe per trunk.** Every fork of a trunk shares its LR and batch: rules that depend on the budget
  (``recipe.lr_rule`` / ``batch_rule``) are resolved at the largest budget the trunk serves.
- **Warm-up per shape.** ``warmup_frac`` of the trunk's shortest fork, the same for the trunk and every fork.
- **FLOPs.** A fork's ``flops`` is what its model saw (trunk prefix included); ``flops_spent`` its own steps.

Pure: points in, RunSpecs out.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from models.flops import flops_per_token, param_counts
from sweep.plan import Dropped, RunSpec, cooldown_steps, point_spec, steps_for
from sweep.recipe import RecipeConfig


def plan_forks(points: list, recipe: RecipeConfig, train_tokens: Optional[int], seen: set,
               dropped: list) -> list[RunSpec]:
    """Trunks and forks for ``points`` [(budget, shape, target N, seed repeat, kind, fixed peak LR or None)];
    infeasible ones are dropped.  Points that differ only in their LR (an LR scan) get a trunk each."""
    if recipe.schedule != "wsd":
        raise ValueError("sweep.forks=true branches cooldowns off constant-LR trunks: set recipe.schedule=wsd")
    groups: dict[tuple, list] = {}
    for point in points:
        groups.setdefault((point[1], point[3], point[5]), []).append(point)
    specs = []
    for (shape, seed, lr), pts in groups.items():
        top = max(c for c, *_ in pts)
        run_recipe = dataclasses.replace(recipe.resolved(top), seed=recipe.seed + seed)  # one recipe per trunk
        fpt = flops_per_token(shape, run_recipe.flops_convention)
        steps = {c: steps_for(c, run_recipe.tokens_per_step, fpt) for c, *_ in pts}
        # rules of N and D at the largest budget, for every fork: one LR, beta2 and batch per trunk
        run_recipe = run_recipe.sized(param_counts(shape)["params"], steps[top] * run_recipe.tokens_per_step)
        feasible = [p for p in pts if steps[p[0]] >= run_recipe.min_steps]
        if not feasible:  # point_spec gives each its reason
            for c, _, target, _, kind, _ in pts:
                point_spec(c, shape, target, seed, kind, run_recipe, train_tokens, seen, dropped, lr=lr)
            continue
        shortest = min(steps[p[0]] for p in feasible)
        warmup = run_recipe.warmup_steps(shortest, param_counts(shape)["params"])  # of the trunk's shortest fork
        forks = []
        for c, _, target, _, kind, _ in sorted(pts, key=lambda p: p[0]):
            cd = cooldown_steps(steps[c], run_recipe)
            if steps[c] >= run_recipe.min_steps and steps[c] - cd <= warmup:
                dropped.append(Dropped(c, target, f"its cooldown would start inside the trunk's warm-up ({warmup} steps); "
                                                  "raise the budget or lower recipe.warmup_frac"))
                continue
            fork = point_spec(c, shape, target, seed, "fork" if kind == "grid" else kind, run_recipe, train_tokens,
                              seen, dropped, warmup_steps=warmup, lr=lr, cooldown_steps=cd, start_step=steps[c] - cd,
                              trunk="?")
            if fork is not None:
                forks.append(fork)
        if not forks:
            continue
        branch = sorted({f.start_step for f in forks})
        # named by the largest budget it serves; not a run of its own, so recipe.min_steps does not apply
        trunk = point_spec(forks[-1].budget, shape, forks[-1].params, seed, "trunk", run_recipe, train_tokens, seen,
                           dropped, steps=branch[-1], warmup_steps=warmup, min_steps=1, lr=lr, cooldown_steps=0,
                           branch_steps=tuple(branch))
        if trunk is None:  # e.g. its id collides: its forks cannot run
            for f in forks:
                seen.discard(f.run_id)
                dropped.append(Dropped(f.budget, f.params, "its trunk was dropped", f.run_id))
            continue
        specs.append(trunk)
        specs += [dataclasses.replace(f, trunk=trunk.run_id) for f in forks]
    return specs
