"""Stage 4: cut zeroed groups out of the graph (DESIGN.md §2.4)."""
from .cutter import cut, zero_out

__all__ = ["cut", "zero_out"]
