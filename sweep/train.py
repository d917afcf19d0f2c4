"""Train one RunSpec to exactly its FLOP budget, on whatever device is there.

The run takes ``spec.steps`` optimizer steps of ``spec.recipe.tokens_per_step`` tokens; the planner
chose the step count so that steps x tokens/step x exact FLOPs/token is within half a step of the
budget.  Cumulative FLOPs are counted with the same exact per-token figure at every log line.

``train`` is three parts: ``setup`` (device, model, optimizer, resume from the newest checkpoint),
``run_loop`` (``step`` after step, logging, evaluation, checkpoints and stop signals) and ``finish``
(the result record, the final weights).

Devices and precision (sweep/device.py)
    CUDA: bf16 autocast (fp16 with a GradScaler on cards without native bf16), ``torch.compile``, fused AdamW,
    flash SDPA (PyTorch picks it for bf16), pinned host memory with non-blocking copies one step ahead.
    CPU/MPS: fp32, eager, foreach AdamW.  ``trainer.precision`` and ``trainer.compile`` override the defaults
    (both work on CPU too).  The first step of every attempt (compilation, autotuning, CUDA warm-up) is timed
    apart: ``compile_s`` in the result; tok/s and MFU count the other steps only, without evaluations.

Data parallelism
    Under ``torchrun`` (RANK/WORLD_SIZE in the environment) or as the tasks of one SLURM step (submitit's
    ``tasks_per_node``; SLURM_PROCID/SLURM_STEP_NUM_TASKS, sweep.device.Dist.from_env) each rank reads only its slice of every global
    batch; DDP (or FSDP2 with ``trainer.parallel=fsdp``) averages the gradients, so the loss curve is
    the single-process one for the same global batch.  Models are built on the meta device and materialised
    where they train (under FSDP2 each rank only its shards: ``sweep.device.build_model``), with the same
    initial values whatever the sharding.

Checkpoints (sweep/checkpoint.py)
    By wall time, and on SIGTERM or the preemption signal; a restarted run resumes exactly: batches are a
    pure function of (seed, step), so it follows the uninterrupted loss curve on CPU.

Outputs in the run directory (sweep/rundir.py): metrics.jsonl, attempts.jsonl, result.json, weights.pt.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from models.flops import matmul_flops_per_token
from sweep.checkpoint import (StopSignals, full_state_dict, load_branch_checkpoint, load_latest_checkpoint, load_optimizer,
                              save_checkpoint, save_torch_atomic)
from sweep.data.loader import TokenData
from sweep.device import (PRECISIONS, Dist, all_reduce, autocast, build_model, device_name, fmt_mfu, grad_scaler,
                          join_ranks, keep_cpu_memory, leave_ranks, max_op, mfu, peak_flops_per_s, pick_precision,
                          rank_device, scheduler_ids, sync, to_device)
from sweep.plan import RunSpec
from sweep.rundir import (METRICS_FILE, WEIGHTS_FILE, RunResult, append_attempt, checkpoint_paths, fault_point,
                          last_val_loss, read_metrics, truncate_metrics, write_result)

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """The ``trainer`` config section: how to run, not what to train."""

    device: str = "auto"  # auto | cpu | cuda | mps
    device_index: Optional[int] = None  # which GPU; None = LOCAL_RANK (torchrun) or, in a packed sweep, job number mod #GPUs
    precision: str = "auto"  # auto (CUDA: bf16 autocast, or fp16 + GradScaler without native bf16; fp32 elsewhere) | bf16 | fp16 | fp32
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"trainer.parallel={self.parallel!r}: use ddp or fsdp")
        if self.keep_last < 1:
            raise ValueError(f"trainer.keep_last must be >= 1, got {self.keep_last}")


# ---------------------------------------------------------------------------------------------
# schedule and optimizer

def lr_at(step: int, spec: RunSpec) -> float:
    """The peak LR times the schedule at optimizer step ``step`` (0-based); both schedules end at min_lr_ratio·peak
    exactly at the last step.

    Both start with a linear warm-up over warmup_steps.  cosine: then a cosine over the rest of the run (cycle = run
    length, Chinchilla).  wsd: then the peak until the last cooldown_steps, over which the LR falls linearly or as
    1 - sqrt(progress) (Hägele et al. 2024, eq. 1); a trunk (cooldown_steps 0) stays at the peak to its end.
    """
    r = spec.recipe
    if step < spec.warmup_steps:
        return r.lr * (step + 1) / spec.warmup_steps
    if r.schedule == "wsd":
        decay_from = spec.steps - spec.cooldown_steps
        if spec.cooldown_steps == 0 or step < decay_from:
            return r.lr
        progress = (step - decay_from + 1) / spec.cooldown_steps  # in (0, 1]: 1 at the last step
        left = 1 - progress if r.cooldown_shape == "linear" else 1 - math.sqrt(progress)
        return r.lr * (r.min_lr_ratio + (1 - r.min_lr_ratio) * left)
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


# ---------------------------------------------------------------------------------------------
# one run

@dataclass
class Run:
    """Everything one run holds while it trains (built by ``setup``)."""

    spec: RunSpec
    cfg: TrainerConfig
    data: TokenData
    run_dir: Path
    tracker: Any
    dist: Dist
    device: torch.device
    precision: str  # bf16 | fp16 | fp32: the autocast dtype (sweep.device.pick_precision)
    scaler: Any  # the GradScaler of fp16 runs, else None
    compiled: bool
    model: torch.nn.Module  # the module whose parameters are trained (sharded under FSDP)
    net: Any  # what the forward pass calls: the model, its DDP wrapper, compiled or not
    ddp: Any
    opt: torch.optim.Optimizer
    micro: int  # sequences per forward/backward
    accum: int  # micro-batches per optimizer step
    rows: slice  # this rank's share of every global batch
    start: int  # the step this attempt starts at (> 0 after a resume)
    loop: dict  # smoothed loss, first loss, elapsed seconds, the wandb state; saved in every checkpoint
    eval_steps: set
    flops_per_step: float  # exact, under spec.recipe.flops_convention (what the budget counts)
    matmul_flops_per_step: float  # the matmul terms only: MFU's numerator (models.flops.matmul_flops_per_token)
    peak: Optional[float]  # the device's bf16 peak FLOP/s, for MFU

    @property
    def sharded(self) -> bool:
        return self.dist.world > 1 and self.cfg.parallel == "fsdp"

    def batch(self, step: int):
        r = self.spec.recipe
        x, y = self.data.train_batch(step, r.batch_size, r.seq_len, r.seed, rows=self.rows)  # this rank's rows only
        return to_device(x, self.device), to_device(y, self.device)


def setup(spec: RunSpec, cfg: TrainerConfig, data: TokenData, run_dir: Path, tracker=None,
          trunk: Optional[RunSpec] = None) -> Run:
    """Device, process group, model, optimizer; the newest checkpoint of this spec is loaded when there is one.

    A fork (``spec.trunk``; ``trunk`` is that trunk's spec) that has no checkpoint of its own starts from its trunk's
    checkpoint at ``spec.start_step``, in the trunk's directory beside its own."""
    run_dir = Path(run_dir)
    dist = Dist.from_env()
    tracker = tracker if dist.main else None
    device = rank_device(cfg.device, cfg.device_index, dist)
    if device.type == "cpu":
        keep_cpu_memory()  # reuse freed activation memory instead of page-faulting it in again every step
        if cfg.num_threads > 0:
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
    precision = pick_precision(cfg.precision, device)
    compiled = cfg.compile if cfg.compile is not None else device.type == "cuda"
    sharded = dist.world > 1 and cfg.parallel == "fsdp"
    join_ranks(dist, device)  # torchrun's or SLURM's ranks (sweep.device.Dist.from_env)

    ckpt = load_latest_checkpoint(run_dir, spec)
    if ckpt is None and spec.trunk:
        if trunk is None or trunk.run_id != spec.trunk:
            raise ValueError(f"{spec.run_id} is a fork of {spec.trunk}: pass that trunk's spec")
        ckpt = load_branch_checkpoint(run_dir.parent / trunk.run_id, spec.start_step, trunk)
        # the trunk's time, throughput clock and wandb run are the trunk's: the fork starts its own
        ckpt["loop"] = {k: v for k, v in ckpt["loop"].items() if k != "wandb"} | {
            "elapsed": 0.0, "compile_s": 0.0, "train_s": 0.0, "timed_steps": 0}
    model = build_model(spec.model, r.seed, device, sharded, ckpt["model"] if ckpt else None, precision)
    ddp = None
    if dist.world > 1 and not sharded:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = build_optimizer(model, spec, device)
    scaler = grad_scaler(device, precision, sharded)
    if ckpt is not None:
        load_optimizer(opt, model, ckpt["optimizer"], sharded)
    net = torch.compile(ddp or model) if compiled else (ddp or model)

    start = ckpt["step"] if ckpt else 0
    fault_point(f"setup:{start}")  # chaos tests: a signal during set-up (setup:0: the first attempt only)
    # compile_s: first steps of the attempts; train_s, timed_steps: the other steps (tok/s and MFU)
    loop = {"smooth": None, "first_loss": None, "elapsed": 0.0, "compile_s": 0.0, "train_s": 0.0, "timed_steps": 0}
    if ckpt:
        loop.update(ckpt["loop"])
        if scaler is not None and loop.get("grad_scaler"):
            scaler.load_state_dict(loop["grad_scaler"])
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir, start)  # drop lines logged after the checkpoint we resume from
        if tracker is not None and tracker.enabled:  # the same wandb run goes on; its state rides in every checkpoint
            loop["wandb"] = tracker.start(loop.get("wandb"), history=read_metrics(run_dir))
        if ckpt:
            log.info("%s: resuming at step %d of %d", spec.run_id, start, spec.steps)
        # one line per (re)start: shows nothing was retrained
        append_attempt(run_dir, {"start_step": start, "pid": os.getpid(), "host": platform.node(), "time": time.time(),
                                 "world_size": dist.world, **scheduler_ids()})
    return Run(spec=spec, cfg=cfg, data=data, run_dir=run_dir, tracker=tracker, dist=dist, device=device,
               precision=precision, scaler=scaler, compiled=bool(compiled), model=model, net=net, ddp=ddp, opt=opt,
               micro=micro, accum=per_rank // micro, rows=slice(dist.rank * per_rank, (dist.rank + 1) * per_rank),
               start=start, loop=loop, eval_steps={max(1, round(f * spec.steps)) for f in cfg.eval_fractions if 0 < f < 1},
               flops_per_step=r.tokens_per_step * spec.flops_per_token,
               matmul_flops_per_step=r.tokens_per_step * matmul_flops_per_token(spec.model),
               peak=peak_flops_per_s(device_name(device)) if precision != "fp32" else None)


