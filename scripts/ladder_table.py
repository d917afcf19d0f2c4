"""Print the rungs of a model ladder: the shapes a sweep can train, and where budgets' optima fall on them.

    python scripts/ladder_table.py model=tiny --vocab 257 --seq-len 128 --max-params 2e6
    python scripts/ladder_table.py model=llama model.head_dim=16 model.aspect_ratio=32 --vocab 512 --budgets 1e11 1e13

The ladder is composed from conf/model/<preset>.yaml plus overrides, exactly as a sweep would.  Per rung: N
(total), non-embedding N, the embedding's share of N, depth L, width d, heads, d_ff, training FLOPs per token
(Chinchilla App. F, models/flops.py) as a multiple of 6N, and the attention-score share of those FLOPs
(QK logits, softmax and attention x V, which grow with seq_len, not with N).  With --budgets, the rung nearest the
prior optimum N* = sqrt(C / (6 r)) for each r of --tokens-per-param is marked.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.flops import flops_per_token, forward_terms, param_counts  # noqa: E402
from models.ladder import ladder, shape_for_params  # noqa: E402


def ladder_config(overrides: list[str]):
    """The `model` section as a sweep composes it (conf/config.yaml + overrides such as model=tiny)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweep.app import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_object(cfg.model)


def rows(vocab: int, seq_len: int, cfg, max_params: float) -> list[dict]:
    out = []
    for s in ladder(vocab, seq_len, cfg):
        c = param_counts(s)
        if c["params"] > max_params:
            break
        t = forward_terms(s)
        fpt = flops_per_token(s, "chinchilla")
        attn = 3 * (t["attention_logits"] + t["softmax"] + t["attention_values"]) / s.seq_len
        out.append({"shape": s, "N": c["params"], "N_ne": c["params_non_embedding"],
                    "emb": c["params_embedding"] / c["params"], "fpt_6N": fpt / (6 * c["params"]), "attn": attn / fpt})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny model.head_dim=16")
    p.add_argument("--vocab", type=int, required=True, help="the tokenizer's vocab (257 = bytes + EOS)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-params", type=float, default=2e6)
    p.add_argument("--budgets", type=float, nargs="*", default=[])
    p.add_argument("--tokens-per-param", type=float, nargs="*", default=[20.0])
    a = p.parse_args(argv)
    cfg = ladder_config(a.overrides)
    rs = rows(a.vocab, a.seq_len, cfg, a.max_params)
    marks: dict[int, list[str]] = {}
    for c in a.budgets:
        for r in a.tokens_per_param:
            n_star = math.sqrt(c / (6 * r))
            try:
                s = shape_for_params(n_star, a.vocab, a.seq_len, cfg)
            except ValueError:
                continue
            marks.setdefault(param_counts(s)["params"], []).append(f"N*({c:.0e}, r={r:g})")
    print(f"ladder {cfg}\nvocab {a.vocab} (padded to {rs[0]['shape'].vocab_size}), seq_len {a.seq_len}")
    print(f"{'N':>9} {'non-emb':>9} {'emb %':>6} {'L':>3} {'d':>5} {'H':>3} {'d_ff':>5} {'FLOPs/6N':>9} {'attn %':>7}")
    for r in rs:
        s = r["shape"]
        print(f"{r['N']:>9,} {r['N_ne']:>9,} {100 * r['emb']:>6.1f} {s.n_layers:>3} {s.d_model:>5} {s.n_heads:>3} "
              f"{s.d_ff:>5} {r['fpt_6N']:>9.2f} {100 * r['attn']:>7.1f}  {' '.join(marks.get(r['N'], []))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
