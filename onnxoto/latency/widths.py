"""Which widths a latency table measures."""


def table_widths(n):
    """Kept counts below n to time: every one up to 16 channels, then steps of a power of two
    (at most 8) so that a group takes about 16 points and the blocks of 8 and 16 stay visible."""
    step = 1
    while step < 8 and n // (2 * step) >= 16:
        step *= 2
    return list(range(step, n, step))