def step(run: Run, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
    """One optimizer step at learning rate ``lr`` on this rank's rows; returns the (unsynced) mean loss."""
    for g in run.opt.param_groups:
        g["lr"] = lr
    loss_sum = torch.zeros((), device=run.device)
    m = run.micro
    for i in range(run.accum):
        # under DDP, all-reduce gradients only on the last micro-batch of the step
        skip_sync = run.ddp is not None and i < run.accum - 1
        with (run.ddp.no_sync() if skip_sync else contextlib.nullcontext()), autocast(run.device, run.precision):
            loss = run.net(xb[i * m:(i + 1) * m], yb[i * m:(i + 1) * m]) / run.accum
        (run.scaler.scale(loss) if run.scaler else loss).backward()
        loss_sum += loss.detach()
    if run.scaler is not None:
        run.scaler.unscale_(run.opt)  # clip the true gradients; a step with inf/NaN in them is skipped below
    if run.spec.recipe.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.spec.recipe.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss_sum


def run_loop(run: Run, stop: Optional[StopSignals] = None) -> tuple[str, Optional[str], int]:
    """Train from ``run.start`` to the last step: (status, error, steps done).

    Logs every ``log_every`` steps (the only host syncs), evaluates at the eval fractions and at the end,
    checkpoints when due or signalled; a signal saves a checkpoint and re-raises (the process ends).  ``stop`` is
    the job's StopSignals when it holds them already (a signal during set-up is in it); else the loop installs its own.
    """
    spec, cfg, dist, loop = run.spec, run.cfg, run.dist, run.loop
    r = spec.recipe
    status, error = "done", None
    t0 = time.perf_counter() - loop["elapsed"]
    last_ckpt = time.perf_counter()
    # the throughput's clock: it runs from `mark` (after the step `marked`) to the next host sync, and stops for
    # the attempt's first step (compile_s), evaluations, logging and checkpoints
    mark, marked = time.perf_counter(), run.start

    def clock(done: int, first: bool = False) -> None:
        nonlocal mark, marked
        now = time.perf_counter()
        if first:
            loop["compile_s"] += now - mark
        else:
            loop["train_s"] += now - mark
            loop["timed_steps"] += done - marked
        mark, marked = now, done

    bar = _progress(spec, cfg, run.start) if dist.main else None
    done = run.start
    signals = contextlib.nullcontext(stop) if stop is not None else StopSignals()
    with signals as stop, (open(run.run_dir / METRICS_FILE, "a") if dist.main else contextlib.nullcontext()) as mf:
        nxt = run.batch(run.start) if run.start < spec.steps else None
        for k in range(run.start, spec.steps):
            xb, yb = nxt
            if k + 1 < spec.steps:
                nxt = run.batch(k + 1)  # host gather + async copy while the device works on earlier steps
            lr = lr_at(k, spec)
            loss_sum = step(run, xb, yb, lr)

            done = k + 1
            last = done == spec.steps
            if done == run.start + 1:  # compilation, autotuning and warm-up happen here: time it apart
                sync(run.device)
                clock(done, first=True)
            fault_point(f"step:{done}")  # chaos tests: a signal or a kill right after this step
            if done % cfg.log_every == 0 or last or done == 1:
                loss_val = all_reduce(loss_sum, dist).item() / dist.world
                clock(done)
                loop["first_loss"] = loop["first_loss"] or loss_val
                loop["smooth"] = loss_val if loop["smooth"] is None else 0.9 * loop["smooth"] + 0.1 * loss_val
                elapsed = time.perf_counter() - t0
                steps_per_s = throughput(loop, done - run.start)
                rec = {"step": done, "tokens": done * r.tokens_per_step, "flops": done * run.flops_per_step,
                       "loss": loss_val, "lr": lr, "elapsed_s": elapsed,
                       "tok_per_s": steps_per_s * r.tokens_per_step,
                       "mfu": mfu(steps_per_s * run.matmul_flops_per_step, run.peak, dist.world)}
                limit = cfg.diverge_loss or 2 * loop["first_loss"]
                if not math.isfinite(loss_val) or loss_val > limit:
                    status, error = "diverged", f"loss {loss_val:.4g} at step {done} (limit {limit:.4g})"
                if status == "done" and (done in run.eval_steps or last):
                    rec["val_loss"] = evaluate(run)
                if dist.main:
                    mf.write(json.dumps(rec) + "\n")
                    mf.flush()
                    if run.tracker is not None:
                        run.tracker.log(rec)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_val:.3f}", mfu=fmt_mfu(rec["mfu"]), refresh=False)
                if status == "diverged":
                    break
                mark = time.perf_counter()  # evaluation and logging stay out of the throughput
            if bar is not None:
                bar.update(1)
            if done in spec.branch_steps:  # a trunk keeps a checkpoint where each of its forks branches off
                sync(run.device)
                clock(done)
                if run.scaler is not None:
                    loop["grad_scaler"] = run.scaler.state_dict()
                save_checkpoint(run.run_dir, done, run.model, run.opt, spec, loop | {"elapsed": time.perf_counter() - t0},
                                cfg.keep_last, dist.main, run.sharded, branch=True)
                mark = time.perf_counter()  # checkpoints stay out of the throughput

            # checkpoint when due or signalled; with several ranks they agree at log steps only (one sync there)
            if not last and (dist.world == 1 or done % cfg.log_every == 0):
                due = cfg.checkpoint_every_s > 0 and time.perf_counter() - last_ckpt >= cfg.checkpoint_every_s
                flags = [stop.hit is not None, due]  # plain bools: no device sync on a single process
                if dist.world > 1:
                    flags = all_reduce(torch.tensor(flags, dtype=torch.float32, device=run.device), dist, max_op()).tolist()
                if any(flags):
                    sync(run.device)
                    clock(done)
                    loop["elapsed"] = time.perf_counter() - t0
                    if run.scaler is not None:
                        loop["grad_scaler"] = run.scaler.state_dict()
                    save_checkpoint(run.run_dir, done, run.model, run.opt, spec, loop, cfg.keep_last, dist.main, run.sharded)
                    last_ckpt = mark = time.perf_counter()
                    if flags[0]:
                        if bar is not None:
                            bar.close()
                        log.warning("%s: stopped by signal %s at step %d; checkpoint saved", spec.run_id, stop.hit, done)
                        stop.forward()  # submitit's handler requeues, or the default action ends the process
                        raise SystemExit(128 + (stop.hit or 0))
    if bar is not None:
        bar.close()
    loop["elapsed"] = time.perf_counter() - t0
    return status, error, done


