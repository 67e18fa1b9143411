"""How every command ends: a project error becomes ``error: <sentence>`` and exit status 2.

Errors caused by the user's input (:class:`~gan_lightning.errors.GANLightningError`) are one
sentence that names the flag or file; printing a traceback for them would bury it. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

from gan_lightning.errors import GANLightningError


def user_error(exc: Optional[BaseException]) -> Optional[GANLightningError]:
    """The user-facing error behind ``exc``, or None: jsonargparse and Lightning wrap errors
    raised while they instantiate a class in their own exceptions, so the cause chain is searched."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GANLightningError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def run(command: Callable[[], None], also: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``command``; return 0, or 2 after printing ``error: <sentence>`` for a user error
    (``also``: further exception types printed the same way, e.g. Lightning's refusals)."""
    try:
        command()
    except Exception as exc:
        error = user_error(exc) or (exc if isinstance(exc, also) else None)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
