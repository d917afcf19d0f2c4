"""Model definition, exact FLOP accounting and the shape ladder used by the sweep planner."""

from models.transformer import ModelConfig, Transformer, pad_vocab

__all__ = ["ModelConfig", "Transformer", "pad_vocab"]
