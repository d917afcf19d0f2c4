"""Model definition, exact FLOP accounting and the shape ladder used by the sweep planner."""

import os

# Idle OpenMP threads sleep instead of spinning.  With libgomp's default busy-wait, torch's intra-op threads fight
# any other CPU-bound process for the cores: a tiny-preset step on 2 threads ran at 0.8 steps/s next to two other
# jobs, 18.8 with PASSIVE, 12.8 on one thread (benchmarks/cpu_threads.md).  libgomp reads this once, when torch
# loads it, hence here, before the first `import torch`; setdefault keeps a user's own choice.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from models.transformer import ModelConfig, Transformer, pad_vocab

__all__ = ["ModelConfig", "Transformer", "pad_vocab"]
