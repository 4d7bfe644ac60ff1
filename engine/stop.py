"""The stop request: SIGTERM (pre-emption, scancel, torchrun's shutdown) asks a training run to stop.

`install()` makes SIGTERM recorded rather than fatal; the loop reads `requested()` after each step, saves that
step and exits 143 (engine.run.EXIT_STOPPED). train.py installs it when run as a script, before its slow imports,
so a SIGTERM that lands while torch is still importing is honoured after the first step like any other. A caller
of train.main() inside its own process (tests, notebooks) keeps its own SIGTERM handling unless it calls install().
This module imports nothing heavy: it is imported before torch.
"""
from __future__ import annotations

import signal

_STATE = {"signal": 0}


def _record(signum, _frame) -> None:
    _STATE["signal"] = signum


def install() -> None:
    signal.signal(signal.SIGTERM, _record)


def requested() -> int:
    """The signal that asked to stop (SIGTERM's number), or 0."""
    return _STATE["signal"]
