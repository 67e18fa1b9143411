"""Train a GAN; ``python train.py --help`` lists every option and the plug-in callbacks."""

from __future__ import annotations

import sys
from typing import Optional

from pytorch_lightning.utilities.exceptions import MisconfigurationException

from gan_lightning.cli import GANLightningCLI, with_default_subcommand
from gan_lightning.errors import GANLightningError


def user_error(exc: BaseException) -> Optional[GANLightningError]:
    """The user-facing error behind ``exc``: jsonargparse wraps errors raised while it
    instantiates a class in its own ValueError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GANLightningError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: Optional[list[str]] = None) -> int:
    if argv is None:
        # Rewritten in place rather than passed as args: DDP re-launches this script with sys.argv.
        sys.argv[1:] = with_default_subcommand(sys.argv[1:])
    try:
        GANLightningCLI(args=None if argv is None else with_default_subcommand(argv))
    except Exception as exc:
        error = user_error(exc)
        if error is None and isinstance(exc, MisconfigurationException):
            error = exc  # Lightning's own one-line refusals of a Trainer setting
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
