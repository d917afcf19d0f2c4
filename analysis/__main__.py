"""python -m analysis <sweep dir | results.csv | results.json> [--out DIR]"""

from __future__ import annotations

import argparse
import sys

from analysis.run import FIGURE_FILE, FIT_FILE, analyze, default_out_dir, format_summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis",
                                 description="Fit Chinchilla Approach 2 to isoFLOP results.")
    ap.add_argument("path", help="sweep dir (with <run>/result.json), results CSV, or JSON list of records")
    ap.add_argument("--out", default=None,
                    help=f"where to write {FIT_FILE} and {FIGURE_FILE} (default: the sweep dir, "
                         f"or the results file's dir)")
    args = ap.parse_args(argv)
    try:
        result = analyze(args.path, args.out)
    except ValueError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    out = args.out if args.out is not None else default_out_dir(args.path)
    print(format_summary(result))
    print(f"wrote {out}/{FIT_FILE} and {out}/{FIGURE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
