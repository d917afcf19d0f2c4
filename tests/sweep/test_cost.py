"""sweep/cost.py: the memory formula against the allocations torch.profiler records on CPU, the advice and
GPU-hours it gives, and the dry-run table's cost columns."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from models.flops import matmul_flops_per_token, param_counts
from models.ladder import LadderConfig
from models.transformer import ModelConfig, Transformer
from sweep.config import LaunchConfig
from sweep.cost import HEADROOM, fit_advice, memory_terms, peak_memory, run_cost
from sweep.device import memory_bytes, peak_flops_per_s
from sweep.plan import SweepConfig, format_plan, plan
from sweep.recipe import RecipeConfig


def measured_peak(cfg: ModelConfig, micro: int, accum: int, precision: str) -> int:
    """Peak bytes of live tensors over two AdamW steps of ``accum`` micro-batches, from model build to the end,
    as torch.profiler's allocation records give them (every CPU allocation and free, in time order)."""
    x = torch.randint(0, cfg.vocab_size, (micro * accum, cfg.seq_len))

    def train():
        with torch.device("meta"):
            model = Transformer(cfg)
        model.to_empty(device="cpu").reset_parameters(0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
        for _ in range(2):  # the second step is the steady state: AdamW's state exists
            for i in range(accum):
                rows = slice(i * micro, (i + 1) * micro)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model(x[rows], x[rows])
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train()
    # the raw records under prof.events() (which folds them into the ops): (time, +bytes or -bytes)
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    assert live == 0  # everything allocated inside was freed: the records are complete
    return peak


# Tolerance, fixed before measuring: the formula leaves out tensors of b·T or b·H·T elements (the norms'
# 1/rms, the attention's log-sum-exp, token ids) and the few b·T·d gradients alive inside one layer's backward,
# each well under 1% of these peaks; 3% covers them.
TOL = 0.03
CASES = [  # shape, micro-batch, micro-batches per step, precision
    (ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=352, vocab_size=4096, seq_len=256), 8, 2, "fp32"),
    (ModelConfig(d_model=128, n_layers=3, n_heads=8, n_kv_heads=2, d_ff=352, vocab_size=1000, seq_len=128), 4, 2, "bf16"),
    (ModelConfig(d_model=256, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=704, vocab_size=512, seq_len=128,
                 tie_embeddings=True), 2, 2, "bf16"),
]


@pytest.mark.parametrize("cfg,micro,accum,precision", CASES, ids=["mha-fp32", "gqa-bf16", "tied-bf16"])
def test_memory_estimate_matches_profiled_peak(cfg, micro, accum, precision):
    est = peak_memory(cfg, micro, precision)
    got = measured_peak(cfg, micro, accum, precision)
    assert est == pytest.approx(got, rel=TOL)


def test_one_micro_batch_per_step_is_bounded_by_four_bytes_per_param():
    """Without accumulation no gradient exists while the activations peak: the estimate is high by at most 4·N."""
    cfg, micro, _, precision = CASES[0]
    est, got = peak_memory(cfg, micro, precision), measured_peak(cfg, micro, 1, precision)
    assert got * (1 - TOL) <= est <= got * (1 + TOL) + 4 * param_counts(cfg)["params"]


def test_terms_scale_as_the_formula_says():
    cfg = CASES[0][0]
    n = param_counts(cfg)["params"]
    one, two = memory_terms(cfg, 1, "bf16"), memory_terms(cfg, 2, "bf16")
    assert one["weights_grads_adamw"] == 16 * n and two["activations"] == 2 * one["activations"]
    # in fp32 the only weight copies are the RoPE-reordered wq and wk each layer saves (pair_rows), 4 bytes each
    qk = sum(m.weight.numel() for name, m in Transformer(cfg).named_modules() if name.endswith((".wq", ".wk")))
    assert memory_terms(cfg, 1, "fp32")["weight_copies"] == 4 * qk < one["weight_copies"]
    fsdp = memory_terms(cfg, 1, "bf16", "fsdp", 8)
    assert fsdp["weights_grads_adamw"] == 2 * n and fsdp["fsdp_unsharded"] > 0
    # the blocks gather 16-bit weights themselves: the lm_head's copy and the reordered wq, wk stay
    assert fsdp["weight_copies"] == 2 * cfg.vocab_size * cfg.d_model + 2 * qk
    assert memory_terms(cfg, 1, "bf16", "ddp")["ddp_buckets"] == 4 * n


