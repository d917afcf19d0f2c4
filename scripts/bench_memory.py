"""Peak memory of training steps against the dry run's estimate (sweep/cost.py).

    python scripts/bench_memory.py --device cpu                  # profiler-measured peak on CPU, fp32 and bf16
    python scripts/bench_memory.py --device cuda --compile       # torch.cuda.max_memory_allocated on a GPU

Each case builds the model as the trainer does (meta device, to_empty, reset_parameters), takes two AdamW
steps of --accum micro-batches (the second is the steady state), and reports the peak of live tensor bytes:
on CUDA ``torch.cuda.max_memory_allocated``, on CPU the running sum of torch.profiler's allocation records in
time order.  (Peak RSS is no measure of tensors: it also holds malloc's and the math libraries' caches, and
the profiler's own records; see benchmarks/memory.md.)
The estimate is exact with --accum >= 2 and high by up to 4 bytes per parameter with --accum 1 (see sweep/cost.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.flops import param_counts  # noqa: E402
from models.transformer import ModelConfig, Transformer  # noqa: E402
from sweep.cost import peak_memory  # noqa: E402
from sweep.device import autocast, pick_device, pick_precision  # noqa: E402

# (d_model, n_layers, heads, kv heads, d_ff, vocab, seq_len, micro-batch)
CASES = {
    "cpu": [(128, 4, 4, 4, 352, 4096, 256, 8), (256, 4, 8, 2, 704, 8192, 256, 4), (512, 4, 8, 8, 1376, 32000, 512, 2)],
    "cuda": [(768, 12, 12, 12, 2048, 32000, 2048, 8), (1024, 24, 16, 16, 2752, 32000, 2048, 4),
             (2048, 24, 16, 16, 5504, 32000, 2048, 2)],
}


def steps(cfg: ModelConfig, micro: int, accum: int, precision: str, device: torch.device, compiled: bool) -> None:
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device).reset_parameters(0)
    kind = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **kind)
    net = torch.compile(model) if compiled else model
    x = torch.randint(0, cfg.vocab_size, (micro, cfg.seq_len), device=device)
    for _ in range(2):
        for _ in range(accum):
            with autocast(device, precision):
                loss = net(x, x)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def measure(cfg, micro, accum, precision, device, compiled) -> float:
    """Peak live tensor bytes."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        steps(cfg, micro, accum, precision, device, compiled)
        return float(torch.cuda.max_memory_allocated(device))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        steps(cfg, micro, accum, precision, device, compiled)
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return float(peak)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", nargs="+", default=None, help="default: fp32 bf16 on CPU, auto on CUDA")
    p.add_argument("--accum", type=int, default=2, help="micro-batches per optimizer step")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (the estimate is then an upper bound)")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    precisions = a.precision or (["fp32", "bf16"] if device.type == "cpu" else ["auto"])
    print(f"{'shape':<34} {'prec':>5} {'micro':>5} {'params':>8} {'estimate':>10} {'measured':>10} {'est/meas':>8}")
    for d, L, H, K, ff, V, T, micro in CASES[device.type]:
        cfg = ModelConfig(d_model=d, n_layers=L, n_heads=H, n_kv_heads=K, d_ff=ff, vocab_size=V, seq_len=T)
        for prec in precisions:
            prec = pick_precision(prec, device)
            est = peak_memory(cfg, micro, prec)
            got = measure(cfg, micro, a.accum, prec, device, a.compile)
            shape = f"L{L} d{d} H{H}/{K} ff{ff} V{V} T{T}"
            print(f"{shape:<34} {prec:>5} {micro:>5} {param_counts(cfg)['params'] / 1e6:>7.1f}M {est / 2**20:>8.1f}Mi "
                  f"{got / 2**20:>8.1f}Mi {est / got:>8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
