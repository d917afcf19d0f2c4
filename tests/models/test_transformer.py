import pytest
import torch
import torch.nn.functional as F

from models.transformer import ModelConfig, Transformer, pad_vocab, rope_tables


def small(**overrides) -> ModelConfig:
    kw = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=64, vocab_size=97, seq_len=16)
    kw.update(overrides)
    return ModelConfig(**kw)


def test_forward_shapes_and_loss_matches_cross_entropy():
    torch.manual_seed(0)
    cfg = small()
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 10))
    targets = torch.randint(0, cfg.vocab_size, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, cfg.vocab_size)
    loss = model(idx, targets)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    expected = F.cross_entropy(logits.view(-1, cfg.vocab_size), targets.view(-1))
    torch.testing.assert_close(loss, expected)
    # an untrained model at init is close to uniform over the vocab
    assert abs(loss.item() - torch.log(torch.tensor(float(cfg.vocab_size))).item()) < 0.5


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_causality(n_kv_heads):
    torch.manual_seed(0)
    cfg = small(n_kv_heads=n_kv_heads)
    model = Transformer(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_tied_embeddings_share_storage():
    cfg = small(tie_embeddings=True)
    model = Transformer(cfg)
    assert model.output.weight is model.tok_embeddings.weight
    assert model.output.weight.data_ptr() == model.tok_embeddings.weight.data_ptr()
    untied = Transformer(small())
    n_tied = sum(p.numel() for p in model.parameters())
    n_untied = sum(p.numel() for p in untied.parameters())
    assert n_untied - n_tied == cfg.vocab_size * cfg.d_model  # counted once
    # the gradient from both uses lands in the one tensor
    model(torch.randint(0, cfg.vocab_size, (1, 8)), torch.randint(0, cfg.vocab_size, (1, 8))).backward()
    assert model.tok_embeddings.weight.grad is not None


def test_rope_tables_are_buffers_not_params_or_state():
    model = Transformer(small())
    names = {n for n, _ in model.named_parameters()}
    assert not any("rope" in n for n in names)
    assert not any("rope" in k for k in model.state_dict())
    assert model.rope_cos.shape == (16, 8)


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_gqa_runs_and_matches_explicit_repeat(n_kv_heads):
    torch.manual_seed(0)
    cfg = small(n_kv_heads=n_kv_heads)
    model = Transformer(cfg)
    assert model.layers[0].attention.wk.weight.shape == (n_kv_heads * cfg.head_dim, cfg.d_model)
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss)
    # enable_gqa must agree with repeating each KV head over its query group
    q, k = torch.randn(2, 4, 5, 8), torch.randn(2, n_kv_heads, 5, 8)
    v = torch.randn(2, n_kv_heads, 5, 8)
    got = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    rep = 4 // n_kv_heads
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True)
    torch.testing.assert_close(got, want)


def test_odd_sizes_work():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=24, n_layers=1, n_heads=3, n_kv_heads=1, d_ff=300, vocab_size=1001, seq_len=7)
    model = Transformer(cfg)
    idx = torch.randint(0, 1001, (2, 7))
    assert model(idx).shape == (2, 7, 1001)
    assert torch.isfinite(model(idx, idx))


@pytest.mark.parametrize("overrides", [
    dict(d_model=30),  # 4 heads do not divide 30
    dict(n_kv_heads=3),  # 3 does not divide 4 heads
    dict(n_kv_heads=8),  # more KV heads than query heads
    dict(d_model=12, n_heads=4),  # head_dim 3 is odd
    dict(d_model=0),
    dict(n_layers=0),
    dict(n_heads=-4),
    dict(n_kv_heads=0),
    dict(d_ff=-1),
    dict(vocab_size=0),
    dict(seq_len=0),
    dict(d_model=32.0),  # not an int
    dict(n_layers=True),  # bool is not a size
    dict(tie_embeddings="yes"),
    dict(rope_theta=0.0),
])
def test_impossible_shapes_raise(overrides):
    with pytest.raises(ValueError):
        small(**overrides)


def test_config_dict_round_trip():
    cfg = small(n_kv_heads=2, tie_embeddings=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})
    d = cfg.to_dict()
    del d["d_ff"]
    with pytest.raises(ValueError, match="missing"):
        ModelConfig.from_dict(d)


def test_pad_vocab():
    assert pad_vocab(50257) == 50304
    assert pad_vocab(64) == 64
    assert pad_vocab(1001, 8) == 1008
    with pytest.raises(ValueError):
        pad_vocab(0)


def test_sequence_longer_than_seq_len_raises():
    model = Transformer(small())
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_it_learns_a_fixed_batch():
    torch.manual_seed(0)
    cfg = small(n_kv_heads=2)
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (4, cfg.seq_len + 1))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(x, y).item()
    for _ in range(30):
        opt.zero_grad()
        loss = model(x, y)
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=256, n_layers=8, n_heads=4, n_kv_heads=4, d_ff=512, vocab_size=512, seq_len=8)
    model = Transformer(cfg)
    assert abs(model.layers[0].attention.wq.weight.std().item() - 0.02) < 0.002
    assert abs(model.layers[0].feed_forward.w2.weight.std().item() - 0.02 / 4) < 0.0005  # 1/sqrt(2*8)
    assert torch.all(model.norm.weight == 1)


def test_init_is_a_function_of_seed_and_name_only():
    """A meta-device model materialised and reset equals one built directly, parameter by parameter; the value
    of each parameter depends on (seed, name) alone: not on the global RNG or on the other parameters."""
    for cfg in (small(n_kv_heads=2), small(tie_embeddings=True)):
        direct = Transformer(cfg, seed=3).state_dict()
        torch.manual_seed(123)  # the global RNG plays no part
        with torch.device("meta"):
            model = Transformer(cfg)
        assert all(p.is_meta for p in model.parameters())  # nothing allocated yet
        model.to_empty(device="cpu").reset_parameters(3)
        assert set(model.state_dict()) == set(direct)
        for k, v in model.state_dict().items():
            assert torch.equal(v, direct[k]), k
        assert torch.equal(model.rope_cos, rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)[0])
        if cfg.tie_embeddings:  # Module.to_empty alone would untie them
            assert model.output.weight is model.tok_embeddings.weight
        other = Transformer(cfg, seed=4)
        assert not torch.equal(other.layers[0].attention.wq.weight, model.layers[0].attention.wq.weight)
        # two parameters of one shape draw from different generators
        assert not torch.equal(model.layers[0].feed_forward.w1.weight, model.layers[0].feed_forward.w3.weight)
        assert torch.equal(Transformer(small(n_layers=3), seed=3).layers[0].attention.wq.weight,
                           Transformer(small(n_layers=3, vocab_size=200), seed=3).layers[0].attention.wq.weight)
