"""sweep.device.keep_cpu_memory: glibc keeps a training step's freed memory, so later steps do not page-fault it in."""
import json
import platform
import subprocess
import sys

import pytest

CHILD = r"""
import json, resource, sys, torch
from models.transformer import ModelConfig, Transformer
from sweep.device import keep_cpu_memory
applied = keep_cpu_memory() if sys.argv[1] == "keep" else False
torch.set_num_threads(1)
torch.manual_seed(0)
m = Transformer(ModelConfig(d_model=24, n_layers=2, n_heads=3, n_kv_heads=3, d_ff=64, vocab_size=264, seq_len=128,
                            tie_embeddings=True))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
x = torch.randint(0, 264, (16, 129))
def step():
    loss = m(x[:, :-1], x[:, 1:])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    step()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's mallopt")
def test_keep_cpu_memory_cuts_the_page_faults_of_training_steps():
    # the same 40 steps of a smoke-sized model (20k params, batch 16 x 128), in two fresh processes
    plain, kept = faults("plain"), faults("keep")
    assert kept["applied"] is True
    # default glibc unmaps each large freed block and faults it in again on the next step: thousands of faults
    # per step; with the freed blocks kept, the steady state faults almost nothing
    assert plain["faults"] > 40 * 100, plain
    assert kept["faults"] * 4 < plain["faults"], (plain, kept)
