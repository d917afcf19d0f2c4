"""``python -m sweep [overrides]``: plan an isoFLOP grid, train every run, fit and plot (see sweep/app.py).

The config is composed and validated first, so that a typo or an impossible value gives one line on
stderr and exit code 2 before any data is prepared or any directory is created.  Problems found while
planning (missing or corrupt data, an output dir that holds another sweep or cannot be written, no
feasible run) also give one ``error:`` line and exit 2; failed runs give one line and exit 1.
"""
import os
import sys

from sweep.app import CONF_DIR, main
from sweep.config import preflight

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if "--help" not in sys.argv and "-h" not in sys.argv and "--cfg" not in " ".join(sys.argv):
        try:
            preflight(args, CONF_DIR)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    # Let exceptions reach this frame instead of Hydra's report (which appends a hint line to every error):
    # our own errors print as one line, anything else keeps its full traceback.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from hydra_plugins.isoflop_sweeper.isoflop_sweeper import RunsFailed, SweepError

    try:
        main()
    except SweepError as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)
    except RunsFailed as e:
        print(str(e), file=sys.stderr)
        sys.exit(1)
