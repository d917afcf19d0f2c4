"""``python -m sweep [overrides]``: plan an isoFLOP grid, train every run, fit and plot (see sweep/app.py)."""
from sweep.app import main

if __name__ == "__main__":
    main()
