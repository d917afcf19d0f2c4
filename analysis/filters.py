"""Which runs each approach fits: ``--min-steps`` for every approach, ``--min-tokens-per-param`` for Approach 3.

Approach 3's E + A/N^α + B/D^β has no term for optimisation: a large model trained for a few hundred steps at a
few tokens per parameter is far from the loss its (N, D) would give with enough steps, and the fit absorbs that
excess into a steep N term (on the committed CPU code sweep: α 1.60 and a = 0.17 on every run, α 0.49 and a = 0.48
at >= 4 tokens per parameter).  So Approach 3 leaves such runs out by default.  Approach 2 gets no tokens-per-
parameter filter: at a fixed budget the largest models have the fewest tokens per parameter, so the filter would
cut off the right side of every isoFLOP profile.  Tokens per parameter is D over the total parameter count.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MIN_TOKENS_PER_PARAM = 4.0  # Approach 3 (see the module docstring)


@dataclass(frozen=True)
class RunFilter:
    min_steps: int = 0  # runs with fewer optimizer steps are left out (0: none)
    min_tokens_per_param: float = 0.0  # runs with D / N below this are left out (0: none)

    def reason(self, row: dict) -> str | None:
        """Why this filter leaves the run out, or None."""
        if self.min_steps and row.get("steps") is not None and row["steps"] < self.min_steps:
            return f"{row['steps']:.0f} steps < --min-steps {self.min_steps}"
        if self.min_tokens_per_param and row["tokens"] / row["params"] < self.min_tokens_per_param:
            return f"{row['tokens'] / row['params']:.2f} tokens/param < --min-tokens-per-param {self.min_tokens_per_param:g}"
        return None

    def apply(self, rows: list[dict]) -> tuple[list[int], dict]:
        """(indices of the rows kept, the record for fit.json: the filter, runs kept, runs dropped with why)."""
        keep, dropped = [], []
        for i, r in enumerate(rows):
            why = self.reason(r)
            if why is None:
                keep.append(i)
            else:
                dropped.append({"run_id": r["run_id"], "reason": why})
        record = {"min_steps": self.min_steps, "min_tokens_per_param": self.min_tokens_per_param,
                  "runs": len(keep), "dropped": len(dropped), "dropped_runs": dropped}
        no_steps = sum(r.get("steps") is None for r in rows) if self.min_steps else 0
        if no_steps:
            record["no_step_count"] = no_steps  # --min-steps cannot judge these runs, so they are kept
        return keep, record


def describe(record: dict) -> str:
    parts = []
    if record["min_steps"]:
        parts.append(f">= {record['min_steps']} steps")
    if record["min_tokens_per_param"]:
        parts.append(f">= {record['min_tokens_per_param']:g} tokens/param")
    what = " and ".join(parts) if parts else "no filter"
    extra = (f"; {record['no_step_count']} runs have no step count and are kept" if record.get("no_step_count")
             else "")
    return f"{what}: {record['runs']} runs fitted, {record['dropped']} dropped{extra}"
