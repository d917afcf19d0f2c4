"""Would fusing the model's small ops speed up CPU training?  benchmarks/model_variants.md.

    python scripts/bench_model_variants.py [--rounds 5] [--max-steps 400] [--threads 1] [overrides ...]

cpu_throughput.md finds our model's bare loop below nanoGPT's at the smoke's shapes and puts the gap on the
model's small ops.  This script times rewrites of ``models/transformer.py``'s forward that keep its parameters
(names, shapes, initial values) and its function, against the model as committed:

    before       the model of 41f6e47 (2026-12-07): both of the next two
    rotate_half  RoPE as x * cos + cat(-x2, x1) * sin on q and k in the stored (rotate-half) order, where the
                 committed model reorders wq/wk's rows (pair_rows) and rotates by one complex multiply
    autograd_rms RMSNorm as the written-out x * rsqrt(mean(x^2) + eps) * w under autograd, where the committed model
                 writes its backward out (_RMSNormFunction)
    rms_fused    RMSNorm through ``F.rms_norm``
    qkv          one matmul for q, k and v on the three weights concatenated (torch.cat each step), RoPE once on q
                 and k
    w13          one matmul for SwiGLU's w1 and w3 on the two weights concatenated, chunked after

Each variant first has to give the committed model's loss and gradients (to 1e-6) on one batch.  The loop is
``scripts/bench_cpu_throughput.py``'s bare loop (forward, backward, clip, the trainer's AdamW; fp32, random
tokens) after ``sweep.device.keep_cpu_memory()`` as the trainer calls it, at the smoke plan's smallest, middle and
largest sizes; the variants run in a shuffled order in each of ``--rounds`` rounds and the table gives medians.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import models.transformer as tr  # noqa: E402
from bench_cpu_throughput import bare_loop, pick_shapes, smoke_plan  # noqa: E402
from sweep.device import keep_cpu_memory  # noqa: E402

COMMITTED = {"attention": tr.Attention.forward, "feed_forward": tr.FeedForward.forward, "norm": tr.RMSNorm.forward}


def attention_rotate_half(self, x, cos, sin):
    B, T, _ = x.shape
    H, K, hd = self.n_heads, self.n_kv_heads, self.head_dim
    cos, sin = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)  # (T, hd): dims i and i + hd/2 share

    def rope(t):
        t1, t2 = t.float().chunk(2, dim=-1)
        return (t.float() * cos + torch.cat([-t2, t1], dim=-1) * sin).type_as(t)

    q = rope(self.wq(x).view(B, T, H, hd).transpose(1, 2))
    k = rope(self.wk(x).view(B, T, K, hd).transpose(1, 2))
    v = self.wv(x).view(B, T, K, hd).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=(K != H))
    return self.wo(y.transpose(1, 2).contiguous().view(B, T, H * hd))


def norm_autograd(self, x):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
    return (xf * self.weight.float()).type_as(x)


def norm_fused(self, x):
    return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def attention_qkv(self, x, cos, sin):
    B, T, _ = x.shape
    H, K, hd = self.n_heads, self.n_kv_heads, self.head_dim
    w = torch.cat([tr.pair_rows(self.wq.weight, H, hd), tr.pair_rows(self.wk.weight, K, hd), self.wv.weight])
    qkv = F.linear(x, w).view(B, T, H + 2 * K, hd).transpose(1, 2)  # (B, H+2K, T, hd)
    qk = tr.apply_rope(qkv[:, :H + K], cos, sin)  # q and k heads in one call
    y = F.scaled_dot_product_attention(qk[:, :H], qk[:, H:], qkv[:, H + K:], is_causal=True, enable_gqa=(K != H))
    return self.wo(y.transpose(1, 2).contiguous().view(B, T, H * hd))


def feed_forward_w13(self, x):
    gate, up = F.linear(x, torch.cat([self.w1.weight, self.w3.weight])).chunk(2, dim=-1)  # (B, T, d_ff) each
    return self.w2(F.silu(gate) * up)


VARIANTS = {
    "committed": COMMITTED,
    "before": {**COMMITTED, "attention": attention_rotate_half, "norm": norm_autograd},
    "rotate_half": {**COMMITTED, "attention": attention_rotate_half},
    "autograd_rms": {**COMMITTED, "norm": norm_autograd},
    "rms_fused": {**COMMITTED, "norm": norm_fused},
    "qkv": {**COMMITTED, "attention": attention_qkv},
    "w13": {**COMMITTED, "feed_forward": feed_forward_w13},
}


def use(variant: str) -> None:
    v = VARIANTS[variant]
    tr.Attention.forward, tr.FeedForward.forward, tr.RMSNorm.forward = v["attention"], v["feed_forward"], v["norm"]


def loss_and_grads(m, variant: str):
    use(variant)
    model = tr.Transformer(m, seed=0)
    g = torch.Generator().manual_seed(1)
    b = torch.randint(m.vocab_size, (2, m.seq_len + 1), generator=g)
    loss = model(b[:, :-1], b[:, 1:])
    loss.backward()
    return loss.item(), [p.grad for p in model.parameters()]


def check_equal(m) -> float:
    """The largest gradient difference of any variant from the committed model; raises if one computes otherwise."""
    ref_loss, ref_grads = loss_and_grads(m, "committed")
    worst = 0.0
    for name in VARIANTS:
        loss, grads = loss_and_grads(m, name)
        diff = max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
        if abs(loss - ref_loss) > 1e-6 or diff > 1e-6:
            raise SystemExit(f"error: variant {name} is not the committed model (loss {loss} vs {ref_loss}, grad diff {diff})")
        worst = max(worst, diff)
    use("committed")
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the smoke plan")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-steps", type=int, default=400, help="cap on each loop's timed steps")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (the smoke runs one per run)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "model_variants.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    keep_cpu_memory()
    specs, _ = smoke_plan(a.overrides)
    rows = []
    load0 = os.getloadavg()[0]
    for spec in pick_shapes(specs):
        m = spec.model
        worst = check_equal(m)
        steps = min(spec.steps, a.max_steps)
        got = {k: [] for k in VARIANTS}
        for r in range(a.rounds):
            order = list(VARIANTS)
            random.Random(r).shuffle(order)
            for name in order:
                use(name)
                got[name].append(bare_loop(tr.Transformer(m, seed=0), spec, steps, lambda mod, x, y: mod(x, y)))
            use("committed")
            print(f"{spec.run_id} round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in got.items()), flush=True)
        med = {k: statistics.median(v) for k, v in got.items()}
        rows.append((spec, steps, worst, med))
    load1 = os.getloadavg()[0]
    lines = [f"# Fusing the model's small ops on CPU (generated by `python scripts/bench_model_variants.py "
             f"{' '.join(sys.argv[1:])}`)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores, {a.threads} intra-op threads, "
             f"torch {torch.__version__}, `keep_cpu_memory()`; tokens/s of the bare loop, median of {a.rounds} rounds "
             f"(variants shuffled within each); 1-minute load average {load0:.1f} at the start, {load1:.1f} at the end. "
             "In parentheses: the variant over the committed model.", "",
             "| shape | params | steps | " + " | ".join(VARIANTS) + " | largest grad difference |",
             "|---|---|---|" + "---|" * (len(VARIANTS) + 1)]
    for spec, steps, worst, med in rows:
        m = spec.model
        base = med["committed"]
        cells = " | ".join(f"{med[k]:,.0f} ({med[k] / base:.2f})" for k in VARIANTS if k != "committed")
        lines.append(f"| {m.n_layers}x{m.d_model}, {m.n_heads} heads, ff {m.d_ff} | {spec.params:,.0f} | {steps} | "
                     f"{base:,.0f} | {cells} | {worst:.1e} |")
    reading = a.out.with_name("model_variants_reading.md")
    if reading.exists():
        lines += ["", reading.read_text()]
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
