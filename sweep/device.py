"""Devices, precision, data-parallel ranks and MFU: what the trainer needs to know about the hardware.

Defaults: CUDA gets bf16 autocast (fp16 with a GradScaler on cards without native bf16), ``torch.compile`` and
fused AdamW; CPU and MPS fp32, eager, foreach AdamW.
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from models.transformer import ModelConfig, Transformer

# Dense bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets (without sparsity).
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 SXM": 989e12,  # also "H100 80GB HBM3"
    "H200": 989e12,
    "A100": 312e12,
    "A100 40GB": 312e12,
    "B200": 2250e12,
}
# Memory per GPU in GiB, from the same data sheets (H100 SXM and PCIe 80 GB, H200 141 GB, A100 80 GB (40 GB
# when the name says so), B200 180 GB in the HGX B200); the "GB" of the sheets is read as GiB.
MEMORY_GIB = {"H100 PCIe": 80, "H100 SXM": 80, "H200": 141, "A100": 80, "A100 40GB": 40, "B200": 180}


def table_name(device_name: str) -> Optional[str]:
    """The key of a device in the tables above ("H100 SXM" for "NVIDIA H100 80GB HBM3" or "H100"), or None."""
    name = device_name.upper()
    if "H100" in name:
        return "H100 PCIe" if "PCIE" in name else "H100 SXM"
    if "A100" in name and "40GB" in name.replace(" ", ""):
        return "A100 40GB"
    return next((key for key in ("H200", "A100", "B200") if key in name), None)


def peak_flops_per_s(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a device by its name, or None when it is not in the table."""
    key = table_name(device_name)
    return PEAK_BF16_FLOPS[key] if key else None


def memory_bytes(device_name: str) -> Optional[float]:
    """The memory of a device by its name (same names as peak_flops_per_s), or None when it is not in the table."""
    key = table_name(device_name)
    return MEMORY_GIB[key] * 2**30 if key else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def mfu(flops_per_s: float, peak: Optional[float], world: int = 1) -> Optional[float]:
    """Model FLOPs utilisation: achieved matmul FLOP/s (models.flops.matmul_flops_per_token) over the summed peak
    of all ranks."""
    return flops_per_s / (peak * world) if peak else None


