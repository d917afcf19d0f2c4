"""Train one RunSpec to exactly its FLOP budget, on whatever device is there.

The run takes ``spec.steps`` optimizer steps of ``spec.recipe.tokens_per_step`` tokens; the planner
chose the step count so that steps x tokens/step x exact FLOPs/token is within half a step of the
budget.  Cumulative FLOPs are counted with the same exact per-token figure at every log line.

Devices and precision
    CUDA: bf16 autocast, ``torch.compile``, fused AdamW, flash SDPA (PyTorch picks it for bf16),
    pinned host memory with non-blocking copies one step ahead.  CPU/MPS: fp32, eager, foreach AdamW.
    ``trainer.precision`` and ``trainer.compile`` override the defaults (both work on CPU too).

Data parallelism
    Under ``torchrun`` (RANK/WORLD_SIZE in the environment) each rank takes its slice of every global
    batch; DDP (or FSDP2 with ``trainer.parallel=fsdp``) averages the gradients, so the loss curve is
    the single-process one for the same global batch.

Checkpoints
    Every ``checkpoint_every_s`` seconds of wall time, and on SIGTERM or the launcher's preemption
    signal (submitit: ``SUBMITIT_PREEMPT_SIGNAL``, SIGUSR2 by default), the model, optimizer and loop
    state go to ``checkpoints/step_XXXXXXXX.pt`` (temp file + rename).  After a signal the previous
    handler is restored and the signal re-raised, so submitit's own handler still requeues the job.
    A restarted run resumes from the newest readable checkpoint; batches are a pure function of
    (seed, step), so it follows the uninterrupted loss curve exactly on CPU.

Outputs in ``out_dir``
    metrics.jsonl   append-only: one line per log step (val_loss at eval steps)
    result.json     written atomically at the end
    weights.pt      final weights {"model_config", "model"} (models/export.py turns them into HF Llama)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from models.transformer import Transformer
from sweep.data import TokenData
from sweep.plan import RunSpec
from sweep.store import fault_point, spec_hash, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """The ``trainer`` config section: how to run, not what to train."""

    device: str = "auto"  # auto | cpu | cuda | mps
    device_index: Optional[int] = None  # which GPU; None = LOCAL_RANK (torchrun) or, in a packed sweep, job number mod #GPUs
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere) | bf16 | fp32
    compile: Optional[bool] = None  # torch.compile; None = on for CUDA, off elsewhere
    parallel: str = "ddp"  # under torchrun: ddp | fsdp (FSDP2, for models that don't fit one GPU)
    num_threads: int = 0  # CPU intra-op threads; 0 = PyTorch's default (all cores)
    log_every: int = 10  # optimizer steps between metrics.jsonl lines
    eval_fractions: list = field(default_factory=lambda: [0.25, 0.5, 0.75])  # also evaluate here (the end always is)
    eval_tokens: int = 65536  # held-out tokens per evaluation
    micro_batch_size: int = 0  # sequences per forward/backward per rank; 0 = the rank's whole share of the batch
    diverge_loss: float = 0.0  # mark the run diverged above this loss (0 = 2 x the first logged loss)
    progress: bool = True  # tqdm bar per run
    checkpoint_every_s: float = 1800.0  # wall-clock seconds between checkpoints; 0 = only on signals
    keep_last: int = 2  # checkpoints kept while the run goes on
    keep_checkpoints: bool = False  # keep them after the run is done (the final weights.pt always stays)

    def __post_init__(self):
        if self.log_every < 1:
            raise ValueError(f"trainer.log_every must be >= 1, got {self.log_every}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"trainer.device={self.device!r}: use auto, cpu, cuda or mps")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"trainer.precision={self.precision!r}: use auto, bf16 or fp32")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"trainer.parallel={self.parallel!r}: use ddp or fsdp")
        if self.keep_last < 1:
            raise ValueError(f"trainer.keep_last must be >= 1, got {self.keep_last}")


# ---------------------------------------------------------------------------------------------
# devices, peaks, MFU

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


# ---------------------------------------------------------------------------------------------
# distributed

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


def _all_reduce(t: torch.Tensor, dist: Dist, op=None) -> torch.Tensor:
    if dist.world > 1:
        import torch.distributed as td

        td.all_reduce(t, op=op or td.ReduceOp.SUM)
    return t


# ---------------------------------------------------------------------------------------------
# schedule and optimizer

def lr_at(step: int, spec: RunSpec) -> float:
    """Linear warm-up, then cosine from peak to min_lr_ratio·peak exactly at the last step (cycle = run length)."""
    r = spec.recipe
    if step < spec.warmup_steps:
        return r.lr * (step + 1) / spec.warmup_steps
    span = max(1, spec.steps - 1 - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    return r.lr * (r.min_lr_ratio + (1 - r.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: torch.nn.Module, spec: RunSpec, device: torch.device) -> torch.optim.Optimizer:
    r = spec.recipe
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # norm gains
    groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused kernels on CUDA; the multi-tensor (foreach) path elsewhere
    kind = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=r.lr, betas=(r.beta1, r.beta2), eps=1e-8, **kind)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# ---------------------------------------------------------------------------------------------
# checkpoints

def checkpoint_paths(out_dir: Path) -> list[Path]:
    return sorted((Path(out_dir) / "checkpoints").glob("step_*.pt"))


def save_torch_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        fault_point("write:checkpoint" if path.parent.name == "checkpoints" else f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a kill leaves the previous checkpoint intact
        raise


def load_latest_checkpoint(out_dir: Path, spec: RunSpec) -> Optional[dict]:
    """The newest readable checkpoint of this spec, or None.  A torn or corrupt file is skipped."""
    for path in reversed(checkpoint_paths(out_dir)):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the previous one
            log.warning("skipping unreadable checkpoint %s: %s", path, e)
            continue
        if ckpt.get("spec_hash") != spec_hash(spec.to_dict()):
            raise ValueError(f"{path} belongs to a different run spec; delete {path.parent} or use a new sweep.name")
        return ckpt
    return None


class StopSignals:
    """Turn SIGTERM and the preemption signal into a flag checked between steps.

    ``forward()`` restores the previous handlers and re-raises the signal, so that submitit's handler
    (checkpoint + requeue) or the default action still happens after our checkpoint is on disk.
    """

    def __init__(self):
        self.hit: Optional[int] = None
        self.prev: dict = {}
        names = {"SIGTERM", os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "SIGUSR2")}
        full = {n if n.startswith("SIG") else f"SIG{n}" for n in names}  # submitit accepts "USR2" or "SIGUSR2"
        self.signals = [getattr(signal, n) for n in full if hasattr(signal, n)]

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self.prev[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.hit = signum

    def restore(self):
        for s, h in self.prev.items():
            signal.signal(s, h)
        self.prev = {}

    def __exit__(self, *exc):
        self.restore()

    def forward(self):
        self.restore()
        # a rank stopped because another rank got the signal re-raises SIGTERM on itself
        self.hit = self.hit or signal.SIGTERM
        os.kill(os.getpid(), self.hit)


# ---------------------------------------------------------------------------------------------
# the loop

def _fault_from_env() -> Optional[tuple[int, int]]:
    """Fault injection for tests: SCALING_SWEEP_FAULT="SIGTERM@12" sends that signal to this process after step 12."""
    spec = os.environ.get("SCALING_SWEEP_FAULT")
    if not spec:
        return None
    name, at = spec.split("@")
    return int(getattr(signal, name)), int(at)


_FAULT = _fault_from_env()


def train(spec: RunSpec, cfg: TrainerConfig, data: TokenData, out_dir: Path, tracker=None) -> dict:
    """Train ``spec`` (resuming from its newest checkpoint) and return its result (also in ``out_dir/result.json``).

    ``tracker`` (sweep.tracking.Tracker) receives every log record and the final summary (rank 0 only).
    """
    tracker = tracker if Dist.from_env().main else None
    out_dir = Path(out_dir)
    dist = Dist.from_env()
    device = pick_device(cfg.device, cfg.device_index if cfg.device_index is not None else dist.local_rank)
    if device.type == "cpu" and cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if spec.model.vocab_size < data.vocab_size:
        raise ValueError(f"model vocab {spec.model.vocab_size} < tokenizer vocab {data.vocab_size}; re-plan with this data")
    r = spec.recipe
    if r.batch_size % dist.world:
        raise ValueError(f"recipe.batch_size={r.batch_size} must be a multiple of the {dist.world} data-parallel ranks")
    per_rank = r.batch_size // dist.world
    micro = cfg.micro_batch_size or per_rank
    if per_rank % micro:
        raise ValueError(f"trainer.micro_batch_size={micro} must divide the per-rank batch {per_rank}")
    accum = per_rank // micro
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    if dist.world > 1:
        import torch.distributed as td

        if not td.is_initialized():
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)

    torch.manual_seed(r.seed)
    model = Transformer(spec.model).to(device)
    ckpt = load_latest_checkpoint(out_dir, spec)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    ddp = None
    if dist.world > 1 and cfg.parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
    elif dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = build_optimizer(model, spec, device)
    if ckpt is not None:
        _load_optimizer(opt, model, ckpt["optimizer"], dist, cfg)
    net = torch.compile(ddp or model) if use_compile else (ddp or model)

    start = ckpt["step"] if ckpt else 0
    loop = {"smooth": None, "first_loss": None, "elapsed": 0.0}
    if ckpt:
        loop.update(ckpt["loop"])
    metrics_path = out_dir / "metrics.jsonl"
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, start)  # drop lines logged after the checkpoint we resume from
        if ckpt:
            log.info("%s: resuming at step %d of %d", spec.run_id, start, spec.steps)
        with open(out_dir / "attempts.jsonl", "a") as f:  # one line per (re)start: shows nothing was retrained
            f.write(json.dumps({"start_step": start, "pid": os.getpid(), "host": platform.node(), "time": time.time()}) + "\n")

    eval_steps = {max(1, round(f * spec.steps)) for f in cfg.eval_fractions if 0 < f < 1}
    flops_per_step = r.tokens_per_step * spec.flops_per_token  # exact, under spec.recipe.flops_convention
    peak = peak_flops_per_s(device_name(device)) if bf16 else None
    rows = slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)  # this rank's share of every global batch

    def batch(step):
        x, y = data.train_batch(step, r.batch_size, r.seq_len, r.seed)
        return _to_device(x[rows], device), _to_device(y[rows], device)

    status, error = "done", None
    t0 = time.perf_counter() - loop["elapsed"]
    last_ckpt = time.perf_counter()
    bar = _progress(spec, cfg, start) if dist.main else None
    done = start
    with StopSignals() as stop, (open(metrics_path, "a") if dist.main else contextlib.nullcontext()) as mf:
        nxt = batch(start) if start < spec.steps else None
        for step in range(start, spec.steps):
            xb, yb = nxt
            if step + 1 < spec.steps:
                nxt = batch(step + 1)  # host gather + async copy while the device works on earlier steps
            lr = lr_at(step, spec)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for i in range(accum):
                # under DDP, all-reduce gradients only on the last micro-batch of the step
                skip_sync = ddp is not None and i < accum - 1
                with (ddp.no_sync() if skip_sync else contextlib.nullcontext()), autocast(device, bf16):
                    loss = net(xb[i * micro:(i + 1) * micro], yb[i * micro:(i + 1) * micro]) / accum
                loss.backward()
                loss_sum += loss.detach()
            if r.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

            done = step + 1
            last = done == spec.steps
            if _FAULT and done == _FAULT[1]:
                os.kill(os.getpid(), _FAULT[0])  # test hook: a signal or a kill right after this step
            if done % cfg.log_every == 0 or last or done == 1:
                loss_val = _all_reduce(loss_sum, dist).item() / dist.world  # the only host sync: log steps
                loop["first_loss"] = loop["first_loss"] or loss_val
                loop["smooth"] = loss_val if loop["smooth"] is None else 0.9 * loop["smooth"] + 0.1 * loss_val
                elapsed = time.perf_counter() - t0
                fps = (done - start) * flops_per_step / max(elapsed - loop["elapsed"], 1e-9)
                rec = {"step": done, "tokens": done * r.tokens_per_step, "flops": done * flops_per_step,
                       "loss": loss_val, "lr": lr, "elapsed_s": elapsed,
                       "tok_per_s": fps / spec.flops_per_token, "mfu": mfu(fps, peak, dist.world)}
                limit = cfg.diverge_loss or 2 * loop["first_loss"]
                if not math.isfinite(loss_val) or loss_val > limit:
                    status, error = "diverged", f"loss {loss_val:.4g} at step {done} (limit {limit:.4g})"
                if status == "done" and (done in eval_steps or last):
                    rec["val_loss"] = evaluate(net, data, spec, cfg, device, dist, bf16)
                if dist.main:
                    mf.write(json.dumps(rec) + "\n")
                    mf.flush()
                    if tracker is not None:
                        tracker.log(rec)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_val:.3f}", mfu=fmt_mfu(rec["mfu"]), refresh=False)
                if status == "diverged":
                    break
            if bar is not None:
                bar.update(1)

            # checkpoint when due or signalled; with several ranks they agree at log steps only (one sync there)
            if not last and (dist.world == 1 or done % cfg.log_every == 0):
                due = cfg.checkpoint_every_s > 0 and time.perf_counter() - last_ckpt >= cfg.checkpoint_every_s
                flags = [stop.hit is not None, due]  # plain bools: no device sync on a single process
                if dist.world > 1:
                    flags = _all_reduce(torch.tensor(flags, dtype=torch.float32, device=device), dist, _max_op()).tolist()
                if any(flags):
                    loop["elapsed"] = time.perf_counter() - t0
                    save_checkpoint(out_dir, done, model, opt, spec, loop, cfg, dist)
                    last_ckpt = time.perf_counter()
                    if flags[0]:
                        if bar is not None:
                            bar.close()
                        log.warning("%s: stopped by signal %s at step %d; checkpoint saved", spec.run_id, stop.hit, done)
                        stop.forward()  # submitit's handler requeues, or the default action ends the process
                        raise SystemExit(128 + (stop.hit or 0))
    if bar is not None:
        bar.close()

    wall = time.perf_counter() - t0
    steps_done = done
    fps = steps_done * flops_per_step / wall
    result = {
        "run_id": spec.run_id,
        "status": status,
        "error": error,
        "budget": spec.budget,
        "flops": steps_done * flops_per_step,  # realised, exact under flops_convention
        "flops_convention": r.flops_convention,
        "params": spec.params,
        "params_non_embedding": spec.params_non_embedding,
        "tokens": steps_done * r.tokens_per_step,
        "steps": steps_done,
        "epochs": steps_done * r.tokens_per_step / data.train_tokens,  # passes over the training shard
        "final_train_loss": loop["smooth"],
        "final_val_loss": _last_val(metrics_path) if status == "done" and dist.main else None,
        "wall_time_s": wall,
        "tok_per_s": steps_done * r.tokens_per_step / wall,
        "flops_per_s": fps,
        "mfu": mfu(fps, peak, dist.world),
        "device": device_name(device),
        "world_size": dist.world,
        "precision": "bf16" if bf16 else "fp32",
        "compiled": bool(use_compile),
        "spec": spec.to_dict(),
        "data": {"path": str(data.path), "source": data.manifest.get("source"), "tokenizer": data.manifest.get("tokenizer"),
                 "train_tokens": data.train_tokens},
        "versions": versions(),
    }
    state = _full_state_dict(model, dist, cfg)
    if dist.main:
        save_torch_atomic({"model_config": spec.model.to_dict(), "model": state}, out_dir / "weights.pt")
        write_json_atomic(out_dir / "result.json", result)
        if tracker is not None:
            tracker.summary({k: result[k] for k in ("status", "final_val_loss", "final_train_loss", "flops", "tokens",
                                                     "params", "params_non_embedding", "budget", "mfu", "wall_time_s")})
            tracker.finish(0 if status == "done" else 1)
        if not cfg.keep_checkpoints:
            for p in checkpoint_paths(out_dir):
                p.unlink(missing_ok=True)
    return result


@torch.no_grad()
def evaluate(net, data: TokenData, spec: RunSpec, cfg: TrainerConfig, device, dist: Dist, bf16: bool) -> float:
    """Mean loss over fixed held-out windows; ranks split the windows and sum."""
    net.eval()
    # FSDP needs every rank in every forward (all-gathers), so there each rank evaluates all batches
    shard = dist.world > 1 and cfg.parallel != "fsdp"
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of per-window mean losses, windows)
    for i, (x, y) in enumerate(data.val_batches(spec.recipe.seq_len, spec.recipe.batch_size, cfg.eval_tokens)):
        if shard and i % dist.world != dist.rank:
            continue
        with autocast(device, bf16):
            loss = net(_to_device(x, device), _to_device(y, device))
        sums[0] += loss.double() * x.shape[0]
        sums[1] += x.shape[0]
    net.train()
    if shard:
        sums = _all_reduce(sums, dist)
    return (sums[0] / sums[1]).item()


def save_checkpoint(out_dir, step, model, opt, spec, loop, cfg: TrainerConfig, dist: Dist) -> None:
    state = _full_state_dict(model, dist, cfg)
    optim = _full_optim_state(model, opt, dist, cfg)
    if not dist.main:
        return
    ckpt = {"step": step, "spec_hash": spec_hash(spec.to_dict()), "model_config": spec.model.to_dict(),
            "model": state, "optimizer": optim, "loop": dict(loop)}
    save_torch_atomic(ckpt, Path(out_dir) / "checkpoints" / f"step_{step:08d}.pt")
    for old in checkpoint_paths(out_dir)[:-cfg.keep_last]:
        old.unlink(missing_ok=True)


def _full_state_dict(model, dist: Dist, cfg: TrainerConfig) -> dict:
    if dist.world > 1 and cfg.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _full_optim_state(model, opt, dist: Dist, cfg: TrainerConfig) -> dict:
    if dist.world > 1 and cfg.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def _load_optimizer(opt, model, state, dist: Dist, cfg: TrainerConfig) -> None:
    if dist.world > 1 and cfg.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
    else:
        opt.load_state_dict(state)


def _max_op():
    import torch.distributed as td

    return td.ReduceOp.MAX


def _to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if device.type == "cuda":
        t = t.pin_memory()  # page-locked, so the copy below can overlap compute
    return t.to(device, non_blocking=True)


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [l for l in path.read_text().splitlines() if l.strip() and _step_of(l) is not None and _step_of(l) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(l + "\n" for l in keep))
    os.replace(tmp, path)


def _step_of(line: str) -> Optional[int]:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError):
        return None  # a torn last line from a kill


def _last_val(metrics_path: Path) -> Optional[float]:
    val = None
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        if "val_loss" in rec:
            val = rec["val_loss"]
    return val


def _progress(spec: RunSpec, cfg: TrainerConfig, start: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=spec.steps, initial=start, desc=spec.run_id, unit="step", leave=False, dynamic_ncols=True)


def versions() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    import transformers

    return {"git_sha": sha, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# CLI: one RunSpec outside Hydra, e.g. under torchrun

def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.train", description="Train one RunSpec (a plan.json entry).")
    p.add_argument("--spec", required=True, help="a sweep's plan.json (with --run-id), or a JSON file with one RunSpec")
    p.add_argument("--run-id", help="which run of plan.json to train")
    p.add_argument("--data", required=True, help="prepared data directory (with manifest.json)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--trainer", default="{}", help='trainer options as JSON, e.g. \'{"log_every": 5}\'')
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        obj = json.loads(Path(a.spec).read_text())
        if "runs" in obj:  # a plan.json
            runs = {r["run_id"]: r for r in obj["runs"]}
            if a.run_id not in runs:
                raise ValueError(f"--run-id {a.run_id!r} is not in {a.spec}; choose one of {', '.join(runs)}")
            obj = runs[a.run_id]
        spec = RunSpec.from_dict(obj)
        cfg = TrainerConfig(**json.loads(a.trainer))
        data = TokenData(Path(a.data), model_vocab_size=spec.model.vocab_size)
    except (OSError, ValueError, TypeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = train(spec, cfg, data, Path(a.out))
    if Dist.from_env().main:
        print(json.dumps({k: res[k] for k in ("run_id", "status", "steps", "flops", "final_val_loss", "mfu")}))
    return 0 if res["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
