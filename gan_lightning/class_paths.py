"""Class paths read from files (checkpoints, exports, a distill teacher's record) are imported
only when they are on an allow-list.

A checkpoint read with ``torch.load(weights_only=True)`` runs no pickled code, but it still
names the classes that rebuild its networks, and importing and calling a named class is
running code: ``{"class_path": "subprocess.run", "init_args": {"args": [...]}}`` would do it.
So a class path from a file must be one of the project's networks, or one the user allowed
explicitly: ``--allow_class`` on the commands, the ``GAN_LIGHTNING_ALLOW_CLASSES`` environment
variable (comma-separated, for train.py and for Python code), or :func:`allow_classes`.
Class paths the user types on the command line are theirs and not checked. A config file given
to train.py may name the classes of the project and of the libraries it is built on; any other
module is imported only when allowed (:func:`check_config_classes`), because a downloaded run's
``config.yaml`` is a file like any other.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

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


# The packages whose classes a config file may name without being allowed: the project's and
# the libraries it is built on, whose modules do nothing but define when imported.
CONFIG_PACKAGES = ("gan_lightning", "datamodules", "callbacks", "pytorch_lightning", "lightning", "lightning_fabric", "torch", "torchvision")
# the keys jsonargparse also reads a bare class path from (``data: datamodules.DigitsDataModule``)
CLASS_KEYS = (*NETWORK_KEYS, "data", "logger", "student", "profiler", "strategy", "plugins", "optimizer", "lr_scheduler")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def config_class_paths(obj: Any, key: str = "") -> Iterator[str]:
    """Every class path a config file names: ``class_path`` values, and dotted names (or the
    names of further config files) under CLASS_KEYS."""
    if isinstance(obj, dict):
        for k, value in obj.items():
            if k == "class_path" and isinstance(value, str):
                yield value
            else:
                yield from config_class_paths(value, str(k))
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from config_class_paths(value, key)
    elif isinstance(obj, str) and key in CLASS_KEYS and (_DOTTED.match(obj) or _config_file(obj)):
        yield obj


def _config_file(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in ("yaml", "yml", "json")


def check_config_classes(config: Any, source: str, folder: Path = Path(".")) -> None:
    """Refuse, before jsonargparse imports anything, a config file that names a class outside
    CONFIG_PACKAGES which the user did not allow (``GAN_LIGHTNING_ALLOW_CLASSES``). jsonargparse
    also reads a section from a YAML file named in its place (``data: data.yaml``): those files
    are read here too (``folder``: the config's own, where a relative name may also be)."""
    for class_path in config_class_paths(config):
        if class_path.split(".")[0] in CONFIG_PACKAGES or class_path in allowed_classes():
            continue
        if _config_file(class_path):
            found = next((p for p in (Path(class_path), folder / class_path) if p.is_file()), None)
            try:  # a missing or broken file: jsonargparse refuses it too, before importing anything
                nested = yaml.safe_load(found.read_text(errors="replace")) if found is not None else None
            except yaml.YAMLError:
                nested = None
            if nested is not None:
                check_config_classes(nested, f"{source} (through {found})", found.parent)
            continue
        raise CheckpointError(
            f"{source} names the class {class_path!r}, from a module that is not the project's or one of the libraries it is built"
            f" on ({', '.join(CONFIG_PACKAGES)}); importing it could run its code, so it was not imported: if you trust this"
            f" file, set {ENV}={class_path}"
        )
