"""engine/: the run machinery the scripts share — distributed setup, atomic checkpoints, LR schedules, logging.

Flow: data/ → models/ → csrc/ → engine/ → scripts. engine/ never imports a script.
"""
