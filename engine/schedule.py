"""Learning-rate schedules as pure functions of the iteration: nothing to save, resume is exact by construction."""
from __future__ import annotations

import math


def lr_factor(it: int, total: int, warmup: int, schedule: str = "poly", power: float = 1.0,
              warmup_ratio: float = 1e-6, min_ratio: float = 0.0) -> float:
    """Multiplier on the base LR at iteration `it` (0-based).

    mmseg's recipe (SPEC §4): linear warmup from warmup_ratio × lr (mmseg configs: 1e-6) over `warmup` iterations,
    then poly (power 1) to 0 over the whole run — mmseg's poly counts from iteration 0, warmup scales it, as here.
    """
    it = min(it, total)
    if schedule == "poly":
        base = (1.0 - it / total) ** power
    elif schedule == "linear":
        base = 1.0 - it / total
    elif schedule == "cosine":
        base = 0.5 * (1.0 + math.cos(math.pi * it / total))
    else:
        raise ValueError(f"unknown schedule {schedule!r} (poly, linear, cosine)")
    base = min_ratio + (1.0 - min_ratio) * base
    if warmup > 0 and it < warmup:
        k = (1.0 - it / warmup) * (1.0 - warmup_ratio)
        base *= 1.0 - k
    return base
