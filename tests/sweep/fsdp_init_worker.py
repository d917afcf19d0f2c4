"""Run under torchrun by test_train_resume_ddp.py: build the FSDP2 model the way the trainer does (meta device,
fully_shard per block and at the root, to_empty, reset_parameters) and save, from rank 0, the gathered full
state dict and every rank's count of local parameter elements.

    python -m torch.distributed.run --nproc_per_node=2 tests/sweep/fsdp_init_worker.py '<ModelConfig JSON>' SEED OUT
"""
import json
import sys

import torch
import torch.distributed as td

from models.transformer import ModelConfig
from sweep.checkpoint import full_state_dict
from sweep.device import Dist, build_model, leave_ranks

td.init_process_group("gloo")
cfg, seed, out = ModelConfig(**json.loads(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
model = build_model(cfg, seed, torch.device("cpu"), sharded=True)
local = sum(p.to_local().numel() for p in model.parameters())
numels = [None] * td.get_world_size()
td.all_gather_object(numels, local)
state = full_state_dict(model, sharded=True)
if td.get_rank() == 0:
    torch.save({"state": state, "local_numels": numels}, out)
del model
leave_ranks(Dist.from_env())  # the FSDP model collected first, or gloo's threads can abort the exit
