"""Stage 4: cut zeroed groups out of the graph and erase zeroed branches (DESIGN.md §2.4)."""
from .cutter import cut, zero_out, zero_units

__all__ = ["cut", "zero_out", "zero_units"]
