import math

import pytest

from models.flops import flops_per_token, param_counts
from models.ladder import LadderConfig
from sweep.plan import RunSpec, SweepConfig, format_plan, plan, plan_grid, target_sizes
from sweep.recipe import RecipeConfig
from sweep.runid import parse_run_id, parse_run_id_full

LADDER = LadderConfig(head_dim=16, aspect_ratio=32, tie_embeddings=True)
RECIPE = RecipeConfig(seq_len=128, batch_size=16, min_steps=20)


def grid(**kw):
    kw.setdefault("budgets", [3e11, 1e12, 3e12])
    kw.setdefault("sizes_per_budget", 5)
    kw.setdefault("size_span", 16)
    return SweepConfig(**kw)


@pytest.mark.parametrize("convention", ["chinchilla", "6N", "kaplan"])
def test_flops_within_one_step_of_budget(convention):
    recipe = RecipeConfig(seq_len=128, batch_size=16, min_steps=20, flops_convention=convention)
    specs = plan(grid(), LADDER, recipe, vocab_size=512)
    assert len(specs) >= 12
    for s in specs:
        # independent recomputation from the shape, not from the spec's own fields
        fpt = flops_per_token(s.model, convention)
        step_flops = recipe.batch_size * recipe.seq_len * fpt
        assert s.steps * step_flops == pytest.approx(s.flops, rel=1e-12)
        assert abs(s.flops - s.budget) <= step_flops / 2 + 1e-6 * s.budget  # nearest whole step
        assert s.params == param_counts(s.model)["params"]
        assert s.tokens == s.steps * recipe.tokens_per_step


def test_sizes_centre_on_prior_optimum():
    g = grid(budgets=[1e12], sizes_per_budget=5, size_span=16, tokens_per_param=20)
    t = target_sizes(1e12, g)
    n_star = math.sqrt(1e12 / (6 * 20))  # C = 6 N D, D = 20 N
    assert math.exp(sum(map(math.log, t)) / len(t)) == pytest.approx(n_star, rel=1e-9)
    assert max(t) / min(t) == pytest.approx(16, rel=1e-9)
    assert target_sizes(1e12, grid(sizes=[1e5, 2e5])) == [1e5, 2e5]


def test_sizes_increase_within_budget_and_ids_unique():
    specs = plan(grid(), LADDER, RECIPE, vocab_size=512)
    ids = [s.run_id for s in specs]
    assert len(set(ids)) == len(ids)
    for c in {s.budget for s in specs}:
        ns = [s.params for s in specs if s.budget == c]
        assert ns == sorted(ns) and len(set(ns)) == len(ns)


def test_plan_ids_parse_back_to_their_point():
    for s in plan(grid(), LADDER, RECIPE, vocab_size=512):
        c, n = parse_run_id(s.run_id)
        assert c == pytest.approx(s.budget, rel=5e-3)
        assert n == pytest.approx(s.params, rel=5e-3)


def test_infeasible_points_are_dropped_with_reasons():
    specs, dropped = plan_grid(grid(budgets=[5e9, 1e12], sizes=[3e4, 3e5]), LADDER, RECIPE, vocab_size=512)
    assert specs and all(s.budget == 1e12 for s in specs)
    assert len(dropped) == 2 and all("steps" in d.reason and d.budget == 5e9 for d in dropped)
    # too little data: every point needs more epochs than allowed
    specs, dropped = plan_grid(grid(budgets=[1e12]), LADDER, RECIPE, vocab_size=512, train_tokens=10_000)
    assert specs == [] and sum("epochs" in d.reason for d in dropped) >= 3
    # beyond the ladder
    _, dropped = plan_grid(grid(budgets=[1e12], sizes=[10.0]), LADDER, RECIPE, vocab_size=512)
    assert dropped and dropped[0].reason


def test_epochs_and_table():
    specs, dropped = plan_grid(grid(), LADDER, RECIPE, vocab_size=512, train_tokens=10_000_000)
    for s in specs:
        assert s.epochs == pytest.approx(s.tokens / 10_000_000)
    table = format_plan(specs, dropped, 1e11)
    assert all(s.run_id in table for s in specs) and "runs" in table


