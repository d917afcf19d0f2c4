"""Train one RunSpec to exactly its FLOP budget.

The run takes ``spec.steps`` optimizer steps of ``spec.recipe.tokens_per_step`` tokens; the planner
chose the step count so that steps x tokens/step x exact FLOPs/token is within half a step of the
budget.  Cumulative FLOPs are counted with the same exact per-token figure at every log line.

Outputs in ``out_dir``:
    metrics.jsonl   append-only: one line per log step (and per evaluation)
    result.json     written atomically at the end (temp file + rename)
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from models.transformer import Transformer
from sweep.data import TokenData
from sweep.plan import RunSpec
from sweep.store import write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """The ``trainer`` config section: how to run, not what to train."""

    device: str = "auto"  # auto | cpu | cuda | mps
    num_threads: int = 0  # CPU intra-op threads; 0 = all cores
    log_every: int = 10  # optimizer steps between metrics.jsonl lines
    eval_fractions: list = field(default_factory=lambda: [0.25, 0.5, 0.75])  # also evaluate at these fractions of the run (the end is always evaluated)
    eval_tokens: int = 65536  # held-out tokens per evaluation
    micro_batch_size: int = 0  # sequences per forward/backward; 0 = the whole global batch
    diverge_loss: float = 0.0  # mark the run diverged if the loss exceeds this (0 = 2 x the initial loss)
    progress: bool = True  # tqdm bar per run

    def __post_init__(self):
        if self.log_every < 1:
            raise ValueError(f"trainer.log_every must be >= 1, got {self.log_every}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"trainer.device={self.device!r}: use auto, cpu, cuda or mps")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


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
    return torch.optim.AdamW(groups, lr=r.lr, betas=(r.beta1, r.beta2), eps=1e-8, fused=device.type == "cuda")


@torch.no_grad()
def evaluate(model, data: TokenData, spec: RunSpec, cfg: TrainerConfig, device) -> float:
    model.eval()
    total, n = 0.0, 0
    for x, y in data.val_batches(spec.recipe.seq_len, spec.recipe.batch_size, cfg.eval_tokens):
        xb, yb = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        with _autocast(device):
            loss = model(xb, yb)
        total += loss.item() * x.shape[0]
        n += x.shape[0]
    model.train()
    return total / n


def _autocast(device: torch.device):
    # bf16 autocast on CUDA; fp32 everywhere else
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def train(spec: RunSpec, cfg: TrainerConfig, data: TokenData, out_dir: Path) -> dict:
    """Train ``spec`` and return its result record (also written to ``out_dir/result.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if device.type == "cpu" and cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if spec.model.vocab_size < data.vocab_size:
        raise ValueError(f"model vocab {spec.model.vocab_size} < tokenizer vocab {data.vocab_size}; re-plan with this data")

    r = spec.recipe
    torch.manual_seed(r.seed)
    model = Transformer(spec.model).to(device)
    opt = build_optimizer(model, spec, device)
    micro = cfg.micro_batch_size or r.batch_size
    if r.batch_size % micro:
        raise ValueError(f"trainer.micro_batch_size={micro} must divide recipe.batch_size={r.batch_size}")
    accum = r.batch_size // micro
    eval_steps = {max(1, round(f * spec.steps)) for f in cfg.eval_fractions if 0 < f < 1}
    flops_per_step = r.tokens_per_step * spec.flops_per_token  # exact, under spec.recipe.flops_convention

    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)  # no resume yet: a restarted run starts its log afresh
    status, error, loss_val, first_loss = "done", None, float("nan"), None
    smooth = None  # EMA of the training loss for the final train loss
    t0 = time.perf_counter()
    bar = _progress(spec, cfg)
    with open(metrics_path, "a") as mf:
        def emit(rec):
            mf.write(json.dumps(rec) + "\n")
            mf.flush()

        for step in range(spec.steps):
            lr = lr_at(step, spec)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = data.train_batch(step, r.batch_size, r.seq_len, r.seed)
            xb = torch.from_numpy(x).to(device, non_blocking=True)
            yb = torch.from_numpy(y).to(device, non_blocking=True)
            loss_sum = torch.zeros((), device=device)
            for i in range(accum):
                with _autocast(device):
                    loss = model(xb[i * micro:(i + 1) * micro], yb[i * micro:(i + 1) * micro]) / accum
                loss.backward()
                loss_sum += loss.detach()
            if r.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

            done = step + 1
            last = done == spec.steps
            if done % cfg.log_every == 0 or last or done == 1:
                loss_val = loss_sum.item()  # the only host sync of the step, at log steps
                first_loss = loss_val if first_loss is None else first_loss
                smooth = loss_val if smooth is None else 0.9 * smooth + 0.1 * loss_val
                elapsed = time.perf_counter() - t0
                rec = {"step": done, "tokens": done * r.tokens_per_step, "flops": done * flops_per_step,
                       "loss": loss_val, "lr": lr, "elapsed_s": elapsed,
                       "tok_per_s": done * r.tokens_per_step / max(elapsed, 1e-9)}
                limit = cfg.diverge_loss or 2 * first_loss
                if not math.isfinite(loss_val) or loss_val > limit:
                    status, error = "diverged", f"loss {loss_val:.4g} at step {done} (limit {limit:.4g})"
                    emit(rec)
                    break
                if done in eval_steps or last:
                    rec["val_loss"] = evaluate(model, data, spec, cfg, device)
                emit(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_val:.3f}", refresh=False)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    wall = time.perf_counter() - t0
    steps_done = done
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
        "epochs": steps_done * r.tokens_per_step / data.train_tokens,
        "final_train_loss": smooth,
        "final_val_loss": _last_val(metrics_path) if status == "done" else None,
        "wall_time_s": wall,
        "tok_per_s": steps_done * r.tokens_per_step / wall,
        "flops_per_s": steps_done * flops_per_step / wall,
        "device": str(device),
        "spec": spec.to_dict(),
        "data": {"path": str(data.path), "source": data.manifest.get("source"), "tokenizer": data.manifest.get("tokenizer"),
                 "train_tokens": data.train_tokens},
        "versions": versions(),
    }
    write_json_atomic(out_dir / "result.json", result)
    return result


def _last_val(metrics_path: Path) -> Optional[float]:
    val = None
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        if "val_loss" in rec:
            val = rec["val_loss"]
    return val


def _progress(spec: RunSpec, cfg: TrainerConfig):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=spec.steps, desc=spec.run_id, unit="step", leave=False, dynamic_ncols=True)


def versions() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    import transformers

    return {"git_sha": sha, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}
