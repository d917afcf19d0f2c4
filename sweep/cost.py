"""What a run costs before it is launched: its peak memory per GPU, and its GPU-hours on a named device.

Pure functions of a run's shape and batch; the dry run prints them per run (sweep/plan.py format_plan).

Memory: the formula (bytes per GPU, one run as sweep/train.py trains it; b sequences of T tokens per micro-batch)

    M = 16·N/S  +  c·N_mm  +  A(b)  +  8·b·T·V  (+ 4·N under DDP, + 8·N_root + (3a + 4)·N_block under FSDP)

    16·N/S    fp32 weights 4 + fp32 gradients 4 + AdamW's exp_avg 4 and exp_avg_sq 4 bytes per parameter, over
              S FSDP shards (S = 1 otherwise): the 16 bytes per parameter of ZeRO's mixed-precision Adam
              (Rajbhandari et al. 2020, sec. 3.1), split 4+4+8 here because autocast keeps fp32 weights
    c·N_mm    autocast's bf16/fp16 copies of the matmul weights, kept for the backward (c = 2); in fp32 the
              copies of wq and wk with their rows reordered for RoPE (models.transformer.pair_rows, 4 bytes per
              weight: c·N_mm = 4·L·d·hd·(H + K)); under FSDP the lm_head's 16-bit copy (2·V·d) and the reordered
              wq and wk (a·L·d·hd·(H + K)): the blocks all-gather their own weights, but the reordered copies stay
              saved after the blocks reshard
    A(b)      what autograd saves for the backward of one micro-batch, per layer (d model width, f = d_ff,
              H/K query/KV heads, a = 2 bytes under autocast, 4 in fp32)
                  b·T·[8·d + 8 + n·d + a·(2 + 2K/H)·d + 4a·f]
                  8·d + 8       the two RMSNorms keep their fp32 normalised input and its 1/rms per token
                                (their backward is written out: models.transformer._RMSNormFunction); RoPE's
                                complex multiply keeps only its angle table
                  n·d           their outputs: in fp32 kept once each (n = 8); under autocast one a-byte copy per
                                linear that reads them (wq, wk, wv; w1, w3: n = 5a)
                  a·(2+2K/H)·d  q and k after RoPE, v, the attention output (a fused SDPA kernel: no T x T matrix)
                  4a·f          SwiGLU: w1·x, w3·x, silu(w1·x) and the product
              plus the head b·T·(4·d + 4 + n'·d + 4·V): the final norm (n' = 4 in fp32, a under autocast) and the
              fp32 log-softmax of the loss
    8·b·T·V   two more fp32 b x T x V tensors live as the backward starts (the log-softmax's gradient and the
              logits' gradient it makes)
    DDP       its gradient buckets, a second copy of the fp32 gradients
    FSDP      unsharded tensors: the root's fp32 weights and gradients (embeddings, lm_head: FSDP2 keeps the
              root's through forward and backward), two blocks' a-byte weights (the current and the prefetched
              one: sweep.train.build_model's MixedPrecisionPolicy) and one block's gradients, a-byte and as the
              fp32 copy its reduce-scatter takes (4 more bytes; none in fp32).  Not yet measured.

The sum is the peak with gradient accumulation (the previous micro-batches' gradients are alive while this
one's activations are); with one micro-batch per step it is an upper bound by at most 4·N.  It counts tensors
(what torch.cuda.max_memory_allocated counts), not the CUDA context, NCCL buffers or the allocator's
fragmentation: a run is flagged when M exceeds HEADROOM of the device's memory.  It is the eager model's;
torch.compile's partitioner recomputes cheap pointwise ops and saves less, so for compiled runs it is an upper
bound.  Checked against torch.profiler's allocations on CPU (fp32 and bf16 autocast, the SDPA flash kernel):
tests/sweep/test_cost.py, benchmarks/memory.md.

GPU-hours: the matmul FLOPs of the run's own steps (models.flops.matmul_flops_per_token, MFU's numerator; a
fork's prefix is its trunk's) over assumed MFU x
the device's dense bf16 peak (sweep.device.PEAK_BF16_FLOPS).  Compilation, evaluation and checkpoints are not
in it (a few minutes per run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from models.flops import matmul_flops_per_token, param_counts
from models.transformer import ModelConfig
from sweep.device import memory_bytes, peak_flops_per_s, table_name

HEADROOM = 0.9  # flag a run whose estimate exceeds 90% of the device's memory (context, NCCL, fragmentation)
GIB = 2**30


def memory_terms(cfg: ModelConfig, micro_batch: int, precision: str = "bf16", parallel: str = "single",
                 shards: int = 1) -> dict[str, float]:
    """The terms of the module docstring's formula, in bytes per GPU.  ``precision``: bf16 | fp16 | fp32 (the
    autocast dtype); ``parallel``: single | ddp | fsdp (``shards`` GPUs)."""
    counts = param_counts(cfg)
    n, d, f, L, V = counts["params"], cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.vocab_size
    kv = cfg.n_kv_heads / cfg.n_heads
    autocast = precision != "fp32"
    a = 2 if autocast else 4
    n_block = (counts["params_non_embedding"] - d) // L  # one transformer block
    n_mm = L * (n_block - 2 * d) + V * d  # the matmul weights: every block's but its norms, and the lm_head
    bt = micro_batch * cfg.seq_len
    per_layer = 8 * d + 8 + (5 * a if autocast else 8) * d + a * (2 + 2 * kv) * d + 4 * a * f
    head = 4 * d + 4 + (a if autocast else 4) * d + 4 * V
    qk_rows = L * d * cfg.head_dim * (cfg.n_heads + cfg.n_kv_heads)  # wq and wk: pair_rows' reordered copies
    fsdp = parallel == "fsdp"
    if fsdp:  # the blocks gather their own weights: the lm_head's 16-bit copy and the reordered wq, wk stay saved
        weight_copies = a * qk_rows + (2 * V * d if autocast else 0)
    else:  # autocast's 16-bit copy of every matmul weight; in fp32 only the reordered wq, wk
        weight_copies = 2 * n_mm if autocast else 4 * qk_rows
    return {
        "weights_grads_adamw": 16 * n / (shards if fsdp else 1),
        "weight_copies": weight_copies,
        "activations": bt * (L * per_layer + head),
        "loss": 8 * bt * V,
        "ddp_buckets": 4 * n if parallel == "ddp" else 0,
        "fsdp_unsharded": 8 * (counts["params_embedding"] + d) + (3 * a + (4 if autocast else 0)) * n_block if fsdp else 0,
    }


def peak_memory(cfg: ModelConfig, micro_batch: int, precision: str = "bf16", parallel: str = "single",
                shards: int = 1) -> float:
    """Estimated peak bytes per GPU (the module docstring's formula)."""
    return sum(memory_terms(cfg, micro_batch, precision, parallel, shards).values())


@dataclass(frozen=True)
class RunCost:
    """One run's line in the dry run: memory per GPU at its micro-batch, what it needs, GPU-hours."""

    memory: float  # bytes per GPU at the configured micro-batch, with the run's GPUs and sharding
    micro_batch: int  # sequences per forward/backward per GPU
    advice: str  # "" when it fits the device (or no device is named); else what to change
    gpu_hours: Optional[float]  # all its GPUs together; None without a named device


def plan_precision(precision: str, trainer_device: str, device: Optional[str]) -> str:
    """The autocast dtype to estimate with: trainer.precision, where auto is bf16 on a named GPU (launch.device:
    they all have bf16) or where the trainer would find CUDA, fp32 on CPU."""
    if precision != "auto":
        return precision
    import torch

    gpu = device is not None or (trainer_device in ("auto", "cuda") and torch.cuda.is_available())
    return "bf16" if gpu else "fp32"


def run_cost(spec, micro_batch_size: int, precision: str, device: Optional[str], assumed_mfu: float,
             parallel: str = "ddp", gpus: int = 1) -> RunCost:
    """``spec``: a sweep.plan.RunSpec; ``micro_batch_size``: trainer.micro_batch_size (0 = a GPU's whole share of
    the batch); ``precision``: bf16 | fp16 | fp32 (plan_precision); ``device``: a name the peak table knows
    (launch.device) or None; ``gpus`` per run (launch.gpus_per_run), data-parallel by ``parallel`` (trainer.parallel)."""
    per_gpu = spec.recipe.batch_size // gpus
    micro = micro_batch_size or per_gpu
    mode = "single" if gpus == 1 else parallel
    mem = peak_memory(spec.model, micro, precision, mode, gpus)
    if not device:
        return RunCost(mem, micro, "", None)
    own_tokens = (spec.steps - spec.start_step) * spec.recipe.tokens_per_step  # a fork's prefix is its trunk's
    hours = own_tokens * matmul_flops_per_token(spec.model) / (assumed_mfu * peak_flops_per_s(device)) / 3600
    return RunCost(mem, micro, fit_advice(spec.model, per_gpu, micro, precision, memory_bytes(device), mode, gpus), hours)


def fit_advice(cfg: ModelConfig, per_gpu: int, micro: int, precision: str, capacity: float, parallel: str = "single",
               gpus: int = 1) -> str:
    """"" when a GPU holds the run at micro-batch ``micro``; else the largest micro-batch (a divisor of the GPU's
    share of the batch) that fits, or the FSDP2 world size (a power of two) at which one sequence per micro-batch fits."""
    budget = HEADROOM * capacity
    if peak_memory(cfg, micro, precision, parallel, gpus) <= budget:
        return ""
    fits = [m for m in range(micro, 0, -1) if per_gpu % m == 0 and peak_memory(cfg, m, precision, parallel, gpus) <= budget]
    if fits:
        return f"micro<={fits[0]}"
    shards = 2
    while peak_memory(cfg, 1, precision, "fsdp", shards) > budget:
        if shards >= 4096:
            return "too big"
        shards *= 2
    return f"fsdp>={shards}"


def check_device(device: Optional[str]) -> None:
    """ValueError naming the choices unless ``device`` (launch.device) is None or in both tables."""
    if device is not None and (peak_flops_per_s(device) is None or memory_bytes(device) is None):
        raise ValueError(f"launch.device={device!r} is not in the peak table; use H100, H100 PCIe, H200, A100, "
                         "A100 40GB or B200 (or leave it unset for memory only)")


def describe(device: Optional[str], assumed_mfu: float, gpus: int = 1, parallel: str = "ddp") -> str:
    """The assumptions behind the cost columns, for the dry run's last line."""
    where = "one GPU per run" if gpus == 1 else f"{gpus} GPUs per run ({parallel})"
    if not device:
        return f"memory per GPU: estimated peak at the micro-batch, {where} (sweep/cost.py); set launch.device for GPU-hours"
    return (f"{where}; GPU-hours on {table_name(device)} ({peak_flops_per_s(device) / 1e12:.0f} TFLOP/s dense bf16, "
            f"{memory_bytes(device) / GIB:.0f} GiB) at an assumed {100 * assumed_mfu:.0f}% MFU on the matmul FLOPs; "
            f"flagged: estimated peak above {100 * HEADROOM:.0f}% of its memory (sweep/cost.py)")
