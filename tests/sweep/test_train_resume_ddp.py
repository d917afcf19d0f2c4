"""The trainer's GPU-cluster machinery, exercised on CPU: resume after a kill, DDP over gloo, compile, bf16, MFU."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from models.ladder import LadderConfig
from sweep.data import TokenData
from sweep.plan import SweepConfig, plan
from sweep.recipe import RecipeConfig
from sweep.device import PEAK_BF16_FLOPS, fmt_mfu, mfu, peak_flops_per_s
from sweep.rundir import checkpoint_paths
from sweep.train import TrainerConfig, train

from helpers import REPO

LADDER = LadderConfig(head_dim=16, aspect_ratio=32, tie_embeddings=True, min_layers=2)


def step_fault(fault: str) -> str:
    """Turn "SIGTERM@14" (that signal right after step 14) into the fault hook's grammar (sweep.rundir.fault_point)."""
    sig, step = fault.split("@")
    return f"step:{step}!{sig}"


def spec_file(tmp_path, budget=3e9, size=3.7e4, batch_size=8):
    r = RecipeConfig(seq_len=32, batch_size=batch_size, lr=3e-3, min_steps=10)
    spec = plan(SweepConfig(budgets=[budget], sizes=[size]), LADDER, r, vocab_size=320)[0]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.to_dict()))
    return spec, path


