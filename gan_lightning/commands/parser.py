"""The train command's argument parser: Lightning's, with integers kept integers and its
errors said in one sentence.

Lightning types ``limit_train_batches`` (and the other ``limit_*_batches``) as
``Union[float, int, None]``; jsonargparse tries a union's types in order, so ``1`` typed by the
user became the float ``1.0``, which Lightning reads as "100 % of the batches" instead of "one
batch". Lightning's own API draws the line by type (an int counts batches, a float is a
fraction), so the parser must keep the type the user wrote, on the command line and in YAML.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, NoReturn, Optional

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser
from typing_extensions import override

# Trainer options whose meaning changes between an int (a count) and a float (a fraction).
COUNT_OR_FRACTION = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches")


def keep_integers(parser: LightningArgumentParser, nested_key: str) -> None:
    """Make ``--<nested_key>.limit_*_batches`` and ``overfit_batches`` try int before float."""
    for action in parser._actions:
        name = action.dest.rsplit(".", 1)[-1]
        if action.dest == f"{nested_key}.{name}" and name in COUNT_OR_FRACTION and hasattr(action, "_typehint"):
            # jsonargparse has no public way to retype an argument it derived from a signature;
            # the order of a union's types is the order it tries them (tests/commands/test_parser.py).
            # `int | float | None`, not Optional[Union[int, float]]: typing caches unions as equal
            # whatever their order and would hand back Lightning's float-first one.
            optional = type(None) in getattr(action._typehint, "__args__", ())
            action._typehint = int | float | None if optional else int | float


_KEY = re.compile(r'Parser key "([^"]+)"')
_EXPECTED = re.compile(r"Expected a (.+?)(?:\. Got value: (.*))?$")
_NAMES = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "text", "NoneType": "null",
          "dict": "a mapping such as {class_path: ..., init_args: {...}}", "list": "a list such as [a, b]"}


def _kind(expected: str) -> str:
    literal = re.fullmatch(r"typing\.Literal\[(.*)\]", expected)
    if literal:
        return f"one of {literal.group(1)}"
    name = re.fullmatch(r"<class '(?:[\w.]+\.)?(\w+)'>|([\w.]+?)\[.*\]", expected)
    base = name and (name.group(1) or name.group(2).rsplit(".", 1)[-1])
    return _NAMES.get(base or "", f"a {expected}")


def parser_sentence(message: str) -> str:
    """jsonargparse's complaint as one sentence: flag, value, what is allowed. Its union errors
    are 8-14 lines of every type tried (``Does not validate against any of the Union subtypes
    ... NestedArg(...)``); the line that matters is the deepest ``Parser key`` and what it expected."""
    keys = _KEY.findall(message)
    missing = re.fullmatch(r"argument (--\S+): expected one argument", message.strip())
    if missing:  # argparse takes "-1e-3" or "-.5" for a flag, not a value
        return f"{missing.group(1)} needs a value; write a negative number as {missing.group(1)}=-1e-3"
    if not keys:
        return " ".join(message.split())  # e.g. "unrecognized arguments: --foo 1", already one line
    expected, value = [], None
    for line in message.splitlines():
        found = _EXPECTED.search(line.strip())
        if found:
            expected.append((found.group(1), found.group(2)))
    deepest = [(kind, got) for kind, got in expected if got is not None]
    if deepest:  # a class's own option failed: the outer union's alternatives are not the user's choice
        expected, value = deepest, deepest[-1][1]
    else:
        given = re.search(r"Given value: (?:NestedArg\(key='[^']*', val='(.*)'\)|(.*))$", message, re.M)
        value = given and (given.group(1) if given.group(1) is not None else given.group(2))
    kinds = list(dict.fromkeys(_kind(kind) for kind, _ in expected))
    flag = "--" + ".".join(keys)
    if not kinds:
        return f"{flag}: " + " ".join(message.split("\n", 1)[-1].split())
    shown = f" {value}" if value not in (None, "") else ""
    return f"{flag}{shown} is not allowed: expected {' or '.join(kinds)}"


def non_finite(config: Any) -> Optional[tuple[str, float]]:
    """The first option (flag name, value) holding nan or inf, in lists and mappings too.
    ``1e400`` on the command line and ``.inf`` in YAML pass jsonargparse's float check."""
    def walk(key: str, value: Any) -> Optional[tuple[str, float]]:
        if isinstance(value, float) and not math.isfinite(value):
            return key, value
        # mappings and Namespaces (a class's init_args in a list, e.g. --trainer.callbacks) have items()
        items = value.items() if hasattr(value, "items") else enumerate(value) if isinstance(value, (list, tuple)) else ()
        return next((hit for k, v in items if (hit := walk(f"{key}.{k}", v))), None)

    for key, value in config.items():
        hit = walk(key, value)
        if hit:
            return re.sub(r"^(fit|validate)\.|\binit_args\.", "", hit[0]), hit[1]
    return None


class GANArgumentParser(LightningArgumentParser):
    @override
    def parse_args(self, *args: Any, **kwargs: Any) -> Any:
        config = super().parse_args(*args, **kwargs)
        hit = non_finite(config)
        if hit:
            self.error(f'Parser key "{hit[0]}":\n  Expected a <class \'float\'>. Got value: {hit[1]}')
        return config

    @override
    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if not self.exit_on_error:  # a parser jsonargparse tries a value with, inside a union: it wants the exception
            super().error(message, ex)
        # no usage page: its 150 lines of flags bury the one that was wrong
        print(f"error: {parser_sentence(message)}", file=sys.stderr)
        sys.exit(2)

    @override
    def add_lightning_class_args(self, lightning_class: Any, nested_key: str, subclass_mode: bool = False, required: bool = True) -> list[str]:
        added = super().add_lightning_class_args(lightning_class, nested_key, subclass_mode=subclass_mode, required=required)
        if isinstance(lightning_class, type) and issubclass(lightning_class, Trainer):
            keep_integers(self, nested_key)
        return added
