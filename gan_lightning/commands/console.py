"""How every command ends: a project error becomes ``error: <sentence>`` and exit status 2.

Errors caused by the user's input (:class:`~gan_lightning.errors.GANLightningError`) are one
sentence that names the flag or file; printing a traceback for them would bury it. So is an
OSError the file system raised on a path (an output folder that is read-only, full, or under
a file): that is the user's disk, not a bug. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path
from typing import Callable, NoReturn, Optional

from gan_lightning.errors import GANLightningError
from gan_lightning.files import REASONS
from gan_lightning.logs import ROOTS


class _Stderr(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (a test's capture, a redirected stream), not to
    the one there was when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def print_library_messages() -> None:
    """A command prints what the library logs at INFO and above (``gan_lightning.logs``), one
    line per message as Lightning prints its own; the loggers still propagate, so an
    application's own logging configuration sees them too."""
    for name in ROOTS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            logger.addHandler(_Stderr())
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


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


def sentence(error: BaseException) -> str:
    """What the user reads for ``error``. A DataLoader worker re-raises an error from the
    dataset with the worker's whole traceback as its message; the sentence is its last line."""
    text = str(error)
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    if text.startswith("Caught ") and "Original Traceback" in text and marker in text:
        return text[text.rfind(marker) + len(marker) :].strip()
    return text


# errno of an OSError that says the file system refused a path (not a bug in the command);
# the messages finish "<path> ..." and say what to change.
PATH_REFUSALS = {
    errno.EACCES: "cannot be written or read: permission denied; choose a folder you may write to",
    errno.EPERM: "cannot be written or read: operation not permitted; choose a folder you may write to",
    errno.EROFS: "is on a read-only file system; choose a writable folder",
    errno.ENOSPC: "cannot be written: the disk is full; free space or choose another disk",
    errno.EDQUOT: "cannot be written: the disk quota is exceeded; free space or choose another disk",
    errno.ENOTDIR: "cannot be created because a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "is a file where a folder is needed; choose another path or move the file",
    errno.EISDIR: "is a folder where a file is needed; give a file name",
    errno.ENAMETOOLONG: "is too long a path for the file system; choose a shorter one",
}


# a full or read-only disk under a library's writer (a logger's CSV, a W&B file)
UNNAMED_REFUSALS = {
    errno.ENOSPC: "free space (train.py: then resume from the newest checkpoint with --ckpt_path)",
    errno.EDQUOT: "free space (train.py: then resume from the newest checkpoint with --ckpt_path)",
    errno.EROFS: "write to a writable folder",
}


def path_refusal(exc: BaseException) -> Optional[str]:
    """One sentence for an OSError the file system raised on a path (an output folder under a
    file, read-only or full), found anywhere in the cause chain; None for any other error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.filename and exc.errno in PATH_REFUSALS:
            blocker = next((p for p in Path(exc.filename).parents if p.exists() and not p.is_dir()), None)
            if exc.errno == errno.ENOTDIR and blocker is not None:
                return f"{exc.filename} cannot be created because {blocker} is a file, not a folder; choose another path"
            return f"{exc.filename} {PATH_REFUSALS[exc.errno]}"
        if isinstance(exc, OSError) and exc.errno in UNNAMED_REFUSALS:  # a library's write() names no file
            return f"a write was refused ({REASONS[exc.errno]}), so the command stopped; the files it had finished are intact: {UNNAMED_REFUSALS[exc.errno]}"
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def run(command: Callable[[], None], also: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``command``; return 0, or 2 after printing ``error: <sentence>`` for a user error
    (``also``: further exception types printed the same way, e.g. Lightning's refusals); an
    error with an ``exit_status`` (a run stopped by a signal: 128 + its number) returns that."""
    print_library_messages()
    try:
        command()
    except Exception as exc:
        error = user_error(exc) or (exc if isinstance(exc, also) else None)
        if error is None:
            refusal = path_refusal(exc)
            if refusal is None:
                raise
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        print(f"error: {sentence(error)}", file=sys.stderr)
        return getattr(error, "exit_status", 2)
    return 0


class CommandParser(argparse.ArgumentParser):
    """The commands' flag parser: a wrong or missing flag is one line, not the usage block above
    it (whose list of flags buries the one that was wrong; ``--help`` still shows it)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)

