"""Class paths in a config file that evaluate or synthesize reads (a run's ``config.yaml``, or
``--config``) are checked against the allow-list before jsonargparse sees them.

jsonargparse imports the module a class path names before it checks that the class fits
(``data: {class_path: this.Foo}`` prints the Zen of Python), and a plain string there may also
name another YAML file to read. Importing is running code, and a run folder may come from
anyone, so only the project's datamodules and what the user allowed (``--allow_class``,
``GAN_LIGHTNING_ALLOW_CLASSES``) get that far.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gan_lightning.class_paths import check_class_path, class_paths_in


@cache
def project_datamodules() -> frozenset[str]:
    """Every name jsonargparse resolves to one of the project's datamodules: the short name, the
    package path a config.yaml records, and the defining module's path."""
    import datamodules

    names = set()
    for name in datamodules.__all__:
        cls = getattr(datamodules, name)
        names |= {name, f"datamodules.{name}", f"{cls.__module__}.{cls.__qualname__}"}
    return frozenset(names)


def check_data_section(data: Any, source: str) -> None:
    """Refuse in one sentence naming ``source`` any class path in the config's data section
    (the section itself given as a string, or a ``class_path`` at any depth) that is not allowed."""
    for class_path in [data] if isinstance(data, str) else class_paths_in(data):
        check_class_path(class_path, f"the data section of {source}", also=project_datamodules(), kind="networks and datamodules")
