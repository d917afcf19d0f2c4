"""Our `models.transformer.Transformer` weights as a Hugging Face `LlamaForCausalLM` folder.

The model already uses Llama's architecture, parameter layout and rotate-half RoPE, so the export is
an explicit rename of every weight (no permutation of wq/wk):

    tok_embeddings.weight                    -> model.embed_tokens.weight
    layers.{i}.attention_norm.weight         -> model.layers.{i}.input_layernorm.weight
    layers.{i}.attention.wq / wk / wv / wo   -> model.layers.{i}.self_attn.q_proj / k_proj / v_proj / o_proj
    layers.{i}.ffn_norm.weight               -> model.layers.{i}.post_attention_layernorm.weight
    layers.{i}.feed_forward.w1 / w3 / w2     -> model.layers.{i}.mlp.gate_proj / up_proj / down_proj
    norm.weight                              -> model.norm.weight
    output.weight                            -> lm_head.weight  (omitted when tied: HF re-ties it on load)

A weights file is ``torch.save({"model_config": ModelConfig.to_dict(), "model": state_dict})`` (more keys, as in
a training checkpoint, are ignored); it is read only with ``torch.load(path, map_location="cpu", weights_only=True)``.
``write_hf`` writes the folder into a temporary sibling and renames it into place, so a failed export leaves
nothing.  Which file of a run directory to export, and its tokenizer, is the sweep's business:
``python -m sweep.export`` (sweep/export.py).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.transformer import ModelConfig, Transformer

if TYPE_CHECKING:  # transformers is imported lazily: it is slow, and the error paths never need it
    from transformers import LlamaConfig, LlamaForCausalLM

REQUIRED_KEYS = ("model_config", "model")
# files a tokenizer folder may hold that must never overwrite the exported model's own files
_MODEL_FILES = re.compile(r"(config\.json|generation_config\.json|.*\.safetensors|.*\.safetensors\.index\.json|.*\.bin|.*\.pt)")


# ---------------------------------------------------------------------------------------------
# the mapping


def hf_config(cfg: ModelConfig) -> LlamaConfig:
    """The `LlamaConfig` that describes exactly the same network as ``cfg``."""
    from transformers import LlamaConfig

    hf = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.seq_len,
        rms_norm_eps=1e-5,  # models.transformer.RMSNorm's eps
        rope_theta=float(cfg.rope_theta),  # transformers 5 moves this into rope_parameters itself
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        attention_dropout=0.0,
        initializer_range=0.02,
        pretraining_tp=1,
        # LlamaConfig defaults to bos=1/eos=2 (the Llama sentencepiece ids), which mean nothing here;
        # `export` fills these in from the tokenizer when it has one.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    # transformers 4.x keeps `rope_theta`, 5.x keeps `rope_parameters["rope_theta"]`: check what it kept.
    rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
    theta = rope.get("rope_theta", getattr(hf, "rope_theta", None))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if theta is None or float(theta) != float(cfg.rope_theta) or rope_type != "default":
        raise RuntimeError(f"LlamaConfig did not keep rope_theta={cfg.rope_theta} with default RoPE "
                           f"(got theta={theta}, type={rope_type}); this transformers version needs a fix here")
    return hf


def key_map(cfg: ModelConfig) -> dict[str, str]:
    """Our parameter name -> the `LlamaForCausalLM` parameter name, for every weight of ``cfg``."""
    m = {"tok_embeddings.weight": "model.embed_tokens.weight"}
    for i in range(cfg.n_layers):
        ours, hf = f"layers.{i}.", f"model.layers.{i}."
        m[ours + "attention_norm.weight"] = hf + "input_layernorm.weight"
        m[ours + "attention.wq.weight"] = hf + "self_attn.q_proj.weight"
        m[ours + "attention.wk.weight"] = hf + "self_attn.k_proj.weight"
        m[ours + "attention.wv.weight"] = hf + "self_attn.v_proj.weight"
        m[ours + "attention.wo.weight"] = hf + "self_attn.o_proj.weight"
        m[ours + "ffn_norm.weight"] = hf + "post_attention_layernorm.weight"
        m[ours + "feed_forward.w1.weight"] = hf + "mlp.gate_proj.weight"  # silu branch
        m[ours + "feed_forward.w3.weight"] = hf + "mlp.up_proj.weight"  # linear branch
        m[ours + "feed_forward.w2.weight"] = hf + "mlp.down_proj.weight"
    m["norm.weight"] = "model.norm.weight"
    m["output.weight"] = "lm_head.weight"
    return m


def _strip_wrappers(state: Mapping) -> dict[str, torch.Tensor]:
    """Drop the prefixes torch.compile (`_orig_mod.`) and DDP (`module.`) add to state_dict keys."""
    out = {}
    for k, v in state.items():
        if not isinstance(k, str):
            raise ValueError(f"state_dict key {k!r} is not a string; 'model' must be a Transformer state_dict")
        while k.startswith(("_orig_mod.", "module.")):
            k = k.split(".", 1)[1]
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"state_dict[{k!r}] is a {type(v).__name__}, not a tensor; "
                             f"'model' must be a Transformer state_dict")
        out[k] = v
    return out


def to_hf(model_or_state: Transformer | Mapping[str, torch.Tensor], cfg: ModelConfig | None = None) -> LlamaForCausalLM:
    """A fp32 `LlamaForCausalLM` (in eval mode) holding exactly the weights of our model.

    ``model_or_state``: a `Transformer` (``cfg`` defaults to its own) or its ``state_dict()``.
    Every weight is mapped by name and shape-checked; missing, unexpected or mis-shaped weights raise
    ValueError, as does a tied config whose ``output.weight`` differs from ``tok_embeddings.weight``.
    """
    if isinstance(model_or_state, Transformer):
        if cfg is None:
            cfg = model_or_state.cfg
        elif cfg != model_or_state.cfg:
            raise ValueError(f"cfg {cfg} differs from the model's own config {model_or_state.cfg}; pass cfg=None")
        state = model_or_state.state_dict()
    elif isinstance(model_or_state, Mapping):
        if cfg is None:
            raise ValueError("to_hf(state_dict) needs cfg: pass the run's ModelConfig")
        state = model_or_state
    else:
        raise ValueError(f"to_hf takes a Transformer or its state_dict, got {type(model_or_state).__name__}")
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    state = _strip_wrappers(state)

    mapping = key_map(cfg)
    if cfg.tie_embeddings:
        # The trainer's state_dict lists the shared matrix under both names; HF stores it once.
        del mapping["output.weight"]
        out_w = state.get("output.weight")
        if out_w is not None and not torch.equal(out_w, state.get("tok_embeddings.weight", out_w)):
            raise ValueError("model_config.tie_embeddings is true but output.weight != tok_embeddings.weight; "
                             "the config and the weights disagree")
        state = {k: v for k, v in state.items() if k != "output.weight"}
    missing = [k for k in mapping if k not in state]
    unexpected = [k for k in state if k not in mapping]
    if missing or unexpected:
        raise ValueError(f"state_dict does not match model_config: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}; export the config the weights were trained with")

    from transformers import LlamaForCausalLM

    hf_cfg = hf_config(cfg)
    prev_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        model = LlamaForCausalLM(hf_cfg)
    finally:
        torch.set_default_dtype(prev_dtype)
    if cfg.tie_embeddings and model.lm_head.weight is not model.model.embed_tokens.weight:
        model.tie_weights()
    params = dict(model.named_parameters())  # shared parameters appear once (embed_tokens when tied)
    unset = set(params) - set(mapping.values())
    if unset:  # would mean this transformers version's Llama has weights we do not know about
        raise RuntimeError(f"LlamaForCausalLM has parameters with no source weight: {sorted(unset)}")
    with torch.no_grad():
        for ours, theirs in mapping.items():
            src, dst = state[ours], params[theirs]
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"{ours} has shape {tuple(src.shape)} but model_config implies {tuple(dst.shape)} "
                                 f"({theirs}); the config and the weights disagree")
            dst.copy_(src.to(torch.float32))
    if cfg.tie_embeddings and model.lm_head.weight is not model.model.embed_tokens.weight:
        raise RuntimeError("LlamaForCausalLM did not tie lm_head to embed_tokens")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# weights files and HF folders


def load_weights(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, state_dict) of a weights or checkpoint file."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{path} is not a torch checkpoint loadable with weights_only=True ({_brief(e)}); "
                         f"pass a weights.pt or checkpoints/step_*.pt written by the trainer") from None
    if not isinstance(obj, dict) or any(k not in obj for k in REQUIRED_KEYS):
        have = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path} lacks the keys {list(REQUIRED_KEYS)} (has {have}); it must be "
                         f"torch.save({{'model_config': cfg.to_dict(), 'model': model.state_dict()}})")
    if not isinstance(obj["model_config"], dict):
        raise ValueError(f"{path}: 'model_config' must be ModelConfig.to_dict(), got {type(obj['model_config']).__name__}")
    if not isinstance(obj["model"], Mapping):
        raise ValueError(f"{path}: 'model' must be a state_dict, got {type(obj['model']).__name__}")
    try:
        cfg = ModelConfig.from_dict(obj["model_config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: bad model_config: {e}") from None
    return cfg, _strip_wrappers(obj["model"])


def _brief(e: BaseException) -> str:
    """One informative line of an exception (torch's weights_only error puts the cause after a preamble)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0].split(". ")[0] if lines else type(e).__name__


def write_hf(cfg: ModelConfig, state: Mapping[str, torch.Tensor], out_dir: str | os.PathLike,
             tokenizer_dir: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write a `LlamaForCausalLM.from_pretrained`-loadable folder (safetensors) of these weights to ``out_dir``,
    with the tokenizer of ``tokenizer_dir`` copied in (``AutoTokenizer.from_pretrained(out)`` works too)."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; remove it, choose another --out, or pass --force")
    tok = None
    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir)
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"tokenizer folder {tokenizer_dir} does not exist; pass a folder written by "
                                    f"tokenizer.save_pretrained (e.g. <data dir>/tokenizer)")
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        except Exception as e:  # noqa: BLE001 - any failure means "not a usable tokenizer folder"
            raise ValueError(f"{tokenizer_dir} is not a loadable tokenizer folder ({_brief(e)}); pass --tokenizer DIR") from None
        if len(tok) > cfg.vocab_size:
            raise ValueError(f"tokenizer {tokenizer_dir} has {len(tok)} tokens but the model's vocab_size is "
                             f"{cfg.vocab_size}; pass the tokenizer the run was trained with")

    model = to_hf(state, cfg)
    if tok is not None:
        ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
        for name, value in ids.items():
            setattr(model.config, name, value)
            if model.generation_config is not None:
                setattr(model.generation_config, name, value)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer_dir is not None:
            for f in sorted(tokenizer_dir.iterdir()):
                if f.is_file() and not _MODEL_FILES.fullmatch(f.name):
                    shutil.copy2(f, tmp / f.name)
        if out.exists():  # overwrite: move the old folder aside first, so `out` is never half-written
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out
