import json
import math
from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models.flops import MATMUL_TERMS, forward_terms
from models.ladder import LadderConfig
from models.transformer import Transformer
from sweep.data import TokenData
from sweep.plan import SweepConfig, plan
from sweep.recipe import RecipeConfig
from sweep.train import TrainerConfig, lr_at, train

LADDER = LadderConfig(head_dim=16, aspect_ratio=32, tie_embeddings=True, min_layers=2)


def tiny_spec(budget=2e9, sizes=(3e4,), **recipe):
    r = RecipeConfig(**{"seq_len": 32, "batch_size": 8, "lr": 3e-3, "min_steps": 10, **recipe})
    specs = plan(SweepConfig(budgets=[budget], sizes=list(sizes)), LADDER, r, vocab_size=320)
    assert specs, "the tiny plan must have a feasible run"
    return specs[0]


@pytest.fixture
def data(prepared):
    return TokenData(prepared[1])


def test_train_to_budget(tmp_path, data):
    spec = tiny_spec()
    res = train(spec, TrainerConfig(log_every=5, progress=False, eval_tokens=2048), data, tmp_path)
    step_flops = spec.recipe.tokens_per_step * spec.flops_per_token
    assert res.status == "done" and res.steps == spec.steps
    assert abs(res.flops - spec.budget) <= step_flops  # within one optimizer step of the budget
    assert res.tokens == spec.steps * spec.recipe.tokens_per_step
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["flops"] == res.flops and on_disk["run_id"] == spec.run_id
    for key in ("budget", "flops_convention", "params", "params_non_embedding", "tokens", "steps", "final_val_loss"):
        assert on_disk[key] is not None
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == spec.steps and lines[-1]["flops"] == res.flops
    for rec in lines:  # cumulative FLOPs are the exact per-step count times the step
        assert rec["flops"] == rec["step"] * step_flops and rec["tokens"] == rec["step"] * spec.recipe.tokens_per_step
    assert lines[-1]["loss"] < lines[0]["loss"] - 0.5  # it learned something real
    assert math.isfinite(res.final_val_loss) and res.final_val_loss < math.log(320)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_counted_flops_match_torch_flop_counter(data):
    """One real training step, measured by FlopCounterMode, equals the matmul part of the planned count."""
    spec = tiny_spec()
    model = Transformer(spec.model)
    x, y = data.train_batch(0, spec.recipe.batch_size, spec.recipe.seq_len, seed=0)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(torch.from_numpy(x), torch.from_numpy(y)).backward()
    terms = forward_terms(spec.model)
    # flops_per_token counts all App. F terms x 3; the counter sees only the matmuls
    matmul_per_token = 3 * sum(terms[k] for k in MATMUL_TERMS) / spec.recipe.seq_len
    assert fc.get_total_flops() == matmul_per_token * spec.recipe.tokens_per_step
    rest = 3 * (terms["embeddings"] + terms["softmax"]) / spec.recipe.seq_len
    assert spec.flops_per_token == pytest.approx(matmul_per_token + rest, rel=1e-12)


def test_lr_schedule_warmup_then_cosine_to_ten_percent():
    spec = tiny_spec(warmup_frac=0.1)
    lrs = [lr_at(s, spec) for s in range(spec.steps)]
    peak = spec.recipe.lr
    w = spec.warmup_steps
    assert w >= 1 and lrs[w - 1] == pytest.approx(peak)
    assert all(a < b for a, b in zip(lrs[:w], lrs[1:w]))  # rising warm-up
    assert all(a >= b for a, b in zip(lrs[w:], lrs[w + 1:]))  # then monotone decay
    assert lrs[-1] == pytest.approx(0.1 * peak)  # cosine cycle ends exactly at the last step


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_lr_schedule_wsd_warmup_constant_then_cooldown(shape):
    spec = tiny_spec(warmup_frac=0.05, schedule="wsd", cooldown_frac=0.2, cooldown_shape=shape)
    lrs = [lr_at(s, spec) for s in range(spec.steps)]
    peak, w, cd = spec.recipe.lr, spec.warmup_steps, spec.cooldown_steps
    assert cd == round(0.2 * spec.steps) and w >= 1
    assert all(a < b for a, b in zip(lrs[:w], lrs[1:w])) and lrs[w - 1] == pytest.approx(peak)
    assert lrs[w:spec.steps - cd] == [peak] * (spec.steps - cd - w)  # the stable part
    for k in range(spec.steps - cd, spec.steps):  # Hägele et al.: linear, or 1 - sqrt of the cooldown's progress
        p = (k - (spec.steps - cd) + 1) / cd
        left = 1 - p if shape == "linear" else 1 - p ** 0.5
        assert lrs[k] == pytest.approx(peak * (0.1 + 0.9 * left))
    assert lrs[-1] == pytest.approx(0.1 * peak)
    trunk = replace(spec, kind="trunk", cooldown_steps=0)  # a trunk never cools down
    assert [lr_at(s, trunk) for s in range(w, spec.steps)] == [peak] * (spec.steps - w)


def test_deterministic_on_cpu(tmp_path, data):
    spec = tiny_spec()
    cfg = TrainerConfig(log_every=5, progress=False, eval_tokens=2048, eval_fractions=[])
    a = train(spec, cfg, data, tmp_path / "a")
    b = train(spec, cfg, data, tmp_path / "b")
    assert a.final_val_loss == b.final_val_loss and a.final_train_loss == b.final_train_loss


def test_gradient_accumulation_matches_full_batch(tmp_path, data):
    spec = tiny_spec()
    full = train(spec, TrainerConfig(progress=False, eval_tokens=2048, eval_fractions=[]), data, tmp_path / "f")
    acc = train(spec, TrainerConfig(progress=False, eval_tokens=2048, eval_fractions=[], micro_batch_size=2), data, tmp_path / "m")
    assert acc.final_val_loss == pytest.approx(full.final_val_loss, rel=1e-4)


def test_divergence_is_recorded(tmp_path, data):
    spec = tiny_spec(lr=50.0, warmup_frac=0.0)
    res = train(spec, TrainerConfig(log_every=1, progress=False, eval_tokens=2048), data, tmp_path)
    assert res.status == "diverged" and res.error and res.final_val_loss is None
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_bad_trainer_config():
    with pytest.raises(ValueError, match="trainer.device"):
        TrainerConfig(device="tpu")
    with pytest.raises(ValueError, match="log_every"):
        TrainerConfig(log_every=0)
