"""Scaling-law analysis of sweep results: Chinchilla Approach 2 (isoFLOP parabolas).

    python -m analysis <sweep dir | results.csv | results.json> [--out DIR]

Importing the package does not import matplotlib; analysis.plots does (with the Agg backend).
"""

from analysis.approach2 import fit_approach2, predict
from analysis.results import NoResultsError, load_results, split_usable
from analysis.run import analyze, format_summary

__all__ = ["analyze", "fit_approach2", "format_summary", "load_results", "NoResultsError",
           "predict", "split_usable"]
