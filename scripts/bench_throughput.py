"""Training throughput of the sweep's model and optimizer on the anchor table's shapes.

    python scripts/bench_throughput.py                       # all shapes on the GPU
    python scripts/bench_throughput.py --device cpu --shapes 16M 30M --batch 4 --steps 5

It times whole optimizer steps (forward, backward, AdamW) the way sweep/train.py runs them: bf16
autocast (fp16 + GradScaler on a card without native bf16), torch.compile and fused AdamW on CUDA;
fp32, eager and foreach AdamW on CPU (override with --precision / --compile).  Reported per shape:
tokens/s, step time, peak memory and MFU.

MFU = achieved FLOP/s / dense bf16 peak (sweep.device.PEAK_BF16_FLOPS).  Two FLOP counts per token:
    anchor      6·N + 12·L·d·T  (N = all parameters; nanoGPT's estimate_mfu / PaLM App. B, as the
                reference table in ../shared/reference/README.md counts)
    matmul      the exact App. F matmul terms (models.flops.matmul_flops_per_token): the trainer's MFU
The anchor count is the one to compare with the nanoGPT table.  On a device without a known peak MFU
prints "unknown".
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.flops import matmul_flops_per_token, param_counts  # noqa: E402
from models.transformer import ModelConfig, Transformer  # noqa: E402
from sweep.device import (autocast, device_name, fmt_mfu, grad_scaler, mfu, peak_flops_per_s, pick_device,  # noqa: E402
                          pick_precision)

# (n_layers, d_model, seq_len, batch) of the anchor table (nanoGPT, one H100)
SHAPES = {
    "16M": (4, 256, 1024, 64),
    "30M": (6, 384, 1024, 64),
    "51M": (8, 512, 1024, 64),
    "124M": (12, 768, 1024, 32),
    "355M": (24, 1024, 1024, 32),
    "760M": (24, 1536, 2048, 16),
    "1.3B": (24, 2048, 2048, 8),
}
VOCAB = 50304  # GPT-2's 50257 padded to a multiple of 64, as in the anchor


def model_config(n_layers: int, d_model: int, seq_len: int) -> ModelConfig:
    # head_dim 64 like GPT-2; SwiGLU d_ff = 8/3·d rounded up to 64 keeps the MLP at ~8·d² like GPT-2's 4d MLP
    d_ff = -(-8 * d_model // 3 // 64) * 64
    # tied embeddings, as nanoGPT ties wte and lm_head, so N matches the anchor's parameter counts
    return ModelConfig(d_model=d_model, n_layers=n_layers, n_heads=d_model // 64, n_kv_heads=d_model // 64,
                       d_ff=d_ff, vocab_size=VOCAB, seq_len=seq_len, tie_embeddings=True)


def bench(name: str, args) -> dict:
    L, d, T, B = SHAPES[name]
    B = args.batch or B
    cfg = model_config(L, d, T)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    precision = pick_precision(args.precision, device)
    use_compile = args.compile if args.compile is not None else device.type == "cuda"
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device).reset_parameters(0)
    scaler = grad_scaler(device, precision, sharded=False)
    kind = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, **kind)
    net = torch.compile(model) if use_compile else model
    x = torch.randint(0, VOCAB, (B, T), device=device)
    y = torch.randint(0, VOCAB, (B, T), device=device)

    def step():
        with autocast(device, precision):
            loss = net(x, y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss.item()  # one host sync at the end
    _sync(device)
    dt = (time.perf_counter() - t) / args.steps

    n = param_counts(cfg)["params"]
    tok_s = B * T / dt
    anchor_fpt = 6 * n + 12 * L * d * T  # nanoGPT / PaLM: 6N + 12·L·d·T per token
    matmul_fpt = matmul_flops_per_token(cfg)
    peak = peak_flops_per_s(device_name(device)) if precision != "fp32" else None
    mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # CPU: peak RSS of the process
    return {"shape": name, "params": n, "seq_len": T, "batch": B, "device": device_name(device),
            "precision": precision, "compiled": bool(use_compile),
            "step_ms": 1e3 * dt, "tok_per_s": tok_s,
            "mfu_anchor": mfu(tok_s * anchor_fpt, peak), "mfu_matmul": mfu(tok_s * matmul_fpt, peak),
            "peak_mem_gb": mem / 1e9}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction)
    p.add_argument("--batch", type=int, default=0, help="sequences per step (default: the anchor's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON line per shape instead of the table")
    args = p.parse_args(argv)
    if args.device == "cpu" and any(s in ("355M", "760M", "1.3B") for s in args.shapes):
        print("error: shapes above 124M do not fit 24 GB of CPU memory with AdamW; pick --shapes up to 124M", file=sys.stderr)
        return 2
    print(f"{'shape':>6} {'params':>8} {'T x B':>10} {'step ms':>9} {'tok/s':>10} {'MFU anchor':>10} {'MFU matmul':>10} {'peak GB':>8}  device")
    for name in args.shapes:
        r = bench(name, args)
        if args.json:
            print(json.dumps(r), flush=True)
            continue
        print(f"{r['shape']:>6} {r['params'] / 1e6:>7.1f}M {r['seq_len']:>5}x{r['batch']:<4} {r['step_ms']:>9.1f} "
              f"{r['tok_per_s']:>10.0f} {fmt_mfu(r['mfu_anchor']):>10} {fmt_mfu(r['mfu_matmul']):>10} "
              f"{r['peak_mem_gb']:>8.2f}  {r['device']} {r['precision']}{' compiled' if r['compiled'] else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
