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
    assert model.rope_cos.shape == model.rope_sin.shape == (16, 4)  # (seq_len, head_dim / 2): one angle per pair


def rotate_half_attention(attn, x: torch.Tensor, theta: float) -> torch.Tensor:
    """The textbook rotate-half RoPE attention (GPT-NeoX / HF Llama) on the stored weights, written independently of
    the model's complex-multiply form: dims i and i + hd/2 of each head rotate by t * theta^(-2i/hd)."""
    B, T, _ = x.shape
    H, K, hd = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ attn.wq.weight.T).view(B, T, H, hd).transpose(1, 2).double()
    k = (x @ attn.wk.weight.T).view(B, T, K, hd).transpose(1, 2).double()
    v = (x @ attn.wv.weight.T).view(B, T, K, hd).transpose(1, 2).double()
    freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * torch.cat([freq, freq])[None, :]  # (T, hd)

    def rot(t):
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * ang.cos() + torch.cat([-t2, t1], dim=-1) * ang.sin()

    q, k = rot(q), rot(k).repeat_interleave(H // K, 1)
    scores = (q @ k.transpose(-1, -2)) / hd ** 0.5
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = (scores.softmax(-1) @ v.repeat_interleave(H // K, 1)).transpose(1, 2).reshape(B, T, H * hd)
    return y.float() @ attn.wo.weight.T


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_attention_is_rotate_half_rope_on_the_stored_weights(n_kv_heads):
    # the stored wq/wk are in rotate-half (HF) order; the forward's pair_rows + complex multiply must compute the same
    # attention, forward and backward, as the rotate-half formula
    cfg = small(n_kv_heads=n_kv_heads, rope_theta=500.0)
    model = Transformer(cfg, seed=3)
    attn = model.layers[0].attention
    x = torch.randn(2, 16, cfg.d_model, generator=torch.Generator().manual_seed(1), requires_grad=True)
    got = attn(x, model.rope_cos, model.rope_sin)
    want = rotate_half_attention(attn, x, cfg.rope_theta)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, [x, attn.wq.weight, attn.wk.weight], g)
    want_grads = torch.autograd.grad(want, [x, attn.wq.weight, attn.wk.weight], g)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_backward_matches_autograd_of_the_formula(dtype):
    # RMSNorm's backward is written out; autograd of y = x / sqrt(mean(x^2) + eps) * w (in fp32) is the reference
    from models.transformer import RMSNorm
    g = torch.Generator().manual_seed(0)
    norm = RMSNorm(12, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(12, generator=g))
    x = (3 * torch.randn(2, 5, 12, generator=g)).to(dtype).requires_grad_()
    dy = torch.randn(2, 5, 12, generator=g).to(dtype)
    y = norm(x)
    assert y.dtype == dtype
    gx, gw = torch.autograd.grad(y, [x, norm.weight], dy)
    assert gx.dtype == dtype and gw.dtype == torch.float32
    xr = x.detach().float().requires_grad_()
    wr = norm.weight.detach().clone().requires_grad_()
    yr = xr * torch.rsqrt(xr.pow(2).mean(-1, keepdim=True) + 1e-5) * wr
    rx, rw = torch.autograd.grad(yr, [xr, wr], dy.float())
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y.float(), yr.to(dtype).float(), **tol)
    torch.testing.assert_close(gx.float(), rx.to(dtype).float(), **tol)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-4)
    # and in float64 the analytic backward passes gradcheck (finite differences)
    x64 = torch.randn(3, 7, dtype=torch.float64, generator=g, requires_grad=True)
    w64 = torch.randn(7, dtype=torch.float64, generator=g, requires_grad=True)
    from models.transformer import _RMSNormFunction
    assert torch.autograd.gradcheck(lambda a, b: _RMSNormFunction.apply(a, b, 1e-5), (x64, w64))


def test_rope_real_is_the_complex_rotation():
    # a compiled graph takes rope_real (inductor has no complex codegen); it must be the eager path's rotation
    from models.transformer import apply_rope, rope_real
    cos, sin = rope_tables(16, 8, 10000.0)
    x = torch.randn(2, 3, 16, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rope_real(x, cos, sin), apply_rope(x, cos, sin), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(rope_real(x, cos, sin), x)  # it rotates
    bf = x.bfloat16()
    assert apply_rope(bf, cos, sin).dtype == rope_real(bf, cos, sin).dtype == torch.bfloat16


def test_rope_scores_depend_on_relative_position_only():
    # RoPE's defining property (Su et al. 2021, eq. 16): with the same q and k vectors at every position, the score of
    # positions (t, s) depends on t - s only
    cfg = small(n_heads=2, n_kv_heads=2)
    model = Transformer(cfg)
    attn = model.layers[0].attention
    x = torch.randn(1, 1, cfg.d_model).expand(1, cfg.seq_len, cfg.d_model)
    from models.transformer import apply_rope, pair_rows
    q = (x @ pair_rows(attn.wq.weight, 2, cfg.head_dim).T).view(1, cfg.seq_len, 2, -1).transpose(1, 2)
    k = (x @ pair_rows(attn.wk.weight, 2, cfg.head_dim).T).view(1, cfg.seq_len, 2, -1).transpose(1, 2)
    s = apply_rope(q, model.rope_cos, model.rope_sin) @ apply_rope(k, model.rope_cos, model.rope_sin).transpose(-1, -2)
    for lag in (0, 1, 5):
        diag = torch.diagonal(s, offset=-lag, dim1=-2, dim2=-1)  # s[t, t - lag]
        torch.testing.assert_close(diag, diag[..., :1].expand_as(diag), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(torch.diagonal(s, 0, -2, -1)[..., 0], torch.diagonal(s, -5, -2, -1)[..., 0])


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
