"""Hook implementations say so: every method of a callback, a module or a datamodule that
overrides a base-class method is marked ``@override``, so a hook renamed upstream (or misspelt
here) is caught by a type checker instead of silently never being called."""

from __future__ import annotations

import importlib
import inspect

import pytest

from tests.helpers import REPO

FILES = sorted([*(REPO / "callbacks").glob("*.py"), *(REPO / "datamodules").glob("*.py"), REPO / "gan_lightning" / "core" / "module.py"])


def unmarked_overrides(module) -> list[str]:
    missing = []
    for cls in vars(module).values():
        if not inspect.isclass(cls) or cls.__module__ != module.__name__:
            continue
        for name, value in vars(cls).items():
            if name.startswith("__") or not inspect.isfunction(value):
                continue
            if any(name in vars(base) for base in cls.__mro__[1:] if base is not object) and not getattr(value, "__override__", False):
                missing.append(f"{cls.__name__}.{name}")
    return missing


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_override_is_marked(path):
    name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    assert unmarked_overrides(importlib.import_module(name)) == []


def test_the_check_finds_an_unmarked_override():
    from callbacks import mode_watch

    marked = mode_watch.ModeCollapseWatch.on_fit_end
    try:
        mode_watch.ModeCollapseWatch.on_fit_end = lambda self, trainer, pl_module: None
        assert unmarked_overrides(mode_watch) == ["ModeCollapseWatch.on_fit_end"]
    finally:
        mode_watch.ModeCollapseWatch.on_fit_end = marked
