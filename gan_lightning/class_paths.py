"""Class paths read from files (checkpoints, exports, a distill teacher's record) are imported
only when they are on an allow-list.

A checkpoint read with ``torch.load(weights_only=True)`` runs no pickled code, but it still
names the classes that rebuild its networks, and importing and calling a named class is
running code: ``{"class_path": "subprocess.run", "init_args": {"args": [...]}}`` would do it.
So a class path from a file must be one of the project's networks, or one the user allowed
explicitly: ``--allow_class`` on the commands, the ``GAN_LIGHTNING_ALLOW_CLASSES`` environment
variable (comma-separated, for train.py and for Python code), or :func:`allow_classes`.
Class paths the user types on the command line or in a config are theirs and not checked here.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Iterable, Iterator

from gan_lightning.errors import CheckpointError

ENV = "GAN_LIGHTNING_ALLOW_CLASSES"
PROJECT_NETWORKS = frozenset(
    f"gan_lightning.networks.{name}"
    for name in ("MLPGenerator", "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator", "ResNetGenerator", "ResNetDiscriminator")
)
_allowed_by_code: set[str] = set()


def allow_classes(paths: Iterable[str]) -> None:
    """Allow further class paths to be loaded from files for the rest of this process."""
    _allowed_by_code.update(p.strip() for p in paths if p.strip())


def allowed_classes() -> frozenset[str]:
    from_env = {p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip()}
    return PROJECT_NETWORKS | _allowed_by_code | from_env


def check_class_path(class_path: Any, source: str, also: Iterable[str] = (), kind: str = "networks") -> str:
    """``class_path`` if it may be imported, else one sentence naming ``source`` and the class.
    ``also``: further classes of the project allowed where the file names them (``kind``: what they are)."""
    if isinstance(class_path, str) and (class_path in allowed_classes() or class_path in also):
        return class_path
    raise CheckpointError(
        f"{source} names the class {class_path!r}, which is not on the allow-list of classes loaded from files"
        f" (the project's {kind}, plus --allow_class / {ENV}); it was not imported: if you trust this file,"
        f" pass --allow_class {class_path} (or set {ENV}={class_path})"
    )


def import_class(class_path: str, source: str) -> type:
    """The class an allowed ``class_path`` names (imported only after the check)."""
    check_class_path(class_path, source)
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{source} names the class {class_path!r}, which cannot be imported ({exc})") from exc
    if not isinstance(cls, type):
        raise CheckpointError(f"{source} names {class_path!r}, which is not a class")
    return cls


NETWORK_KEYS = ("generator", "discriminator")


def class_paths_in(obj: Any) -> Iterator[str]:
    """Every ``class_path`` value at any depth of a checkpoint's hyper-parameters, and the
    networks given as a bare string (jsonargparse also accepts ``generator: pkg.Class``)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "class_path" or (key in NETWORK_KEYS and isinstance(value, str)):
                yield value
            else:
                yield from class_paths_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from class_paths_in(value)


def add_allow_class_flag(parser) -> None:
    """``--allow_class CLASS_PATH`` (repeatable) on an argparse command that reads files."""
    parser.add_argument(
        "--allow_class", action="append", default=[], metavar="CLASS_PATH",
        help="a class path the input file may name besides the project's networks (e.g. your own generator); repeatable",
    )
