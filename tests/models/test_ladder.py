import math
from dataclasses import replace

import numpy as np
import pytest

from helpers import REPO
from models.flops import param_counts
from models.ladder import LadderConfig, ladder, shape_for_params
from models.transformer import ModelConfig

VOCAB, SEQ = 50257, 1024


def preset(name: str) -> LadderConfig:
    """A conf/model/<name>.yaml preset's ladder, as the sweep composes it (the file's `model` section)."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml")
    return LadderConfig(**OmegaConf.to_container(node.get("model", node)))


CONFIGS = [
    LadderConfig(),
    LadderConfig(aspect_ratio=32.0, head_dim=128, kv_group=4, tie_embeddings=True, max_d_model=8192),
    LadderConfig(kv_group=2, ffn_ratio=4.0, d_ff_multiple=256, min_layers=2, vocab_multiple=128),
    LadderConfig(kv_group=3, ffn_ratio=1.0, max_d_model=4096),  # weak MLP: n_kv_heads must not drop
    preset("tiny"),  # model=tiny: head_dim 8, depth d/16 (at least 2), d_ff multiple of 8, tied, vocab multiple of 8
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_ladder_is_valid_and_strictly_increasing(cfg):
    shapes = ladder(VOCAB, SEQ, cfg)
    assert shapes and all(isinstance(s, ModelConfig) for s in shapes)
    params = [param_counts(s)["params"] for s in shapes]
    assert all(a < b for a, b in zip(params, params[1:]))
    for field in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff"):
        values = [getattr(s, field) for s in shapes]
        assert values == sorted(values), field
    assert shapes[-1].d_model <= cfg.max_d_model
    for s in shapes:
        ModelConfig.from_dict(s.to_dict())  # re-validates


@pytest.mark.parametrize("cfg", CONFIGS)
def test_ladder_respects_the_rule(cfg):
    for s in ladder(VOCAB, SEQ, cfg):
        assert s.head_dim == cfg.head_dim
        assert s.n_layers == max(cfg.min_layers, int(s.d_model / cfg.aspect_ratio + 0.5))
        assert s.d_ff % cfg.d_ff_multiple == 0
        assert cfg.ffn_ratio * s.d_model <= s.d_ff + 1e-6 < cfg.ffn_ratio * s.d_model + cfg.d_ff_multiple
        assert s.n_kv_heads <= max(1, s.n_heads / cfg.kv_group) and s.n_heads % s.n_kv_heads == 0
        assert s.vocab_size % cfg.vocab_multiple == 0 and 0 <= s.vocab_size - VOCAB < cfg.vocab_multiple
        assert s.tie_embeddings == cfg.tie_embeddings and s.seq_len == SEQ


def test_default_ladder_known_rungs():
    shapes = {s.d_model: s for s in ladder(VOCAB, SEQ, LadderConfig())}
    # d=512: 8 layers (aspect 64), 8 heads of 64, d_ff = 8/3 * 512 = 1365.3 -> 1376
    assert shapes[512] == ModelConfig(d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, d_ff=1376,
                                      vocab_size=50304, seq_len=SEQ)
    assert shapes[192].d_ff == 512  # 8/3 * 192 is 512 exactly, float noise must not round it up to 544
    assert len(shapes) == 16384 // 64


def test_kv_group():
    shapes = ladder(VOCAB, SEQ, LadderConfig(kv_group=2))
    by_heads = {s.n_heads: s.n_kv_heads for s in shapes}
    assert by_heads[1] == 1 and by_heads[4] == 2 and by_heads[12] == 6
    assert 13 not in by_heads  # 13 heads would get 1 KV head after 12 heads got 6: skipped


@pytest.mark.parametrize("cfg", CONFIGS)
def test_shape_for_params_monotone_and_nearest(cfg):
    shapes = ladder(VOCAB, SEQ, cfg)
    params = [param_counts(s)["params"] for s in shapes]
    targets = np.geomspace(params[0], params[-1], 3000)
    chosen = [param_counts(shape_for_params(t, VOCAB, SEQ, cfg))["params"] for t in targets]
    assert all(a <= b for a, b in zip(chosen, chosen[1:]))
    assert set(chosen) <= set(params)
    for t, n in zip(targets, chosen):
        i = params.index(n)
        # within half a ladder step (in log space) of the target, on both sides
        lower_gap = math.log(params[i]) - math.log(params[i - 1]) if i > 0 else 0.0
        upper_gap = math.log(params[i + 1]) - math.log(params[i]) if i + 1 < len(params) else 0.0
        above = math.log(t) - math.log(n)  # > 0: the target lies between rung i and rung i+1
        assert (above <= upper_gap / 2 + 1e-12) if above > 0 else (-above <= lower_gap / 2 + 1e-12)
        # and truly the nearest rung
        best = min(abs(math.log(t) - math.log(p)) for p in params)
        assert abs(math.log(t) - math.log(n)) <= best + 1e-12


def test_exact_hits_and_ties():
    cfg = LadderConfig()
    shapes = ladder(VOCAB, SEQ, cfg)
    params = [param_counts(s)["params"] for s in shapes]
    for s, n in zip(shapes[:20], params):
        assert shape_for_params(n, VOCAB, SEQ, cfg) == s
    geometric_mid = math.sqrt(params[3] * params[4])
    assert shape_for_params(geometric_mid, VOCAB, SEQ, cfg) in (shapes[3], shapes[4])
    assert shape_for_params(np.float64(params[5]), np.int64(VOCAB), np.int64(SEQ), cfg) == shapes[5]


def test_out_of_range_raises():
    cfg = LadderConfig(max_d_model=2048)
    params = [param_counts(s)["params"] for s in ladder(VOCAB, SEQ, cfg)]
    with pytest.raises(ValueError, match="below the smallest"):
        shape_for_params(params[0] * 0.99, VOCAB, SEQ, cfg)
    with pytest.raises(ValueError, match="max_d_model"):
        shape_for_params(params[-1] * 1.01, VOCAB, SEQ, cfg)
    for bad in (0, -1e6, float("nan"), float("inf"), "1e8"):
        with pytest.raises(ValueError):
            shape_for_params(bad, VOCAB, SEQ, cfg)


@pytest.mark.parametrize("overrides", [
    dict(aspect_ratio=0.0), dict(aspect_ratio=float("nan")), dict(head_dim=0), dict(head_dim=63),
    dict(ffn_ratio=-1.0), dict(d_ff_multiple=0), dict(min_layers=0), dict(kv_group=0),
    dict(vocab_multiple=0), dict(max_d_model=32), dict(head_dim=64.0), dict(tie_embeddings=1),
])
def test_bad_ladder_config_raises(overrides):
    with pytest.raises(ValueError):
        replace(LadderConfig(), **overrides)


def test_bad_vocab_or_seq_len_raises():
    with pytest.raises(ValueError):
        ladder(0, SEQ, LadderConfig())
    with pytest.raises(ValueError):
        shape_for_params(1e8, VOCAB, -1, LadderConfig())
