"""Devices, precision, data-parallel ranks and MFU: what the trainer needs to know about the hardware.

Defaults: CUDA gets bf16 autocast, ``torch.compile`` and fused AdamW; CPU and MPS fp32, eager, foreach AdamW.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

# Dense bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets (without sparsity).
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 SXM": 989e12,  # also "H100 80GB HBM3"
    "H200": 989e12,
    "A100": 312e12,
    "B200": 2250e12,
}


def peak_flops_per_s(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a device by its name, or None when it is not in the table."""
    name = device_name.upper()
    if "H100" in name:
        return PEAK_BF16_FLOPS["H100 PCIe"] if "PCIE" in name else PEAK_BF16_FLOPS["H100 SXM"]
    for key in ("H200", "A100", "B200"):
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def mfu(flops_per_s: float, peak: Optional[float], world: int = 1) -> Optional[float]:
    """Model FLOPs utilisation: achieved exact FLOP/s over the summed peak of all ranks."""
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


def use_bf16(precision: str, device: torch.device) -> bool:
    """trainer.precision: bf16 autocast when asked for, or (auto) on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if device.type == "cuda":
        t = t.pin_memory()  # page-locked, so the copy below can overlap compute
    return t.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# data-parallel ranks

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0


def all_reduce(t: torch.Tensor, dist: Dist, op=None) -> torch.Tensor:
    """Sum (or ``op``) over the ranks; the identity on one process."""
    if dist.world > 1:
        import torch.distributed as td

        td.all_reduce(t, op=op or td.ReduceOp.SUM)
    return t


def max_op():
    import torch.distributed as td

    return td.ReduceOp.MAX