def test_fit_advice_names_what_fits():
    cfg = ModelConfig(d_model=2048, n_layers=24, n_heads=16, n_kv_heads=16, d_ff=5504, vocab_size=32000, seq_len=2048)
    cap = memory_bytes("H100")
    assert cap == 80 * 2**30
    sizes = {m: peak_memory(cfg, m, "bf16") for m in (1, 2, 4, 8, 16, 32)}
    advice = fit_advice(cfg, 32, 32, "bf16", cap)
    m = int(advice.removeprefix("micro<="))
    assert sizes[m] <= HEADROOM * cap < sizes[2 * m]  # the largest divisor of the batch that fits
    assert fit_advice(cfg, 32, m, "bf16", cap) == ""
    big = ModelConfig(d_model=8192, n_layers=48, n_heads=64, n_kv_heads=8, d_ff=22016, vocab_size=32000, seq_len=2048)
    advice = fit_advice(big, 32, 4, "bf16", cap)
    s = int(advice.removeprefix("fsdp>="))
    assert peak_memory(big, 1, "bf16", "fsdp", s) <= HEADROOM * cap < peak_memory(big, 1, "bf16", "fsdp", s // 2)


def test_gpu_hours_are_matmul_flops_at_the_assumed_mfu():
    spec = plan(SweepConfig(budgets=[1e19], sizes=[4e8]), LadderConfig(head_dim=128, aspect_ratio=80),
                RecipeConfig(seq_len=2048, batch_size=256), vocab_size=32000)[0]
    c = run_cost(spec, 4, "bf16", "H100", 0.4)
    # 1e19 FLOPs at 40% of 989 TFLOP/s is 7.02 h; the matmul terms are a bit less than the Chinchilla count
    assert c.gpu_hours == pytest.approx(spec.tokens * matmul_flops_per_token(spec.model) / (0.4 * 989e12) / 3600)
    assert 0.8 * 7.02 < c.gpu_hours < 7.02 and peak_flops_per_s("H100") == 989e12
    assert c.micro_batch == 4 and c.advice == "" and c.memory == peak_memory(spec.model, 4, "bf16")
    assert run_cost(spec, 0, "bf16", None, 0.4) == type(c)(peak_memory(spec.model, 256, "bf16"), 256, "", None)


def test_plan_table_shows_memory_flags_and_gpu_hours():
    specs = plan(SweepConfig(budgets=[1e19, 1e21], sizes=[4e8, 6e9]), LadderConfig(head_dim=128, aspect_ratio=80),
                 RecipeConfig(seq_len=2048, batch_size=256), vocab_size=32000)
    costs = [run_cost(s, 8, "bf16", "H100", 0.4) for s in specs]
    table = format_plan(specs, [], 1e15, costs, "note")
    head = table.splitlines()[0]
    assert all(col in head for col in ("mem/GPU", "micro", "fits?", "GPU-h"))
    rows = {line.split()[0]: line for line in table.splitlines()[2:2 + len(specs)]}
    for s, c in zip(specs, costs):
        assert f"{c.memory / 2**30:.1f} GiB" in rows[s.run_id] and (c.advice or "ok") in rows[s.run_id]
    assert any(c.advice.startswith("fsdp>=") for c in costs)  # the 6B model cannot train on one H100
    assert f"{sum(c.gpu_hours for c in costs):,.0f} GPU-hours in total" in table and table.splitlines()[-1] == "note"
    plain = format_plan(specs, [], 1e15)
    assert "mem/GPU" not in plain and "GPU-h" not in plain  # the table without costs is as before


def test_launch_keys_are_checked():
    assert LaunchConfig(device="H200", assumed_mfu=0.5).device == "H200"
    with pytest.raises(ValueError, match="launch.device='V100' is not in the peak table"):
        LaunchConfig(device="V100")
    with pytest.raises(ValueError, match="assumed_mfu"):
        LaunchConfig(assumed_mfu=1.5)
    with pytest.raises(ValueError, match="gpus_per_run"):
        LaunchConfig(gpus_per_run=0)
    assert LaunchConfig().order == "plan" and LaunchConfig(order="longest_first").order == "longest_first"
    with pytest.raises(ValueError, match="launch.order must be one of plan, longest_first, got 'fastest'"):
        LaunchConfig(order="fastest")


def test_several_gpus_per_run_shard_or_split_the_batch():
    spec = plan(SweepConfig(budgets=[1e21], sizes=[6e9]), LadderConfig(head_dim=128, aspect_ratio=80),
                RecipeConfig(seq_len=2048, batch_size=256), vocab_size=32000)[0]
    one = run_cost(spec, 1, "bf16", "H100", 0.4)
    fsdp = run_cost(spec, 1, "bf16", "H100", 0.4, "fsdp", 8)
    ddp = run_cost(spec, 0, "bf16", "H100", 0.4, "ddp", 8)
    assert one.advice.startswith("fsdp>=") and fsdp.advice == "" and fsdp.memory == peak_memory(spec.model, 1, "bf16", "fsdp", 8)
    assert ddp.micro_batch == 256 // 8 and ddp.memory == peak_memory(spec.model, 32, "bf16", "ddp", 8)
    assert one.gpu_hours == fsdp.gpu_hours  # GPU-hours do not depend on how many GPUs share them
