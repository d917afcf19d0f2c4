"""One rank of a 2-rank FSDP2 job, run under torchrun by test_train_resume_ddp.py: join, train a few steps the way the
trainer does, end on a collective, leave the group (sweep.device.leave_ranks), exit."""
import torch
import torch.distributed as td

from models.transformer import ModelConfig
from sweep.device import Dist, build_model, join_ranks, leave_ranks


def train_a_little():
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=64, vocab_size=64, seq_len=16)
    model = build_model(cfg, 0, torch.device("cpu"), sharded=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        x = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
        model(x, x).backward()
        opt.step()
        opt.zero_grad()
    # the job ends on collectives of tensors Python holds (the trainer's last: the final eval's loss), two of them
    # at once, so that both of gloo's worker threads have just finished one when the process exits
    works = [td.all_reduce(torch.ones(1), async_op=True) for _ in range(2)]
    for w in works:
        w.wait()


dist = Dist.from_env()
join_ranks(dist, torch.device("cpu"))
train_a_little()
leave_ranks(dist)
