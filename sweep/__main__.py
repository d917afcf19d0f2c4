"""``python -m sweep [overrides]``: plan an isoFLOP grid, train every run, fit and plot.

The route of one command, hop by hop (each hop is one call):

 1. ``sweep.__main__``       rewrites deprecated keys (``config.migrate_overrides``), then ``config.preflight``
                             composes and validates the config: a typo or an impossible value is one
                             ``error:`` line and exit 2, before any data is prepared or any directory made
 2. ``sweep.app.main``       hands the overrides to Hydra (``hydra.main``, MULTIRUN mode)
 3. ``IsoFLOPSweeper.sweep`` (hydra_plugins/isoflop_sweeper) plans the sweep: ``sweep.job.make_plan``
                             prepares the data (``sweep.data.prepare``) and plans the grid (``sweep.plan.plan_grid``),
                             ``sweep.rundir`` writes sweep.json and plan.json, finished runs are skipped
 4. the Hydra launcher       (basic, joblib, submitit) calls ``sweep.app.task`` once per run
 5. ``sweep.job.run_job``    locks the run directory and trains the run: ``sweep.train.train``
                             (setup, run_loop, finish), which writes metrics.jsonl, weights.pt and result.json
 6. ``AnalyzeOnMultirunEnd`` (analysis/callback.py) fits the laws once the jobs are done: ``analysis.analyze``

Problems found while planning (missing or corrupt data, an output dir that holds another sweep or cannot be
written, no feasible run) are also one ``error:`` line and exit 2; failed runs give one line and exit 1.
"""
import os
import sys

from sweep.app import CONF_DIR, main
from sweep.config import migrate_overrides, preflight
from sweep.errors import RunsFailed, SweepError

if __name__ == "__main__":
    args = migrate_overrides(sys.argv[1:])
    if "--help" not in args and "-h" not in args and "--cfg" not in " ".join(args):
        try:
            preflight([a for a in args if not a.startswith("-")], CONF_DIR)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    # Let exceptions reach this frame instead of Hydra's report (which appends a hint line to every error):
    # our own errors print as one line, anything else keeps its full traceback.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main(args)
    except SweepError as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)
    except RunsFailed as e:
        print(str(e), file=sys.stderr)
        sys.exit(1)
