"""Whole-run CPU training throughput against a bare loop of nanoGPT's model: benchmarks/cpu_throughput.md.

    python scripts/bench_cpu_throughput.py [--repeats 3] [--max-steps 400] [--compile --out F] [overrides ...]

For three shapes of the smoke plan (``+experiment=smoke sweep.forks=false`` plus any Hydra overrides: its
smallest, middle and largest model sizes, each at the shortest run that trains it) it measures tokens per second three ways:

    trainer   ``python -m sweep.train`` on the run's own spec and the smoke's prepared data: the run's tokens over
              its wall time (``result.json``), so evaluations, the data gather, logging and checkpoints count
    ours      the same model (models/transformer.py) in a bare loop on random tokens
    nanoGPT   ../shared/anchors/nanogpt/model.py (imported from there at run time, never copied), bias off, dropout
              0, at the same d, L, heads, vocab, T and B, in the same bare loop

The bare loop is forward, backward, grad-norm clip, AdamW step (the trainer's own optimizer,
``sweep.train.build_optimizer``), fp32, the same thread count as the trainer, over the run's own number of steps
capped at ``--max-steps``, after 10 untimed steps.  nanoGPT's MLP (4d, GELU) and our SwiGLU (d_ff near 8d/3, rounded to the
preset's multiple) have nearly the same matmul FLOPs per token; the table gives both models' exact counts
(Chinchilla App. F, models/flops.py; nanoGPT's learned position table adds no matmul).  Each figure is the median
of ``--repeats`` rounds, the three ways interleaved within a round so that a change of machine load hits all three.
``--compile`` runs the trainer with ``trainer.compile=true`` (inductor's C++ kernels; the compile falls in the first
step, which the table gives apart, and counts in the whole-run figure); the bare loops stay eager.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# as the trainer runs (models/__init__.py sets it for every process that imports the package): idle OpenMP threads
# sleep instead of spinning.  Set before torch loads, so that the bare loops run under the same policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.flops import flops_per_token, param_counts  # noqa: E402
from models.transformer import Transformer  # noqa: E402
from sweep.train import build_optimizer  # noqa: E402

NANOGPT = REPO.parent / "shared" / "anchors" / "nanogpt" / "model.py"
WARMUP = 10


def smoke_plan(overrides: list[str]):
    """The smoke sweep's specs and prepared data directory, planned exactly as ``python -m sweep`` would."""
    from hydra import compose, initialize_config_dir

    from sweep.app import CONF_DIR
    from sweep.job import make_plan

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        # independent runs (no trunk to wait for): the smoke's shapes and recipe, each point its own run
        cfg = compose("config", overrides=["+experiment=smoke", "sweep.forks=false", *overrides])
    specs, _, data = make_plan(cfg)
    return specs, data


