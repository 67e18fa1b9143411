"""Scanning a data folder so that it means what it looks like: every real file once, a bounded
walk, nothing that blocks when opened, and no reading outside the folder unless asked.

A plain ``os.walk(followlinks=True)`` turns a symlink loop into dozens of copies of every image
(train and validation then share files), reads sibling folders through a link that leaves the
root, and lists named pipes that block ``open()`` forever.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gan_lightning.errors import DataError
from gan_lightning.logs import get_logger

log = get_logger(__name__)

FLAG = "--data.follow_links"


@dataclass
class FolderScan:
    """What a scan found: ``files`` (each real file once, in sorted order), ``folders`` (the
    first-level subfolders that were walked), and what was left out and why."""

    files: list[Path] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    not_regular: list[Path] = field(default_factory=list)
    repeats: list[Path] = field(default_factory=list)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _inside(path: str, real_root: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), real_root]) == real_root


def _refuse_outside(root: Path, path: str, real_root: str) -> None:
    if not _inside(path, real_root):
        raise DataError(
            f"--data.root {root} holds a link {os.path.relpath(path, root)} that leads outside it (to "
            f"{os.path.realpath(path)}); pass {FLAG} true to read linked files and folders outside "
            f"--data.root, or remove the link."
        )


def scan_folder(root: Path, wanted: Callable[[str], bool], follow_links: bool = False) -> FolderScan:
    """Regular files under ``root`` whose name ``wanted`` accepts, recursively; hidden entries
    are skipped (macOS "._x.jpg" resource forks and .ipynb_checkpoints carry image extensions but
    are not images).

    Links are followed (data folders are often links to a larger disk), but a file or folder
    reached twice (a loop, a second link, a hard link) is read once, under its own name rather
    than a link's, else the first name in the (sorted) walk, so the result does not depend on
    the file system's listing order. A link that
    leads outside ``root`` is refused unless ``follow_links``.
    """
    scan = FolderScan()
    real_root = os.path.realpath(root)
    seen_folders = {_identity(os.stat(root))}
    candidates: list[tuple[str, tuple[int, int], bool]] = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(subfolders):
            path = os.path.join(folder, name)
            if name.startswith("."):
                continue
            if not follow_links and os.path.islink(path):
                _refuse_outside(root, path, real_root)
            try:
                identity = _identity(os.stat(path))
            except OSError:  # vanished since the listing
                continue
            if identity in seen_folders:  # a loop or a second name: walking it again never ends or repeats
                scan.repeats.append(Path(path))
                continue
            seen_folders.add(identity)
            kept.append(name)
        subfolders[:] = kept  # os.walk descends only into these, in this order
        if os.path.realpath(folder) == real_root:
            scan.folders = list(kept)
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.startswith(".") or not wanted(name):
                continue
            try:
                st = os.stat(path)
            except OSError:  # a broken link, or a link to itself
                scan.not_regular.append(Path(path))
                continue
            if not follow_links and os.path.islink(path):
                _refuse_outside(root, path, real_root)
            if not stat.S_ISREG(st.st_mode):  # a named pipe blocks open() forever; a device never ends
                scan.not_regular.append(Path(path))
            else:
                candidates.append((path, _identity(st), os.path.islink(path)))
    # The file's own name (not a link to it) wins, so its label is the folder it lies in.
    chosen: dict[tuple[int, int], str] = {}
    for path, identity, _ in sorted(candidates, key=lambda c: c[2]):
        chosen.setdefault(identity, path)
    scan.files = sorted(Path(p) for p in chosen.values())
    scan.repeats += sorted(Path(path) for path, identity, _ in candidates if chosen[identity] != path)
    _report(root, scan)
    return scan


def _examples(paths: list[Path], root: Path) -> str:
    shown = ", ".join(os.path.relpath(p, root) for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _report(root: Path, scan: FolderScan) -> None:
    if scan.not_regular:
        n = len(scan.not_regular)
        log.warning(
            f"--data.root {root}: skipped {n} {'entry that is' if n == 1 else 'entries that are'} not a regular file "
            f"(a named pipe, socket, device or broken link): {_examples(scan.not_regular, root)}"
        )
    if scan.repeats:
        n = len(scan.repeats)
        log.warning(
            f"--data.root {root}: {n} {'link leads' if n == 1 else 'links lead'} to a file or folder already found "
            f"(a loop or a second name), so each file is read once: {_examples(scan.repeats, root)}"
        )
