"""The root config schema.  Each component owns its section's dataclass; this file only assembles them.

YAML files under conf/ hold differences from these defaults; unknown keys are errors (struct mode).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Optional

from hydra.core.config_store import ConfigStore

from models.ladder import LadderConfig
from sweep.data import DataConfig
from sweep.plan import RecipeConfig, SweepConfig
from sweep.tracking import WandbConfig
from sweep.train import TrainerConfig


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: LadderConfig = field(default_factory=LadderConfig)  # the shape rule for a target N (models/ladder.py)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run_id: Optional[str] = None  # set per job by the isoFLOP sweeper


_SECTIONS = {"data": DataConfig, "model": LadderConfig, "recipe": RecipeConfig, "trainer": TrainerConfig,
             "sweep": SweepConfig, "wandb": WandbConfig}


def register() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)


def check_known_keys(cfg) -> None:
    """Refuse keys the schema does not know, including ones added with Hydra's ``+key=value``.

    Hydra lets ``+`` add keys even to structured configs; a typo there would otherwise be ignored silently.
    """
    from dataclasses import MISSING, fields, is_dataclass

    known = {f.name: f for f in fields(Config)}
    for key in cfg:
        if key == "hydra":
            continue
        if key not in known:
            raise ValueError(f"unknown config key '{key}'; valid top-level keys: {', '.join(known)} (check for a typo or a stray +)")
        factory = known[key].default_factory
        schema = factory() if factory is not MISSING else None
        if is_dataclass(schema):
            names = {f.name for f in fields(schema)}
            for sub in cfg[key]:
                if sub not in names:
                    raise ValueError(f"unknown config key '{key}.{sub}'; valid keys of {key}: {', '.join(sorted(names))}")


def preflight(overrides: list[str], conf_dir: str) -> None:
    """Compose the config as Hydra will and validate it, before anything is prepared, created or launched.

    Raises ValueError with a one-line message naming the fix.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from sweep.plan import check_sweep

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose("config", overrides=[o for o in overrides if not o.startswith(("hydra.", "hydra/", "--"))])
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors carry the message we want
        text = str(e) + ("\n" + str(e.__cause__) if e.__cause__ else "")
        lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith(
            ("full_key:", "object_type", "reference_type", "Set the environment", "To append to your config"))]
        unknown = re.search(r"Could not override '(\w+)\.([\w.]+)'", text)
        if unknown and unknown.group(1) in _SECTIONS and "not in" in text:
            section, key = unknown.groups()
            names = sorted(f.name for f in fields(_SECTIONS[section]))
            raise ValueError(f"unknown config key '{section}.{key}'; valid keys of {section}: {', '.join(names)}") from None
        if lines and lines[-1] != lines[0] and "Available options" in text:
            msg = f"{lines[0]}; options: {', '.join(l for l in lines[2:] if ' ' not in l)}"
        else:
            msg = "; ".join(dict.fromkeys(lines[:3])) or type(e).__name__
        if "Ambiguous value" in msg or "sweep" in msg.lower() and "," in " ".join(overrides):
            msg += "; the isoFLOP sweeper expands budgets x sizes itself: give single values (one sweep.name per variant)"
        raise ValueError(msg) from None
    finally:
        GlobalHydra.instance().clear()
    check_known_keys(cfg)
    typed = {}
    for name in ("data", "model", "recipe", "trainer", "sweep", "wandb"):
        try:
            typed[name] = OmegaConf.to_object(cfg[name])  # runs each schema's __post_init__ checks
        except ValueError as e:
            raise ValueError(str(e).strip().splitlines()[0]) from None
    check_sweep(typed["sweep"])
    # Budgets too small for any run are known before the data is prepared whenever the vocab is
    # (a bpe:<vocab> spec, or a local tokenizer folder); the epoch limit waits for the data.
    from sweep.data import bpe_vocab
    from sweep.plan import no_feasible_runs, plan_grid, smallest_budget

    vocab = bpe_vocab(typed["data"].tokenizer) or _folder_vocab(typed["data"].tokenizer)
    if vocab:
        specs, dropped = plan_grid(typed["sweep"], typed["model"], typed["recipe"], vocab)
        if not specs:
            raise ValueError(no_feasible_runs(dropped, smallest_budget(typed["sweep"], typed["model"], typed["recipe"], vocab)))


def _folder_vocab(spec: str) -> Optional[int]:
    """The vocab size of a local tokenizer folder's tokenizer.json (added tokens included), or None."""
    import json
    from pathlib import Path

    f = Path(spec) / "tokenizer.json"
    try:
        tj = json.loads(f.read_text())
        ids = list(tj["model"]["vocab"].values()) + [t["id"] for t in tj.get("added_tokens", [])]
        return max(ids) + 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
