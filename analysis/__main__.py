"""python -m analysis <inputs…> [--out DIR] [--project 1e24 …] [--params total|non_embedding] [--bootstrap N]
                     [--inside-grid-only] [--min-tokens-per-param 4] [--min-steps K] [--approach3-init varpro|grid]
                     [--holdout-top] [--wandb-report [--wandb-entity E]]

Each input is a sweep dir (<run_id>/result.json + metrics.jsonl), a results CSV or a JSON list of
records, optionally named `name=path` (default name: the dir's or file's name).  Several inputs
become one row each in the figures (e.g. C4 and GitHub).  Exit 0 when at least one approach was
fitted; bad input prints one `error: …` line and exits 2 with nothing written.

--wandb-report (one sweep dir logged with wandb.enabled=true) also logs the analysis run and builds the
sweep's wandb Report (analysis/share.py): saved online, its URL printed; offline its spec is written to
<sweep>/wandb_report.json, to be saved once online.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.run import (DEFAULT_BOOTSTRAP, DEFAULT_METHOD, DEFAULT_MIN_TOKENS_PER_PARAM, DEFAULT_PROJECTIONS,
                          ENVELOPE_FILE, FIGURE_FILE, FIT_FILE, HOLDOUT_DIR, METHODS, PARAMS_KINDS, REPORT_FILE,
                          RESULTS_FILE, analyze, default_out_dir, format_summary)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other input error
        print(f"error: {message}; see python -m analysis --help", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> int:
    ap = _Parser(prog="python -m analysis",
                 description="Fit Chinchilla Approaches 1, 2 and 3 with bootstrap intervals.")
    ap.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="sweep dir, results CSV (columns params, loss, and tokens or flops, optional "
                         "budget) or JSON list of records; name=path names a dataset")
    ap.add_argument("--out", default=None,
                    help=f"output dir for {FIT_FILE}, {REPORT_FILE}, {RESULTS_FILE} and figures/ "
                         f"(default for one input: the sweep dir, or the results file's dir)")
    ap.add_argument("--project", nargs="+", type=float, default=list(DEFAULT_PROJECTIONS), metavar="FLOPS",
                    help="compute budgets to project N_opt and D_opt to (default: Gopher's 5.76e23)")
    ap.add_argument("--params", choices=PARAMS_KINDS, default="total",
                    help="N for the fits: total or non-embedding parameters (Pearce & Song 2024)")
    ap.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                    help=f"bootstrap resamples for the intervals (default {DEFAULT_BOOTSTRAP}; 0: none)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    ap.add_argument("--inside-grid-only", action="store_true",
                    help="Approach 2: fit the power laws only through budgets whose parabola minimum lies "
                         "inside the sizes run (the others are listed as dropped)")
    ap.add_argument("--min-tokens-per-param", type=float, default=DEFAULT_MIN_TOKENS_PER_PARAM, metavar="R",
                    help=f"Approach 3 leaves out runs with fewer training tokens per parameter (default "
                         f"{DEFAULT_MIN_TOKENS_PER_PARAM:g}: their excess loss is optimisation, which its surface has "
                         f"no term for; 0: keep every run).  Approaches 1 and 2 have no such filter")
    ap.add_argument("--min-steps", type=int, default=0, metavar="K",
                    help="every approach leaves out runs with fewer optimizer steps (default 0: none)")
    ap.add_argument("--approach3-init", choices=METHODS, default=DEFAULT_METHOD,
                    help="how Approach 3's Huber fit is started: variable projection over (alpha, beta) (default) "
                         "or Chinchilla's 4,500-point grid")
    ap.add_argument("--holdout-top", action="store_true",
                    help="fit without each dataset's top isoFLOP budget and check the predicted N_opt, D_opt and "
                         f"loss there against its measured profile (default --out: <input>/{HOLDOUT_DIR})")
    ap.add_argument("--wandb-report", action="store_true",
                    help="share the sweep as a wandb Report: saved online (its URL is printed); offline its spec "
                         "goes to <sweep>/wandb_report.json, saved once online")
    ap.add_argument("--wandb-entity", default=None, metavar="ENTITY",
                    help="wandb team or user for the Report (default: the sweep's wandb.entity, $WANDB_ENTITY, "
                         "else your default entity; offline it must be given)")
    args = ap.parse_args(argv)
    try:
        target = None
        if args.wandb_report:
            if len(args.inputs) != 1:
                raise ValueError("--wandb-report shares one sweep: pass a single sweep directory")
            from analysis.share import resolve_target

            target = resolve_target(args.inputs[0], entity=args.wandb_entity)  # before anything is written
        result = analyze(args.inputs, args.out, project=args.project, params=args.params,
                         n_boot=args.bootstrap, seed=args.seed, inside_grid_only=args.inside_grid_only,
                         min_tokens_per_param=args.min_tokens_per_param, min_steps=args.min_steps,
                         approach3_method=args.approach3_init, holdout_top=args.holdout_top)
    except ValueError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    out = Path(args.out) if args.out is not None else default_out_dir(args.inputs[0], args.holdout_top)
    print(format_summary(result))
    written = [FIT_FILE, REPORT_FILE, RESULTS_FILE] + [f for f in (FIGURE_FILE, ENVELOPE_FILE) if (out / f).exists()]
    print(f"wrote {', '.join(str(out / f) for f in written)}")
    if target is not None:
        from analysis.share import share

        try:
            print("\n".join(share(result, target, figures_dir=out)))
        except ValueError as e:
            print("error: " + " ".join(str(e).split()), file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