def throughput(loop: dict, steps_this_attempt: int) -> float:
    """Optimizer steps per second over the timed steps (all but each attempt's first); before there are any,
    the first step's own rate (so the first log line of a run includes its warm-up)."""
    if loop["timed_steps"]:
        return loop["timed_steps"] / max(loop["train_s"], 1e-9)
    return steps_this_attempt / max(loop["compile_s"], 1e-9)



def finish(run: Run, status: str, error: Optional[str], steps_done: int) -> RunResult:
    """The run's result record and final weights (rank 0 writes them); checkpoints go unless kept."""
    spec, r, dist = run.spec, run.spec.recipe, run.dist
    wall = run.loop["elapsed"]
    steps_per_s = throughput(run.loop, steps_done - run.start)
    m = run.data.manifest
    result = RunResult(
        run_id=spec.run_id, status=status, kind=spec.kind, error=error, budget=spec.budget,
        flops=steps_done * run.flops_per_step,  # realised, exact under flops_convention; a fork's include its trunk's
        flops_spent=(steps_done - spec.start_step) * run.flops_per_step, trunk=spec.trunk,
        flops_convention=r.flops_convention, params=spec.params, params_non_embedding=spec.params_non_embedding,
        tokens=steps_done * r.tokens_per_step, steps=steps_done,
        epochs=steps_done * r.tokens_per_step / run.data.train_tokens,  # passes over the training shard
        final_train_loss=run.loop["smooth"],
        final_val_loss=last_val_loss(run.run_dir) if status == "done" and dist.main else None,
        wall_time_s=wall, compile_s=run.loop["compile_s"], tok_per_s=steps_per_s * r.tokens_per_step,
        flops_per_s=steps_per_s * run.flops_per_step, mfu=mfu(steps_per_s * run.matmul_flops_per_step, run.peak, dist.world),
        device=device_name(run.device), world_size=dist.world, precision=run.precision, compiled=run.compiled,
        spec=spec.to_dict(),
        data={"path": str(run.data.path), "source": m.get("source"), "tokenizer": m.get("tokenizer"),
              "train_tokens": run.data.train_tokens},
        bytes_per_token=m.get("bytes_per_token"), tokenizer_dir=run.data.tokenizer_dir, versions=versions())
    state = full_state_dict(run.model, run.sharded)
    if dist.main:
        save_torch_atomic({"model_config": spec.model.to_dict(), "model": state}, run.run_dir / WEIGHTS_FILE)
        write_result(run.run_dir, result)
        if run.tracker is not None:
            run.tracker.summary({k: getattr(result, k) for k in (
                "status", "final_val_loss", "final_train_loss", "flops", "tokens", "params", "params_non_embedding",
                "budget", "mfu", "wall_time_s")})
            run.tracker.finish(0 if status == "done" else 1)
        if not run.cfg.keep_checkpoints:
            for p in checkpoint_paths(run.run_dir):
                p.unlink(missing_ok=True)
    return result


