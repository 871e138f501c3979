"""Stage 5 output: tables and JSON for the commands."""
from .analysis import analysis_json, analysis_text
from .analysis_html import analysis_html
from .measure import profile, profile_pair
from .prune import comparison_rows, latency_text, summary_text, write_report
from .table import format_table, human

__all__ = ["analysis_html", "analysis_json", "analysis_text", "comparison_rows", "format_table", "human",
           "latency_text", "profile", "profile_pair", "summary_text", "write_report"]
