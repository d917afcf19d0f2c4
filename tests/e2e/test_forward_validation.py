"""sweep.validate: after the grid, the law's predicted optimum at 3x the top budget is trained (kind validation, held out
of every fit) and the analysis checks the law against it: fit.json's validation entry, marked forward.

The grid's results are written from a known surface, L = E + A/N^alpha + B/D^beta with A = B and alpha = beta, whose
optimum along each isoFLOP line is known; the sweep then finds every grid run finished, fits that law, and trains the
validation runs for real."""
import json
import math

from helpers import finish, launch, sweep_args
from sweep.config import section
from sweep.data import TokenData, prepare
from sweep.plan import RunSpec, plan_grid
from sweep.rundir import RunResult, write_result

GRID = ["sweep.budgets=[3e9,1e10,3e10]", "sweep.sizes=[1.34e4,3.7e4,7.09e4]", "sweep.validate=true",
        "sweep.validate_sizes=3"]
E, A, ALPHA = 1.5, 100.0, 0.3


def surface(n, d):
    return E + A / n ** ALPHA + A / d ** ALPHA


def composed(args):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sweep.app import CONF_DIR
    from sweep.config import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[a for a in args if not a.startswith("hydra.")])
    GlobalHydra.instance().clear()
    return cfg


def test_forward_validation_trains_the_predicted_optimum_and_checks_the_law(tmp_path, corpus_dir):
    args = sweep_args(tmp_path, corpus_dir, "v", *GRID)
    cfg = composed(args)
    data = TokenData(prepare(section(cfg, "data")))
    specs, _ = plan_grid(section(cfg, "sweep"), section(cfg, "model"), section(cfg, "recipe"), data.vocab_size,
                         data.train_tokens)
    sweep_dir = tmp_path / "v"
    for s in specs:  # the grid, "trained": losses from the known surface
        write_result(sweep_dir / s.run_id, RunResult(
            run_id=s.run_id, status="done", kind=s.kind, budget=s.budget, flops=s.flops, flops_spent=s.flops,
            params=s.params, params_non_embedding=s.params_non_embedding, tokens=s.tokens, steps=s.steps,
            final_val_loss=surface(s.params, s.tokens), spec=s.to_dict()))

    out = finish(launch(args), timeout=900)
    assert f"{len(specs)} of {len(specs)} runs already finished" in out  # the grid was not trained again
    plan = [RunSpec.from_dict(r) for r in json.loads((sweep_dir / "plan.json").read_text())["runs"]]
    val = [s for s in plan if s.kind == "validation"]
    assert len(val) >= 2 and all(s.budget == 9e10 and s.run_id.endswith("-val") for s in val)
    # the law's N_opt at 9e10: on the surface, A = B and alpha = beta put the optimum where N = D; the runs' D at
    # C is C / fpt(N), so N_opt solves N fpt(N) = C (fpt from the planned validation shapes, log-log between them)
    n_pred = float(out.split("validation: the law's N_opt at 9e+10 FLOPs (3 x the top budget) is ")[1].split(";")[0])
    ns = sorted(s.params for s in val)
    assert ns[0] < n_pred < ns[-1]
    fpt = {s.params: s.flops_per_token for s in val}
    lo, hi = ns[0], ns[-1]
    x = (math.log(9e10) - math.log(lo * fpt[lo])) / (math.log(hi * fpt[hi]) - math.log(lo * fpt[lo]))
    n_true = math.exp(math.log(lo) + x * (math.log(hi) - math.log(lo)))
    assert abs(math.log(n_pred / n_true)) < math.log(1.5), (n_pred, n_true)  # Approach 2's extrapolated vertex

    fit = json.loads((sweep_dir / "fit.json").read_text())
    entry = fit["validation"]
    assert entry["kind"] == "forward" and entry["budget"] == 9e10 and entry["measured"]["n_runs"] == len(val)
    for key in ("budget", "L_pred", "L_pred_ci", "L_measured", "N_opt_pred", "N_opt_pred_ci", "N_opt_measured"):
        assert key in entry
    assert all(json.loads((sweep_dir / s.run_id / "result.json").read_text())["kind"] == "validation" for s in val)
    assert sum(p["n_points"] for p in fit["approach2"]["parabolas"]) == len(specs)  # no validation run in a profile

    attempts = {s.run_id: (sweep_dir / s.run_id / "attempts.jsonl").read_text() for s in val}
    finish(launch(args), timeout=900)  # a relaunch plans the same validation runs and trains nothing
    assert [r["run_id"] for r in json.loads((sweep_dir / "plan.json").read_text())["runs"]] == [s.run_id for s in plan]
    assert {rid: (sweep_dir / rid / "attempts.jsonl").read_text() for rid in attempts} == attempts