def train(spec: RunSpec, cfg: TrainerConfig, data: TokenData, out_dir: Path, tracker=None,
          trunk: Optional[RunSpec] = None, stop: Optional[StopSignals] = None) -> RunResult:
    """Train ``spec`` (resuming from its newest checkpoint) and return its result (also in ``out_dir/result.json``).

    ``tracker`` (sweep.tracking.Tracker) receives every log record and the final summary (rank 0 only).  A fork
    needs its ``trunk``'s spec (see ``setup``); ``stop``: see ``run_loop``.
    """
    run = setup(spec, cfg, data, out_dir, tracker, trunk)
    return finish(run, *run_loop(run, stop))


@torch.no_grad()
def evaluate(run: Run) -> float:
    """Mean loss over fixed held-out windows; ranks split the windows and sum."""
    dist, spec = run.dist, run.spec
    # eager (run.model, not the compiled run.net): eval mode and the last, shorter batch would make torch.compile
    # compile twice more for a few forward passes; evaluation is timed out of the throughput anyway
    run.model.eval()
    # FSDP needs every rank in every forward (all-gathers), so there each rank evaluates all batches
    shard = dist.world > 1 and run.cfg.parallel != "fsdp"
    sums = torch.zeros(2, dtype=torch.float64, device=run.device)  # (sum of per-window mean losses, windows)
    for i, (x, y) in enumerate(run.data.val_batches(spec.recipe.seq_len, spec.recipe.batch_size, run.cfg.eval_tokens)):
        if shard and i % dist.world != dist.rank:
            continue
        with autocast(run.device, run.precision):
            loss = run.model(to_device(x, run.device), to_device(y, run.device))
        sums[0] += loss.double() * x.shape[0]
        sums[1] += x.shape[0]
    run.model.train()
    if shard:
        sums = all_reduce(sums, dist)
    return (sums[0] / sums[1]).item()


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
        runs = {r["run_id"]: r for r in obj["runs"]} if "runs" in obj else {}  # a plan.json
        if runs:
            if a.run_id not in runs:
                raise ValueError(f"--run-id {a.run_id!r} is not in {a.spec}; choose one of {', '.join(runs)}")
            obj = runs[a.run_id]
        spec = RunSpec.from_dict(obj)
        trunk = RunSpec.from_dict(runs[spec.trunk]) if spec.trunk and spec.trunk in runs else None
        cfg = TrainerConfig(**json.loads(a.trainer))
        data = TokenData(Path(a.data), model_vocab_size=spec.model.vocab_size)
    except (OSError, ValueError, TypeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = train(spec, cfg, data, Path(a.out), trunk=trunk)
    dist = Dist.from_env()
    leave_ranks(dist)  # under torchrun: before the interpreter exits (sweep.device.leave_ranks)
    if dist.main:
        print(json.dumps({k: getattr(res, k) for k in ("run_id", "status", "steps", "flops", "final_val_loss", "mfu")}))
    return 0 if res.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