def pick_shapes(specs) -> list:
    """The smallest, middle and largest sizes, each at its shortest run."""
    runs = [s for s in specs if s.kind == "grid"]
    sizes = sorted({s.params for s in runs})
    chosen = [sizes[0], sizes[len(sizes) // 2], sizes[-1]]
    return [min((s for s in runs if s.params == n), key=lambda s: s.steps) for n in chosen]


def load_nanogpt():
    if not NANOGPT.exists():
        raise SystemExit(f"error: {NANOGPT} is missing; put ../shared beside the checkout (it holds nanoGPT's model.py)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", NANOGPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def nanogpt_model(mod, m):
    cfg = mod.GPTConfig(block_size=m.seq_len, vocab_size=m.vocab_size, n_layer=m.n_layers, n_head=m.n_heads,
                        n_embd=m.d_model, dropout=0.0, bias=False)
    return mod.GPT(cfg)


def nanogpt_flops_per_token(m) -> float:
    """Training matmul FLOPs per token of nanoGPT's block, counted as App. F counts ours: 3 x forward, forward =
    2 x (QKV 3d^2 + attention out d^2 + MLP 8d^2) per layer + the QK logits and attention x values (2 x 2 T d per
    layer, averaged over positions as App. F does: 2 T d each) + the unembedding 2 d V."""
    d, L, T, V = m.d_model, m.n_layers, m.seq_len, m.vocab_size
    fwd = L * (2 * 12 * d * d + 2 * 2 * T * d) + 2 * d * V
    return 3.0 * fwd


def bare_loop(model, spec, steps: int, forward) -> float:
    """Tokens per second of forward, backward, clip and AdamW over ``steps`` steps on random tokens."""
    r, m = spec.recipe, spec.model
    opt = build_optimizer(model, spec, torch.device("cpu"))  # the trainer's AdamW: its groups, betas, eps, foreach
    g = torch.Generator().manual_seed(0)
    batches = torch.randint(m.vocab_size, (WARMUP + steps, r.batch_size, m.seq_len + 1), generator=g)
    model.train()
    t0 = 0.0
    for i, b in enumerate(batches):
        if i == WARMUP:
            t0 = time.perf_counter()
        loss = forward(model, b[:, :-1].contiguous(), b[:, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * r.batch_size * m.seq_len / (time.perf_counter() - t0)


def trainer_run(spec, data: Path, threads: int, compiled: bool = False, tree: Path = REPO) -> dict:
    """``python -m sweep.train`` (from the checkout ``tree``) on ``spec`` in a fresh directory: the run's tokens over its wall time (``tok_s``),
    its first step (``first_s``: with ``compiled``, where torch.compile's compile falls) and its steady tok/s (the
    other steps without evaluations, ``steady``)."""
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "spec.json"
        f.write_text(json.dumps(spec.to_dict()))
        out = Path(tmp) / "run"
        p = subprocess.run([sys.executable, "-m", "sweep.train", "--spec", str(f), "--data", str(data), "--out", str(out),
                            "--trainer", json.dumps({"progress": False, "num_threads": threads, "compile": compiled})],
                           cwd=tree, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
        if p.returncode != 0:
            raise SystemExit(f"error: python -m sweep.train failed on {spec.run_id} (rc {p.returncode}): "
                             + (p.stderr.strip().splitlines() or ["no output"])[-1])
        res = json.loads((out / "result.json").read_text())
    return {"tok_s": res["tokens"] / res["wall_time_s"], "first_s": res["compile_s"], "steady": res["tok_per_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the smoke plan, e.g. recipe=tiny_stdlib")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=400, help="cap on the bare loops' timed steps")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads for all three")
    ap.add_argument("--compile", action="store_true", help="the trainer's runs with trainer.compile=true (inductor)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "cpu_throughput.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    nano = load_nanogpt()
    specs, data = smoke_plan(a.overrides)
    shapes = pick_shapes(specs)
    load0 = os.getloadavg()[0]
    rows = []
    for spec in shapes:
        m = spec.model
        steps = min(spec.steps, a.max_steps)
        got = {"trainer": [], "ours": [], "nanogpt": []}
        extra = {"first_s": [], "steady": []}
        for rep in range(a.repeats):
            t = trainer_run(spec, data, a.threads, a.compile)
            got["trainer"].append(t["tok_s"])
            for k in extra:
                extra[k].append(t[k])
            ours = Transformer(m, seed=0)
            got["ours"].append(bare_loop(ours, spec, steps, lambda mod, x, y: mod(x, y)))
            ng = nanogpt_model(nano, m)
            got["nanogpt"].append(bare_loop(ng, spec, steps, lambda mod, x, y: mod(x, y)[1]))
            print(f"{spec.run_id} round {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} tok/s" for k, v in got.items()),
                  flush=True)
        med = {k: statistics.median(v) for k, v in {**got, **extra}.items()}
        rows.append({"run_id": spec.run_id, "params": param_counts(m)["params"],
                     "params_nanogpt": sum(p.numel() for p in ng.parameters()),
                     "shape": f"{m.n_layers}x{m.d_model}, {m.n_heads} heads, ff {m.d_ff}, V {m.vocab_size}, "
                              f"T {m.seq_len}, B {spec.recipe.batch_size}",
                     "steps": spec.steps, "bare_steps": steps,
                     "fpt_ours": flops_per_token(m, "chinchilla"), "fpt_nanogpt": nanogpt_flops_per_token(m),
                     **med, "all": got})
    load1 = os.getloadavg()[0]
    lines = [f"# CPU training throughput against nanoGPT (generated by `python scripts/bench_cpu_throughput.py "
             f"{' '.join(sys.argv[1:])}`)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores, {a.threads} intra-op threads, "
             f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, torch {torch.__version__}; median of {a.repeats} "
             f"interleaved rounds; the trainer {'compiled (trainer.compile=true)' if a.compile else 'eager'}; "
             f"1-minute load average {load0:.1f} at the start, {load1:.1f} at the end.  "
             "Target: trainer / nanoGPT >= 1.0.", "",
             "| run | shape | N (ours / nanoGPT) | FLOPs/token (ours / nanoGPT) | trainer tok/s (steps) | "
             "trainer: first step s, steady tok/s | ours, bare | nanoGPT, bare (steps) | trainer / nanoGPT | "
             "ours / nanoGPT |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run_id']} | {r['shape']} | {r['params']:,} / {r['params_nanogpt']:,} | "
                     f"{r['fpt_ours']:,.0f} / {r['fpt_nanogpt']:,.0f} | {r['trainer']:,.0f} ({r['steps']}) | "
                     f"{r['first_s']:.2f}, {r['steady']:,.0f} | "
                     f"{r['ours']:,.0f} | {r['nanogpt']:,.0f} ({r['bare_steps']}) | {r['trainer'] / r['nanogpt']:.2f} | "
                     f"{r['ours'] / r['nanogpt']:.2f} |")
    lines += ["", "Each round's figures (tok/s): " + "; ".join(
        f"{r['run_id']}: " + ", ".join(f"{k} " + "/".join(f"{v:,.0f}" for v in vals) for k, vals in r["all"].items())
        for r in rows), ""]
    reading = a.out.with_name(a.out.stem + "_reading.md")
    if reading.exists():
        lines += [reading.read_text()]
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
