"""The root config schema.  Each component owns its section's dataclass; this file only assembles them.

YAML files under conf/ hold differences from these defaults; unknown keys are errors (struct mode).

What a sweep trains is decided by ``data``, ``model``, ``recipe`` and ``sweep``: their values (less the
data keys that do not change the data, and the sweep's name) are the sweep's identity, kept in sweep.json.
How it runs is ``trainer`` (per run; every result records its device and precision), ``launch`` (the
sweeper's run-only switches) and ``wandb``: changing those never makes a sweep "another config".
"""
from __future__ import annotations

import re
import sys
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore

from models.ladder import LadderConfig
from sweep.data.config import NOT_HASHED, DataConfig
from sweep.plan import SweepConfig
from sweep.recipe import RecipeConfig
from sweep.tracking import WandbConfig
from sweep.train import TrainerConfig


LAUNCH_ORDERS = ("plan", "longest_first")


@dataclass
class LaunchConfig:
    """The ``launch`` section: how the sweeper runs a sweep, never what it trains (not part of its identity)."""

    dry_run: bool = False  # print the plan as a table and train nothing
    refine: bool = False  # re-centre each budget's grid on the optimum fitted from the runs so far, and fill in
    retry_failed: bool = False  # rerun runs whose result says `failed` (done and diverged runs are never rerun)
    allow_config_change: bool = False  # let a relaunch change the sweep's config (e.g. add budgets) in an existing dir
    assumed_flops_per_s: float = 1e11  # only for the dry run's time estimate (~1e11 on 2 CPU cores)
    device: Optional[str] = None  # the dry run's GPU-hours and memory flags on this GPU: H100, H100 PCIe, H200, A100, A100 40GB, B200
    assumed_mfu: float = 0.4  # MFU (on matmul FLOPs) assumed for the GPU-hours
    gpus_per_run: int = 1  # the dry run's memory per GPU: each run data-parallel (trainer.parallel) over this many GPUs
    order: str = "plan"  # each launch call's runs in the plan's order, or longest_first (by the FLOPs each trains)

    def __post_init__(self):
        from sweep.cost import check_device

        check_device(self.device)
        if not 0 < self.assumed_mfu <= 1:
            raise ValueError(f"launch.assumed_mfu must be in (0, 1], got {self.assumed_mfu}")
        if self.gpus_per_run < 1:
            raise ValueError(f"launch.gpus_per_run must be >= 1, got {self.gpus_per_run}")
        if self.order not in LAUNCH_ORDERS:
            raise ValueError(f"launch.order must be one of {', '.join(LAUNCH_ORDERS)}, got {self.order!r}")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: LadderConfig = field(default_factory=LadderConfig)  # the shape rule for a target N (models/ladder.py)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run_id: Optional[str] = None  # set per job by the isoFLOP sweeper


SECTIONS = {f.name: f.default_factory for f in fields(Config) if f.default_factory is not MISSING}
IDENTITY_SECTIONS = ("data", "model", "recipe", "sweep")
# run-only keys that moved from `sweep` to `launch`; the old spelling still works, with a warning
MOVED_TO_LAUNCH = ("dry_run", "refine", "retry_failed", "allow_config_change", "assumed_flops_per_s")


def register() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)


def section(cfg, name: str):
    """A typed copy of one config section (each component gets only its own)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(cfg[name])


def migrate_overrides(overrides: list[str], warn=None) -> list[str]:
    """Rewrite the old spellings ``sweep.<key>=...`` of the keys that moved to ``launch``, warning once per key."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    out = []
    for o in overrides:
        m = re.match(r"^([+~]*)sweep\.(\w+)(=.*)?$", o)
        if m and m.group(2) in MOVED_TO_LAUNCH:
            new = f"{m.group(1)}launch.{m.group(2)}{m.group(3) or ''}"
            warn(f"sweep.{m.group(2)} is deprecated: it moved to launch.{m.group(2)} (use {new})")
            o = new
        out.append(o)
    return out


def identity(cfg) -> tuple[dict, dict]:
    """(identity, defaults): the flattened keys of the identity sections that decide what the sweep trains,
    and the schema's default for each (a sweep made before a key existed compares as that default)."""
    from omegaconf import OmegaConf

    ident, defaults = {}, {}
    for name in IDENTITY_SECTIONS:
        schema = OmegaConf.to_container(OmegaConf.structured(SECTIONS[name]()))
        for k, v in OmegaConf.to_container(cfg[name], resolve=True).items():
            # not what is trained: the data keys the data dir's hash ignores (where it goes, how it is built),
            # and the sweep's name (which only names its directory)
            if (name == "data" and k in NOT_HASHED) or (name == "sweep" and k == "name"):
                continue
            ident[f"{name}.{k}"] = v
            defaults[f"{name}.{k}"] = schema[k]
    return ident, defaults


def check_known_keys(cfg) -> None:
    """Refuse keys the schema does not know, including ones added with Hydra's ``+key=value``.

    Hydra lets ``+`` add keys even to structured configs; a typo there would otherwise be ignored silently.
    """
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
                    raise ValueError(_unknown(key, sub, names))


def _unknown(section_name: str, key: str, names) -> str:
    if section_name == "sweep" and key in MOVED_TO_LAUNCH:
        return f"sweep.{key} moved to the launch section: write launch.{key}"
    return f"unknown config key '{section_name}.{key}'; valid keys of {section_name}: {', '.join(sorted(names))}"


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
            keep = [o for o in overrides if o.startswith("hydra.searchpath=") or not o.startswith(("hydra.", "hydra/", "--"))]
            cfg = compose("config", overrides=keep)  # hydra.searchpath: e.g. an LR scan's recipe (recipe=lr_scan)
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors carry the message we want
        text = str(e) + ("\n" + str(e.__cause__) if e.__cause__ else "")
        lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith(
            ("full_key:", "object_type", "reference_type", "Set the environment", "To append to your config"))]
        unknown = re.search(r"Could not override '(\w+)\.([\w.]+)'", text)
        if unknown and unknown.group(1) in SECTIONS and "not in" in text:
            name, key = unknown.groups()
            raise ValueError(_unknown(name, key, {f.name for f in fields(SECTIONS[name])})) from None
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
    for name in SECTIONS:
        try:
            typed[name] = OmegaConf.to_object(cfg[name])  # runs each schema's __post_init__ checks
        except ValueError as e:
            raise ValueError(str(e).strip().splitlines()[0]) from None
    check_sweep(typed["sweep"])
    # Budgets too small for any run are known before the data is prepared whenever the vocab is
    # (a bpe:<vocab> spec, or a local tokenizer folder); the epoch limit waits for the data.
    from sweep.data.config import bpe_vocab
    from sweep.plan import no_feasible_runs, plan_sweep, smallest_budget

    vocab = bpe_vocab(typed["data"].tokenizer) or _folder_vocab(typed["data"].tokenizer)
    if vocab:
        specs, dropped = plan_sweep(typed["sweep"], typed["model"], typed["recipe"], vocab)
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