def test_plan_is_pure_and_specs_serialise():
    a = plan(grid(), LADDER, RECIPE, vocab_size=512)
    b = plan(grid(), LADDER, RECIPE, vocab_size=512)
    assert a == b
    for s in a:
        assert RunSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("kw", [dict(budgets=[]), dict(budgets=[-1.0]), dict(size_span=0.5), dict(sizes=[0])])
def test_bad_grid(kw):
    with pytest.raises(ValueError, match="sweep"):
        plan(grid(**kw), LADDER, RECIPE, vocab_size=512)


def test_bad_recipe():
    with pytest.raises(ValueError, match="flops_convention"):
        RecipeConfig(flops_convention="7N")
    with pytest.raises(ValueError, match="batch_size"):
        RecipeConfig(batch_size=0)


def test_deepseek_recipe_resolves_per_budget():
    recipe = RecipeConfig(seq_len=128, batch_size=16, min_steps=20, lr_rule="deepseek", batch_rule="deepseek")
    specs = plan(grid(), LADDER, recipe, vocab_size=512)
    assert specs
    for s in specs:
        c = s.budget
        assert s.recipe.lr == pytest.approx(0.3118 * c ** -0.125)  # DeepSeek LLM: lr_opt(C)
        assert s.recipe.batch_size == max(1, round(0.2920 * c ** 0.3271 / 128))  # B_opt(C) tokens -> sequences
        assert s.recipe.lr_rule == "constant"  # the spec holds resolved values, not rules
        step_flops = s.recipe.tokens_per_step * flops_per_token(s.model, "chinchilla")
        assert abs(s.flops - c) <= step_flops / 2 + 1e-6 * c
    # at C = 1e12: lr ~ 9.9e-3, ~2,450 tokens a step = 19 sequences of 128
    s = next(s for s in specs if s.budget == 1e12)
    assert s.recipe.lr == pytest.approx(9.86e-3, rel=1e-3) and s.recipe.batch_size == 19
    multiple = RecipeConfig(seq_len=128, batch_rule="deepseek", batch_multiple=8).resolved(1e12)
    assert multiple.batch_size % 8 == 0 and multiple.batch_size == 16
    with pytest.raises(ValueError, match="lr_rule"):
        RecipeConfig(lr_rule="magic")


def test_refined_grid_centres_on_given_optimum():
    g = grid(budgets=[1e12, 3e12], sizes_per_budget=5, size_span=16)
    t = target_sizes(1e12, g, centre=2e5)
    assert math.exp(sum(map(math.log, t)) / len(t)) == pytest.approx(2e5, rel=1e-9)
    specs = plan(g, LADDER, RECIPE, vocab_size=512, centres={1e12: 2e5})
    at_1e12 = [s.params for s in specs if s.budget == 1e12]
    at_3e12 = [s.params for s in specs if s.budget == 3e12]
    prior = [s.params for s in plan(g, LADDER, RECIPE, vocab_size=512) if s.budget == 3e12]
    assert at_3e12 == prior  # budgets without a centre keep the prior's grid
    geo = math.exp(sum(map(math.log, at_1e12)) / len(at_1e12))
    assert 2e5 / 2 < geo < 2e5 * 2  # ladder rounding moves the sizes, not the centre


def test_seeds_and_horizons():
    g = grid(budgets=[1e12, 3e12], seeds=2, horizons=[0.25, 4])
    specs, _ = plan_grid(g, LADDER, RECIPE, vocab_size=512)
    base = plan(grid(budgets=[1e12, 3e12]), LADDER, RECIPE, vocab_size=512)
    iso = [s for s in specs if s.kind == "grid"]
    assert len(iso) == 2 * len(base)
    repeats = [s for s in iso if s.run_id.endswith("-s1")]
    assert len(repeats) == len(base) and all(s.recipe.seed == RECIPE.seed + 1 for s in repeats)
    assert parse_run_id_full(repeats[0].run_id)[2] == 1
    hor = [s for s in specs if s.kind == "horizon"]
    shapes = {s.model for s in base}
    assert {s.model for s in hor} <= shapes and hor
    for s in hor:  # each horizon run is its size's first budget times a factor, still within a step of it
        first = min(b.budget for b in base if b.model == s.model)
        assert any(s.budget == pytest.approx(first * h) for h in (0.25, 4))
        assert abs(s.flops - s.budget) <= s.recipe.tokens_per_step * s.flops_per_token / 2 + 1e-6 * s.budget


