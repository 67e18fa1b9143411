"""What the library says goes through ``logging.getLogger(<module name>)``.

Users filter it as they filter any library's messages, e.g.
``logging.getLogger("callbacks.prune").setLevel(logging.WARNING)``, and the commands print it
(:func:`gan_lightning.commands.console.run` gives the project's loggers a handler when the
application configured none). In a distributed run only rank 0 speaks, as Lightning's own
``rank_zero_info`` does: every rank would otherwise print the same line.
"""

from __future__ import annotations

import logging
from typing import Any

ROOTS = ("gan_lightning", "callbacks", "datamodules")  # the project's top-level packages


class RankZeroLogger(logging.LoggerAdapter):
    """A logger that drops records on every rank but 0 (Lightning's rank, read when logging)."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        from lightning_fabric.utilities.rank_zero import rank_zero_only  # the rank the strategy set

        if getattr(rank_zero_only, "rank", 0) == 0:
            kwargs.setdefault("stacklevel", 3)  # the caller's line, not this adapter's
            super().log(level, msg, *args, **kwargs)


def get_logger(name: str) -> RankZeroLogger:
    return RankZeroLogger(logging.getLogger(name), {})
