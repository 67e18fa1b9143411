"""The bad-input battery: each case builds files in a fresh workspace, runs one command the way a
user would, and is judged on three things: the exit status, the one sentence the user reads, and
that every file that existed before the command still has the same sha256.

Cases live in ``cases_*.py`` beside this file, one file per category; ``test_battery.py`` runs
them in-process (fast), ``table.py`` runs them as subprocesses against any checkout (the
before/after table of the reliability work).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

COMMANDS = {
    "train": "gan_lightning.commands.train",
    "export": "gan_lightning.commands.export",
    "evaluate": "gan_lightning.commands.evaluate",
    "generate": "gan_lightning.commands.generate",
    "synthesize": "gan_lightning.commands.synthesize",
}


@dataclass
class Workspace:
    """A fresh folder for one case, with a copy of the shared tiny checkpoint at ``ckpt``
    (``run/checkpoints/last.ckpt``) and of its run's ``config.yaml`` (``run/config.yaml``)."""

    dir: Path
    ckpt: Path

    def path(self, name: str) -> Path:
        return self.dir / name


@dataclass
class Case:
    """``prepare`` writes the case's files and returns the command's arguments.

    ``sentence`` is a regex searched in the output (stderr and stdout); ``rc`` the expected exit
    status (2: refused with one sentence). ``check`` may assert more (e.g. no code ran), given
    the workspace. ``env`` is set for the command.
    """

    id: str
    category: str
    command: str
    prepare: Callable[[Workspace], list[str]]
    sentence: str
    rc: int = 2
    env: dict[str, str] = field(default_factory=dict)
    check: Optional[Callable[[Workspace], None]] = None
    slow: bool = False


def sha256_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files that existed before and are gone or different now (new files are allowed)."""
    return [name for name, digest in before.items() if after.get(name) != digest]


def make_workspace(root: Path, checkpoint: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(checkpoint, ckpt)
    config = checkpoint.parent.parent / "config.yaml"
    if config.exists():
        shutil.copy(config, ckpt.parent.parent / "config.yaml")
    return Workspace(dir=root, ckpt=ckpt)


def verdict(case: Case, rc: int, output: str) -> list[str]:
    """What is wrong with a run of ``case`` (empty when it behaved)."""
    problems = []
    if rc != case.rc:
        problems.append(f"exit status {rc}, expected {case.rc}")
    if not re.search(case.sentence, output, re.S):
        problems.append(f"output lacks /{case.sentence}/")
    if case.rc != 0 and "Traceback" in output:
        problems.append("a traceback was printed")
    return problems


def one_line(output: str) -> str:
    """The line a user reads: the ``error:`` line when there is one, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]
