"""A full or read-only disk for the battery, without filling or remounting a real one.

While ``GAN_LIGHTNING_TEST_FAULT`` is ``enospc:<bytes>:<folder>`` or ``erofs:0:<folder>``
(``<folder>`` relative to the working directory of the moment), a file opened for writing under
``<folder>`` fails as the kernel makes it fail: ``erofs`` refuses the open (EROFS); ``enospc`` is
a disk with ``<bytes>`` free: writes under the folder take them, then every write is refused
(ENOSPC), so a partial file is left and torch's zip writer fails in its own way ("unexpected
pos ...") around the OSError. :func:`install` wraps ``open`` once; the wrapper
reads the variable on every call, so it is inert outside a case that sets it. A command run as
a subprocess gets it from ``faults_site/sitecustomize.py`` (the case puts that folder on
PYTHONPATH); in-process, the case's ``prepare`` installs it.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

ENV = "GAN_LIGHTNING_TEST_FAULT"
SITE = Path(__file__).resolve().parent / "faults_site"
_real_open = builtins.open
_used: dict[Path, int] = {}  # bytes written so far on each "disk" (its folder), this process


def env(kind: str, folder: str, free: int = 1024) -> dict[str, str]:
    """A case's environment for a ``kind`` fault (enospc, erofs) under ``folder``, with ``free`` bytes."""
    return {ENV: f"{kind}:{free}:{folder}", "PYTHONPATH": str(SITE)}


class _FullFile:
    """A file on a disk that has ``free`` bytes left."""

    def __init__(self, f, root: Path, free: int) -> None:
        self._f, self._root, self._free = f, root, free

    def write(self, data) -> int:
        size = len(data.encode()) if isinstance(data, str) else len(memoryview(data).cast("B"))  # a text file's str too
        if _used.get(self._root, 0) + size > self._free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _used[self._root] = _used.get(self._root, 0) + size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def __iter__(self):
        return iter(self._f)


def _faulty_open(file, mode="r", *args, **kwargs):
    fault = os.environ.get(ENV)
    if not fault or not isinstance(file, (str, os.PathLike)) or not set(mode) & set("wax+"):
        return _real_open(file, mode, *args, **kwargs)
    kind, free, folder = fault.split(":", 2)
    target, root = Path(os.path.abspath(file)), Path(os.path.abspath(folder))
    if target != root and root not in target.parents:
        return _real_open(file, mode, *args, **kwargs)
    if kind == "erofs":
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
    return _FullFile(_real_open(file, mode, *args, **kwargs), root, int(free))


def install() -> None:
    """Wrap ``open`` (idempotent); inert while the variable is unset."""
    builtins.open = io.open = _faulty_open
