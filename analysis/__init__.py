"""Compute-optimal scaling laws from sweep results: Chinchilla Approaches 1, 2 and 3.

    python -m analysis <inputs…> [--out DIR] [--project 1e24 …] [--params total|non_embedding] [--bootstrap N]

Importing the package does not import matplotlib; analysis.plots does (with the Agg backend).
"""

from analysis.approach1 import fit_approach1
from analysis.approach2 import fit_approach2, predict
from analysis.approach3 import fit_approach3, optimal_allocation
from analysis.results import NoResultsError, load_dataset, load_results, split_usable
from analysis.fit import fit_dataset
from analysis.run import analyze
from analysis.summary import format_summary

__all__ = ["analyze", "fit_approach1", "fit_approach2", "fit_approach3", "fit_dataset", "format_summary",
           "load_dataset", "load_results", "NoResultsError", "optimal_allocation", "predict", "split_usable"]
