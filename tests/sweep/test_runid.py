"""sweep.runid: the run-id grammar of every kind of run, and its parser."""
import pytest

from sweep.runid import KINDS, RunIdParts, parse_run_id, parse_run_id_parts, run_id


@pytest.mark.parametrize("c,n", [(1e12, 91287), (3e11, 7.9e4), (1.5e17, 8.4e7), (6e20, 1.234567e9), (1, 1)])
def test_run_id_round_trip(c, n):
    rid = run_id(c, n)
    assert parse_run_id(rid) == (float(f"{c:.3g}"), float(f"{n:.3g}"))
    assert run_id(*parse_run_id(rid)) == rid


@pytest.mark.parametrize("bad", ["C1e12", "N5-C3", "C1e+12-N", "x"])
def test_bad_run_id(bad):
    with pytest.raises(ValueError, match="not a run id"):
        parse_run_id(bad)


@pytest.mark.parametrize("kind, extra, expected", [
    ("grid", {}, "C1e+12-N9.13e+04"),
    ("grid", {"seed": 2}, "C1e+12-N9.13e+04-s2"),
    ("horizon", {}, "C1e+12-N9.13e+04"),
    ("fork", {"seed": 1}, "C1e+12-N9.13e+04-s1"),
    ("trunk", {}, "C1e+12-N9.13e+04-trunk"),
    ("lr_scan", {"lr": 3e-3}, "C1e+12-N9.13e+04-lr0.003"),
    ("lr_scan", {"lr": 1.5e-2, "seed": 1}, "C1e+12-N9.13e+04-lr0.015-s1"),
    ("validation", {}, "C1e+12-N9.13e+04-val"),
])
def test_every_kind_has_an_id_that_parses_back(kind, extra, expected):
    rid = run_id(1e12, 91287, kind=kind, **extra)
    assert rid == expected
    parts = parse_run_id_parts(rid)
    assert parts == RunIdParts(1e12, 9.13e4, extra.get("seed", 0), extra.get("lr"),
                               {"trunk": "trunk", "validation": "val"}.get(kind))
    assert run_id(parts.budget, parts.params, parts.seed, lr=parts.lr, kind=kind) == rid
    assert kind in KINDS


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown run kind"):
        run_id(1e12, 1e5, kind="isoflop")
