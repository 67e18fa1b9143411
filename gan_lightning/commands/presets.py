"""The shipped presets (``configs/*.yaml``) and W&B sweep files, wherever the package lives.

``configs/`` at the repository root is the one copy users read and edit. ``gan_lightning/configs``
is a symlink to it, so that a wheel carries the files as package data (see pyproject's
``[tool.setuptools.package-data]``) and :mod:`importlib.resources` finds them the same way in a
checkout, an editable install and an installed wheel. What users type stays
``--config configs/wgan_clip.yaml``: where no such file exists (a pip install, another working
folder) the name is looked up among the shipped presets instead.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional


def preset_dir() -> Path:
    """The folder of the shipped presets (``sweeps/`` inside it holds the W&B sweep files)."""
    # pip installs wheels unpacked, so this is a real folder: jsonargparse and wandb want file paths.
    return Path(str(resources.files("gan_lightning") / "configs"))


def preset_names() -> list[str]:
    """The names a user may give ``--config``, e.g. ``wgan_clip`` for ``configs/wgan_clip.yaml``."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    return preset_dir() / f"{name}.yaml"


def find_preset(value: str) -> Optional[Path]:
    """The shipped preset that ``value`` names as ``configs/NAME.yaml``, ``NAME.yaml`` or ``NAME``,
    or None. Only those spellings: any other folder is the user's own, never a preset."""
    path = Path(value)
    if path.parent not in (Path("."), Path("configs")) or path.suffix not in ("", ".yaml"):
        return None
    return preset_path(path.stem) if path.stem in preset_names() else None
