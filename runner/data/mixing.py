"""Mixing several sources of training rows by weight: which rows one epoch uses.

A source's weight is the number of times each of its usable rows is used per epoch. Its whole part
repeats every row; its fraction takes that share of the rows once more, a sample chosen from the
seed and the source's position (so a plan and its run pick the same rows, and a second source does
not pick the same positions as the first). An epoch is every source's rows taken this way, shuffled
together by the training loop:

    rows of a source per epoch = floor(weight x usable rows + 0.5)

weight 1 (the default) uses each row once, 3 three times, 0.25 a quarter of the rows, 1.5 every row
once and half of them twice.
"""

from __future__ import annotations

import math
import random


def rows_per_epoch(usable: int, weight: float) -> int:
    return math.floor(weight * usable + 0.5)


def selection(usable: int, weight: float, seed: int, position: int) -> list[int]:
    """The positions (0 .. usable-1, among the source's usable rows) one epoch uses, repeats included."""
    total = rows_per_epoch(usable, weight)
    whole = min(int(weight), total // max(usable, 1))
    chosen = list(range(usable)) * whole
    extra = total - len(chosen)
    if extra:
        chosen += sorted(random.Random(f"runner-mix/{seed}/{position}").sample(range(usable), extra))
    return chosen
