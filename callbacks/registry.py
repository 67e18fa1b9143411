"""Short names of the plug-in callbacks, as typed in ``--callbacks a,b``.

A callback module registers its class with ``@register("name")``; ``callbacks/__init__.py``
imports every module so that the registry is complete once ``callbacks`` is imported. The
name is also the option group of the callback's arguments (``--name.arg value``).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from pytorch_lightning import Callback

from gan_lightning.errors import ConfigError

CALLBACKS: dict[str, type[Callback]] = {}

C = TypeVar("C", bound=type[Callback])


def register(name: str) -> Callable[[C], C]:
    def add(cls: C) -> C:
        if name in CALLBACKS and CALLBACKS[name] is not cls:
            raise ValueError(f"callback name {name!r} is registered twice ({CALLBACKS[name].__name__}, {cls.__name__})")
        CALLBACKS[name] = cls
        return cls

    return add


def parse_names(value: str) -> list[str]:
    """``"a,b"`` to ``["a", "b"]``, refusing unknown and repeated names."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in CALLBACKS]
    if unknown:
        raise ConfigError(f"--callbacks got unknown name(s) {', '.join(unknown)}; available: {', '.join(sorted(CALLBACKS)) or 'none'}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--callbacks names {', '.join(repeated)} more than once; each callback can be switched on once")
    return names
