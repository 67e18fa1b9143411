"""Writing an output file so that a failed write loses nothing and says why in one sentence.

A full or read-only disk reaches us in two shapes: an ``OSError`` with its errno, or, from
torch's zip writer (``torch.save``, ``torch.jit.save``), a ``RuntimeError`` such as
``[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598``. When torch wrote
through a Python file object, the ``OSError`` it swallowed is that RuntimeError's context; when
it wrote to a path itself, nothing is left of it, and the folder is asked (``statvfs``) instead.
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

from gan_lightning.errors import GANLightningError, WriteError

# errno of a write the file system refused -> the words the user reads
REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file system or the process's file size limit",
    errno.EIO: "input/output error",
}
# what torch's zip writer says when the stream under it refused bytes
TORCH_WRITER = re.compile(r"unexpected pos \d+ vs \d+|PytorchStreamWriter failed|file write failed")


def _folder_state(folder: Path) -> Optional[int]:
    """ENOSPC or EROFS when ``folder``'s file system is full or mounted read-only, else None."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return errno.EROFS
    # root may use the reserved blocks (f_bfree), everyone else only f_bavail
    free = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    return errno.ENOSPC if free == 0 else None


def write_failure(exc: BaseException, folder: Path) -> Optional[str]:
    """Why the file system refused a write into ``folder`` (e.g. "disk full"), found in ``exc``
    or its chain of causes; None when ``exc`` is not a refused write (a bug keeps its traceback)."""
    seen, current, torch_writer = set(), exc, False
    while current is not None and id(current) not in seen:
        if isinstance(current, GANLightningError):
            return None  # already one sentence of ours
        if isinstance(current, OSError) and current.errno in REASONS:
            return REASONS[current.errno]
        torch_writer = torch_writer or (isinstance(current, RuntimeError) and bool(TORCH_WRITER.search(str(current))))
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    if not torch_writer:
        return None
    state = _folder_state(folder)
    return REASONS[state] if state is not None else f"the file system refused the write: {str(exc).splitlines()[0][:120]}"


def advice(why: str, flag: str) -> str:
    """What to do about a refused write: space only helps a full disk."""
    return f"free space or choose another {flag}" if why in (REASONS[errno.ENOSPC], REASONS[errno.EDQUOT]) else f"choose another {flag}"


def partial_path(path: Path) -> Path:
    """The temporary file a write goes to before it is renamed into ``path``: hidden, beside it
    (a rename within one folder is atomic), and per process (two writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextmanager
def refused_writes(path: str | Path, what: str = "--out", flag: str = "--out", then: str = "", error: type[GANLightningError] = WriteError) -> Iterator[None]:
    """Turn the file system refusing a write of ``path`` inside the block (disk full, read-only,
    ...) into ``error``: "could not write <what> <path> (<why>); ...: free space or choose another
    <flag><then>"; any other exception passes unchanged."""
    path = Path(path)
    existed = path.exists()
    try:
        yield
    except Exception as exc:
        why = write_failure(exc, path.parent)
        if why is None:
            raise
        kept = f"the earlier {path.name} is intact" if existed else "nothing was written"
        raise error(f"could not write {what} {path} ({why}); {kept}: {advice(why, flag)}{then}") from exc


def write_atomically(
    path: str | Path, write: Callable[[BinaryIO], None], what: str = "--out", flag: str = "--out", then: str = "",
    error: type[GANLightningError] = WriteError, fsync: bool = True,
) -> None:
    """Call ``write`` with a binary file beside ``path`` and rename that file into place when it
    returns. When the write fails the partial file is removed, so a full disk is not kept full,
    and ``path`` keeps its earlier content (see :func:`refused_writes` for the error)."""
    path = Path(path)
    temporary = partial_path(path)
    with refused_writes(path, what, flag, then, error):
        try:
            with open(temporary, "wb") as f:
                write(f)
                f.flush()
                if fsync:  # the rename must not reach the disk before the bytes do
                    os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:  # a Ctrl-C mid-write too: no partial file is left behind
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass
            raise
