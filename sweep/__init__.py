"""Plan, train and launch isoFLOP sweeps (python -m sweep)."""

import models  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
