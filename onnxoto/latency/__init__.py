"""Latency on the runtime that serves the model: a table of what each group's width saves, measured
on the dense graph with the deployer's session options, and the model predicting a cut from it."""
from .profile import machine, measure_table, measured_ratio, measured_ratios, same_machine
from .table import LatencyTable
from .timing import interleaved_ms

__all__ = ["LatencyTable", "interleaved_ms", "machine", "measure_table", "measured_ratio", "measured_ratios",
           "same_machine"]
