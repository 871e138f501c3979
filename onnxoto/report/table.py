"""Plain-text tables for the terminal."""


def format_table(headers, rows):
    """Left-aligned first column, right-aligned others; widths from the content."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human(n):
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}" if isinstance(n, float) else str(n)


def share(part, whole):
    """part/whole as a percentage with one decimal; '-' without a whole."""
    return f"{100.0 * part / whole:.1f}%" if whole else "-"
