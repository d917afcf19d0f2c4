"""analysis.results: sweep dirs, CSVs and JSON records loaded into rows."""

from __future__ import annotations

import json

import pytest

from analysis import NoResultsError, fit_approach2, load_results, split_usable
from helpers import CS336_SUBSET, write_sweep


def test_cs336_subset_via_json_loader(tmp_path):
    f = tmp_path / "isoflops_curves.json"
    f.write_text(json.dumps([{"parameters": n, "compute_budget": c, "final_loss": l} for n, c, l in CS336_SUBSET]))
    rows = load_results(f)
    assert len(rows) == 24 and all(r["status"] == "done" for r in rows)
    fit = fit_approach2(*zip(*[(r["budget"], r["params"], r["tokens"], r["loss"]) for r in rows]))
    # The per-budget parabolas are the same as in the full-file fit (each budget is fitted on its
    # own): vertices 6.08e8, 2.62e9, 1.50e10 parameters.
    assert fit["N_opt"] == pytest.approx([6.082e8, 2.617e9, 1.4999e10], rel=1e-3)
    # Three of the nine minima give a slope within 0.01 of the full file's 0.515.
    assert fit["a"] == pytest.approx(0.515, abs=0.01)


# ---------------------------------------------------------------------------------------------
# load_results


def test_load_results_sweep_dir(tmp_path):
    rows = load_results(write_sweep(tmp_path / "sweep"))
    assert len(rows) == 15 + 4
    assert [r["run_id"] for r in rows] == sorted(r["run_id"] for r in rows)
    assert set(rows[0]) == {"run_id", "status", "budget", "flops", "params", "params_non_embedding", "tokens",
                            "tokens_derived", "flops_derived", "loss", "bytes_per_token", "kind", "steps",
                            "flops_per_token", "flops_convention", "model"}
    assert rows[0]["steps"] == 100 and rows[0]["flops_convention"] == "6ND" and rows[0]["model"] is None
    assert rows[0]["flops"] == pytest.approx(1.001 * rows[0]["budget"]) and rows[0]["tokens_derived"] is False
    usable, skipped = split_usable(rows)
    assert len(usable) == 15
    assert {r["run_id"]: r["skip_reason"] for r in skipped} == {
        "Z-failed": "status failed", "Z-diverged": "status diverged",
        "Z-running": "status running", "Z-nan": "no finite positive final loss"}
    assert usable[0]["loss"] == pytest.approx(json.loads((tmp_path / "sweep" / usable[0]["run_id"] / "result.json")
                                                         .read_text())["final_val_loss"])


def test_load_results_epoch_csv_columns(tmp_path):
    # Column names of Epoch AI's Chinchilla Figure 4 extraction (svg_extracted_data.csv).
    f = tmp_path / "epoch.csv"
    f.write_text("x,y,color,Model Size,Training FLOP,hex_color,loss\n"
                 "1,2,#fff,6795600349.289497,9.993852799709755e+18,#fff,5.005581996196243\n"
                 "1,2,#fff,2979521172.1967993,9.227541223049181e+18,#fff,4.665232074214\n")
    rows = load_results(f)
    assert [r["params"] for r in rows] == [6795600349.289497, 2979521172.1967993]
    # "Training FLOP" is each run's compute, not an isoFLOP budget: no budget, so no Approach 2.
    assert rows[0]["flops"] == 9.993852799709755e18 and rows[0]["budget"] is None
    assert rows[1]["loss"] == 4.665232074214
    assert rows[0]["tokens"] == pytest.approx(9.993852799709755e18 / (6 * 6795600349.289497))  # D = C/(6N)
    assert rows[0]["tokens_derived"] is True
    assert rows[0]["status"] == "done" and rows[0]["run_id"] == "row0"


def test_load_results_csv_aliases_case_insensitive(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("RUN_ID,c,N,D,Final_Loss,status\nr1,1e18,1e8,5e8,3.1,done\nr2,1e18,2e8,,3.0,failed\n")
    rows = load_results(f)
    assert rows[0] == {"run_id": "r1", "status": "done", "budget": 1e18, "flops": 1e18, "params": 1e8,
                       "params_non_embedding": None, "tokens": 5e8, "tokens_derived": False,
                       "flops_derived": False, "loss": 3.1, "bytes_per_token": None, "kind": "grid",
                       "steps": None, "flops_per_token": None, "flops_convention": None, "model": None}
    assert rows[1]["status"] == "failed" and rows[1]["tokens"] == pytest.approx(1e18 / 1.2e9)


def test_load_results_tokens_without_flops(tmp_path):
    # Columns params, loss and tokens only: flops = 6·params·tokens, said so in the notes.
    from analysis.results import load_dataset, parse_input

    f = tmp_path / "r.csv"
    f.write_text("params,tokens,loss\n1e8,2e9,3.0\n")
    (row,) = load_results(f)
    assert row["flops"] == pytest.approx(1.2e18) and row["flops_derived"] and row["budget"] is None
    assert any("flops = 6·params·tokens" in n for n in load_dataset(f).notes)
    assert parse_input(f"C4={f}") == ("C4", f) and parse_input(str(f)) == ("r", f)
    assert parse_input(str(tmp_path)) == (tmp_path.name, tmp_path)


@pytest.mark.parametrize("content, match", [
    ("params,loss\n1e8,3.0\n", r"no column for flops: one of flops\|training flop.*params, loss, and tokens or flops"),
    ("tokens,loss\n1e9,3.0\n", r"no column for params"),
    ("budget,loss\n1e18,3.0\n", r"no column for params: one of params\|parameters"),
    ("budget,params,loss\n", "has no rows"),
])
def test_load_results_bad_csv(tmp_path, content, match):
    f = tmp_path / "r.csv"
    f.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_results(f)


def test_load_results_errors(tmp_path):
    for bad in ("", None, tmp_path / "missing"):
        with pytest.raises(NoResultsError):
            load_results(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoResultsError, match="no \\*/result.json"):
        load_results(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_results(tmp_path / "x.txt")
    (tmp_path / "d.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="JSON list of records"):
        load_results(tmp_path / "d.json")
    sweep = tmp_path / "allfailed"
    (sweep / "r1").mkdir(parents=True)
    (sweep / "r1" / "result.json").write_text(json.dumps({"run_id": "r1", "status": "failed"}))
    with pytest.raises(ValueError, match="none of the 1 runs is usable \\(failed=1\\)") as e:
        load_results(sweep)
    assert not isinstance(e.value, NoResultsError)


# ---------------------------------------------------------------------------------------------
# figure, analyze(), CLI, Hydra callback


def test_a_file_of_several_datasets_needs_a_name(tmp_path):
    # analysis's own results.csv holds every dataset of a combined fit: name=path picks one
    from analysis import load_dataset

    f = tmp_path / "results.csv"
    f.write_text("dataset,budget,params,tokens,loss\n" + "".join(
        f"{ds},1e12,{n},{1e12 / (6 * n)},{3 + i}\n" for i, ds in enumerate(("code", "prose")) for n in (1e4, 2e4, 4e4)))
    code = load_dataset(f, "code")
    assert len(code.rows) == 3 and {r["loss"] for r in code.rows} == {3.0}
    with pytest.raises(ValueError, match=r"holds the datasets code, prose .* e\.g\. code="):
        load_dataset(f)