def fmt_mfu(m: Optional[float]) -> str:
    return f"{100 * m:.1f}%" if m is not None else "unknown"


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("trainer.device=cuda but no CUDA device is visible; use trainer.device=auto or cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def rank_device(name: str, index: Optional[int], dist: "Dist") -> torch.device:
    """The device this rank trains on: trainer.device, at trainer.device_index or else the local rank."""
    device = pick_device(name, index if index is not None else dist.local_rank)
    if device.type == "cuda":
        # before anything touches CUDA: pin_memory, NCCL and compile use the current device, cuda:0 by default,
        # so a packed job on cuda:k would open a second context on cuda:0
        torch.cuda.set_device(device)
    return device


PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # trainer.precision


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_cpu_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed blocks for reuse instead of returning them to the kernel; True if applied.

    By default glibc serves every allocation above a dynamic threshold (128 KiB to start) with its own mmap and
    unmaps it on free, so each training step's activations and gradients come back as fresh pages: a page fault
    per 4 KiB, every step.  On 2 CPU cores that was a quarter of a tiny-preset step (20k params, one thread: 58.6k
    tok/s, 640k minor faults per 400 steps; with these settings 73-77k tok/s and 73k faults; benchmarks/cpu_throughput.md).
    32 MiB is the largest threshold glibc accepts (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit); larger blocks still mmap.
    Not glibc (macOS, musl): nothing happens and it returns False.
    """
    import ctypes
    import ctypes.util

    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def native_bf16(device: torch.device) -> bool:
    """Whether a CUDA card runs bf16 in hardware (Ampere and later).  ``torch.cuda.is_bf16_supported()`` alone
    also says yes where bf16 is only emulated (V100, T4), at fp32 speed or worse."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def pick_precision(precision: str, device: torch.device, bf16_supported: Callable[[torch.device], bool] = native_bf16) -> str:
    """The autocast dtype for trainer.precision on ``device``: "bf16", "fp16" or "fp32".

    auto: bf16 on a CUDA card with native bf16; on an older card (V100, T4) fp16 with a GradScaler, because
    their tensor cores take fp16 (V100: 125 TFLOP/s fp16, 15.7 fp32) and the scaler keeps small gradients from
    underflowing (Micikevicius et al. 2018, "Mixed Precision Training"); fp32 on CPU and MPS.  An explicit
    bf16 on a card without it is refused.  ``bf16_supported`` is the capability check (tests pass their own).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        return "fp32" if precision == "auto" else precision
    native = bf16_supported(device)
    if precision == "auto":
        return "bf16" if native else "fp16"
    if precision == "bf16" and not native:
        raise ValueError(f"trainer.precision=bf16 but {device} has no native bf16 (it predates Ampere); "
                         "use trainer.precision=auto (fp16 with a GradScaler) or fp32")
    return precision


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def autocast(device: torch.device, precision: str):
    """Autocast to ``precision`` ("bf16" | "fp16"); "fp32" runs as is."""
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")


def grad_scaler(device: torch.device, precision: str, sharded: bool):
    """A GradScaler for fp16 (None otherwise).  Sharded (FSDP2) gradients need the scaler that all-reduces its
    inf/NaN check, so that every rank skips the same steps."""
    if precision != "fp16":
        return None
    if sharded:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(device.type)
    return torch.amp.GradScaler(device.type)


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host rows -> device, without waiting for the copy.

    On CUDA the rows are pinned (page-locked, from PyTorch's caching host allocator) and copied with
    ``non_blocking``, on the current (compute) stream.  No side stream is needed: the trainer asks for step
    k+1's rows before it issues step k, and the host only waits for the device at log steps, so the copy is
    queued ahead of step k's kernels while the host gathers the next rows; what the stream spends on it is
    B_rank x T x 16 bytes (inputs and targets, int64), e.g. 64 x 2048 x 16 = 2 MiB, ~0.1 ms at PCIe 4 speed
    against a step of 100 ms or more.  A side stream would save that 0.1 ms at the price of an event wait and
    ``record_stream`` bookkeeping per batch.
    """
    t = torch.from_numpy(np.ascontiguousarray(x))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# data-parallel ranks

@dataclass
class Dist:
    """This process's place among the data-parallel ranks of one run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    init_method: Optional[str] = None  # the rendezvous; None: torch's env:// (MASTER_ADDR/MASTER_PORT, as torchrun sets)

    @classmethod
    def from_env(cls, env: Optional[dict] = None) -> "Dist":
        """The ranks from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK), else from SLURM's for the tasks of
        one ``srun`` step (submitit starts ``tasks_per_node`` x nodes tasks that way); a single process otherwise.

        Under SLURM the step's task count (SLURM_STEP_NUM_TASKS) is the world, not the job's SLURM_NTASKS: a batch
        script or an ``salloc`` shell of a many-task job is still one process.  The ranks meet on the step's first
        node at a port derived from the job id (MASTER_ADDR / MASTER_PORT, when set, win)."""
        env = os.environ if env is None else env
        if "WORLD_SIZE" in env:
            return cls(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
        tasks = int(env.get("SLURM_STEP_NUM_TASKS") or 1)
        if tasks > 1 and "SLURM_PROCID" in env:
            nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
            addr = env.get("MASTER_ADDR") or first_host(nodes)
            port = env.get("MASTER_PORT") or 20000 + int(env.get("SLURM_JOB_ID") or 0) % 20000
            return cls(int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID") or 0), f"tcp://{addr}:{port}")
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[003-007,012],cpu1" -> "gpu003", "vm" -> "vm"."""
    m = re.match(r"([^\[,]*)(?:\[([^\],-]+)[^\]]*\]([^,]*))?", nodelist)
    return m.group(1) + (m.group(2) or "") + (m.group(3) or "")


# the scheduler's ids of this attempt, recorded in attempts.jsonl (a requeued SLURM job keeps its id and counts restarts)
SCHEDULER_IDS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


