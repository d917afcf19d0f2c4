"""``python -m sweep [overrides]``: plan an isoFLOP grid, train every run, fit and plot (see sweep/app.py).

The config is composed and validated first, so that a typo or an impossible value gives one line on
stderr and exit code 2 before any data is prepared or any directory is created.
"""
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
    main()
