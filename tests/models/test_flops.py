import json
import subprocess
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models.flops import CONVENTIONS, MATMUL_TERMS, flops_per_token, forward_terms, param_counts, report
from models.transformer import ModelConfig, Transformer

from helpers import REPO

SHAPES = [
    ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=64, vocab_size=97, seq_len=16),
    ModelConfig(d_model=48, n_layers=3, n_heads=6, n_kv_heads=2, d_ff=100, vocab_size=128, seq_len=12),  # GQA
    ModelConfig(d_model=32, n_layers=1, n_heads=4, n_kv_heads=1, d_ff=37, vocab_size=1001, seq_len=9),  # MQA, odd
    ModelConfig(d_model=64, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=171, vocab_size=300, seq_len=8,
                tie_embeddings=True),
]


@pytest.mark.parametrize("cfg", SHAPES, ids=lambda c: f"d{c.d_model}L{c.n_layers}K{c.n_kv_heads}t{int(c.tie_embeddings)}")
def test_param_counts_match_model(cfg):
    counts = param_counts(cfg)
    model = Transformer(cfg)
    assert counts["params"] == sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if n in ("tok_embeddings.weight", "output.weight"))
    assert counts["params_embedding"] == embedding
    assert counts["params_non_embedding"] == counts["params"] - embedding


@pytest.mark.parametrize("cfg", SHAPES, ids=lambda c: f"d{c.d_model}L{c.n_layers}K{c.n_kv_heads}t{int(c.tie_embeddings)}")
def test_matmul_terms_equal_flop_counter_exactly(cfg):
    """3 x the analytic matmul FLOPs == what FlopCounterMode sees over forward + backward, to the FLOP.

    FlopCounterMode counts only mm/bmm/addmm/conv (and the fused SDPA ops on CUDA). On CPU the default
    SDPA kernel (aten._scaled_dot_product_flash_attention_for_cpu) has no FLOP formula registered and
    would count as 0, so attention runs on the math kernel, which decomposes into two bmm's over the
    full T x T (no causal discount; GQA K/V repeated up to H heads) plus elementwise ops. The embedding
    lookup, norms, RoPE, SiLU, softmax and the loss are not counted, which is exactly the set
    left out of MATMUL_TERMS. Backward of every matmul is two matmuls, hence exactly 3x.
    """
    torch.manual_seed(0)
    batch = 2
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(idx, idx).backward()
    terms = forward_terms(cfg)
    assert counter.get_total_flops() == 3 * sum(terms[t] for t in MATMUL_TERMS) * batch


def test_forward_terms_keys_and_types():
    terms = forward_terms(SHAPES[1])
    assert list(terms) == ["embeddings", "attention_qkv", "attention_logits", "softmax",
                           "attention_values", "attention_out", "mlp", "logits"]
    assert all(isinstance(v, int) for v in terms.values())
    assert set(MATMUL_TERMS) == set(terms) - {"embeddings", "softmax"}


def test_gqa_only_shrinks_k_and_v():
    mha = ModelConfig(d_model=64, n_layers=2, n_heads=8, n_kv_heads=8, d_ff=128, vocab_size=100, seq_len=10)
    gqa = ModelConfig(d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=128, vocab_size=100, seq_len=10)
    a, b = forward_terms(mha), forward_terms(gqa)
    T, d, L, hd = 10, 64, 2, 8
    assert a["attention_qkv"] - b["attention_qkv"] == 2 * T * d * (2 * (8 - 2) * hd) * L
    assert {k: v for k, v in a.items() if k != "attention_qkv"} == {k: v for k, v in b.items() if k != "attention_qkv"}


def test_conventions():
    cfg = SHAPES[0]
    T, d, L = cfg.seq_len, cfg.d_model, cfg.n_layers
    terms = forward_terms(cfg)
    counts = param_counts(cfg)
    assert flops_per_token(cfg) == flops_per_token(cfg, "chinchilla") == 3 * sum(terms.values()) / T
    assert flops_per_token(cfg, "chinchilla") >= flops_per_token(cfg, "chinchilla_no_embed")
    assert flops_per_token(cfg, "chinchilla") - flops_per_token(cfg, "chinchilla_no_embed") == pytest.approx(
        3 * terms["embeddings"] / T)
    assert flops_per_token(cfg, "6N") == 6 * counts["params"]
    assert flops_per_token(cfg, "kaplan") == 6 * counts["params_non_embedding"] + 6 * L * T * d
    assert flops_per_token(cfg, "deepseek_M") == 72 * L * d * d + 12 * L * d * T
    with pytest.raises(ValueError, match="chinchilla_no_embed"):
        flops_per_token(cfg, "palm")


def test_deepseek_known_shape():
    # DeepSeek LLM 7B (arXiv 2401.02954, Table 2): 30 layers, d_model 4096, 4096 context.
    cfg = ModelConfig(d_model=4096, n_layers=30, n_heads=32, n_kv_heads=32, d_ff=11008, vocab_size=102400,
                      seq_len=4096)
    assert flops_per_token(cfg, "deepseek_M") == 72 * 30 * 4096**2 + 12 * 30 * 4096 * 4096 == 42_278_584_320
    # With MHA and d_ff = 8/3 d the formula is exactly the App. F matmuls minus the vocab terms.
    exact = ModelConfig(d_model=768, n_layers=4, n_heads=12, n_kv_heads=12, d_ff=2048, vocab_size=1000,
                        seq_len=256)
    t = forward_terms(exact)
    non_vocab = sum(t.values()) - t["embeddings"] - t["logits"] - t["softmax"]
    assert flops_per_token(exact, "deepseek_M") == 3 * non_vocab / exact.seq_len


def test_chinchilla_convention_matches_flop_counter_per_token():
    """The headline convention is the counter's number plus the (uncounted) embedding and softmax terms."""
    cfg = SHAPES[1]
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (1, cfg.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(idx, idx).backward()
    t = forward_terms(cfg)
    measured = counter.get_total_flops() / cfg.seq_len
    assert flops_per_token(cfg, "chinchilla") == pytest.approx(measured + 3 * (t["embeddings"] + t["softmax"]) / cfg.seq_len)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "models.flops", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_json_matches_report():
    res = run_cli("--d-model", "48", "--n-layers", "3", "--n-heads", "6", "--n-kv-heads", "2", "--d-ff", "100",
                  "--vocab", "128", "--seq-len", "12", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(json.dumps(report(SHAPES[1])))


def test_cli_table_and_defaults():
    res = run_cli("--d-model", "64", "--n-layers", "2", "--n-heads", "2", "--d-ff", "171", "--vocab", "300",
                  "--seq-len", "8", "--tie-embeddings")
    assert res.returncode == 0, res.stderr
    assert f"{param_counts(SHAPES[3])['params']:,}" in res.stdout
    for name in CONVENTIONS:
        assert name in res.stdout


def test_cli_bad_shape_is_one_line_error():
    res = run_cli("--d-model", "50", "--n-layers", "2", "--n-heads", "4", "--d-ff", "64", "--vocab", "100",
                  "--seq-len", "8", "--json")
    assert res.returncode == 2
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr and "n_heads" in res.stderr