def scheduler_ids(env: Optional[dict] = None) -> dict:
    env = os.environ if env is None else env
    return {k: env[k] for k in SCHEDULER_IDS if env.get(k)}


def join_ranks(dist: Dist, device: torch.device) -> None:
    """Join the run's process group (once per process; a no-op on one process): NCCL on CUDA, gloo elsewhere."""
    if dist.world == 1:
        return
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=dist.init_method,
                              rank=dist.rank, world_size=dist.world)


def leave_ranks(dist: Dist) -> None:
    """Leave the process group at the end of the process that joined it, after a run that ended normally (a rank
    that raised may leave its peers inside a collective; it exits without this).

    Without it gloo's worker threads run on into interpreter shutdown, where one of them frees a just-finished
    collective's tensor, takes the GIL and aborts the process ("terminate called without an active exception",
    pytorch/pytorch#179291; measured here on 2-rank torchrun jobs: 4 of 30 bare gloo jobs, 9 of 40 FSDP2 jobs shaped
    like the trainer).  destroy_process_group alone joins those threads for a bare group (0 of 40), but not for one
    FSDP2 used: its DTensors keep the group alive on the C++ side after destroy, and 5 of 40 such jobs still
    aborted.  Collecting the trainer's freed FSDP modules and a barrier first (every rank done, no collective in
    flight) gave 0 of 60 (tests/sweep/test_train_resume_ddp.py::test_two_rank_fsdp_jobs_exit_cleanly)."""
    if dist.world == 1:
        return
    import gc

    import torch.distributed as td

    if td.is_initialized():
        gc.collect()  # the trainer's freed FSDP modules: reference cycles, until collected
        # every rank is done with the group: no collective of a peer is still in flight (NCCL: on this rank's GPU)
        if td.get_backend() == "nccl":
            td.barrier(device_ids=[torch.cuda.current_device()])
        else:
            td.barrier()
        td.destroy_process_group()


def broadcast_choice(choice: str, choices: tuple, dist: Dist, device: torch.device) -> str:
    """Rank 0's ``choice`` (one of ``choices``) on every rank: what rank 0 decided under the run lock."""
    if dist.world == 1:
        return choice
    import torch.distributed as td

    t = torch.tensor([choices.index(choice) if dist.main else 0], device=device)
    td.broadcast(t, src=0)
    return choices[int(t.item())]


def all_reduce(t: torch.Tensor, dist: Dist, op=None) -> torch.Tensor:
    """Sum (or ``op``) over the ranks; the identity on one process."""
    if dist.world > 1:
        import torch.distributed as td

        td.all_reduce(t, op=op or td.ReduceOp.SUM)
    return t


def max_op():
    import torch.distributed as td

    return td.ReduceOp.MAX


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# the model on its devices

def build_model(cfg: ModelConfig, seed: int, device: torch.device, sharded: bool, state: Optional[dict] = None,
                precision: str = "fp32"):
    """The model on ``device``, never whole on one device when ``sharded``: built on the meta device (no
    storage), sharded by FSDP2 block by block and then at the root, materialised (each rank only its shards)
    and filled from ``state`` (a full state dict: a checkpoint's) or with ``reset_parameters(seed)``, whose
    values do not depend on the sharding: a sharded model starts exactly where an unsharded one does.

    Under bf16/fp16 the blocks all-gather their weights in that dtype (FSDP2's MixedPrecisionPolicy; gradients
    are reduced in fp32, the residual stream stays fp32): autocast would otherwise keep a 16-bit copy of every
    block's unsharded weights for the backward, 2 bytes per parameter that sharding never divides."""
    with torch.device("meta"):
        model = Transformer(cfg)
    if sharded:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy()
        if precision != "fp32":
            mp = MixedPrecisionPolicy(param_dtype=DTYPES[precision], reduce_dtype=torch.float32, cast_forward_inputs=False)
        for block in model.layers:
            fully_shard(block, mp_policy=mp)
        fully_shard(model)
    model.to_empty(device=device)
    if state is None:
        model.reset_parameters(seed)
    else:
        from sweep.checkpoint import load_model

        load_model(model, state, sharded)
    return model
