"""Stage 5 output: tables and JSON for the commands."""
from .analysis import analysis_json, analysis_text
from .table import format_table, human

__all__ = ["analysis_json", "analysis_text", "format_table", "human"]
