"""The train command's argument parser: Lightning's, with integers kept integers.

Lightning types ``limit_train_batches`` (and the other ``limit_*_batches``) as
``Union[float, int, None]``; jsonargparse tries a union's types in order, so ``1`` typed by the
user became the float ``1.0``, which Lightning reads as "100 % of the batches" instead of "one
batch". Lightning's own API draws the line by type (an int counts batches, a float is a
fraction), so the parser must keep the type the user wrote, on the command line and in YAML.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser

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
            action._typehint = int | float | None


class GANArgumentParser(LightningArgumentParser):
    def add_lightning_class_args(self, lightning_class: Any, nested_key: str, subclass_mode: bool = False, required: bool = True) -> list[str]:
        added = super().add_lightning_class_args(lightning_class, nested_key, subclass_mode=subclass_mode, required=required)
        if isinstance(lightning_class, type) and issubclass(lightning_class, Trainer):
            keep_integers(self, nested_key)
        return added