def test_horizons_max_budget_caps_the_long_runs():
    g = grid(budgets=[1e12, 3e12], horizons=[0.25, 4], horizons_max_budget=5e12)
    specs, dropped = plan_grid(g, LADDER, RECIPE, vocab_size=512)
    hor = [s for s in specs if s.kind == "horizon"]
    uncapped = [s for s in plan(grid(budgets=[1e12, 3e12], horizons=[0.25, 4]), LADDER, RECIPE, vocab_size=512)
                if s.kind == "horizon"]
    assert hor and all(s.budget <= 5e12 for s in hor)
    over = [s for s in uncapped if s.budget > 5e12]
    assert over and len(hor) == len(uncapped) - len(over)  # exactly the runs above the cap are gone ...
    assert sum("horizons_max_budget" in d.reason for d in dropped) == len(over)  # ... each with its reason


def test_power_lr_rule_beta2_half_life_and_warmup_in_tokens_resolve_per_run():
    recipe = RecipeConfig(seq_len=128, batch_size=16, lr=2e-3, lr_rule="power", lr_n0=5e4, lr_p=0.5, lr_d0=2e6, lr_q=0.25,
                          beta2_half_life_tokens=2048 * 14, warmup_params=1.0, min_steps=20)
    specs = plan(grid(), LADDER, recipe, vocab_size=512)
    assert len(specs) >= 12
    for s in specs:  # independent recomputation of each formula at the run's own N and D
        assert s.recipe.lr == pytest.approx(2e-3 * (s.params / 5e4) ** -0.5 * (s.tokens / 2e6) ** 0.25, rel=1e-12)
        assert s.recipe.beta2 == pytest.approx(0.5 ** (1 / 14), rel=1e-12)  # 2048 tokens a step, half-life 14 steps
        assert s.warmup_steps == max(1, min(math.ceil(s.params / 2048), math.floor(0.25 * s.steps)))
        assert s.recipe.lr_rule == "constant"  # each spec holds the values it trains with
    # the rule at its reference point is its lr0; doubling N and quartering D move it by 2^-p and 4^-q
    r = recipe.resolved(1e12)
    assert r.sized(50_000, 2_000_000).lr == pytest.approx(2e-3)
    assert r.sized(100_000, 500_000).lr == pytest.approx(2e-3 * 2 ** -0.5 * 4 ** -0.25)
    table = format_plan(specs, [], 1e11)
    assert " lr " in table.splitlines()[0] and f"{specs[0].recipe.lr:.3g}" in table.splitlines()[2]
    with pytest.raises(ValueError, match="lr_rule is constant, deepseek or power"):
        RecipeConfig(lr_rule="cubic")


def test_exact_prior_centres_each_grid_where_r_n_fpt_n_equals_the_budget():
    from sweep.plan import ladder_flops_per_token

    fpt_of = ladder_flops_per_token(512, RECIPE.seq_len, LADDER, "chinchilla")
    for s in plan(grid(budgets=[3e11], sizes_per_budget=9, size_span=64), LADDER, RECIPE, vocab_size=512):
        assert fpt_of(s.params) == pytest.approx(flops_per_token(s.model, "chinchilla"), rel=1e-12)  # exact on a rung
    for c in (3e11, 1e12, 1e13):
        t = target_sizes(c, grid(prior_count="exact", tokens_per_param=60), flops_per_token_of=fpt_of)
        n_star = math.exp(sum(map(math.log, t)) / len(t))
        assert 60 * n_star * fpt_of(n_star) == pytest.approx(c, rel=1e-9)  # D = 60 N tokens of the exact count make C
        assert n_star < math.sqrt(c / (6 * 60))  # tiny models cost more than 6N per token: a smaller N* than 6N's
    with pytest.raises(ValueError, match="prior_count"):
        plan(grid(prior_count="7N"), LADDER, RECIPE, vocab_size=512)
