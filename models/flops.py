"""Exact parameter and FLOP accounting for `models.transformer.Transformer`.

The per-sequence forward terms follow Chinchilla (Hoffmann et al. 2022, arXiv 2203.15556) App. F,
adapted to this architecture: SwiGLU has three d x d_ff matrices instead of two, and with grouped-query
attention only the K and V projections shrink. A multiply-accumulate counts as 2 FLOPs and the
backward pass costs 2x the forward (App. F), so training FLOPs = 3 x forward.

`tests/test_flops.py` checks that 3 x sum(MATMUL_TERMS) equals what torch.utils.flop_counter.FlopCounterMode
counts over a real forward + backward (attention on the math SDPA kernel), to the FLOP.

Usage:
    python -m models.flops --d-model 512 --n-layers 8 --n-heads 8 --d-ff 1376 --vocab 50304 --seq-len 1024
"""

from __future__ import annotations

import argparse
import json
import sys

from models.transformer import ModelConfig

CONVENTIONS = ("chinchilla", "chinchilla_no_embed", "6N", "kaplan", "deepseek_M")

# Terms that are real matmuls (what a FLOP counter sees). The embedding "matmul" is really a table
# lookup and the softmax is elementwise, so those two are left out.
MATMUL_TERMS = ("attention_qkv", "attention_logits", "attention_values", "attention_out", "mlp", "logits")


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts from the shape alone; `params` equals sum(p.numel() for p in Transformer(cfg).parameters())."""
    d, L, V, ff = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.d_ff
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    attention = d * q_dim + 2 * d * kv_dim + q_dim * d  # wq, wk, wv, wo
    mlp = 3 * d * ff  # w1, w3, w2
    norms = 2 * d  # attention_norm, ffn_norm weights
    non_embedding = L * (attention + mlp + norms) + d  # + final norm
    embedding = V * d if cfg.tie_embeddings else 2 * V * d  # tok_embeddings (+ untied output)
    return {
        "params": non_embedding + embedding,
        "params_non_embedding": non_embedding,
        "params_embedding": embedding,
    }


def forward_terms(cfg: ModelConfig) -> dict[str, int]:
    """Forward FLOPs for one sequence of T = cfg.seq_len tokens, summed over layers (Chinchilla App. F)."""
    T, d, L, V, ff = cfg.seq_len, cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.d_ff
    H, K, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    return {
        "embeddings": 2 * T * V * d,  # App. F counts the lookup as a one-hot matmul
        "attention_qkv": 2 * T * d * (H * hd + 2 * K * hd) * L,  # App. F: 2*3*T*d*(k*H); GQA shrinks K, V
        "attention_logits": 2 * T * T * H * hd * L,  # Q K^T over the full T x T (no causal discount)
        "softmax": 3 * H * T * T * L,
        "attention_values": 2 * T * T * H * hd * L,  # softmax(QK^T) V
        "attention_out": 2 * T * H * hd * d * L,  # wo
        "mlp": 2 * T * 3 * d * ff * L,  # SwiGLU: w1, w3, w2 (App. F's 2*d*ffw becomes 3*d*ffw)
        "logits": 2 * T * d * V,  # lm_head
    }


def flops_per_token(cfg: ModelConfig, convention: str = "chinchilla") -> float:
    """Training FLOPs (forward + backward) per token under one of CONVENTIONS."""
    T, d, L = cfg.seq_len, cfg.d_model, cfg.n_layers
    if convention == "chinchilla":
        # App. F: forward = all terms, backward = 2 x forward.
        return 3 * sum(forward_terms(cfg).values()) / T
    if convention == "chinchilla_no_embed":
        # Same, minus the embedding term: the lookup is a gather, not a matmul, and costs ~nothing.
        terms = forward_terms(cfg)
        return 3 * (sum(terms.values()) - terms["embeddings"]) / T
    if convention == "6N":
        # C ~= 6 N D with N = all parameters (embeddings included).
        return 6.0 * param_counts(cfg)["params"]
    if convention == "kaplan":
        # Kaplan et al. 2020, Table 1: C_forward ~= 2N + 2 n_layer n_ctx d_attn per token, N non-embedding; x3 for training.
        return 6.0 * param_counts(cfg)["params_non_embedding"] + 6.0 * L * T * (cfg.n_heads * cfg.head_dim)
    if convention == "deepseek_M":
        # DeepSeek LLM 2024 (arXiv 2401.02954, sec. 3.2), taken literally: M = 72 L d^2 + 12 L d T
        # non-embedding training FLOPs per token. It assumes 12 d^2 matmul params per layer (MHA and
        # an 8 d^2 MLP), so it equals 3 x (terms - embeddings - logits - softmax) / T only when
        # n_kv_heads == n_heads and d_ff == 8/3 d; for other shapes it is an approximation.
        return float(72 * L * d * d + 12 * L * d * T)
    raise ValueError(f"unknown FLOP convention {convention!r}; valid conventions are {', '.join(CONVENTIONS)}")


def matmul_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token of the real matmuls only (3 x MATMUL_TERMS): what a FLOP counter sees, and the
    numerator of MFU (the embedding lookup and the softmax do not run on the matmul units the peak describes)."""
    terms = forward_terms(cfg)
    return 3 * sum(terms[t] for t in MATMUL_TERMS) / cfg.seq_len


def report(cfg: ModelConfig) -> dict:
    """Everything above for one shape, as a JSON-ready dict."""
    counts = param_counts(cfg)
    return {
        "config": cfg.to_dict(),
        "params": counts["params"],
        "params_non_embedding": counts["params_non_embedding"],
        "params_embedding": counts["params_embedding"],
        "terms": forward_terms(cfg),
        "flops_per_token": {c: flops_per_token(cfg, c) for c in CONVENTIONS},
    }


def format_report(rep: dict) -> str:
    cfg = rep["config"]
    lines = [
        "shape: " + " ".join(f"{k}={v}" for k, v in cfg.items()),
        f"params                {rep['params']:>22,}",
        f"params_non_embedding  {rep['params_non_embedding']:>22,}",
        f"params_embedding      {rep['params_embedding']:>22,}",
        "",
        f"forward FLOPs per sequence (T={cfg['seq_len']}, Chinchilla App. F):",
    ]
    total = sum(rep["terms"].values())
    for name, value in rep["terms"].items():
        lines.append(f"  {name:<20}{value:>22,}  {100 * value / total:5.1f}%")
    lines.append(f"  {'total':<20}{total:>22,}")
    lines += ["", "training FLOPs per token (forward + backward):"]
    six_n = rep["flops_per_token"]["6N"]
    for name, value in rep["flops_per_token"].items():
        lines.append(f"  {name:<20}{value:>22,.0f}  {value / six_n:6.3f} x 6N")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.flops", description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, required=True)
    parser.add_argument("--n-layers", type=int, required=True)
    parser.add_argument("--n-heads", type=int, required=True)
    parser.add_argument("--n-kv-heads", type=int, default=None, help="default: n_heads (multi-head attention)")
    parser.add_argument("--d-ff", type=int, required=True)
    parser.add_argument("--vocab", type=int, required=True, help="counted exactly as given (no padding)")
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--tie-embeddings", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args(argv)
    try:
        cfg = ModelConfig(
            d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
            n_kv_heads=args.n_heads if args.n_kv_heads is None else args.n_kv_heads,
            d_ff=args.d_ff, vocab_size=args.vocab, seq_len=args.seq_len, tie_embeddings=args.tie_embeddings,
        )
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)  # one line, exit 2 like argparse
        return 2
    rep = report(cfg)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