def run_cli(spec_path, data_path, out, trainer, env_extra=None, torchrun=0):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    args = ["--spec", str(spec_path), "--data", str(data_path), "--out", str(out), "--trainer", json.dumps(trainer)]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "sweep.train", *args]
    else:
        cmd = [sys.executable, "-m", "sweep.train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def curve(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


TRAINER = {"log_every": 2, "progress": False, "eval_tokens": 2048, "num_threads": 1}


@pytest.mark.parametrize("fault", ["SIGTERM@14", "SIGUSR2@14", "SIGKILL@15"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, prepared, fault):
    spec, sp = spec_file(tmp_path)
    data_path = prepared[1]
    ref = run_cli(sp, data_path, tmp_path / "ref", TRAINER)
    assert ref.returncode == 0, ref.stderr
    # SIGKILL gives no chance to checkpoint: rely on the periodic (here: every step) checkpoints
    trainer = {**TRAINER, "checkpoint_every_s": 1e-9 if fault.startswith("SIGKILL") else 0}
    first = run_cli(sp, data_path, tmp_path / "run", trainer, {"SCALING_SWEEP_FAULT": step_fault(fault)})
    sig = getattr(signal, fault.split("@")[0])
    assert first.returncode == -sig, first.stderr  # the signal's own action ended the process after the checkpoint
    assert not (tmp_path / "run" / "result.json").exists()
    assert checkpoint_paths(tmp_path / "run"), "a checkpoint must be on disk"
    resumed = run_cli(sp, data_path, tmp_path / "run", trainer)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stderr  # it did not start from scratch
    a, b = curve(tmp_path / "ref"), curve(tmp_path / "run")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-6
        assert ("val_loss" in ra) == ("val_loss" in rb)
        if "val_loss" in ra:
            assert abs(ra["val_loss"] - rb["val_loss"]) <= 1e-6
    ra = json.loads((tmp_path / "ref" / "result.json").read_text())
    rb = json.loads((tmp_path / "run" / "result.json").read_text())
    assert abs(ra["final_val_loss"] - rb["final_val_loss"]) <= 1e-6 and ra["flops"] == rb["flops"]
    assert not checkpoint_paths(tmp_path / "run")  # deleted once done (keep_checkpoints=false)
    sd = torch.load(tmp_path / "run" / "weights.pt", weights_only=True)  # the final weights stay
    assert set(sd) == {"model_config", "model"}


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_ranks_equal_one_process(tmp_path, prepared, parallel):
    spec, sp = spec_file(tmp_path)
    one = run_cli(sp, prepared[1], tmp_path / "one", TRAINER)
    assert one.returncode == 0, one.stderr
    # FSDP also gathers full state dicts for a checkpoint at every step on the way
    trainer = {**TRAINER, "parallel": parallel, "checkpoint_every_s": 1e-9 if parallel == "fsdp" else 0}
    two = run_cli(sp, prepared[1], tmp_path / "two", trainer, torchrun=2)
    assert two.returncode == 0, two.stderr + two.stdout
    a, b = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert len(a) == len(b) > 3
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        if "val_loss" in ra:
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-5)
    res = json.loads((tmp_path / "two" / "result.json").read_text())
    assert res["world_size"] == 2 and res["flops"] == json.loads((tmp_path / "one" / "result.json").read_text())["flops"]


def test_compiled_cpu_path_matches_eager(tmp_path, prepared):
    data = TokenData(prepared[1])
    spec, _ = spec_file(tmp_path, budget=1e9)
    base = dict(progress=False, eval_tokens=2048, eval_fractions=[], log_every=5)
    eager = train(spec, TrainerConfig(**base), data, tmp_path / "eager")
    compiled = train(spec, TrainerConfig(**base, compile=True), data, tmp_path / "compiled")
    assert compiled.compiled and not eager.compiled
    assert compiled.final_val_loss == pytest.approx(eager.final_val_loss, rel=1e-3)


def test_bf16_autocast_on_cpu(tmp_path, prepared):
    data = TokenData(prepared[1])
    spec, _ = spec_file(tmp_path, budget=1e9)
    base = dict(progress=False, eval_tokens=2048, eval_fractions=[], log_every=5)
    fp32 = train(spec, TrainerConfig(**base), data, tmp_path / "fp32")
    bf16 = train(spec, TrainerConfig(**base, precision="bf16"), data, tmp_path / "bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    assert bf16.final_val_loss != fp32.final_val_loss  # really ran in lower precision
    assert bf16.final_val_loss == pytest.approx(fp32.final_val_loss, rel=0.03)


def test_peak_table_and_mfu():
    assert peak_flops_per_s("NVIDIA H100 80GB HBM3") == PEAK_BF16_FLOPS["H100 SXM"] == 989e12
    assert peak_flops_per_s("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_per_s("NVIDIA H200") == 989e12
    assert peak_flops_per_s("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_per_s("NVIDIA B200") == 2250e12
    assert peak_flops_per_s("NVIDIA GeForce RTX 4090") is None
    assert peak_flops_per_s("cpu (x86_64)") is None
    assert mfu(494.5e12, 989e12) == pytest.approx(0.5) and mfu(989e12, 989e12, world=2) == pytest.approx(0.5)
    assert fmt_mfu(mfu(1e12, None)) == "unknown" and fmt_mfu(0.423) == "42.3%"


def test_cpu_run_reports_unknown_mfu(tmp_path, prepared):
    spec, _ = spec_file(tmp_path, budget=1e9)
    res = train(spec, TrainerConfig(progress=False, eval_tokens=2048, eval_fractions=[]), TokenData(prepared[1]), tmp_path)
    assert res.mfu is None and res.tok_per_s > 0
    assert all(r["mfu"] is None and r["tok_per_s"] > 0 for r in curve(tmp_path))


def test_checkpoint_from_another_spec_is_refused(tmp_path, prepared):
    spec, sp = spec_file(tmp_path)
    trainer = {**TRAINER, "checkpoint_every_s": 0}
    run_cli(sp, prepared[1], tmp_path / "run", trainer, {"SCALING_SWEEP_FAULT": step_fault("SIGTERM@6")})
    other, op = spec_file(tmp_path / "o" if (tmp_path / "o").mkdir() is None else tmp_path, budget=4e9)
    res = run_cli(op, prepared[1], tmp_path / "run", trainer)
    assert res.returncode != 0 and "different run spec" in res.stderr


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from sweep.checkpoint import load_latest_checkpoint, save_torch_atomic

    spec, _ = spec_file(tmp_path)
    good = {"step": 5, "spec_hash": __import__("sweep.rundir", fromlist=["spec_hash"]).spec_hash(spec.to_dict()),
            "model": {"w": torch.ones(3)}, "optimizer": {}, "loop": {}}
    save_torch_atomic(good, tmp_path / "run" / "checkpoints" / "step_00000005.pt")

    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial bytes")  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_torch_atomic({**good, "step": 10}, tmp_path / "run" / "checkpoints" / "step_00000010.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000005.pt"]  # no torn file
    ckpt = load_latest_checkpoint(tmp_path / "run", spec)
    assert ckpt["step"] == 5 and torch.equal(ckpt["model"]["w"], torch.ones(3))
