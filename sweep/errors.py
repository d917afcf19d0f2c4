"""The two ways a sweep command fails on purpose, each reported as one line (no traceback)."""
from hydra.errors import CompactHydraException


class SweepError(CompactHydraException):
    """Bad input found while planning (config, data, output dir): one ``error: ...`` line, exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__("error: " + " ".join(str(message).split()))


class RunsFailed(CompactHydraException):
    """Some runs of the sweep failed; the others are kept.  One line, exit code 1."""
