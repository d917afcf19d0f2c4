"""Run kinds and run ids: the grammar every kind of run is named by, in one place, with its parser.

    <run id> := C<budget>-N<params>[-lr<lr>][-s<k>][-<tag>]

    budget, params, lr   "{:.3g}" (3 significant digits): 1e+12, 9.12e+04, 0.003
    k                    the seed repeat, 1, 2, ... (absent for the first seed)
    tag                  trunk | val

| kind         | example                      | what it is                                                      |
|--------------|------------------------------|-----------------------------------------------------------------|
| `grid`       | `C1e+12-N9.12e+04`, `...-s1` | a point of an isoFLOP profile (budget C, N parameters)          |
| `horizon`    | `C4e+12-N9.12e+04`           | a grid size trained to C x factor for Approach 1 (same grammar) |
| `trunk`      | `C3e+12-N9.12e+04-trunk`     | a constant-LR run of one shape; C = the largest budget it serves|
| `fork`       | `C1e+12-N9.12e+04`           | a cooldown branched off a trunk, standing for that grid point   |
| `lr_scan`    | `C2e+11-N9.12e+04-lr0.003`    | one (size, peak LR) point of an LR scan                         |
| `validation` | `C3e+13-N2.1e+05-val`        | a run at a law's predicted optimum, held out of every fit       |

The kind of a run is recorded in its spec (plan.json, result.json); the id is for people and paths.  Ids are
unique within a sweep: the planner drops a point whose id collides with another's.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

KINDS = ("grid", "horizon", "trunk", "fork", "lr_scan", "validation")
TAGS = {"trunk": "trunk", "validation": "val"}  # kinds whose ids carry a tag

_NUM = r"[0-9.]+(?:e[+-][0-9]+)?"
_ID_RE = re.compile(rf"^C({_NUM})-N({_NUM})(?:-lr({_NUM}))?(?:-s([0-9]+))?(?:-(trunk|val))?$")


class RunIdParts(NamedTuple):
    budget: float
    params: float
    seed: int = 0  # the repeat k (0 = the first seed)
    lr: Optional[float] = None  # lr_scan runs
    tag: Optional[str] = None  # "trunk" | "val"


def run_id(budget: float, params: float, seed: int = 0, *, lr: Optional[float] = None, kind: str = "grid") -> str:
    """``C1e+12-N9.12e+04``: budget and parameters to 3 significant digits, then the optional parts."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}; kinds are {', '.join(KINDS)}")
    rid = f"C{budget:.3g}-N{params:.3g}"
    if lr is not None:
        rid += f"-lr{lr:.3g}"
    if seed:
        rid += f"-s{seed}"
    if kind in TAGS:
        rid += f"-{TAGS[kind]}"
    return rid


def parse_run_id_parts(rid: str) -> RunIdParts:
    """The parts of a run id, as written in it (3 significant digits)."""
    m = _ID_RE.match(rid)
    if not m:
        raise ValueError(f"not a run id: {rid!r} (expected e.g. 'C1e+12-N9.12e+04'; grammar in sweep/runid.py)")
    budget, params, lr, seed, tag = m.groups()
    return RunIdParts(float(budget), float(params), int(seed or 0), float(lr) if lr else None, tag)


def parse_run_id(rid: str) -> tuple[float, float]:
    """``(budget, params)`` of a run id."""
    return parse_run_id_parts(rid)[:2]


def parse_run_id_full(rid: str) -> tuple[float, float, int]:
    """``(budget, params, seed repeat)`` of a run id."""
    return parse_run_id_parts(rid)[:3]
